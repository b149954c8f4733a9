"""InstanceNormalization and GroupNormalization: affine layers y = a * x + c whose per-sample statistics
are held constant (as BatchNormalization's running statistics are), against the numpy reference of
an element-wise affine layer with the statistics computed independently in float64."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import reference
import torch
from linearised import gradient_x_input
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import onnxlrp
from onnxlrp import rules
from onnxlrp.errors import OnnxLrpError

RULES = [
    (rules.Epsilon(0.5), ("epsilon", 0.5)),
    (rules.LRP0(), ("lrp0",)),
    (rules.AlphaBeta(2.0, 1.0), ("alphabeta", 2.0, 1.0)),
    (rules.ZPlus(), ("zplus",)),
    (rules.Flat(), ("flat",)),
    (rules.Gamma(0.25), ("gamma", 0.25)),
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
    z = a * x + c
    for rule, reference_rule in RULES:
        session = onnxlrp.RelevanceSession(onnxlrp.compile(model, rule=rule, start="y"))
        seed = z * np.random.default_rng(1).uniform(0.5, 1.5, z.shape) * (np.abs(z) >= 0.1 * np.abs(z).max())
        out = session.run(x, relevance_seed=seed.astype(np.float32))
        np.testing.assert_allclose(out["y"], z, rtol=1e-4, atol=1e-5)  # the statistics are the layer's
        want = np.concatenate(
            [
                reference.elementwise_affine_lrp(
                    x[i : i + 1], a[i : i + 1], c[i : i + 1], seed[i : i + 1], reference_rule
                )
                for i in range(len(x))
            ]
        )
        assert np.abs(out["relevance"] - want).max() <= 1e-5 * np.abs(want).max(), reference_rule


def test_instance_normalization_is_an_affine_layer_with_per_sample_statistics():
    rng = np.random.default_rng(0)
    x = rng.normal(0.3, 1.0, (3, 4, 5, 6)).astype(np.float32)
    scale, bias = rng.uniform(0.5, 1.5, 4), rng.uniform(-0.5, 0.5, 4)
    model = _model("InstanceNormalization", x.shape, {"scale": scale, "B": bias}, 17, epsilon=1e-3)
    a, c = _coefficients(x, 4, scale, bias, 1e-3)
    _check(model, x, a, c)


def test_group_normalization_is_an_affine_layer_with_per_sample_statistics():
    """Opset 21's GroupNormalization, scale and bias per channel (onnx's checker rejects opset 18's)."""
    rng = np.random.default_rng(0)
    x = rng.normal(-0.2, 1.0, (2, 6, 4, 5)).astype(np.float32)
    scale, bias = rng.uniform(0.5, 1.5, 6), rng.uniform(-0.5, 0.5, 6)
    model = _model("GroupNormalization", x.shape, {"scale": scale, "bias": bias}, 21, num_groups=3)
    a, c = _coefficients(x, 3, scale, bias, 1e-5)
    _check(model, x, a, c)


def test_wsquare_is_refused_on_per_sample_weights():
    x_shape = (1, 4, 3, 3)
    inits = {"scale": np.ones(4), "B": np.zeros(4)}
    model = _model("InstanceNormalization", x_shape, inits, 17)
    with pytest.raises(OnnxLrpError, match="w\\^2"):
        onnxlrp.compile(model, rule="wsquare", start="y")


class _Normalised(nn.Module):
    def __init__(self, instance: bool):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        # torch exports GroupNorm's affine part as a separate Mul and Add of constants, whose Add the
        # compiler passes relevance through unchanged (no bias leak), unlike gradient x input
        self.norm = nn.InstanceNorm2d(8, affine=True) if instance else nn.GroupNorm(4, 8, affine=False)
        self.head = nn.Linear(8 * 6 * 6, 5)

    def forward(self, x):
        return self.head(torch.relu(self.norm(self.conv(x))).flatten(1))


@pytest.mark.parametrize("instance", [True, False])
@pytest.mark.parametrize("dynamo", [False, True])
def test_exported_norm_layers_equal_gradient_x_input_with_statistics_held(instance, dynamo, tmp_path):
    """torch's InstanceNorm2d and GroupNorm as both exporters write them (GroupNorm as Reshape,
    InstanceNormalization over the groups, Reshape): LRP-0 equals gradient x input with the statistics
    held constant."""
    if dynamo:
        pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    module = _Normalised(instance).eval()
    with torch.no_grad():
        for parameter in module.norm.parameters():
            parameter.uniform_(0.5, 1.5)
    path = tmp_path / "norm.onnx"
    torch.onnx.export(module, (torch.zeros(1, 3, 6, 6),), str(path), dynamo=dynamo, verbose=False)
    model = onnx.load(str(path))
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 6, 6)).astype(np.float32)
    out = onnxlrp.RelevanceSession(onnxlrp.compile(model, rule="lrp0")).run(x, target=[1, 4])
    for i, target in enumerate((1, 4)):
        want, _ = gradient_x_input(model, x[i : i + 1], target)
        assert np.abs(out["relevance"][i : i + 1] - want).max() <= 1e-5 * np.abs(want).max()
