"""Every operator x every rule on random small layers with random hyper-parameters, against the
independent numpy reference. Relevance is seeded at the op's output (start=), so each test checks
exactly one op's rule. Hypothesis runs derandomized: the same examples on every run."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import onnxlrp
from tests import reference

RULES = [
    ("epsilon", 0.5),
    ("lrp0",),
    ("alphabeta", 2.0, 1.0),
    ("alphabeta", 3.0, 2.0),
    ("zplus",),
    ("gamma", 0.25),
    ("wsquare",),
    ("flat",),
    ("zbox", -1.5, 1.5),
]
EXAMPLES = settings(
    derandomize=True,
    database=None,
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def to_compile_rule(rule: tuple) -> onnxlrp.rules.Rule:
    name, *params = rule
    return {
        "epsilon": lambda: onnxlrp.rules.Epsilon(*params),
        "lrp0": onnxlrp.rules.LRP0,
        "alphabeta": lambda: onnxlrp.rules.AlphaBeta(*params),
        "zplus": onnxlrp.rules.ZPlus,
        "gamma": lambda: onnxlrp.rules.Gamma(*params),
        "wsquare": onnxlrp.rules.WSquare,
        "flat": onnxlrp.rules.Flat,
        "zbox": lambda: onnxlrp.rules.ZBox(*params),
    }[name]()


def model_of(nodes, x_shape, inits, opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "op",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *x_shape[1:]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    return model


def check_against_reference(
    model: onnx.ModelProto, x: np.ndarray, rule: tuple, seed: int, runtime: str = "portable"
) -> None:
    compiled = onnxlrp.compile(model, rule=to_compile_rule(rule), start="y", runtime=runtime)
    session = onnxlrp.RelevanceSession(compiled)
    z = reference.reference_forward(model, x.astype(np.float64))["y"]
    # relevance shaped like real relevance (R_j proportional to z_j), and none on outputs with
    # |z_j| < 10% of the largest: there LRP-0's R_j / z_j is ill-conditioned, and float32 rounding of
    # z_j alone (the reference computes in float64) would exceed the tolerance
    weights = np.random.default_rng(seed).uniform(0.5, 1.5, z.shape) * (np.abs(z) >= 0.1 * np.abs(z).max())
    relevance_seed = (z * weights).astype(np.float32)
    got = session.run(x, relevance_seed=relevance_seed)["relevance"]
    want = reference.reference_lrp(
        model, x.astype(np.float64), reference.single_rule(rule), start="y", start_seed=relevance_seed
    )["relevance"]
    scale = max(np.abs(want).max(), 1e-12)
    error = np.abs(got - want).max()
    assert error <= 1e-5 * scale, f"{rule}: max error {error:.3g}, scale {scale:.3g}"


rules = st.sampled_from(RULES)


@st.composite
def conv_case(draw):
    rank = draw(st.sampled_from([1, 2, 2, 2]))
    group = draw(st.sampled_from([1, 1, 2, 3]))
    depthwise = draw(st.booleans()) and group > 1
    c_in = group if depthwise else group * draw(st.integers(1, 2))
    c_out = group * draw(st.integers(1, 2))
    kernel = [draw(st.integers(1, 3)) for _ in range(rank)]
    strides = [draw(st.integers(1, 3)) for _ in range(rank)]
    dilations = [draw(st.integers(1, 2)) for _ in range(rank)]
    size = [draw(st.integers(k * d + 1, 9)) for k, d in zip(kernel, dilations, strict=True)]
    auto_pad = draw(st.sampled_from(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    attrs = {"strides": strides, "dilations": dilations, "group": group}
    if auto_pad == "NOTSET":
        attrs["pads"] = [draw(st.integers(0, k - 1)) for k in kernel for _ in range(1)] * 2
    else:
        attrs["auto_pad"] = auto_pad
        attrs["dilations"] = [1] * rank  # SAME_* with dilation is not defined consistently by runtimes
    bias = draw(st.booleans())
    return rank, c_in, c_out, kernel, size, attrs, bias, draw(st.integers(0, 2**16))


@EXAMPLES
@given(case=conv_case(), rule=rules)
def test_conv(case, rule):
    _, c_in, c_out, kernel, size, attrs, bias, seed = case
    rng = np.random.default_rng(seed)
    inits = {"w": rng.standard_normal((c_out, c_in // attrs["group"], *kernel))}
    inputs = ["x", "w"]
    if bias:
        inits["b"] = rng.standard_normal(c_out)
        inputs.append("b")
    model = model_of([helper.make_node("Conv", inputs, ["y"], name="conv", **attrs)], (2, c_in, *size), inits)
    x = rng.uniform(-1, 1, (2, c_in, *size)).astype(np.float32)
    check_against_reference(model, x, rule, seed)


@EXAMPLES
@given(
    trans_a=st.booleans(),
    trans_b=st.booleans(),
    alpha=st.sampled_from([1.0, 0.5, 2.0]),
    beta=st.sampled_from([1.0, 0.3]),
    bias=st.sampled_from(["none", "vector", "row"]),
    k=st.integers(1, 6),
    n=st.integers(1, 5),
    rule=rules,
    seed=st.integers(0, 2**16),
)
def test_gemm(trans_a, trans_b, alpha, beta, bias, k, n, rule, seed):
    rng = np.random.default_rng(seed)
    batch = 3
    w = rng.standard_normal((n, k) if trans_b else (k, n))
    inits, inputs = {"w": w}, ["xt" if trans_a else "x", "w"]
    nodes = []
    if trans_a:  # the activation arrives transposed: Gemm reads x^T
        nodes.append(helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0], name="t"))
    if bias != "none":
        inits["c"] = rng.standard_normal((n,) if bias == "vector" else (1, n))
        inputs.append("c")
    nodes.append(
        helper.make_node(
            "Gemm",
            inputs,
            ["y"],
            name="gemm",
            alpha=alpha,
            beta=beta,
            transA=int(trans_a),
            transB=int(trans_b),
        )
    )
    x = rng.uniform(-1, 1, (batch, k)).astype(np.float32)
    check_against_reference(model_of(nodes, (batch, k), inits), x, rule, seed)


@EXAMPLES
@given(k=st.integers(1, 6), n=st.integers(1, 5), bias=st.booleans(), rule=rules, seed=st.integers(0, 2**16))
def test_matmul_with_bias_add(k, n, bias, rule, seed):
    rng = np.random.default_rng(seed)
    inits = {"w": rng.standard_normal((k, n))}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["z" if bias else "y"], name="matmul")]
    if bias:
        inits["b"] = rng.standard_normal(n)
        nodes.append(helper.make_node("Add", ["z", "b"], ["y"], name="bias_add"))
    x = rng.uniform(-1, 1, (3, k)).astype(np.float32)
    check_against_reference(model_of(nodes, (3, k), inits), x, rule, seed)


@st.composite
def pool_case(draw):
    kernel = [draw(st.integers(1, 3)) for _ in range(2)]
    strides = [draw(st.integers(1, 3)) for _ in range(2)]
    pads = [draw(st.integers(0, k - 1)) for k in kernel] * 2
    size = [draw(st.integers(k + 1, 9)) for k in kernel]
    ceil_mode = draw(st.integers(0, 1))
    return kernel, strides, pads, size, ceil_mode, draw(st.integers(0, 2**16))


def pool_node(op_type: str, kernel, strides, pads, ceil_mode, **extra) -> onnx.NodeProto:
    return helper.make_node(
        op_type,
        ["x"],
        ["y"],
        name="pool",
        kernel_shape=kernel,
        strides=strides,
        pads=pads,
        ceil_mode=ceil_mode,
        **extra,
    )


@EXAMPLES
@given(case=pool_case(), count_include_pad=st.integers(0, 1), rule=rules)
def test_average_pool(case, count_include_pad, rule):
    kernel, strides, pads, size, ceil_mode, seed = case
    node = pool_node("AveragePool", kernel, strides, pads, ceil_mode, count_include_pad=count_include_pad)
    x = np.random.default_rng(seed).uniform(-1, 1, (2, 3, *size)).astype(np.float32)
    check_against_reference(model_of([node], x.shape, {}), x, rule, seed)


@EXAMPLES
@given(case=pool_case(), dilation=st.integers(1, 2))
def test_max_pool(case, dilation):
    kernel, strides, pads, size, ceil_mode, seed = case
    size = [s + (k - 1) * (dilation - 1) for s, k in zip(size, kernel, strict=True)]
    node = pool_node("MaxPool", kernel, strides, pads, ceil_mode, dilations=[dilation] * 2)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (2, 3, *size)).astype(np.float32)
    x[0, 0, :2, :2] = 0.5  # ties: all relevance goes to the first maximum
    check_against_reference(model_of([node], x.shape, {}), x, ("lrp0",), seed)


@pytest.mark.parametrize(
    "kernel, pads, ceil_mode, count_include_pad",
    [
        ([2, 2], [0, 0, 0, 0], 0, 0),  # 9x7: the last row and column are in no window
        ([3, 2], [1, 0, 2, 1], 0, 1),
        ([2, 3], [1, 1, 0, 1], 1, 0),  # ceil mode: the last windows reach past x
    ],
)
def test_average_pool_tiling_windows(kernel, pads, ceil_mode, count_include_pad):
    """Windows that tile the input (stride == kernel) spread relevance back with a Resize."""
    node = pool_node("AveragePool", kernel, kernel, pads, ceil_mode, count_include_pad=count_include_pad)
    x = np.random.default_rng(3).uniform(-1, 1, (2, 3, 9, 7)).astype(np.float32)
    model = model_of([node], x.shape, {})
    assert "Resize" in {n.op_type for n in onnxlrp.compile(model, rule="epsilon", start="y").graph.node}
    for rule in (("epsilon", 0.1), ("alphabeta", 2.0, 1.0), ("flat",)):
        check_against_reference(model, x, rule, 3)


@pytest.mark.parametrize("op_type, routing", [("AveragePool", "Resize"), ("MaxPool", "ArgMax")])
@pytest.mark.parametrize("shape, kernel", [((2, 3, 9), [2]), ((2, 3, 7, 6, 5), [3, 2, 1])])
def test_tiling_pools_in_1d_and_3d(op_type, routing, shape, kernel):
    node = pool_node(op_type, kernel, kernel, [0] * 2 * len(kernel), 0)
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    model = model_of([node], x.shape, {})
    assert routing in {n.op_type for n in onnxlrp.compile(model, rule="epsilon", start="y").graph.node}
    check_against_reference(model, x, ("epsilon", 0.1), 0)


@pytest.mark.parametrize(
    "op_type, kernel, strides, pads, size, extra",
    [
        # ceil_mode adds no window in onnxruntime, onnx's shape inference counts one
        ("AveragePool", [1, 1], [1, 2], [0, 0, 0, 0], [2, 2], {"count_include_pad": 1}),
        # ceil_mode adds a window; growing the end pad instead would break onnxruntime's pad < kernel
        ("MaxPool", [1, 3], [1, 2], [0, 2, 0, 2], [2, 6], {"dilations": [2, 2]}),
    ],
)
def test_ceil_mode_pool_regressions(op_type, kernel, strides, pads, size, extra):
    node = pool_node(op_type, kernel, strides, pads, 1, **extra)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, *size)).astype(np.float32)
    check_against_reference(model_of([node], x.shape, {}), x, ("epsilon", 0.5), 0)


# operators the portable graph avoids (onnxruntime only: OpenVINO, WebGPU and onnx's reference
# evaluator lack them or get them wrong)
ONNXRUNTIME_ONLY = {"MaxUnpool", "ScatterElements"}


def _routing(model: onnx.ModelProto, runtime: str) -> set[str]:
    compiled = onnxlrp.compile(model, rule="lrp0", start="y", runtime=runtime)
    ops = {n.op_type for n in compiled.graph.node}
    if runtime == "portable":
        assert not ops & ONNXRUNTIME_ONLY
        assert all(len(n.output) == 1 for n in compiled.graph.node if n.op_type == "MaxPool")  # no Indices
    return ops


@pytest.mark.parametrize("runtime", ["portable", "onnxruntime"])
@pytest.mark.parametrize(
    "kernel, strides, pads, ceil_mode, routing",
    [
        ([2, 2], [2, 2], [0, 0, 0, 0], 0, ("Transpose", "MaxUnpool")),
        ([2, 2], [2, 2], [1, 0, 1, 1], 1, ("Transpose", "MaxUnpool")),  # padded square tiles, ceil mode
        ([3, 3], [3, 3], [1, 1, 2, 2], 1, ("Transpose", "MaxUnpool")),
        (
            [2, 3],
            [3, 3],
            [1, 0, 0, 2],
            1,
            ("Concat", "MaxUnpool"),
        ),  # padded, ceil mode, stride > kernel
        ([3, 1], [3, 2], [0, 0, 0, 0], 1, ("Concat", "MaxUnpool")),
        (
            [3, 3],
            [2, 2],
            [1, 1, 1, 1],
            0,
            ("Concat", "ScatterElements"),
        ),  # overlapping (ResNet's stem)
    ],
)
def test_max_pool_routing(kernel, strides, pads, ceil_mode, routing, runtime):
    """Portable graphs stack each window's taps on the last axis (Reshape/Transpose for tiles, a
    Concat of Slices otherwise) and take ArgMax's first maximum; runtime="onnxruntime" routes
    MaxPool's Indices with MaxUnpool (disjoint windows) or ScatterElements (overlapping). All give
    the reference's winner-take-all, ties to the first maximum."""
    node = pool_node("MaxPool", kernel, strides, pads, ceil_mode)
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, (2, 3, 8, 7)).astype(np.float32)
    x[:, :, :4, :4] = 0.5  # ties in whole windows
    model = model_of([node], x.shape, {})
    assert routing[runtime == "onnxruntime"] in _routing(model, runtime)
    check_against_reference(model, x, ("lrp0",), 7, runtime)


@pytest.mark.parametrize("runtime", ["portable", "onnxruntime"])
@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
def test_max_pool_routing_with_auto_pad(auto_pad, runtime):
    node = helper.make_node(
        "MaxPool", ["x"], ["y"], name="pool", kernel_shape=[2, 3], strides=[2, 3], auto_pad=auto_pad
    )
    x = np.random.default_rng(1).uniform(-1, 1, (2, 3, 7, 8)).astype(np.float32)
    x[:, :, :4, :4] = 0.5
    model = model_of([node], x.shape, {})
    assert ("Transpose" if runtime == "portable" else "MaxUnpool") in _routing(model, runtime)
    check_against_reference(model, x, ("lrp0",), 1, runtime)


def test_unknown_runtime_is_refused():
    node = pool_node("MaxPool", [2, 2], [2, 2], [0, 0, 0, 0], 0)
    with pytest.raises(ValueError, match="runtime must be one of portable, onnxruntime"):
        onnxlrp.compile(model_of([node], (1, 1, 4, 4), {}), rule="lrp0", runtime="tensorrt")


@settings(derandomize=True, database=None, max_examples=10, deadline=None)
@given(rule=rules, seed=st.integers(0, 2**16))
def test_global_average_pool(rule, seed):
    x = np.random.default_rng(seed).uniform(-1, 1, (2, 3, 4, 5)).astype(np.float32)
    node = helper.make_node("GlobalAveragePool", ["x"], ["y"], name="gap")
    check_against_reference(model_of([node], x.shape, {}), x, rule, seed)


def test_global_max_pool_ties_go_to_first():
    x = np.zeros((1, 2, 3, 3), np.float32)
    x[0, 0, 1, 1] = x[0, 0, 2, 2] = 1.0
    x[0, 1] = np.arange(9).reshape(3, 3)
    node = helper.make_node("GlobalMaxPool", ["x"], ["y"], name="gmp")
    model = model_of([node], x.shape, {})
    assert "ScatterElements" not in _routing(model, "portable")
    check_against_reference(model, x, ("lrp0",), 0)


@pytest.mark.parametrize("group", [1, 2])
def test_conv_transpose_written_as_conv(monkeypatch, group):
    """The Conv form of a stride-1 transpose (used for wide layers) against the reference."""
    from onnxlrp.ops import linear

    monkeypatch.setattr(linear, "MIN_CHANNELS_FOR_CONV_TRANSPOSE", 1)
    rng = np.random.default_rng(group)
    for pads, dilations in (([1, 1, 1, 1], [1, 1]), ([0, 2, 1, 0], [2, 1])):
        node = helper.make_node(
            "Conv", ["x", "w", "b"], ["y"], name="conv", pads=pads, dilations=dilations, group=group
        )
        inits = {"w": rng.standard_normal((4, 4 // group, 3, 3)), "b": rng.standard_normal(4)}
        x = rng.uniform(-1, 1, (2, 4, 7, 8)).astype(np.float32)
        for rule in (("epsilon", 0.5), ("alphabeta", 2.0, 1.0), ("flat",)):
            check_against_reference(model_of([node], x.shape, inits), x, rule, 0)


@st.composite
def reduce_case(draw):
    rank = draw(st.integers(2, 4))
    shape = [2, *[draw(st.integers(1, 4)) for _ in range(rank - 1)]]
    axes = draw(st.lists(st.integers(1, rank - 1), min_size=1, max_size=rank - 1, unique=True))
    negative = draw(st.booleans())
    axes = [a - rank if negative else a for a in axes]
    return shape, axes, draw(st.integers(0, 1)), draw(st.sampled_from([17, 18])), draw(st.integers(0, 2**16))


@EXAMPLES
@given(case=reduce_case(), op_type=st.sampled_from(["ReduceMean", "ReduceSum", "ReduceMax"]), rule=rules)
def test_reductions(case, op_type, rule):
    """ReduceMean/ReduceSum are linear layers, ReduceMax winner-take-all, over any non-batch axes,
    with and without keepdims, axes as an attribute (opset 17) or an input (opset 18; ReduceSum: 13)."""
    shape, axes, keepdims, opset, seed = case
    nodes = []
    if op_type == "ReduceSum" or opset >= 18:
        nodes.append(
            helper.make_node("Constant", [], ["axes"], value=numpy_helper.from_array(np.array(axes)))
        )
        nodes.append(helper.make_node(op_type, ["x", "axes"], ["y"], name="reduce", keepdims=keepdims))
    else:
        nodes.append(helper.make_node(op_type, ["x"], ["y"], name="reduce", axes=axes, keepdims=keepdims))
    x = np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)
    x.reshape(-1)[:3] = 0.5  # ties for ReduceMax
    check_against_reference(model_of(nodes, x.shape, {}, opset), x, rule, seed)


def test_reduction_over_the_batch_is_refused():
    node = helper.make_node("ReduceMean", ["x"], ["y"], name="batch_mean", axes=[0, 1], keepdims=1)
    with pytest.raises(onnxlrp.UnsupportedModelError, match=r"batch_mean.*batch axis"):
        onnxlrp.compile(model_of([node], (2, 3), {}), start="y")


@pytest.mark.parametrize(
    "kernel, strides, pads, ceil_mode, dilation",
    [
        ([3, 3], [2, 2], [1, 1, 1, 1], 0, 1),  # ResNet's stem: overlapping
        ([3, 3], [2, 2], [1, 0, 1, 2], 1, 1),
        ([2, 3], [1, 2], [0, 1, 0, 1], 0, 2),  # dilated, stride 1 on one axis
        ([2, 2], [3, 3], [0, 0, 1, 1], 1, 1),  # gaps between windows: a phase no tap lands in
        ([3, 2], [3, 2], [1, 0, 1, 1], 0, 1),  # tiles
    ],
)
def test_portable_max_pool_routing_in_onnx_reference_evaluator(kernel, strides, pads, ceil_mode, dilation):
    """The portable routing runs in onnx's ReferenceEvaluator (its own operator implementations) and
    agrees there with onnxruntime, ties included (test_max_pool_routing checks onnxruntime against
    the reference)."""
    from onnx.reference import ReferenceEvaluator

    node = pool_node("MaxPool", kernel, strides, pads, ceil_mode, dilations=[dilation] * 2)
    x = np.random.default_rng(5).uniform(-1, 1, (2, 3, 9, 8)).astype(np.float32)
    x[:, :, :5, :5] = 0.5  # ties
    compiled = onnxlrp.compile(model_of([node], x.shape, {}), rule="lrp0", start="y")
    dims = next(i for i in compiled.graph.input if i.name == "relevance_seed").type.tensor_type.shape.dim
    pooled = [2, *[d.dim_value for d in dims[1:]]]
    relevance_seed = np.random.default_rng(6).uniform(0.5, 1.5, pooled).astype(np.float32)
    want = onnxlrp.RelevanceSession(compiled).run(x, relevance_seed=relevance_seed)["relevance"]
    got = ReferenceEvaluator(compiled).run(["relevance"], {"x": x, "relevance_seed": relevance_seed})[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * np.abs(want).max())
