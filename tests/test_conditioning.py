"""Conditional relevance: masks on the relevance passing a layer.

Checked for every rule and composite: the unconditional heatmap equals the sum of the conditional
ones over all channels of a layer (to 1e-5 of its scale), and one channel's conditional heatmap
equals the independent numpy reference started at that layer with the reference's own relevance
there, masked to the channel.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import onnxlrp
from onnxlrp.conditioning import channel_relevance_name, mask_name, one_hot_masks
from onnxlrp.errors import OnnxLrpError, UnsupportedModelError
from tests import reference
from tests.nets import export
from tests.test_networks import COMPOSITES, RULES, compile_options, reference_rules


class Residual(nn.Module):
    """conv-relu-maxpool, a residual block, average pooling and two dense layers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.act1, self.pool = nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
        self.branch1, self.inner = nn.Conv2d(6, 6, 3, padding=1), nn.ReLU()
        self.branch2, self.merged = nn.Conv2d(6, 6, 3, padding=1), nn.ReLU()
        self.avg, self.flat = nn.AvgPool2d(2), nn.Flatten()
        self.fc1, self.hidden, self.fc2 = nn.Linear(24, 8), nn.ReLU(), nn.Linear(8, 5)

    def forward(self, x):
        x = self.pool(self.act1(self.conv1(x)))
        x = self.merged(x + self.branch2(self.inner(self.branch1(x))))
        return self.fc2(self.hidden(self.fc1(self.flat(self.avg(x)))))


LAYERS = {"/act1/Relu": 6, "/pool/MaxPool": 6, "/merged/Relu": 6, "/hidden/Relu": 8}


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    torch.manual_seed(0)
    return export(Residual(), (3, 8, 8), tmp_path_factory.mktemp("cond") / "residual.onnx")


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).uniform(-1, 1, (2, 3, 8, 8)).astype(np.float32)


def _output(model, node_name: str) -> str:
    return next(n.output[0] for n in model.graph.node if n.name == node_name)


@pytest.mark.parametrize("setting", [*RULES, *COMPOSITES])
def test_conditional_heatmaps_sum_to_the_unconditional_one(net, x, setting):
    layers = list(LAYERS)
    model = onnxlrp.compile(net, condition=layers, **compile_options(setting))
    session = onnxlrp.RelevanceSession(model)
    plain = onnxlrp.RelevanceSession(onnxlrp.compile(net, **compile_options(setting))).run(x)["relevance"]
    full = session.run(x)  # default masks: all ones
    scale = np.abs(plain).max()
    assert scale > 0
    assert np.abs(full["relevance"] - plain).max() <= 1e-6 * scale
    for layer, channels in LAYERS.items():
        tensor = _output(net, layer)
        repeated = np.repeat(x, channels, axis=0)
        masks = {mask_name(tensor): np.tile(np.eye(channels, dtype=np.float32), (len(x), 1))}
        parts = session.run(repeated, masks=masks)["relevance"].reshape(len(x), channels, *x.shape[1:])
        error = np.abs(parts.sum(1) - plain).max()
        assert error <= 1e-5 * scale, f"{setting} at {layer}: error {error:.3g}, scale {scale:.3g}"
        # no channel's heatmap is the whole one: the masks really split the relevance
        assert all(np.abs(parts[:, c] - plain).max() > 1e-3 * scale for c in range(channels))


@pytest.mark.parametrize(
    "setting", ["epsilon=1", "alpha2beta1", "zplus", "epsilon-gamma-box", "epsilon-plus-flat"]
)
def test_one_channel_matches_the_reference_started_at_the_layer(net, x, setting):
    rules = reference_rules(setting)
    want = reference.reference_lrp(net, x.astype(np.float64), rules)
    for layer in ("/pool/MaxPool", "/merged/Relu", "/hidden/Relu"):
        tensor = _output(net, layer)
        model = onnxlrp.compile(net, condition=[tensor], **compile_options(setting))
        got = onnxlrp.RelevanceSession(model).run(
            x, masks={mask_name(tensor): one_hot_masks(LAYERS[layer], [2, 2])}
        )
        at_layer = want[f"relevance:{tensor}"]
        # the channel relevance output is the relevance arriving at each channel, before the mask
        per_channel = at_layer.reshape(len(x), at_layer.shape[1], -1).sum(-1)
        np.testing.assert_allclose(
            got[channel_relevance_name(tensor)], per_channel, rtol=0, atol=1e-5 * np.abs(per_channel).max()
        )
        seed = np.zeros_like(at_layer)
        seed[:, 2] = at_layer[:, 2]
        expected = reference.reference_lrp(net, x.astype(np.float64), rules, start=tensor, start_seed=seed)
        scale = np.abs(expected["relevance"]).max()
        assert scale > 0
        error = np.abs(got["relevance"] - expected["relevance"]).max()
        assert error <= 1e-5 * scale, f"{setting} at {layer}: error {error:.3g}, scale {scale:.3g}"


def test_a_tensor_inside_a_residual_branch_is_refused(net):
    with pytest.raises(UnsupportedModelError, match=r"around tensor .*Add"):
        onnxlrp.compile(net, condition=["/inner/Relu"])


def test_unknown_layer_and_bad_channel(net):
    with pytest.raises(UnsupportedModelError, match="neither a tensor nor a node"):
        onnxlrp.compile(net, condition=["no_such_layer"])
    with pytest.raises(UnsupportedModelError, match="model input"):
        onnxlrp.compile(net, condition=["input"])
    with pytest.raises(OnnxLrpError, match="channel 6 is out of range: the tensor has 6 channels"):
        one_hot_masks(6, [1, 6])
    session = onnxlrp.RelevanceSession(onnxlrp.compile(net))
    with pytest.raises(OnnxLrpError, match="no mask input"):
        session.run(np.zeros((1, 3, 8, 8), np.float32), masks={"mask:x": np.ones((1, 6), np.float32)})
