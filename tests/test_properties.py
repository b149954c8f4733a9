"""Property-based tests: random stacks of the supported operators, compiled and checked against
the numpy reference under a random rule, and conservation on bias-free stacks. Derandomized."""

from __future__ import annotations

import numpy as np
import onnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import onnxlrp
from tests import reference
from tests.test_ops import RULES, to_compile_rule

STACKS = settings(
    derandomize=True,
    database=None,
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@st.composite
def stacks(draw, bias=True):
    """A random CNN: [Conv|AvgPool|MaxPool|Relu|LeakyRelu]* -> Flatten -> Gemm -> (Relu -> Gemm)?"""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    channels, size = draw(st.integers(1, 3)), draw(st.integers(6, 12))
    shape = [channels, size, size]
    nodes, inits, tensor = [], {}, "x"
    for index in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["conv", "conv", "avgpool", "maxpool", "relu", "leaky"]))
        out = f"t{index}"
        c, h = shape[0], shape[1]
        if kind == "conv":
            k = draw(st.integers(1, min(3, h)))
            stride, pad = draw(st.integers(1, 2)), draw(st.integers(0, k - 1))
            c_out = draw(st.integers(1, 4))
            inits[f"w{index}"] = rng.normal(0, 0.7, (c_out, c, k, k))
            inputs = [tensor, f"w{index}"]
            if bias:
                inits[f"b{index}"] = rng.normal(0, 0.2, c_out)
                inputs.append(f"b{index}")
            nodes.append(
                helper.make_node("Conv", inputs, [out], pads=[pad] * 4, strides=[stride] * 2, name=out)
            )
            shape = [c_out, (h + 2 * pad - k) // stride + 1] * 1 + [(h + 2 * pad - k) // stride + 1]
        elif kind in ("avgpool", "maxpool"):
            if h < 2:
                continue
            k = draw(st.integers(2, min(3, h)))
            stride = draw(st.integers(1, k))
            op = "AveragePool" if kind == "avgpool" else "MaxPool"
            nodes.append(
                helper.make_node(op, [tensor], [out], kernel_shape=[k, k], strides=[stride] * 2, name=out)
            )
            shape = [c, (h - k) // stride + 1, (h - k) // stride + 1]
        else:
            op = "Relu" if kind == "relu" else "LeakyRelu"
            nodes.append(helper.make_node(op, [tensor], [out], name=out))
        tensor = out
    features = int(np.prod(shape))
    nodes.append(helper.make_node("Flatten", [tensor], ["flat"], name="flatten"))
    inits["fc"] = rng.normal(0, 0.5, (features, 6))
    gemm_inputs = ["flat", "fc"] + (["fcb"] if bias else [])
    if bias:
        inits["fcb"] = rng.normal(0, 0.2, 6)
    nodes.append(helper.make_node("Gemm", gemm_inputs, ["logits"], name="fc"))
    graph = helper.make_graph(
        nodes,
        "stack",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", channels, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 6])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    x = rng.uniform(-1, 1, (2, channels, size, size)).astype(np.float32)
    return model, x


@STACKS
@given(case=stacks(), rule=st.sampled_from(RULES))
def test_random_stack_matches_reference(case, rule):
    model, x = case
    onnx.checker.check_model(model)
    got = onnxlrp.RelevanceSession(onnxlrp.compile(model, rule=to_compile_rule(rule))).run(x)
    want = reference.reference_lrp(model, x.astype(np.float64), reference.single_rule(rule))
    np.testing.assert_allclose(got["logits"], want["logits"], rtol=1e-4, atol=1e-5)
    scale = np.abs(want["relevance"]).max()
    assert np.abs(got["relevance"] - want["relevance"]).max() <= 1e-5 * max(scale, 1e-12)


@STACKS
@given(
    case=stacks(bias=False),
    rule=st.sampled_from(
        [onnxlrp.rules.Epsilon(1e-9), onnxlrp.rules.Flat(1e-12), onnxlrp.rules.WSquare(1e-12)]
    ),
)
def test_bias_free_stacks_conserve_relevance(case, rule):
    """Without biases and with a vanishing stabiliser, every exposed layer's relevance sums to the
    seed. (z+ and alpha-beta are left out: a unit with no positive contribution is a dead end.)"""
    model, x = case
    out = onnxlrp.RelevanceSession(onnxlrp.compile(model, rule=rule, expose=["all"])).run(x)
    seed = out["logits"].max(1)
    for name in [n for n in out if n.startswith("relevance")]:
        total = out[name].reshape(len(x), -1).sum(1)
        np.testing.assert_allclose(total, seed, rtol=1e-3, atol=1e-5, err_msg=f"{rule} at {name}")
