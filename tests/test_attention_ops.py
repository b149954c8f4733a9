"""The transformer ops one at a time (LayerNormalization, an in-graph Softmax, products of two
activations, Where, Expand, Gather of one position), compiled under attnlrp/cp-lrp, against the
float64 primitives of attnlrp_reference.py (written from the formulas, not from the emitters)."""

from __future__ import annotations

import attnlrp_reference as ref
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxlrp

N, T, H = 3, 4, 6


def graph(nodes, inits, output_shape, opset: int = 17) -> onnx.ModelProto:
    """x [N, T, H] -> nodes -> "z" -> Flatten -> y [N, prod]."""
    nodes = [*nodes, helper.make_node("Flatten", ["z"], ["y"], name="flatten")]
    model = helper.make_model(
        helper.make_graph(
            nodes,
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", T, H])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", int(np.prod(output_shape))])],
            [numpy_helper.from_array(_stored(v), k) for k, v in inits.items()],
        ),
        opset_imports=[helper.make_opsetid("", opset)],
    )
    model.ir_version = 10
    return model


def _stored(value) -> np.ndarray:
    """float64 constants as float32; integer and boolean ones as they are."""
    value = np.asarray(value)
    return value.astype(np.float32) if value.dtype.kind == "f" else value


def compiled_relevance(model, x, composite="attnlrp"):
    out = onnxlrp.RelevanceSession(onnxlrp.compile(model, composite=composite)).run(x)
    return out["relevance"], out["y"]


def reference_relevance(x_var, z_var, target):
    flat = z_var.value.reshape(len(target), -1)
    seed = ref.seed_at(flat, target).reshape(z_var.value.shape)
    ref.propagate(z_var, seed)
    return x_var.relevance


def close(ours, theirs):
    assert np.linalg.norm(ours - theirs) <= 1e-5 * np.linalg.norm(theirs)


@pytest.fixture
def x(rng):
    return rng.standard_normal((N, T, H)).astype(np.float32)


def test_layer_norm(x, rng):
    w, b = 1 + 0.3 * rng.standard_normal(H), 0.2 * rng.standard_normal(H)
    node = helper.make_node("LayerNormalization", ["x", "w", "b"], ["z"], epsilon=1e-5, axis=-1)
    ours, y = compiled_relevance(graph([node], {"w": w, "b": b}, (T, H)), x)
    xv = ref.Var(x)
    close(ours, reference_relevance(xv, ref.layer_norm(xv, w, b, 1e-5), y.argmax(-1)))


def test_softmax_inside_the_graph(x):
    node = helper.make_node("Softmax", ["x"], ["z"], axis=-1)
    ours, y = compiled_relevance(graph([node], {}, (T, H)), x)
    xv = ref.Var(x)
    close(ours, reference_relevance(xv, ref.softmax(xv, cp=False), y.argmax(-1)))


def test_masked_softmax_logits_get_nothing(x):
    mask = np.where(np.arange(H) < 4, 0.0, -np.inf)
    nodes = [
        helper.make_node("Add", ["x", "mask"], ["s"]),
        helper.make_node("Softmax", ["s"], ["z"], axis=-1),
    ]
    ours, _ = compiled_relevance(graph(nodes, {"mask": mask}, (T, H)), x)
    assert np.all(np.isfinite(ours)) and np.all(ours[..., 4:] == 0) and np.any(ours[..., :4] != 0)


@pytest.mark.parametrize("composite", ["attnlrp", "cp-lrp"])
def test_attention_products(x, rng, composite):
    """softmax(x Wq (x Wk)^T) (x Wv): Q K^T and A V, both products of two activations."""
    wq, wk, wv = (rng.standard_normal((H, H)) / H**0.5 for _ in range(3))
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"]),
        helper.make_node("MatMul", ["x", "wk"], ["k"]),
        helper.make_node("MatMul", ["x", "wv"], ["v"]),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["a"], axis=-1),
        helper.make_node("MatMul", ["a", "v"], ["z"]),
    ]
    ours, y = compiled_relevance(graph(nodes, {"wq": wq, "wk": wk, "wv": wv}, (T, H)), x, composite)
    xv = ref.Var(x)
    cp = composite == "cp-lrp"
    q, k, v = (ref.linear(xv, w_, None) for w_ in (wq, wk, wv))
    z = ref.matmul(ref.softmax(ref.matmul(q, ref.transpose(k, (0, 2, 1))), cp), v)
    close(ours, reference_relevance(xv, z, y.argmax(-1)))


def test_gated_product_splits_evenly(x, rng):
    """(x W1) * (x W2), a gated unit without non-linearity: R/2 to each factor."""
    w1, w2 = (rng.standard_normal((H, H)) / H**0.5 for _ in range(2))
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["a"]),
        helper.make_node("MatMul", ["x", "w2"], ["c"]),
        helper.make_node("Mul", ["a", "c"], ["z"]),
    ]
    ours, y = compiled_relevance(graph(nodes, {"w1": w1, "w2": w2}, (T, H)), x)
    xv = ref.Var(x)
    a, c = ref.linear(xv, w1, None), ref.linear(xv, w2, None)
    product = ref.Var(a.value * c.value, (a, c), lambda r: [r / 2, r / 2])  # uniform rule, element-wise
    close(ours, reference_relevance(xv, product, y.argmax(-1)))


def test_where_expand_and_one_position(x):
    """Where keeps the selected values' relevance, Expand sums copies back, Gather puts one position
    back in place (the others get none)."""
    keep = (np.arange(H) % 2 == 0)[None, None, :].repeat(T, 1)
    nodes = [
        helper.make_node("Where", ["keep", "x", "zero"], ["kept"]),
        helper.make_node("Gather", ["kept", "last"], ["one"], axis=1),  # [N, H]
        helper.make_node("Unsqueeze", ["one", "axis1"], ["one3"]),
        helper.make_node("Expand", ["one3", "shape"], ["z"]),  # [N, 2, H]
    ]
    inits = {
        "keep": keep,
        "zero": np.float32(0),
        "last": np.array(-1, np.int64),
        "axis1": np.array([1], np.int64),
        "shape": np.array([1, 2, 1], np.int64),
    }
    ours, y = compiled_relevance(graph(nodes, inits, (2, H)), x)
    target = y.argmax(-1)
    expected = np.zeros_like(x)
    for i, k in enumerate(target):
        column = k % H
        expected[i, -1, column] = y[i, k] if keep[0, 0, column] else 0.0
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-7)


def test_sizes_that_follow_the_sequence_are_read_or_refused(rng):
    """With a symbolic sequence axis, an op whose emitter would bake the probe's length (a mean over
    the sequence, a Slice along it) is refused by name; one over fixed axes compiles and serves every
    length."""
    w = numpy_helper.from_array(rng.standard_normal((H, 3)).astype(np.float32), "w")

    def model(reduce_axis: int) -> onnx.ModelProto:
        nodes = [
            helper.make_node("ReduceMean", ["x", "axes"], ["m"], name="mean", keepdims=0),
            helper.make_node("MatMul", ["m" if reduce_axis == 1 else "mt", "w"], ["y"], name="fc"),
        ]
        if reduce_axis == 2:  # mean over hidden, then sum over the sequence by a second reduce
            nodes[0] = helper.make_node("ReduceMean", ["x", "axes"], ["m0"], name="mean", keepdims=1)
            nodes.insert(1, helper.make_node("ReduceSum", ["xs", "seq_axis"], ["mt"], keepdims=0))
            nodes.insert(1, helper.make_node("Mul", ["x", "m0"], ["xs"]))
        inits = [w, numpy_helper.from_array(np.array([reduce_axis], np.int64), "axes")]
        inits.append(numpy_helper.from_array(np.array([1], np.int64), "seq_axis"))
        m = helper.make_model(
            helper.make_graph(
                nodes,
                "g",
                [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "seq", H])],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                inits,
            ),
            opset_imports=[helper.make_opsetid("", 18)],
        )
        m.ir_version = 10
        return m

    with pytest.raises(onnxlrp.UnsupportedModelError, match=r"'mean' \(ReduceMean\).*symbolic"):
        onnxlrp.compile(model(1), composite="attnlrp")
    session = onnxlrp.RelevanceSession(onnxlrp.compile(model(2), composite="cp-lrp"))
    for length in (3, 11):
        out = session.run(rng.standard_normal((2, length, H)).astype(np.float32))
        assert out["relevance"].shape == (2, length, H)
        # bias-free, x * f(x) taking all: the relevance sums to the explained logit at every length
        np.testing.assert_allclose(out["relevance"].sum((1, 2)), out["y"].max(-1), rtol=1e-4)


def test_a_second_float_input_takes_its_share_an_integer_one_none(rng):
    """z = x W1 + y W2 + mask-derived offset: the float input y's branch takes its share of z (as in
    a sum of activations), the branch computed from the integer input (a mask) takes none."""
    w1, w2 = (rng.standard_normal((4, 3)).astype(np.float32) for _ in range(2))
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["a"]),
        helper.make_node("MatMul", ["y", "w2"], ["c"]),
        helper.make_node("Add", ["a", "c"], ["z"]),
        helper.make_node("Cast", ["m"], ["mf"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["z", "mf"], ["out"]),
    ]
    model = helper.make_model(
        helper.make_graph(
            nodes,
            "g",
            [
                helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
                helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4]),
                helper.make_tensor_value_info("m", TensorProto.INT64, ["N", 3]),
            ],
            [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3])],
            [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    model.ir_version = 10
    x, y = (rng.standard_normal((2, 4)).astype(np.float32) for _ in range(2))
    feed = {"x": x, "y": y, "m": np.zeros((2, 3), np.int64)}
    out = onnxlrp.RelevanceSession(onnxlrp.compile(model, rule="lrp0")).run(feed)
    k = out["out"].argmax(-1)
    own = (x @ w1)[np.arange(2), k]  # x's contribution to the explained output
    np.testing.assert_allclose(out["relevance"].sum(-1), own, rtol=1e-5)
