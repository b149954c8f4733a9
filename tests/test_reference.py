"""Checks of the independent reference (tests/reference.py) against facts that do not involve onnxlrp:
(a) its numpy forward of every op equals onnxruntime; (b) LRP-0 on bias-free ReLU nets equals
gradient x input from torch autograd, and the per-layer rules equal a torch-autograd formulation
of the same formulas; (c) conservation; (d) hand-computed tiny examples."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from tests import reference as ref
from tests.conftest import IR_VERSION, one_node_model, ort_run

# ---------------------------------------------------------------------------------------------
# (a) numpy forward == onnxruntime
# ---------------------------------------------------------------------------------------------

CONV_CASES = [
    # (x shape, W shape, attrs)
    ((2, 3, 7, 6), (4, 3, 3, 3), {}),
    ((2, 3, 7, 6), (4, 3, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((2, 3, 9, 8), (4, 3, 3, 2), {"strides": [2, 3], "pads": [1, 0, 2, 1]}),
    ((2, 3, 9, 9), (4, 3, 3, 3), {"dilations": [2, 1], "pads": [2, 1, 2, 1]}),
    ((2, 4, 8, 8), (6, 2, 3, 3), {"group": 2, "pads": [1, 1, 1, 1], "strides": [2, 2]}),
    ((2, 4, 8, 8), (8, 1, 3, 3), {"group": 4, "pads": [1, 1, 1, 1]}),  # depthwise, multiplier 2
    ((2, 4, 8, 8), (4, 1, 3, 3), {"group": 4, "strides": [2, 2], "dilations": [2, 2], "pads": [2, 2, 2, 2]}),
    ((2, 3, 7, 8), (4, 3, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ((2, 3, 7, 8), (4, 3, 4, 2), {"auto_pad": "SAME_LOWER", "strides": [2, 3]}),
    ((2, 3, 7, 8), (4, 3, 2, 2), {"auto_pad": "VALID", "strides": [2, 2]}),
    ((2, 3, 7, 8), (4, 3, 3, 3), {"auto_pad": "NOTSET", "pads": [0, 1, 1, 0]}),
    ((2, 3, 10), (4, 3, 3), {"strides": [2], "pads": [1, 1]}),  # 1-D
    ((2, 4, 8, 8), (4, 4, 1, 1), {}),
]


@pytest.mark.parametrize("xs,ws,attrs", CONV_CASES)
@pytest.mark.parametrize("bias", [False, True])
def test_conv_forward_matches_onnxruntime(rng, xs, ws, attrs, bias):
    x = rng.normal(size=xs).astype(np.float32)
    W = rng.normal(size=ws).astype(np.float32)
    inits = {"W": W}
    if bias:
        inits["B"] = rng.normal(size=ws[0]).astype(np.float32)
    m = one_node_model("Conv", xs, inits, kernel_shape=list(ws[2:]), **attrs)
    want = ort_run(m, x)[0]
    got = ref.conv_forward(x, W, inits.get("B"), **{k: v for k, v in attrs.items()})
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # the reference interpreter runs the same model
    np.testing.assert_allclose(ref.reference_forward(m, x)["y"], want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("transA,transB", [(0, 0), (0, 1), (1, 0), (1, 1)])
@pytest.mark.parametrize("c_shape", [None, (5,), (1, 5), (3, 5), (3, 1), ()])
def test_gemm_forward_matches_onnxruntime(rng, transA, transB, c_shape):
    A = rng.normal(size=(4, 3) if transA else (3, 4)).astype(np.float32)
    B = rng.normal(size=(5, 4) if transB else (4, 5)).astype(np.float32)
    inits = {"B": B}
    if c_shape is not None:
        inits["C"] = np.asarray(rng.normal(size=c_shape), dtype=np.float32)
    m = one_node_model("Gemm", A.shape, inits, alpha=0.7, beta=1.3, transA=transA, transB=transB)
    want = ort_run(m, A)[0]
    x, W, b = ref.gemm_operands(A, B, inits.get("C"), 0.7, 1.3, transA, transB)
    np.testing.assert_allclose(ref.dense_forward(x, W, b), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ref.reference_forward(m, A)["y"], want, rtol=1e-5, atol=1e-5)


def test_matmul_forward_matches_onnxruntime(rng):
    x = rng.normal(size=(2, 3, 4)).astype(np.float32)
    W = rng.normal(size=(4, 5)).astype(np.float32)
    m = one_node_model("MatMul", x.shape, {"W": W})
    np.testing.assert_allclose(ref.reference_forward(m, x)["y"], ort_run(m, x)[0], rtol=1e-5, atol=1e-5)


POOL_CASES = [
    # (x shape, kernel, strides, pads, ceil_mode, dilations)
    ((2, 3, 7, 6), [2, 2], [2, 2], [0, 0, 0, 0], 0, None),
    ((2, 3, 7, 6), [3, 3], [2, 2], [1, 1, 1, 1], 0, None),
    ((2, 3, 7, 6), [3, 3], [2, 2], [1, 1, 1, 1], 1, None),
    ((2, 3, 11, 11), [3, 3], [3, 3], [1, 1, 1, 1], 1, None),  # onnx shape inference gets this wrong
    ((2, 3, 8, 9), [3, 2], [1, 2], [1, 0, 2, 1], 1, None),
    ((2, 3, 9, 9), [3, 3], [1, 1], [0, 0, 0, 0], 0, None),  # overlapping windows
    ((2, 3, 9, 9), [2, 2], [2, 2], [1, 1, 1, 1], 1, [2, 2]),
    ((2, 3, 10), [3], [2], [1, 1], 1, None),
]


@pytest.mark.parametrize("xs,kernel,strides,pads,ceil,dil", POOL_CASES)
@pytest.mark.parametrize("count_include_pad", [0, 1])
def test_avgpool_forward_matches_onnxruntime(rng, xs, kernel, strides, pads, ceil, dil, count_include_pad):
    x = rng.normal(size=xs).astype(np.float32)
    attrs = dict(kernel_shape=kernel, strides=strides, pads=pads, ceil_mode=ceil)
    if dil:
        attrs["dilations"] = dil
    m = one_node_model("AveragePool", xs, count_include_pad=count_include_pad, opset=19, **attrs)
    want = ort_run(m, x)[0]
    got = ref.avgpool_forward(x, kernel, strides, pads, dil, count_include_pad, ceil)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("xs,kernel,strides,pads,ceil,dil", POOL_CASES)
def test_maxpool_forward_and_first_maximum_match_onnxruntime(rng, xs, kernel, strides, pads, ceil, dil):
    # small integers: many ties inside windows, so "first maximum" is really exercised
    x = rng.integers(0, 3, size=xs).astype(np.float32)
    attrs = dict(kernel_shape=kernel, strides=strides, pads=pads, ceil_mode=ceil)
    if dil:
        attrs["dilations"] = dil
    m = one_node_model("MaxPool", xs, n_outputs=2, **attrs)
    m.graph.output[1].type.tensor_type.elem_type = TensorProto.INT64
    want, idx = ort_run(m, x)
    got = ref.maxpool_forward(x, kernel, strides, pads, dil, ceil)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want)
    # onnxruntime's Indices (flat offsets over N*C*H*W) mark the first maximum of each window:
    # scattering R with them must equal the reference's winner-take-all
    R = rng.normal(size=want.shape)
    scattered = np.zeros(x.size)
    np.add.at(scattered, idx.ravel(), R.ravel())
    np.testing.assert_allclose(
        ref.maxpool_lrp(x, R, kernel, strides, pads, dil, ceil), scattered.reshape(x.shape), atol=1e-12
    )


def test_global_pools_forward_match_onnxruntime(rng):
    x = rng.normal(size=(2, 3, 5, 4)).astype(np.float32)
    m = one_node_model("GlobalAveragePool", x.shape)
    np.testing.assert_allclose(ref.global_avgpool_forward(x), ort_run(m, x)[0], rtol=1e-5, atol=1e-6)
    m = one_node_model("GlobalMaxPool", x.shape)
    np.testing.assert_allclose(ref.reference_forward(m, x)["y"], ort_run(m, x)[0])


def test_batchnorm_forward_matches_onnxruntime(rng):
    x = rng.normal(size=(2, 3, 4, 4)).astype(np.float32)
    p = {
        "scale": rng.normal(size=3).astype(np.float32),
        "bias": rng.normal(size=3).astype(np.float32),
        "mean": rng.normal(size=3).astype(np.float32),
        "var": rng.uniform(0.5, 2, size=3).astype(np.float32),
    }
    m = one_node_model("BatchNormalization", x.shape, p, epsilon=1e-3)
    want = ort_run(m, x)[0]
    np.testing.assert_allclose(ref.batchnorm_forward(x, *p.values(), 1e-3), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "op,attrs,inits",
    [
        ("Softmax", {}, {}),
        ("Softmax", {"axis": 1}, {}),
        ("LogSoftmax", {}, {}),
        ("Flatten", {"axis": 2}, {}),
        ("Transpose", {"perm": [0, 2, 3, 1]}, {}),
        ("Reshape", {}, {"shape": np.array([0, -1, 2], np.int64)}),
        ("Relu", {}, {}),
        ("LeakyRelu", {"alpha": 0.2}, {}),
        ("Add", {}, {"c": np.linspace(-1, 1, 4).astype(np.float32)}),
        ("Mul", {}, {"c": np.linspace(-1, 1, 4).astype(np.float32)}),
        ("Unsqueeze", {}, {"axes": np.array([1], np.int64)}),
        ("Squeeze", {}, {"axes": np.array([1], np.int64)}),
    ],
)
def test_other_ops_forward_match_onnxruntime(rng, op, attrs, inits):
    shape = (2, 1, 3, 4) if op == "Squeeze" else (2, 3, 2, 4)
    x = rng.normal(size=shape).astype(np.float32)
    m = one_node_model(op, x.shape, inits, **attrs)
    np.testing.assert_allclose(ref.reference_forward(m, x)["y"], ort_run(m, x)[0], rtol=1e-5, atol=1e-6)


def test_concat_forward_matches_onnxruntime(rng):
    x = rng.normal(size=(2, 3, 4)).astype(np.float32)
    m = one_node_model("Concat", x.shape, {"c": np.ones((2, 2, 4), np.float32)}, axis=1)
    np.testing.assert_allclose(ref.reference_forward(m, x)["y"], ort_run(m, x)[0])


# ---------------------------------------------------------------------------------------------
# torch helpers
# ---------------------------------------------------------------------------------------------


def export(net: torch.nn.Module, shape: tuple, n: int = 2) -> onnx.ModelProto:
    f = io.BytesIO()
    torch.onnx.export(
        net.eval(),
        (torch.zeros(n, *shape),),
        f,
        dynamo=False,
        opset_version=17,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
    )
    m = onnx.load_from_string(f.getvalue())
    m.ir_version = IR_VERSION
    return m


class ResNetLike(torch.nn.Module):
    """conv -> relu -> [conv -> relu] + skip -> concat with a 1x1 branch -> avg pool -> dense."""

    def __init__(self, bias: bool = False):
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 4, 3, padding=1, bias=bias)
        self.c2 = torch.nn.Conv2d(4, 4, 3, padding=1, bias=bias)
        self.c3 = torch.nn.Conv2d(4, 2, 1, bias=bias)
        self.pool = torch.nn.AvgPool2d(2)
        self.fc = torch.nn.Linear(6 * 4 * 4, 5, bias=bias)

    def forward(self, x):
        a = torch.relu(self.c1(x))
        b = torch.relu(self.c2(a)) + a
        c = torch.cat([b, torch.relu(self.c3(b))], dim=1)
        return self.fc(torch.flatten(self.pool(c), 1))


def plain_net(bias: bool = False) -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 5, 3, padding=1, bias=bias),
        torch.nn.ReLU(),
        torch.nn.AvgPool2d(2),
        torch.nn.Conv2d(5, 6, 3, stride=2, padding=1, bias=bias),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(6 * 2 * 2, 7, bias=bias),
        torch.nn.ReLU(),
        torch.nn.Linear(7, 4, bias=bias),
    )


# ---------------------------------------------------------------------------------------------
# (b) LRP-0 == gradient x input on bias-free ReLU nets
# ---------------------------------------------------------------------------------------------


def grad_times_input(net, x: np.ndarray, target: np.ndarray) -> np.ndarray:
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    out = net.double()(xt)
    out[torch.arange(len(x)), torch.as_tensor(target)].sum().backward()
    return (xt.grad * xt).detach().numpy()


@pytest.mark.parametrize("make,size", [(plain_net, 16), (ResNetLike, 8)], ids=["plain", "resnet-like"])
def test_lrp0_equals_gradient_times_input(make, size):
    torch.manual_seed(0)
    net = make()
    model = export(net, (3, size, size))
    x = np.random.default_rng(1).normal(size=(2, 3, size, size))
    for target in (None, np.array([1, 3])):
        res = ref.reference_lrp(model, x, ref.single_rule(("lrp0",)), target=target)
        want = grad_times_input(net, x, res["target"])
        np.testing.assert_allclose(res["relevance"], want, rtol=1e-7, atol=1e-10 * np.abs(want).max())
        np.testing.assert_allclose(res["output"], net.double()(torch.tensor(x)).detach().numpy(), rtol=1e-9)


def test_onehot_seed_and_softmax_skip_give_the_gradient():
    torch.manual_seed(0)
    net = torch.nn.Sequential(plain_net(), torch.nn.Softmax(dim=1))
    model = export(net, (3, 16, 16))
    assert model.graph.node[-1].op_type == "Softmax"
    x = np.random.default_rng(2).normal(size=(2, 3, 16, 16))
    res = ref.reference_lrp(model, x, ref.single_rule(("lrp0",)), target=np.array([2, -1]), seed="onehot")
    logits = net[0].double()(torch.tensor(x)).detach().numpy()
    np.testing.assert_allclose(res["logits"], logits, rtol=1e-9)
    assert res["target"][0] == 2 and res["target"][1] == logits[1].argmax()
    # a unit seed divides by the logit at the top layer: R_x = x * (d logit_t / dx) / logit_t
    want = grad_times_input(net[0], x, res["target"])
    want = want / logits[np.arange(2), res["target"]].reshape(2, 1, 1, 1)
    np.testing.assert_allclose(res["relevance"], want, rtol=1e-7, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# per-layer rules == the same formulas written with torch autograd (T_W = vector-Jacobian product)
# ---------------------------------------------------------------------------------------------


def _torch_T(f, A, xshape, s):
    """T_A(s): the transpose of the linear map x -> f(x, A) applied to s (via autograd)."""
    z = torch.zeros(xshape, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(f(z, A), z, s)
    return g


def torch_rule(rule, x, W, b, R, f, low=None, high=None):
    """The README's rule formulas, written with whole-layer maps f(x, W) instead of windows."""
    rule = ref.normalize_rule(rule)
    x, W, b, R = (torch.as_tensor(np.asarray(t, np.float64)) for t in (x, W, b, R))
    Wp, Wn = W.clamp(min=0), W.clamp(max=0)
    xp, xn = x.clamp(min=0), x.clamp(max=0)
    bp, bn = b.clamp(min=0), b.clamp(max=0)

    def F(v, A, bias=None):
        out = f(v, A)
        return out if bias is None else out + bias

    def T(s, A):
        return _torch_T(f, A, x.shape, s)

    def st(d, e=1e-6):
        return d + e * torch.where(d >= 0, 1.0, -1.0).double()

    one = torch.ones_like(x)
    if rule[0] == "epsilon":
        return (x * T(R / st(F(x, W, b), rule[1]), W)).numpy()
    if rule[0] == "alphabeta":
        a, be = rule[1], rule[2]
        sp = R / st(F(xp, Wp) + F(xn, Wn, bp))
        sn = R / st(F(xp, Wn) + F(xn, Wp, bn))
        return (a * (xp * T(sp, Wp) + xn * T(sp, Wn)) - be * (xp * T(sn, Wn) + xn * T(sn, Wp))).numpy()
    if rule[0] == "gamma":
        g = rule[1]
        z = F(x, W, b)
        Wgp, Wgn = W + g * Wp, W + g * Wn
        sp = torch.where(z > 0, R, 0.0) / st(F(xp, Wgp) + F(xn, Wgn, b + g * bp))
        sn = torch.where(z < 0, R, 0.0) / st(F(xp, Wgn) + F(xn, Wgp, b + g * bn))
        return (xp * T(sp, Wgp) + xn * T(sp, Wgn) + xp * T(sn, Wgn) + xn * T(sn, Wgp)).numpy()
    if rule[0] == "wsquare":
        return T(R / st(F(one, W * W, b * b)), W * W).numpy()
    if rule[0] == "flat":
        W1 = torch.ones_like(W)
        return T(R / st(F(one, W1)), W1).numpy()
    if rule[0] == "zbox":
        lo = torch.full_like(x, low)
        hi = torch.full_like(x, high)
        s = R / st(F(x, W) - F(lo, Wp) - F(hi, Wn))
        return (x * T(s, W) - lo * T(s, Wp) - hi * T(s, Wn)).numpy()
    raise AssertionError(rule)


RULES = [
    ("epsilon", 0.5),
    ("lrp0",),
    ("alphabeta", 2.0, 1.0),
    ("zplus",),
    ("gamma", 0.25),
    ("wsquare",),
    ("flat",),
    ("zbox", -1.5, 2.0),
]

TORCH_CONV_CASES = [
    ((2, 3, 7, 6), (4, 3, 3, 3), dict(padding=1)),
    ((2, 3, 9, 8), (4, 3, 3, 2), dict(stride=(2, 3), padding=(1, 0))),
    ((2, 3, 9, 9), (4, 3, 3, 3), dict(dilation=(2, 1), padding=(2, 1), stride=2)),
    ((2, 4, 8, 8), (6, 2, 3, 3), dict(groups=2, padding=1, stride=2)),
    ((2, 4, 8, 8), (8, 1, 3, 3), dict(groups=4, padding=1)),
]


def _onnx_conv_attrs(kw):
    def pair(v, d):
        v = kw.get(v, d)
        return list(v) if isinstance(v, tuple) else [v, v]

    p = pair("padding", 0)
    return dict(
        strides=pair("stride", 1), pads=p + p, dilations=pair("dilation", 1), group=kw.get("groups", 1)
    )


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r[0])
@pytest.mark.parametrize("case", range(len(TORCH_CONV_CASES)))
def test_conv_rules_match_torch_formulation(rng, rule, case):
    xs, ws, kw = TORCH_CONV_CASES[case]
    x = rng.normal(size=xs)
    W = rng.normal(size=ws)
    b = rng.normal(size=ws[0])
    attrs = _onnx_conv_attrs(kw)
    y = ref.conv_forward(x, W, b, **attrs)
    np.testing.assert_allclose(
        y,
        torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(W), torch.tensor(b), **kw).numpy(),
        rtol=1e-10,
        atol=1e-10,
    )
    R = rng.normal(size=y.shape)
    got = ref.conv_lrp(x, W, b, R, rule, **attrs)

    def f(v, A):
        return torch.nn.functional.conv2d(v, A, None, **kw)

    bb = np.asarray(b).reshape(-1, 1, 1)
    low, high = (rule[1], rule[2]) if rule[0] == "zbox" else (None, None)
    want = torch_rule(rule, x, W, bb, R, f, low, high)
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9 * np.abs(want).max())


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r[0])
@pytest.mark.parametrize("ceil,cip", [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_avgpool_rules_match_torch_formulation(rng, rule, ceil, cip):
    x = rng.normal(size=(2, 3, 8, 8))
    kw = dict(kernel_size=3, stride=2, padding=1, ceil_mode=bool(ceil), count_include_pad=bool(cip))
    y = ref.avgpool_forward(x, [3, 3], [2, 2], [1, 1, 1, 1], None, cip, ceil)
    np.testing.assert_allclose(y, torch.nn.functional.avg_pool2d(torch.tensor(x), **kw).numpy(), rtol=1e-12)
    R = rng.normal(size=y.shape)
    got = ref.avgpool_lrp(x, R, rule, [3, 3], [2, 2], [1, 1, 1, 1], None, cip, ceil)
    # avg pooling = sum pooling over the real taps times 1/divisor per output; torch gives the
    # divisor map as avg_pool(ones) / sum_pool(ones)
    ones = torch.ones(1, 1, 8, 8, dtype=torch.float64)
    inv_div = torch.nn.functional.avg_pool2d(ones, **kw) / torch.nn.functional.avg_pool2d(
        ones, **kw, divisor_override=1
    )

    def sum_pool(v, A):  # a depthwise conv with the scalar weight A on every tap
        k = A * torch.ones(3, 1, 3, 3, dtype=torch.float64)
        end = 2 if ceil else 1  # ceil_mode: the last window hangs over the end padding
        return torch.nn.functional.conv2d(torch.nn.functional.pad(v, (1, end, 1, end)), k, stride=2, groups=3)

    f = {
        "flat": sum_pool,  # flat: weight 1 per real tap
        "wsquare": lambda v, A: sum_pool(v, A) * inv_div**2,  # W^2 = 1/divisor^2 per tap
    }.get(rule[0], lambda v, A: sum_pool(v, A) * inv_div)
    low, high = (rule[1], rule[2]) if rule[0] == "zbox" else (None, None)
    want = torch_rule(rule, x, torch.tensor(1.0), np.zeros(1), R, f, low, high)
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9 * np.abs(want).max())


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r[0])
def test_dense_rules_match_torch_formulation(rng, rule):
    x = rng.normal(size=(3, 6))
    W = rng.normal(size=(6, 4))
    b = rng.normal(size=(3, 4))  # a per-row bias (Gemm's C broadcast)
    R = rng.normal(size=(3, 4))
    low, high = (rule[1], rule[2]) if rule[0] == "zbox" else (None, None)
    want = torch_rule(rule, x, W, b, R, lambda v, A: v @ A, low, high)
    np.testing.assert_allclose(ref.dense_lrp(x, W, b, R, rule), want, rtol=1e-8, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# (c) conservation on bias-free nets
# ---------------------------------------------------------------------------------------------


def _bias_free_bn_model(rng) -> onnx.ModelProto:
    """A graph built by hand: conv(pad) -> BN (no shift) -> relu -> maxpool(overlap) -> [conv -> relu]
    + skip (Add) -> concat with a 3x3 branch -> transpose/transpose -> global avgpool -> flatten
    -> MatMul -> relu -> Gemm(transB). No biases anywhere."""

    def init(name, arr):
        return numpy_helper.from_array(np.asarray(arr, np.float32), name)

    inits = [
        init("W1", rng.normal(size=(4, 3, 3, 3))),
        init("s", rng.uniform(0.5, 2, 4)),
        init("bz", np.zeros(4)),
        init("mz", np.zeros(4)),
        init("v", rng.uniform(0.5, 2, 4)),
        init("W2", rng.normal(size=(4, 4, 3, 3))),
        init("W3", rng.normal(size=(26, 4, 3, 3))),
        init("M", rng.normal(size=(30, 32))),
        init("G", rng.normal(size=(3, 32))),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "W1"], ["c1"], name="conv1", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("BatchNormalization", ["c1", "s", "bz", "mz", "v"], ["bn"], name="bn"),
        helper.make_node("Relu", ["bn"], ["a"], name="relu1"),
        helper.make_node("MaxPool", ["a"], ["p"], name="mp", kernel_shape=[3, 3], strides=[1, 1]),
        helper.make_node("Conv", ["p", "W2"], ["c2"], name="conv2", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Add", ["r2", "p"], ["res"], name="add"),
        helper.make_node("Conv", ["res", "W3"], ["c3"], name="conv3", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c3"], ["r3"], name="relu3"),
        helper.make_node("Concat", ["res", "r3"], ["cat"], name="cat", axis=1),
        helper.make_node("Transpose", ["cat"], ["t"], name="t1", perm=[0, 2, 3, 1]),
        helper.make_node("Transpose", ["t"], ["tt"], name="t2", perm=[0, 3, 1, 2]),
        helper.make_node("GlobalAveragePool", ["tt"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["f"], name="flat"),
        helper.make_node("MatMul", ["f", "M"], ["mm"], name="mm"),
        helper.make_node("Relu", ["mm"], ["r4"], name="relu4"),
        helper.make_node("Gemm", ["r4", "G"], ["y"], name="gemm", transB=1),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = IR_VERSION
    return m


CONSERVING = [("epsilon", 1e-9), ("alphabeta", 2.0, 1.0), ("zplus",), ("flat",), ("wsquare",), ("gamma", 0.5)]


@pytest.mark.parametrize("rule", CONSERVING, ids=lambda r: r[0])
def test_conservation_layer_by_layer(rng, rule):
    model = _bias_free_bn_model(rng)
    x = rng.normal(size=(2, 3, 8, 8))
    np.testing.assert_allclose(
        ref.reference_forward(model, x)["y"], ort_run(model, x)[0], rtol=1e-4, atol=1e-4
    )

    def rule_for_node(node, is_first):
        # flat and wsquare hand relevance to zero activations too: every layer gets them, so a
        # sum of two zeros (epsilon: 0/eps) cannot swallow it. Under the other rules pooling, BN
        # and sums get epsilon(1e-9): a layer whose outputs have one-signed contributions has no
        # negative share, and alpha-beta's beta part would be lost there (as in zennit).
        if rule[0] in ("flat", "wsquare") or node.op_type in ("Conv", "Gemm", "MatMul"):
            return rule
        return ("epsilon", 1e-9)

    res = ref.reference_lrp(model, x, rule_for_node, target=np.array([0, 2]))
    total = res["logits"][np.arange(2), [0, 2]]
    # every cut through the graph (c2/r2 and c3/r3 are branches: they carry only part of it)
    for t in ["x", "c1", "bn", "a", "p", "res", "cat", "t", "tt", "gap", "f", "mm", "r4"]:
        r = res[f"relevance:{t}"]
        assert r.shape == res["logits"].shape[:1] + r.shape[1:]
        got = r.reshape(2, -1).sum(1)
        np.testing.assert_allclose(got, total, rtol=1e-4, err_msg=f"{rule} at {t}")
    np.testing.assert_array_equal(res["relevance"], res["relevance:x"])


def test_conservation_zbox_first_layer(rng):
    model = _bias_free_bn_model(rng)
    x = rng.uniform(-1, 1, size=(2, 3, 8, 8))
    rules = ref.composite_rule_for_node("epsilon-gamma-box", epsilon=1e-9, low=-1.0, high=1.0)
    assert rules(model.graph.node[0], True) == ("zbox", -1.0, 1.0)
    res = ref.reference_lrp(model, x, rules)
    rc1 = res["relevance:c1"].reshape(2, -1).sum(1)
    np.testing.assert_allclose(res["relevance"].reshape(2, -1).sum(1), rc1, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# (d) hand-computed examples
# ---------------------------------------------------------------------------------------------

# x = [1, 2]; W = [[1, -1], [2, 1]] (inputs x rows, outputs columns): z = [5, 1]; R = [5, 1]
HX = np.array([[1.0, 2.0]])
HW = np.array([[1.0, -1.0], [2.0, 1.0]])
HR = np.array([[5.0, 1.0]])
HAND = [
    # eps=1: s = [5/6, 1/2]; R_0 = 1*(5/6 - 1/2) = 1/3; R_1 = 2*(2*5/6 + 1/2) = 13/3
    (("epsilon", 1.0), [1 / 3, 13 / 3]),
    (("lrp0",), [1 * (1 - 1), 2 * (2 + 1)]),
    # alphabeta(2,1): out 0 all positive: 2*[1, 4]; out 1: pos share (x1: 2) -> 2*1, neg share (x0: -1) -> -1
    (("alphabeta", 2.0, 1.0), [2 * 1 - 1, 2 * 4 + 2 * 1]),
    (("zplus",), [1, 4 + 1]),
    # gamma 0.5: out 0: weights 1.5, 3 -> 1.5/7.5*5 = 1, 6/7.5*5 = 4; out 1 (z > 0): -1 and 3 over 2
    (("gamma", 0.5), [1 - 0.5, 4 + 1.5]),
    # wsquare: W^2 = [[1, 1], [4, 1]]: out 0 -> 1/5*5, 4/5*5; out 1 -> 1/2, 1/2
    (("wsquare",), [1 + 0.5, 4 + 0.5]),
    (("flat",), [2.5 + 0.5, 2.5 + 0.5]),
    # zbox(-1, 2): out 0: [1+1, 4+2] / 8 * 5; out 1: [-1+2, 2+1] / 4 * 1
    (("zbox", -1.0, 2.0), [1.25 + 0.25, 3.75 + 0.75]),
]


@pytest.mark.parametrize("rule,want", HAND, ids=lambda v: v[0] if isinstance(v, tuple) else "")
def test_dense_2x2_by_hand(rule, want):
    got = ref.dense_lrp(HX, HW, np.zeros(2), HR, rule)
    np.testing.assert_allclose(got[0], want, rtol=1e-5)


def test_dense_bias_by_hand():
    b = np.array([1.0, 0.0])  # z = [6, 1]
    # epsilon(1): s = [5/7, 1/2]: R_0 = 5/7 - 1/2, R_1 = 2*(10/7 + 1/2)
    got = ref.dense_lrp(HX, HW, b, HR, ("epsilon", 1.0))
    np.testing.assert_allclose(got[0], [5 / 7 - 0.5, 2 * (10 / 7 + 0.5)])
    # wsquare with b^2 in the denominator: out 0 -> [1/6, 4/6] * 5
    got = ref.dense_lrp(HX, HW, b, HR, ("wsquare",))
    np.testing.assert_allclose(got[0], [5 / 6 + 0.5, 20 / 6 + 0.5], rtol=1e-5)
    # zbox: the bias cancels
    np.testing.assert_allclose(
        ref.dense_lrp(HX, HW, b, HR, ("zbox", -1.0, 2.0)), ref.dense_lrp(HX, HW, 0, HR, ("zbox", -1.0, 2.0))
    )
    # alphabeta: b+ joins the positive denominator: out 0 -> 2 * [1, 4] * 5/6 (no negative share)
    got = ref.dense_lrp(HX, HW, b, HR, ("alphabeta", 2.0, 1.0))
    np.testing.assert_allclose(got[0], [2 * 5 / 6 - 1, 2 * 20 / 6 + 2], rtol=1e-5)


def test_stabilizer_sign_of_zero():
    np.testing.assert_array_equal(ref.stab(np.array([0.0, 2.0, -2.0]), 0.5), [0.5, 2.5, -2.5])
    # z = 0 exactly: epsilon divides by +eps (never 0/0)
    got = ref.dense_lrp(
        np.array([[1.0, 1.0]]), np.array([[1.0], [-1.0]]), 0, np.array([[3.0]]), ("epsilon", 1.0)
    )
    np.testing.assert_allclose(got, [[3.0, -3.0]])


def test_maxpool_ties_and_overlap_by_hand():
    x = np.array([[[[1.0, 3.0, 3.0], [0.0, 3.0, 2.0]]]])  # 1x1x2x3, windows 2x2 stride 1
    R = np.array([[[[10.0, 20.0]]]])
    got = ref.maxpool_lrp(x, R, [2, 2], [1, 1])
    # window 0 cols 0-1: first max at (0,1); window 1 cols 1-2: first max at (0,1) too -> 30
    np.testing.assert_array_equal(got, [[[[0.0, 30.0, 0.0], [0.0, 0.0, 0.0]]]])
    # padding never wins, even over negative values
    got = ref.maxpool_lrp(-np.ones((1, 1, 2, 2)), np.ones((1, 1, 2, 2)), [2, 2], [1, 1], [1, 1, 0, 0])
    np.testing.assert_array_equal(got, [[[[4.0, 0.0], [0.0, 0.0]]]])


def test_avgpool_divisor_and_flat_by_hand():
    x = np.array([[[[2.0, 4.0, 6.0]]]])  # 1x1x1x3; kernel 1x2, stride 2, pad right 1
    kw = dict(kernel=[1, 2], strides=[1, 2], pads=[0, 0, 0, 1])
    # windows [2, 4] and [6, pad]: include pad -> 6/2 = 3; exclude -> 6/1 = 6
    np.testing.assert_allclose(ref.avgpool_forward(x, **kw, count_include_pad=1), [[[[3.0, 3.0]]]])
    np.testing.assert_allclose(ref.avgpool_forward(x, **kw, count_include_pad=0), [[[[3.0, 6.0]]]])
    R = np.array([[[[3.0, 3.0]]]])
    # lrp0: proportional to x within each window; the padded tap gets nothing
    got = ref.avgpool_lrp(x, R, ("lrp0",), **kw, count_include_pad=1)
    np.testing.assert_allclose(got, [[[[1.0, 2.0, 3.0]]]])
    # epsilon(1) with the divisor: window 2 has z = 6/2 = 3, s = 3/4, R = 6 * 1/2 * 3/4
    got = ref.avgpool_lrp(x, R, ("epsilon", 1.0), **kw, count_include_pad=1)
    np.testing.assert_allclose(got, [[[[2 * 0.5 * 0.75, 4 * 0.5 * 0.75, 6 * 0.5 * 0.75]]]])
    # flat: padded taps do not count: window 2 gives everything to its single real input
    got = ref.avgpool_lrp(x, R, ("flat",), **kw, count_include_pad=1)
    np.testing.assert_allclose(got, [[[[1.5, 1.5, 3.0]]]], rtol=1e-5)


def test_residual_add_and_batchnorm_by_hand():
    a, b = np.array([[1.0, -2.0]]), np.array([[3.0, 1.0]])
    R = np.array([[8.0, 4.0]])
    ra, rb = ref.sum_lrp([a, b], [1.0, 1.0], R, ("epsilon", 1.0))
    # element 0: a+b = 4 -> s = 8/5: 8/5, 24/5; element 1: a+b = -1 -> s = 4/-2
    np.testing.assert_allclose(ra, [[8 / 5, 4.0]])
    np.testing.assert_allclose(rb, [[24 / 5, -2.0]])
    # BN as y = a x + c: epsilon: R_x = a x R / stab(a x + c)
    x = np.array([[[[1.0]], [[2.0]]]])
    got = ref.elementwise_affine_lrp(
        x, np.array([2.0, -1.0]).reshape(2, 1, 1), 1.0, np.ones_like(x), ("epsilon", 1.0)
    )
    np.testing.assert_allclose(got.ravel(), [2 / 4, -2 / (-1 - 1)])


def test_conv_by_hand_with_padding():
    # 1 channel, 1x3 input, kernel 1x2 [1, 1], pad 1 left: windows (pad, x0), (x0, x1), (x1, x2)... stride 1
    x = np.array([[[[1.0, 2.0, 3.0]]]])
    W = np.array([[[[1.0, 1.0]]]])
    y = ref.conv_forward(x, W, None, pads=[0, 1, 0, 0])
    np.testing.assert_allclose(y, [[[[1.0, 3.0, 5.0]]]])
    R = np.array([[[[1.0, 3.0, 5.0]]]])
    got = ref.conv_lrp(x, W, None, R, ("lrp0",), pads=[0, 1, 0, 0])
    np.testing.assert_allclose(got, [[[[1 + 1, 2 + 2, 3]]]])
    # flat: output 0 sees only one real tap -> all of its relevance to x0
    got = ref.conv_lrp(x, W, None, R, ("flat",), pads=[0, 1, 0, 0])
    np.testing.assert_allclose(got, [[[[1 + 1.5, 1.5 + 2.5, 2.5]]]], rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# interpreter features
# ---------------------------------------------------------------------------------------------


def test_start_seed_fanout_and_matmul_bias(rng):
    # x -> MatMul(W) + b -> relu (h) -> two consumers -> Add -> y
    W = rng.normal(size=(4, 3)).astype(np.float32)
    b = rng.normal(size=3).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["mm"], name="mm"),
        helper.make_node("Add", ["mm", "b"], ["z"], name="bias"),
        helper.make_node("Relu", ["z"], ["h"], name="relu"),
        helper.make_node("Identity", ["h"], ["h1"], name="id"),
        helper.make_node("Add", ["h", "h1"], ["y"], name="sum"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.normal(size=(2, 4))
    seed = rng.normal(size=(2, 3))
    res = ref.reference_lrp(model, x, ref.single_rule(("epsilon", 0.1)), start="z", start_seed=seed)
    want = ref.dense_lrp(x, W, b, seed, ("epsilon", 0.1))
    np.testing.assert_allclose(res["relevance"], want)
    # full graph: the sum splits R = y*onehot by h's and h1's shares (1/2 each) and h sums both back
    res = ref.reference_lrp(model, x, lambda n, f: ("epsilon", 1e-12), target=np.array([0, 1]))
    y = res["logits"]
    r0 = np.zeros((2, 3))
    r0[0, 0], r0[1, 1] = y[0, 0], y[1, 1]
    np.testing.assert_allclose(res["relevance:h"], r0, rtol=1e-9)
    np.testing.assert_allclose(res["relevance:mm"], r0, rtol=1e-9)
    np.testing.assert_allclose(res["relevance"], ref.dense_lrp(x, W, b, r0, ("epsilon", 1e-12)))


def test_first_layer_detection_and_composites():
    torch.manual_seed(0)
    model = export(plain_net(bias=True), (3, 16, 16))
    seen = {}

    def spy(node, is_first):
        seen[node.name or node.output[0]] = (node.op_type, is_first)
        return ("epsilon", 1.0)

    ref.reference_lrp(model, np.zeros((2, 3, 16, 16)) + 0.1, spy)
    firsts = [v[0] for v in seen.values() if v[1]]
    assert firsts == ["Conv"]
    eps_plus = ref.composite_rule_for_node("epsilon-plus")
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    pool = next(n for n in model.graph.node if n.op_type == "AveragePool")
    assert eps_plus(conv, False) == ("zplus",)
    assert eps_plus(gemm, False) == ("epsilon", 1e-6)
    assert eps_plus(pool, False) == ("epsilon", 1e-6)
    assert ref.composite_rule_for_node("epsilon-plus", epsilon=0.01)(gemm, False) == ("epsilon", 0.01)
    assert ref.composite_rule_for_node("epsilon-plus-flat")(conv, True) == ("flat",)
    assert ref.composite_rule_for_node("epsilon-alpha2-beta1")(conv, False) == ("alphabeta", 2.0, 1.0)
    assert ref.composite_rule_for_node("epsilon-gamma-box", low=-2, high=3)(conv, True) == ("zbox", -2, 3)
    assert ref.composite_rule_for_node("epsilon-gamma-box")(conv, False) == ("gamma", 0.25)
    assert ref.composite_rule_for_node("epsilon")(pool, False) == ("epsilon", 1.0)
    assert ref.single_rule(("flat",))(pool, True) == ("flat",)


def test_fold_batchnorm_keeps_the_forward(rng):
    model = _bias_free_bn_model(rng)
    x = rng.normal(size=(2, 3, 8, 8))
    a = ref.reference_lrp(model, x, ref.single_rule(("epsilon", 0.01)))
    b = ref.reference_lrp(model, x, ref.single_rule(("epsilon", 0.01)), fold_batchnorm=True)
    np.testing.assert_allclose(a["logits"], b["logits"], rtol=1e-10)
    assert "relevance:c1" not in b  # the Conv now writes the BN's output directly
    np.testing.assert_allclose(a["relevance:bn"], b["relevance:bn"], rtol=1e-9)


@pytest.mark.parametrize("rule", [("epsilon", 1.0), ("alphabeta", 2.0, 1.0), ("zbox", -3.0, 3.0)])
def test_resnet_like_runs_all_rules_in_float64(rule):
    torch.manual_seed(1)
    net = ResNetLike(bias=True)
    model = export(net, (3, 8, 8))
    x = np.random.default_rng(3).normal(size=(2, 3, 8, 8))
    res = ref.reference_lrp(model, x, ref.single_rule(rule))
    assert res["relevance"].shape == x.shape and np.isfinite(res["relevance"]).all()
    assert res["relevance"].dtype == np.float64
    assert all(np.isfinite(v).all() for k, v in res.items() if k.startswith("relevance"))


def _graph_model(nodes, inits, x_shape, y_name="y"):
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info(y_name, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = IR_VERSION
    return m


def test_bias_add_after_conv_and_gemm_is_the_layer_bias(rng):
    W = rng.normal(size=(4, 3, 3, 3))
    c = rng.normal(size=(1, 4, 1, 1))
    G = rng.normal(size=(5, 4 * 6 * 6))
    d = rng.normal(size=(5,))
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["cv"], name="conv", kernel_shape=[3, 3]),
        helper.make_node("Add", ["c", "cv"], ["z"], name="bias"),
        helper.make_node("Relu", ["z"], ["a"], name="relu"),
        helper.make_node("Mul", ["a", "two"], ["m"], name="scale"),  # a constant scale: pass-through
        helper.make_node("Flatten", ["m"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "G"], ["g0"], name="gemm", transB=1),
        helper.make_node("Add", ["g0", "d"], ["y"], name="bias2"),
    ]
    inits = {"W": W, "c": c, "G": G, "d": d, "two": np.float32(2.0)}
    model = _graph_model(nodes, inits, (2, 3, 8, 8))
    x = rng.normal(size=(2, 3, 8, 8)).astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(
        ref.reference_forward(model, x)["y"], ort_run(model, x)[0], rtol=1e-4, atol=1e-4
    )
    rule = ("epsilon", 0.5)
    res = ref.reference_lrp(model, x, ref.single_rule(rule), target=np.array([1, 4]))
    vals = ref.reference_forward(model, x)
    R = res["relevance:y"]
    Rf = ref.dense_lrp(vals["f"], vals["G"].astype(np.float64).T, vals["d"], R, rule)
    np.testing.assert_allclose(res["relevance:f"], Rf, rtol=1e-10)
    np.testing.assert_allclose(res["relevance:a"], Rf.reshape(2, 4, 6, 6), rtol=1e-10)
    Rx = ref.conv_lrp(x, vals["W"], vals["c"].ravel(), res["relevance:z"], rule)
    np.testing.assert_allclose(res["relevance"], Rx, rtol=1e-10)
    np.testing.assert_array_equal(res["relevance:cv"], res["relevance:z"])


def test_gemm_transposed_activation(rng):
    A = rng.normal(size=(4, 2))  # transA: the batch is the second axis
    B = rng.normal(size=(4, 3))
    model = _graph_model([helper.make_node("Gemm", ["x", "B"], ["y"], name="g", transA=1)], {"B": B}, (4, 2))
    res = ref.reference_lrp(
        model, A, ref.single_rule(("epsilon", 0.1)), seed="onehot", target=np.array([0, 0])
    )
    # "batch" N is the first axis of the model input (4 here): the seed is built on the logits (2, 3)
    R = np.zeros((2, 3))
    R[:, 0] = 1.0
    want = ref.dense_lrp(A.T, B.astype(np.float32).astype(np.float64), 0, R, ("epsilon", 0.1))
    np.testing.assert_allclose(res["relevance"], want.T, rtol=1e-10)


CONVT_CASES = [
    # (x shape, W shape (C_in, C_out/G, k...), onnx attrs)
    ((2, 3, 4, 5), (3, 2, 3, 3), {}),
    ((2, 3, 4, 5), (3, 2, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 0]}),
    ((2, 4, 4, 4), (4, 3, 2, 3), {"strides": [2, 3], "dilations": [2, 1], "group": 2, "pads": [0, 1, 1, 0]}),
    ((2, 2, 5, 5), (2, 2, 3, 3), {"strides": [1, 1], "pads": [3, 3, 2, 2]}),  # pads > k-1: crop
]


@pytest.mark.parametrize("xs,ws,attrs", CONVT_CASES)
def test_conv_transpose_forward_matches_onnxruntime(rng, xs, ws, attrs):
    x = rng.normal(size=xs).astype(np.float32)
    W = rng.normal(size=ws).astype(np.float32)
    B = rng.normal(size=ws[1] * attrs.get("group", 1)).astype(np.float32)
    m = one_node_model("ConvTranspose", xs, {"W": W, "B": B}, kernel_shape=list(ws[2:]), **attrs)
    want = ort_run(m, x)[0]
    got = ref.reference_forward(m, x)["y"]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r[0])
@pytest.mark.parametrize("case", range(len(CONVT_CASES)))
def test_conv_transpose_rules_match_torch_formulation(rng, rule, case):
    xs, ws, attrs = CONVT_CASES[case]
    x = rng.normal(size=xs)
    W = rng.normal(size=ws)
    G = attrs.get("group", 1)
    b = rng.normal(size=ws[1] * G)
    kw = dict(
        stride=tuple(attrs.get("strides", [1, 1])), dilation=tuple(attrs.get("dilations", [1, 1])), groups=G
    )
    pads = attrs.get("pads", [0, 0, 0, 0])
    op = attrs.get("output_padding", [0, 0])

    def f(v, A):  # torch pads symmetrically: run unpadded, then crop ONNX's (possibly asymmetric) pads
        y = torch.nn.functional.conv_transpose2d(v, A, None, output_padding=tuple(op), **kw)
        return y[:, :, pads[0] : y.shape[2] - pads[2], pads[1] : y.shape[3] - pads[3]]

    y = ref.conv_transpose_forward(x, W, b, **attrs)
    np.testing.assert_allclose(
        y, f(torch.tensor(x), torch.tensor(W)).numpy() + b.reshape(-1, 1, 1), rtol=1e-10
    )
    R = rng.normal(size=y.shape)
    got = ref.conv_transpose_lrp(x, W, b, R, rule, **attrs)
    low, high = (rule[1], rule[2]) if rule[0] == "zbox" else (None, None)
    want = torch_rule(rule, x, W, b.reshape(-1, 1, 1), R, f, low, high)
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9 * np.abs(want).max())


@pytest.mark.parametrize("xs,ws,attrs", CONV_CASES)
def test_conv_lrp0_conserves_for_every_geometry(rng, xs, ws, attrs):
    # bias-free LRP-0: sum_i R_i = sum_j z_j R_j / z_j = sum_j R_j, whatever the pads/strides/groups
    x = rng.normal(size=xs)
    W = rng.normal(size=ws)
    y = ref.conv_forward(x, W, None, **attrs)
    R = rng.normal(size=y.shape) * y
    for rule in [("lrp0",), ("flat",), ("wsquare",)]:
        got = ref.conv_lrp(x, W, None, R, rule, **attrs)
        np.testing.assert_allclose(got.sum(), R.sum(), rtol=1e-6, err_msg=str(rule))
