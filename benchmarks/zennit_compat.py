"""Import zennit 0.5.1 without torchvision, and build zennit composites that mirror onnxlrp's.

Why a stub: ``zennit/__init__.py`` imports ``zennit.torchvision``, whose first line is
``from torchvision.models.resnet import Bottleneck, BasicBlock`` (it only needs the two classes for
``isinstance`` checks in its ResNet canonizers). PyPI's torchvision wheel does not import beside
the CPU build of torch 2.13 used here (its compiled ops are built for another torch), and
installing a matching torchvision would pull a multi-GB CUDA torch. So, before zennit is imported,
we put three tiny modules into ``sys.modules``: ``torchvision``, ``torchvision.models`` and
``torchvision.models.resnet``, the last holding two empty ``nn.Module`` subclasses named
``Bottleneck`` and ``BasicBlock``. Nothing else of torchvision is touched by zennit.

Bonus: our own ResNet blocks (benchmarks/models.py) subclass these stub classes and use
torchvision's attribute names (conv1, bn1, relu, conv2, bn2, conv3, bn3, downsample), so zennit's
own ``ResNetCanonizer`` (SequentialMergeBatchNorm + a ``Sum`` module in place of the residual ``+``)
works on them unchanged. If a real, importable torchvision is present, it is used instead.
"""

from __future__ import annotations

import importlib.util
import sys
import types

import torch
from torch import nn


def _real_torchvision_imports() -> bool:
    if "torchvision" in sys.modules:
        return not getattr(sys.modules["torchvision"], "__onnxlrp_stub__", False)
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        import torchvision.models.resnet  # noqa: F401
    except Exception:
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        return False
    return True


def install_torchvision_stub() -> None:
    """Put a minimal ``torchvision.models.resnet`` into sys.modules unless a real one imports."""
    if _real_torchvision_imports():
        return
    root = types.ModuleType("torchvision")
    root.__onnxlrp_stub__ = True
    models = types.ModuleType("torchvision.models")
    resnet = types.ModuleType("torchvision.models.resnet")

    class Bottleneck(nn.Module):
        """Stub of torchvision's ResNet Bottleneck (only used for isinstance checks)."""

    class BasicBlock(nn.Module):
        """Stub of torchvision's ResNet BasicBlock (only used for isinstance checks)."""

    Bottleneck.__module__ = BasicBlock.__module__ = "torchvision.models.resnet"
    resnet.Bottleneck, resnet.BasicBlock = Bottleneck, BasicBlock
    models.resnet = resnet
    root.models = models
    sys.modules.update(
        {"torchvision": root, "torchvision.models": models, "torchvision.models.resnet": resnet}
    )


install_torchvision_stub()

import zennit  # noqa: E402
from torchvision.models.resnet import BasicBlock, Bottleneck  # noqa: E402  (stub or real)
from zennit.attribution import Gradient  # noqa: E402
from zennit.canonizers import AttributeCanonizer, CompositeCanonizer, SequentialMergeBatchNorm  # noqa: E402
from zennit.composites import EpsilonPlus, LayerMapComposite  # noqa: E402
from zennit.layer import Sum  # noqa: E402
from zennit.rules import Epsilon, Pass  # noqa: E402
from zennit.torchvision import ResNetCanonizer  # noqa: E402
from zennit.types import Activation, AvgPool, Convolution, Linear  # noqa: E402

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "Gradient",
    "SumResidualCanonizer",
    "attribute",
    "canonizers_for",
    "make_composite",
    "zennit",
]


class SumResidualCanonizer(AttributeCanonizer):
    """For modules with a ``residual_sum`` hook point (benchmarks.models.Residual): route the
    residual addition through a zennit ``Sum`` module so that it gets a rule (Norm), instead of a
    bare ``+`` whose gradient would copy the full relevance into both branches."""

    def __init__(self) -> None:
        super().__init__(self._attribute_map)

    @classmethod
    def _attribute_map(cls, name, module):
        if getattr(module, "zennit_sum_forward", None) is not None:
            return {"forward": module.zennit_sum_forward, "canonizer_sum": Sum()}
        return None


def canonizers_for(model: nn.Module) -> list:
    """zennit canonizers for our benchmark nets: BatchNorm merged into the conv before it (same
    as the ONNX exporter's folding), and residual '+' replaced by a Sum module."""
    if any(isinstance(m, (Bottleneck, BasicBlock)) for m in model.modules()):
        return [ResNetCanonizer()]
    return [CompositeCanonizer((SequentialMergeBatchNorm(), SumResidualCanonizer()))]


def make_composite(name: str, model: nn.Module):
    """'epsilon': onnxlrp's rule='epsilon' (eps 1.0 on conv/dense/avgpool and, since onnxlrp commit
    c9c2483, on residual sums: a sum takes the epsilon of the single rule);
    'epsilon-plus': zennit's EpsilonPlus (conv ZPlus, dense Epsilon 1e-6, avgpool and sum Norm)."""
    canonizers = canonizers_for(model)
    if name == "epsilon":
        layer_map = [
            (Activation, Pass()),
            (Sum, Epsilon(epsilon=1.0)),
            (AvgPool, Epsilon(epsilon=1.0)),
            (Convolution, Epsilon(epsilon=1.0)),
            (Linear, Epsilon(epsilon=1.0)),
        ]
        return LayerMapComposite(layer_map=layer_map, canonizers=canonizers)
    if name == "epsilon-plus":
        return EpsilonPlus(canonizers=canonizers)
    raise ValueError(f"unknown composite {name!r}")


def logit_seed(out: torch.Tensor) -> torch.Tensor:
    """onnxlrp's default seed: the predicted class's logit times its one-hot mask."""
    mask = torch.zeros_like(out)
    mask.scatter_(1, out.argmax(1, keepdim=True), 1.0)
    return out * mask


def attribute(model: nn.Module, composite, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, relevance) with zennit; the seed is one-hot(argmax) * logit, as onnxlrp's."""
    with Gradient(model=model, composite=composite) as attributor:
        return attributor(x, logit_seed)
