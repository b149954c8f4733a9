"""Graph patterns real exporters emit.

Two independent checks:
- LRP-0 on bias-free, positively homogeneous ReLU networks equals gradient x input (torch autograd),
  whatever the wiring: residual adds, concatenated branches, depthwise-separable convs, ConvTranspose
  upsampling, Pad/Slice/Split/Transpose, shape subgraphs feeding Reshape, a tensor used several times.
- Graphs shaped like tf2onnx's output (NHWC Transposes, Conv + BiasAdd, unfolded BatchNormalization,
  MatMul + Add) against the numpy reference.
"""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import onnxlrp
from onnxlrp.canonical import canonicalize
from onnxlrp.cli import main
from onnxlrp.converters.pytorch import export_module
from tests import reference
from tests.test_networks import COMPOSITES, reference_rules


class Residual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.b = nn.Conv2d(c, c, 3, padding=1, bias=False)

    def forward(self, x):
        return torch.relu(x + self.b(torch.relu(self.a(x))))


class ResNetLike(nn.Module):
    def __init__(self, bias=False, batchnorm=False) -> None:
        super().__init__()
        layers = [nn.Conv2d(3, 8, 3, padding=1, bias=bias)]
        if batchnorm:
            layers.append(nn.BatchNorm2d(8))
        self.stem = nn.Sequential(*layers, nn.ReLU(), nn.MaxPool2d(2))
        self.block1, self.block2 = Residual(8), Residual(8)
        self.head = nn.Linear(8, 10, bias=bias)

    def forward(self, x):
        x = self.block2(self.block1(self.stem(x)))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class Branches(nn.Module):
    """Inception-style: concatenated branches, a tensor read three times, a view() shape subgraph."""

    def __init__(self) -> None:
        super().__init__()
        self.b1 = nn.Conv2d(3, 4, 1, bias=False)
        self.b2 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.b3 = nn.Sequential(nn.MaxPool2d(3, 1, padding=1), nn.Conv2d(3, 2, 1, bias=False))
        self.fc = nn.Linear(10 * 4 * 4, 10, bias=False)

    def forward(self, x):
        y = torch.relu(torch.cat([self.b1(x), self.b2(x), self.b3(x)], dim=1))
        y = nn.functional.max_pool2d(y, 4)
        return self.fc(y.view(y.size(0), -1))


class Separable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 3, 3, padding=1, groups=3, bias=False),
            nn.Conv2d(3, 8, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False),
            nn.Conv2d(8, 16, 1, bias=False),
            nn.LeakyReLU(0.1),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
            nn.Linear(16, 10, bias=False),
        )

    def forward(self, x):
        return self.net(x)


class Upsampling(nn.Module):
    """ConvTranspose upsampling, Pad, Slice, Split, Transpose, Unsqueeze/Squeeze."""

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Conv2d(3, 6, 3, stride=2, padding=1, bias=False)
        self.up = nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1, bias=False)
        self.up1 = nn.ConvTranspose2d(4, 4, 3, stride=1, padding=1, bias=False)
        self.fc = nn.Linear(2 * 18 * 18, 10, bias=False)

    def forward(self, x):
        y = torch.relu(self.up1(torch.relu(self.up(torch.relu(self.down(x))))))
        y = nn.functional.pad(y, (1, 1, 1, 1))
        first, second = torch.split(y, 2, dim=1)
        y = (first + second)[:, :, :, :].permute(0, 1, 3, 2).unsqueeze(1).squeeze(1)
        return self.fc(torch.flatten(y, 1))


class SqueezeExcite(nn.Module):
    """A squeeze-and-excitation block (SE-ResNet, MobileNetV3, EfficientNet): x * sigmoid(gate(x))."""

    def __init__(self, hard: bool = False, bias: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=bias)
        self.squeeze = nn.Linear(8, 4, bias=bias)
        self.excite = nn.Linear(4, 8, bias=bias)
        self.gate = nn.Hardsigmoid() if hard else nn.Sigmoid()
        self.head = nn.Linear(8, 5, bias=bias)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        pooled = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        gate = self.gate(self.excite(torch.relu(self.squeeze(pooled))))
        x = x * gate.view(-1, 8, 1, 1)
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


HOMOGENEOUS = {"resnet": ResNetLike, "branches": Branches, "separable": Separable, "upsampling": Upsampling}


def _export(module: nn.Module, path, seed: int = 0) -> None:
    torch.manual_seed(seed)
    for parameter in module.parameters():
        nn.init.normal_(parameter, 0, 0.3) if parameter.ndim > 1 else nn.init.uniform_(parameter, -0.3, 0.3)
    export_module(module.eval(), torch.zeros(1, 3, 16, 16), path, verbose=False)


@pytest.mark.parametrize("name", sorted(HOMOGENEOUS))
def test_lrp0_equals_gradient_times_input(name, tmp_path):
    module = HOMOGENEOUS[name]()
    path = tmp_path / f"{name}.onnx"
    _export(module, path)
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    out = onnxlrp.RelevanceSession(onnxlrp.compile(path, rule="lrp0")).run(x.numpy())
    xg = x.clone().requires_grad_()
    logits = module(xg)
    logits.gather(1, logits.argmax(1, keepdim=True)).sum().backward()
    expected = (xg.grad * x).numpy()
    error = np.abs(out["relevance"] - expected).max()
    assert error <= 1e-5 * np.abs(expected).max(), error
    assert main(["inspect", str(path)]) == 0  # every node supported


@pytest.mark.parametrize("name", sorted(HOMOGENEOUS))
def test_no_dead_nodes(name, tmp_path):
    """Every node of the relevance graph feeds an output (onnxruntime runs dead nodes too): no
    transpose for an input part that is zero, a branch point's relevance summed once."""
    path = tmp_path / f"{name}.onnx"
    _export(HOMOGENEOUS[name](), path)
    for options in ({"rule": "epsilon"}, {"rule": "alphabeta"}, *({"composite": c} for c in COMPOSITES)):
        model = onnxlrp.compile(path, **options, expose=["all"])
        used = {name for node in model.graph.node for name in node.input} | {
            o.name for o in model.graph.output
        }
        dead = [node.name for node in model.graph.node if not any(out in used for out in node.output)]
        assert not dead, f"{options}: {dead}"


@pytest.mark.parametrize("name", ["resnet_bn", "separable", "branches"])
def test_dynamo_exports_match_reference(name, tmp_path):
    """torch's dynamo exporter (the default in recent torch) writes opset-18+ graphs with ReduceMean
    for adaptive average pooling, ReduceMax for a global max and a fixed batch size: compiled relevance
    equals the reference at batch 3, for epsilon and EpsilonPlus."""
    pytest.importorskip("onnxscript")
    module = {
        "resnet_bn": ResNetLike(bias=True, batchnorm=True),
        "separable": Separable(),
        "branches": Branches(),
    }
    module = module[name].eval()
    torch.manual_seed(0)
    for parameter in module.parameters():
        nn.init.normal_(parameter, 0, 0.3) if parameter.ndim > 1 else nn.init.uniform_(parameter, -0.3, 0.3)
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(module, (torch.zeros(1, 3, 16, 16),), str(path), dynamo=True, verbose=False)
    x = np.random.default_rng(0).uniform(-1, 1, (3, 3, 16, 16)).astype(np.float32)
    for setting in ("epsilon", "epsilon-plus"):
        got = onnxlrp.RelevanceSession(onnxlrp.compile(path, composite=setting)).run(x)["relevance"]
        want = np.concatenate(  # the exported graph itself only runs at batch 1
            [
                reference.reference_lrp(str(path), x[i : i + 1].astype(np.float64), reference_rules(setting))[
                    "relevance"
                ]
                for i in range(len(x))
            ]
        )
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max(), setting


@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize("dynamo", [False, True])
def test_squeeze_excite_gate_gives_the_signal_all_relevance(hard, dynamo, tmp_path):
    """x * sigmoid(...): the gate branch is treated as a weight (signal-take-all), matching the
    reference for both torch exporters; without biases LRP-0 then conserves the logit exactly."""
    if dynamo:
        pytest.importorskip("onnxscript")
    x = np.random.default_rng(0).uniform(-1, 1, (3, 3, 16, 16)).astype(np.float32)
    for bias in (True, False):
        module = SqueezeExcite(hard=hard, bias=bias)
        path = tmp_path / f"se_{bias}.onnx"
        _export(module, path)
        if dynamo:
            torch.onnx.export(
                module.eval(), (torch.zeros(1, 3, 16, 16),), str(path), dynamo=True, verbose=False
            )
        if bias:
            got = onnxlrp.RelevanceSession(onnxlrp.compile(path, composite="epsilon-plus")).run(x)[
                "relevance"
            ]
            want = np.concatenate(
                [
                    reference.reference_lrp(
                        str(path), x[i : i + 1].astype(np.float64), reference_rules("epsilon-plus")
                    )["relevance"]
                    for i in range(len(x))
                ]
            )
            assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
        else:
            out = onnxlrp.RelevanceSession(onnxlrp.compile(path, rule="lrp0")).run(x)
            logit = out[next(k for k in out if not k.startswith("relevance"))].max(1)
            np.testing.assert_allclose(out["relevance"].reshape(3, -1).sum(1), logit, rtol=1e-4)


def test_resnet_with_batchnorm_matches_reference(tmp_path):
    module = ResNetLike(bias=True, batchnorm=True)
    torch.manual_seed(1)
    bn = module.stem[1]
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "resnet_bn.onnx"
    _export(module, path)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 16, 16)).astype(np.float32)
    for setting, options in (
        ("epsilon", {"composite": "epsilon"}),
        ("epsilon-plus", {"composite": "epsilon-plus"}),
        ("alpha2beta1", {"rule": "alphabeta"}),
    ):
        got = onnxlrp.RelevanceSession(onnxlrp.compile(path, **options)).run(x)["relevance"]
        want = reference.reference_lrp(str(path), x.astype(np.float64), reference_rules(setting))["relevance"]
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max(), setting


class SumIntoConv(nn.Module):
    """ResNet-9's block: x + block(x) of two ReLU outputs with no ReLU after the sum, read by a conv."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), nn.ReLU())
        self.after = nn.Sequential(nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1))
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = self.stem(x)
        return self.head(torch.flatten(self.after(x + self.block(x)), 1))


def test_sum_of_relu_outputs_is_nonnegative(tmp_path):
    """The conv after a sum of ReLU outputs gets z+ on x alone: no negative part, no second pair of
    convolutions for it; relevance as the reference's (which splits x into both parts)."""
    path = tmp_path / "sum_into_conv.onnx"
    _export(SumIntoConv(), path)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 16, 16)).astype(np.float32)
    for setting, options in (
        ("epsilon-plus", {"composite": "epsilon-plus"}),
        ("alpha2beta1", {"rule": "alphabeta"}),
    ):
        model = onnxlrp.compile(path, **options)
        negative_parts = [n for n in model.graph.node if re.search(r"/neg_\d+$", n.output[0])]
        signed_inputs = 1  # only the network's input has a negative part
        assert len(negative_parts) == signed_inputs, (setting, len(negative_parts))
        got = onnxlrp.RelevanceSession(model).run(x)["relevance"]
        want = reference.reference_lrp(str(path), x.astype(np.float64), reference_rules(setting))["relevance"]
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max(), setting


# --- tf2onnx-shaped graphs ---------------------------------------------------------------------


def tf2onnx_like(rng: np.random.Generator) -> onnx.ModelProto:
    """NHWC input -> Transpose -> Conv -> Add(bias) -> BatchNormalization -> Relu -> MaxPool -> Conv
    (no BN) -> BatchNormalization with no linear layer before it (after a Relu) -> Transpose back to NHWC ->
    Reshape(shape from Shape/Gather/Concat) -> MatMul -> Add -> Relu -> MatMul -> Add."""
    c = 4
    inits = {
        "w1": rng.normal(0, 0.5, (c, 3, 3, 3)),
        "b1": rng.normal(0, 0.1, (c, 1, 1)),
        "s1": rng.uniform(0.5, 1.5, c),
        "o1": rng.normal(0, 0.1, c),
        "m1": rng.normal(0, 0.1, c),
        "v1": rng.uniform(0.5, 1.5, c),
        "w2": rng.normal(0, 0.5, (c, c, 3, 3)),
        "s2": rng.uniform(0.5, 1.5, c),
        "o2": rng.normal(0, 0.1, c),
        "m2": rng.normal(0, 0.1, c),
        "v2": rng.uniform(0.5, 1.5, c),
        "fc1": rng.normal(0, 0.3, (4 * 4 * c, 8)),
        "fb1": rng.normal(0, 0.1, 8),
        "fc2": rng.normal(0, 0.3, (8, 5)),
        "fb2": rng.normal(0, 0.1, 5),
    }
    shape_consts = {"zero": np.array([0], np.int64), "minus_one": np.array([-1], np.int64)}
    n = helper.make_node
    nodes = [
        n("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2], name="to_nchw"),
        n("Conv", ["nchw", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        n("Add", ["c1", "b1"], ["c1b"], name="bias_add1"),
        n("BatchNormalization", ["c1b", "s1", "o1", "m1", "v1"], ["bn1"], name="bn1"),
        n("Relu", ["bn1"], ["r1"], name="relu1"),
        n("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="pool1"),
        n("Conv", ["p1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        n("Relu", ["c2"], ["r2"], name="relu2"),
        n("BatchNormalization", ["r2", "s2", "o2", "m2", "v2"], ["bn2"], name="bn2_after_relu"),
        n("Transpose", ["bn2"], ["nhwc"], perm=[0, 2, 3, 1], name="to_nhwc"),
        n("Shape", ["nhwc"], ["shape"], name="shape"),
        n("Gather", ["shape", "zero"], ["batch"], axis=0, name="gather"),
        n("Concat", ["batch", "minus_one"], ["flat_shape"], axis=0, name="concat_shape"),
        n("Reshape", ["nhwc", "flat_shape"], ["flat"], name="reshape"),
        n("MatMul", ["flat", "fc1"], ["h"], name="dense1"),
        n("Add", ["h", "fb1"], ["hb"], name="dense1_bias"),
        n("Relu", ["hb"], ["hr"], name="relu3"),
        n("MatMul", ["hr", "fc2"], ["o"], name="dense2"),
        n("Add", ["o", "fb2"], ["logits"], name="dense2_bias"),
    ]
    graph = helper.make_graph(
        nodes,
        "tf2onnx_like",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["unk__1", 8, 8, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["unk__1", 5])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()]
        + [numpy_helper.from_array(v, k) for k, v in shape_consts.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    return model


@pytest.mark.parametrize("setting", ["epsilon", "epsilon-plus", "epsilon-gamma-box", "lrp0", "alpha2beta1"])
def test_tf2onnx_shaped_graph_matches_reference(setting):
    from tests.test_networks import compile_options

    model = tf2onnx_like(np.random.default_rng(0))
    x = np.random.default_rng(1).uniform(-1, 1, (3, 8, 8, 3)).astype(np.float32)
    got = onnxlrp.RelevanceSession(onnxlrp.compile(model, **compile_options(setting))).run(x)["relevance"]
    # the reference runs on the canonicalised graph (BiasAdd absorbed, bn1 folded): the folding
    # itself is checked by test_batchnorm_folding_keeps_logits
    want = reference.reference_lrp(canonicalize(model), x.astype(np.float64), reference_rules(setting))[
        "relevance"
    ]
    assert got.shape == x.shape
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_batchnorm_folding_keeps_logits():
    model = tf2onnx_like(np.random.default_rng(2))
    folded = canonicalize(model)
    ops = [node.op_type for node in folded.graph.node]
    assert (
        ops.count("BatchNormalization") == 1
    )  # bn1 folded into conv1 (through its BiasAdd); bn2 follows a Relu
    assert "bn2_after_relu" in [node.name for node in folded.graph.node]
    x = np.random.default_rng(3).uniform(-1, 1, (16, 8, 8, 3)).astype(np.float32)
    before = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"input": x}
    )
    after = ort.InferenceSession(folded.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"input": x}
    )
    assert np.abs(after[0] - before[0]).max() <= 1e-5 * np.abs(before[0]).max()
