"""InstanceNormalization and GroupNormalization: affine layers y = a * x + c whose per-sample statistics
are held constant (as BatchNormalization's running statistics are), against the numpy reference of
an element-wise affine layer with the statistics computed independently in float64."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import reference
from onnx import TensorProto, helper, numpy_helper

import onnxlrp
from onnxlrp import rules

RULES = [
    (rules.Epsilon(0.5), ("epsilon", 0.5)),
    (rules.LRP0(), ("lrp0",)),
    (rules.AlphaBeta(2.0, 1.0), ("alphabeta", 2.0, 1.0)),
    (rules.ZPlus(), ("zplus",)),
    (rules.Flat(), ("flat",)),
]


def _model(op: str, x_shape: tuple, inits: dict, opset: int, **attrs) -> onnx.ModelProto:
    node = helper.make_node(op, ["x", *inits], ["y"], name="norm", **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *x_shape[1:]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model


def _coefficients(x: np.ndarray, groups: int, scale: np.ndarray, bias: np.ndarray, epsilon: float):
    """a, c of y = a * x + c per sample and channel, statistics over each group of channels."""
    n, channels = x.shape[:2]
    grouped = x.astype(np.float64).reshape(n, groups, -1)
    mean = grouped.mean(-1)
    var = grouped.var(-1)
    per_channel = np.repeat(1.0 / np.sqrt(var + epsilon), channels // groups, axis=1)  # (n, C)
    mean_channel = np.repeat(mean, channels // groups, axis=1)
    spatial = (1,) * (x.ndim - 2)
    a = (scale.reshape(1, channels) * per_channel).reshape(n, channels, *spatial)
    c = (bias.reshape(1, channels) - a.reshape(n, channels) * mean_channel).reshape(n, channels, *spatial)
    return a, c


def _check(model, x, a, c):
    np.testing.assert_allclose(
        onnxlrp.RelevanceSession(onnxlrp.compile(model, rule="lrp0")).run(x)["y"],
        a * x + c,
        rtol=1e-4,
        atol=1e-5,
    )
    for rule, reference_rule in RULES:
        session = onnxlrp.RelevanceSession(onnxlrp.compile(model, rule=rule, start="y"))
        z = a * x + c
        seed = z * np.random.default_rng(1).uniform(0.5, 1.5, z.shape) * (np.abs(z) >= 0.1 * np.abs(z).max())
        got = session.run(x, relevance_seed=seed.astype(np.float32))["relevance"]
        want = np.concatenate(
            [
                reference.elementwise_affine_lrp(
                    x[i : i + 1], a[i : i + 1], c[i : i + 1], seed[i : i + 1], reference_rule
                )
                for i in range(len(x))
            ]
        )
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max(), reference_rule


def test_instance_normalization_is_an_affine_layer_with_per_sample_statistics():
    rng = np.random.default_rng(0)
    x = rng.normal(0.3, 1.0, (3, 4, 5, 6)).astype(np.float32)
    scale, bias = rng.uniform(0.5, 1.5, 4), rng.uniform(-0.5, 0.5, 4)
    model = _model("InstanceNormalization", x.shape, {"scale": scale, "B": bias}, 17, epsilon=1e-3)
    a, c = _coefficients(x, 4, scale, bias, 1e-3)
    _check(model, x, a, c)


@pytest.mark.parametrize("opset", [18, 21])
def test_group_normalization_is_an_affine_layer_with_per_sample_statistics(opset):
    """Opset 18 scales per group, opset 21 per channel."""
    rng = np.random.default_rng(0)
    x = rng.normal(-0.2, 1.0, (2, 6, 4, 5)).astype(np.float32)
    groups = 3
    size = groups if opset == 18 else 6
    scale, bias = rng.uniform(0.5, 1.5, size), rng.uniform(-0.5, 0.5, size)
    model = _model("GroupNormalization", x.shape, {"scale": scale, "bias": bias}, opset, num_groups=groups)
    per_channel = (np.repeat(scale, 2), np.repeat(bias, 2)) if opset == 18 else (scale, bias)
    a, c = _coefficients(x, groups, *per_channel, 1e-5)
    _check(model, x, a, c)
