"""Rules per node kind (linear layers, sums of activations), checked layer rules, the op facts, the
one plan that compile and inspect share, and the explicit change emitters make to the forward graph."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxlrp
from onnxlrp.cli import main
from onnxlrp.inspection import inspect_model
from onnxlrp.ops import has_fact, ops_with
from onnxlrp.options import CompileOptions
from onnxlrp.plan import make_plan
from onnxlrp.rules import RuleError

RNG = np.random.default_rng(7)
W1, W2, W3 = (RNG.standard_normal(s).astype(np.float32) for s in ((6, 5), (6, 5), (5, 4)))
B1, B2, B3 = (RNG.standard_normal(s).astype(np.float32) for s in (5, 5, 4))


def residual_model() -> onnx.ModelProto:
    """x -> Gemm(W1) = h1, x -> Gemm(W2) = h2, h1 + h2 -> Gemm(W3) -> logits: a sum of two activations."""
    inits = [numpy_helper.from_array(a, n) for a, n in ((W1, "w1"), (W2, "w2"), (W3, "w3"))]
    inits += [numpy_helper.from_array(a, n) for a, n in ((B1, "b1"), (B2, "b2"), (B3, "b3"))]
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h1"], name="fc1"),
        helper.make_node("Gemm", ["x", "w2", "b2"], ["h2"], name="fc2"),
        helper.make_node("Add", ["h1", "h2"], ["s"], name="residual"),
        helper.make_node("Gemm", ["s", "w3", "b3"], ["y"], name="head"),
    ]
    graph = helper.make_graph(
        nodes,
        "residual",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


def _sign0(a: np.ndarray) -> np.ndarray:
    return np.where(a >= 0, 1.0, -1.0)


def _epsilon_dense(x, w, b, relevance, eps):
    """LRP-epsilon through z = x W + b, in float64 from the formula."""
    z = x @ w + b
    return x * ((relevance / (z + eps * _sign0(z))) @ w.T)


def reference(x: np.ndarray, target: np.ndarray, sum_rule: tuple, eps: float = 0.1) -> np.ndarray:
    """Input relevance with epsilon on the dense layers and ``sum_rule`` on the residual sum."""
    w1, w2, w3, b1, b2, b3 = (a.astype(np.float64) for a in (W1, W2, W3, B1, B2, B3))
    h1, h2 = x @ w1 + b1, x @ w2 + b2
    s = h1 + h2
    y = s @ w3 + b3
    relevance = y * np.eye(4)[target]
    r_s = _epsilon_dense(s, w3, b3, relevance, eps)
    if sum_rule[0] == "norm":
        share = r_s / (s + sum_rule[1] * _sign0(s))
        r_h1, r_h2 = h1 * share, h2 * share
    else:  # alpha-beta on the terms: weights all 1
        alpha, beta, stab = sum_rule[1:]
        p1, p2, n1, n2 = np.maximum(h1, 0), np.maximum(h2, 0), np.minimum(h1, 0), np.minimum(h2, 0)
        sp, sn = r_s / (p1 + p2 + stab), r_s / (n1 + n2 - stab)
        r_h1, r_h2 = alpha * p1 * sp - beta * n1 * sn, alpha * p2 * sp - beta * n2 * sn
    return _epsilon_dense(x, w1, b1, r_h1, eps) + _epsilon_dense(x, w2, b2, r_h2, eps)


@pytest.mark.parametrize(
    ("add_rule", "want_rule"),
    [
        ("zplus", ("alphabeta", 1.0, 0.0, 1e-6)),
        (onnxlrp.rules.AlphaBeta(2.0, 1.0), ("alphabeta", 2.0, 1.0, 1e-6)),
        (onnxlrp.rules.Epsilon(0.5), ("norm", 0.5)),
        (onnxlrp.rules.Norm(0.25), ("norm", 0.25)),
    ],
)
@pytest.mark.parametrize("by", ["type", "name"])
def test_rule_on_a_sum_matches_the_formula(add_rule, want_rule, by):
    x = RNG.uniform(-1, 1, (5, 6)).astype(np.float32)
    target = np.array([0, 1, 2, 3, 1])
    layer_rules = (
        {"rules_by_type": {"Add": add_rule}} if by == "type" else {"rules_by_name": {"residual": add_rule}}
    )
    model = onnxlrp.compile(residual_model(), rule=onnxlrp.rules.Epsilon(0.1), **layer_rules)
    got = onnxlrp.RelevanceSession(model).run(x, target=target)["relevance"]
    want = reference(x.astype(np.float64), target, want_rule)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    # the rule matters: z+ and Norm give different relevance here
    if want_rule[0] == "alphabeta":
        assert np.abs(want - reference(x.astype(np.float64), target, ("norm", 1e-6))).max() > 1e-3


def test_a_single_rule_gives_sums_norm():
    """rule="zplus" applies z+ to the linear layers and Norm to the sum, as zennit does."""
    plan = make_plan(residual_model(), CompileOptions(rule="zplus"))
    assert plan.rules["residual"] == onnxlrp.rules.Norm(1e-6)
    assert plan.rules["fc1"] == onnxlrp.rules.ZPlus()


@pytest.mark.parametrize("rule", ["gamma", "wsquare", "flat", "zbox"])
def test_rules_without_meaning_on_a_sum_are_refused(rule):
    with pytest.raises(RuleError, match=f"op type Add is a sum of activations: .* not {rule} "):
        onnxlrp.compile(residual_model(), rules_by_type={"Add": rule})
    with pytest.raises(RuleError, match=f"node 'residual' \\(Add\\) is a sum of activations: .* not {rule} "):
        onnxlrp.compile(residual_model(), rules_by_name={"residual": rule})


def test_a_sum_rule_on_a_linear_layer_is_refused():
    with pytest.raises(
        RuleError, match="op type Gemm is a linear layer: it takes a linear-layer rule, not norm"
    ):
        onnxlrp.compile(residual_model(), rules_by_type={"Gemm": onnxlrp.rules.Norm()})


@pytest.mark.parametrize(
    ("op_type", "reason"), [("Convv", "is not an op type onnxlrp knows"), ("Relu", "takes no rule")]
)
def test_layer_rule_op_types_are_checked(op_type, reason, tmp_path, capsys):
    message = f"rules_by_type: '{op_type}' {reason}; op types that take a rule: Add, AveragePool, "
    with pytest.raises(RuleError, match=message):
        onnxlrp.compile(residual_model(), rules_by_type={op_type: "zplus"})
    src, out = tmp_path / "m.onnx", tmp_path / "lrp.onnx"
    onnx.save(residual_model(), src)
    assert main(["compile", str(src), "-o", str(out), "--layer-rule", f"{op_type}=zplus"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not out.exists()


def test_inspect_prints_the_plan_compile_emits_from():
    options = {
        "composite": "epsilon-plus",
        "rules_by_type": {"Add": "zplus"},
        "rules_by_name": {"head": "lrp0"},
    }
    plan = make_plan(residual_model(), CompileOptions(**options))
    reports = {r.name: r for r in inspect_model(residual_model(), **options)}
    assert set(reports) == {node.name for node in plan.model.graph.node}
    for name, rule in plan.rules.items():
        assert reports[name].rule == repr(rule)
    assert reports["residual"].rule == "sum-alphabeta(alpha=1, beta=0)"
    assert reports["head"].rule == "lrp0(epsilon=1e-16)"
    with pytest.raises(RuleError, match="'Convv' is not an op type"):
        inspect_model(residual_model(), rules_by_type={"Convv": "zplus"})


def test_options_object_and_keywords_compile_the_same_graph():
    by_keywords = onnxlrp.compile(residual_model(), composite="epsilon-plus", epsilon=0.5)
    by_options = onnxlrp.compile(
        residual_model(), options=CompileOptions(composite="epsilon-plus", epsilon=0.5)
    )
    overridden = onnxlrp.compile(
        residual_model(), options=CompileOptions(composite="epsilon-plus"), epsilon=0.5
    )
    assert by_keywords.SerializeToString() == by_options.SerializeToString() == overridden.SerializeToString()
    with pytest.raises(TypeError, match="epsilonn"):
        onnxlrp.compile(residual_model(), epsilonn=0.5)


def test_op_facts_live_on_the_registry():
    assert ops_with("pool") == {"MaxPool", "AveragePool", "GlobalMaxPool", "GlobalAveragePool"}
    assert ops_with("linear_map") == {"Conv", "ConvTranspose", "Gemm", "MatMul"}
    assert ops_with("nonnegative") == {"Relu", "Sigmoid", "HardSigmoid", "Softplus"}
    assert ops_with("gate") == {"Sigmoid", "HardSigmoid"}
    assert ops_with("shape_only") == {"Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity"}
    zero_at_zero = {"Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Tanh", "HardSwish", "Gelu", "Mish"}
    assert ops_with("zero_at_zero") == zero_at_zero | {"Dropout", "Identity"}
    assert ops_with("order_preserving") == {
        "MaxPool", "GlobalMaxPool", "AveragePool", "GlobalAveragePool", "Flatten", "Reshape", "Transpose",
        "Squeeze", "Unsqueeze", "Identity", "Dropout", "Concat", "Split", "Pad", "Add", "Sum", "Expand",
        "Gather",
    }  # fmt: skip
    assert ops_with("piecewise_linear") == {
        "Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "BatchNormalization",
        "Relu", "LeakyRelu", "PRelu", "MaxPool", "GlobalMaxPool", "AveragePool", "GlobalAveragePool",
        "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Concat",
        "Softmax", "LogSoftmax", "Constant", "Shape", "Gather", "Slice", "Cast", "Pad",
    }  # fmt: skip
    assert has_fact("MaxPool", "pool") and not has_fact("Relu", "pool") and not has_fact("Erf", "pool")
    with pytest.raises(ValueError, match="unknown op fact 'pooling'"):
        has_fact("MaxPool", "pooling")


def test_forward_output_is_the_one_change_to_a_forward_node():
    """MaxPool's Indices: reused when the model asks for them, added (a fresh name) when not."""
    from onnxlrp.builder import GraphBuilder

    graph = helper.make_graph([], "g", [], [])
    b = GraphBuilder(graph, {"x", "y", "i"})
    asked = helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2])
    assert b.forward_output(asked, 1, "maxpool_indices") == "i"
    assert list(asked.output) == ["y", "i"]
    bare = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2])
    name = b.forward_output(bare, 1, "maxpool_indices")
    assert list(bare.output) == ["y", name] and name not in {"x", "y", "i"}
    assert b.nodes == []  # no relevance node was written
