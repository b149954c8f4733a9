"""The benchmark nets, as PyTorch modules (for zennit and the PyTorch yardsticks) and as ONNX files
(for onnxruntime and onnxlrp), with the same weights.

- ``lenet``: the seed paper's Table 1 MNIST LeNet, input 1x32x32 (random weights, or the zoo's).
- ``cifar-paper``: the seed paper's Table 2 CIFAR net, input 3x32x32 (random weights, or the zoo's).
- ``resnet9``: a ResNet-9 with BatchNorm (the zoo's CIFAR-10 ResNet when zoo/cifar10-resnet.onnx
  exists, its weights loaded into the same architecture; else random weights).
- ``resnet50``: a ResNet-50-shaped net at 224x224 (bottleneck blocks written here, no torchvision),
  random weights; BatchNorm statistics calibrated on random inputs so activations stay O(1).

The ONNX files come from the TorchScript exporter in eval mode (BatchNorm folded into the convs),
exported once into ``benchmarks/.cache`` together with the torch state dict, so every subprocess of
the benchmark sees identical weights.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(__file__).resolve().parent / ".cache"
ZOO = ROOT / "zoo"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.zennit_compat import Bottleneck as BottleneckBase  # noqa: E402  (torchvision stub)
from zoo.training.zoo_models import CifarPaperNet, MnistLeNet5  # noqa: E402

CASES = ("lenet", "cifar-paper", "resnet9", "resnet50")
INPUT_SHAPES = {
    "lenet": (1, 32, 32),
    "cifar-paper": (3, 32, 32),
    "resnet9": (3, 32, 32),
    "resnet50": (3, 224, 224),
}
ZOO_FILES = {
    "lenet": "mnist-lenet5.onnx",
    "cifar-paper": "cifar10-paper.onnx",
    "resnet9": "cifar10-resnet.onnx",
}


# --------------------------------------------------------------------------- paper nets
# the seed paper's two nets: the zoo's own definitions (same layer names, so zoo weights load)
LeNet = MnistLeNet5


# --------------------------------------------------------------------------- ResNet-9
def conv_bn(c_in: int, c_out: int, bn: bool = True) -> nn.Sequential:
    if not bn:  # BatchNorm already folded (weights loaded from an ONNX export)
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=True), nn.Identity(), nn.ReLU())
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class Residual(nn.Module):
    """x + block(x). ``zennit_sum_forward`` is the same sum through zennit's Sum module (installed
    by benchmarks.zennit_compat.SumResidualCanonizer)."""

    def __init__(self, channels: int, bn: bool = True) -> None:
        super().__init__()
        self.block = nn.Sequential(conv_bn(channels, channels, bn), conv_bn(channels, channels, bn))

    def forward(self, x):
        return x + self.block(x)

    def zennit_sum_forward(self, x):
        return self.canonizer_sum(torch.stack([x, self.block(x)], dim=-1))


class ResNet9(nn.Module):
    """The zoo's CifarResNet9 layout (64-128-256-384, global max pool, linear 10; scale folded)."""

    def __init__(self, bn: bool = True, widths=(64, 128, 256, 384)) -> None:
        super().__init__()
        w0, w1, w2, w3 = widths
        self.features = nn.Sequential(
            conv_bn(3, w0, bn),
            conv_bn(w0, w1, bn),
            nn.MaxPool2d(2),
            Residual(w1, bn),
            conv_bn(w1, w2, bn),
            nn.MaxPool2d(2),
            conv_bn(w2, w3, bn),
            nn.MaxPool2d(2),
            Residual(w3, bn),
            nn.AdaptiveMaxPool2d(1),
        )
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(w3, 10)

    def forward(self, x):
        return self.linear(self.flatten(self.features(x)))


# --------------------------------------------------------------------------- ResNet-50
class Bottleneck(BottleneckBase):
    """torchvision's ResNet-50 bottleneck (stride on the 3x3 conv), same attribute names, so that
    zennit's ResNetCanonizer applies to it."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        bn: bool = True,
    ):
        super().__init__()
        width = planes
        norm = nn.BatchNorm2d if bn else (lambda c: nn.Identity())
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=not bn)
        self.bn1 = norm(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=not bn)
        self.bn2 = norm(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=not bn)
        self.bn3 = norm(planes * self.expansion)
        self.relu = nn.ReLU()
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class ResNet50(nn.Module):
    def __init__(self, layers=(3, 4, 6, 3), num_classes: int = 1000, bn: bool = True) -> None:
        super().__init__()
        self.inplanes = 64
        self.bn = bn
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=not bn)
        self.bn1 = nn.BatchNorm2d(64) if bn else nn.Identity()
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(512 * Bottleneck.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, 1, stride=stride, bias=not self.bn),
                nn.BatchNorm2d(planes * Bottleneck.expansion) if self.bn else nn.Identity(),
            )
        layers = [Bottleneck(self.inplanes, planes, stride, downsample, self.bn)]
        self.inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.inplanes, planes, bn=self.bn) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flatten(self.avgpool(x)))


# --------------------------------------------------------------------------- building and caching
@torch.no_grad()
def _randomise_batchnorm(model: nn.Module, shape, seed: int) -> None:
    """Give every BatchNorm random affine parameters and running statistics measured on random
    inputs (one train-mode pass, cumulative average), so that activations stay O(1) in eval mode."""
    g = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
            m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
            m.momentum = None
            m.reset_running_stats()
    model.train()
    model(torch.rand((4, *shape), generator=g) * 2 - 1)
    model.eval()


def _onnx_weights_into(model: nn.Module, onnx_path: Path) -> None:
    """Copy Conv/Gemm weights of an exported (BatchNorm-folded) ONNX file, in node order, into the
    Conv2d/Linear modules of ``model`` (a BatchNorm-free copy of the architecture), in module order."""
    proto = onnx.load(str(onnx_path))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    nodes = [n for n in proto.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    modules = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if len(nodes) != len(modules):
        raise ValueError(f"{onnx_path}: {len(nodes)} linear nodes, the architecture has {len(modules)}")
    with torch.no_grad():
        for node, module in zip(nodes, modules, strict=True):
            w = inits[node.input[1]]
            if node.op_type == "Gemm" and not next((a.i for a in node.attribute if a.name == "transB"), 0):
                w = w.T
            if node.op_type == "MatMul":
                w = w.T
            module.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)).reshape(module.weight.shape))
            if len(node.input) > 2 and node.input[2]:
                module.bias.copy_(torch.from_numpy(inits[node.input[2]]).reshape(module.bias.shape))


def _fresh(name: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = {"lenet": LeNet, "cifar-paper": CifarPaperNet, "resnet9": ResNet9, "resnet50": ResNet50}[name]()
    if name in ("resnet9", "resnet50"):
        _randomise_batchnorm(model, INPUT_SHAPES[name], seed)
    return model.eval()


def _export(model: nn.Module, shape, path: Path) -> None:
    from onnxlrp.converters.pytorch import export_module

    export_module(model, torch.zeros((1, *shape)), path, verbose=False)


def zoo_source(name: str) -> Path | None:
    """The zoo ONNX file used for ``name``, when present."""
    if name not in ZOO_FILES:
        return None
    path = ZOO / ZOO_FILES[name]
    return path if path.exists() else None


def load_case(name: str, seed: int = 0, use_zoo: bool = True) -> tuple[nn.Module, Path, str]:
    """(torch module in eval mode, ONNX path, where the weights come from) for benchmark case ``name``."""
    CACHE.mkdir(exist_ok=True)
    shape = INPUT_SHAPES[name]
    zoo = zoo_source(name) if use_zoo else None
    if zoo is not None:
        model = ResNet9(bn=False) if name == "resnet9" else _fresh(name, seed)
        _onnx_weights_into(model, zoo)
        model.eval()
        check_export(model, zoo, shape)
        return model, zoo, f"zoo ({zoo.relative_to(ROOT)})"
    onnx_path, state_path = CACHE / f"{name}-{seed}.onnx", CACHE / f"{name}-{seed}.pt"
    model = _fresh(name, seed)
    if onnx_path.exists() and state_path.exists():
        model.load_state_dict(torch.load(state_path))
    else:
        _export(model, shape, onnx_path)
        torch.save(model.state_dict(), state_path)
    return model.eval(), onnx_path, "random"


def check_export(model: nn.Module, onnx_path: Path, shape, batch: int = 2) -> float:
    """Max |torch - onnxruntime| / max |torch| on random inputs (raises if above 1e-3)."""
    import onnxruntime as ort

    x = torch.rand((batch, *shape), generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.no_grad():
        expected = model(x).numpy()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    rel = float(np.abs(got - expected).max() / max(np.abs(expected).max(), 1e-12))
    if rel > 1e-3:
        raise ValueError(f"{onnx_path}: torch and onnxruntime disagree (max rel diff {rel:.3g})")
    return rel


def folded_twin(name: str, onnx_path: Path) -> nn.Module:
    """A BatchNorm-free copy of the architecture holding exactly the ONNX file's (folded) weights:
    zennit on it sees bit-identical weights to onnxlrp (the agreement check), and the PyTorch
    yardsticks run the same folded network as onnxruntime."""
    model = {"lenet": LeNet, "cifar-paper": CifarPaperNet}.get(name)
    model = model() if model else ResNet9(bn=False) if name == "resnet9" else ResNet50(bn=False)
    _onnx_weights_into(model, onnx_path)
    return model.eval()


def sample_input(name: str, batch: int, seed: int = 1) -> np.ndarray:
    """Uniform [-1, 1] inputs (the zoo's preprocessing range)."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (batch, *INPUT_SHAPES[name])).astype(np.float32)
