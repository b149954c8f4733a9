"""torchvision and timm architectures for the tests: random weights, randomised BatchNorm statistics,
exported by either torch exporter.

PyPI's torchvision wheel is a CUDA build whose C extension does not load beside the CPU torch, and
its ``__init__`` then fails registering fake kernels for the missing operators. The architectures
themselves are plain Python modules that never call the C operators, so ``import_torchvision``
makes ``torchvision`` an empty package over the installed files and imports only
``torchvision.models`` (and timm on top of it). CI installs both with ``--no-deps`` (.ci/run).
"""

from __future__ import annotations

import importlib.util
import sys
import types
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn


def import_torchvision() -> types.ModuleType:
    """``torchvision.models`` without running torchvision's ``__init__`` (skips if not installed)."""
    if "torchvision.models" in sys.modules:
        return sys.modules["torchvision.models"]
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("torchvision is not installed")
    if "torchvision" not in sys.modules:
        sys.modules["torchvision"] = importlib.util.module_from_spec(spec)  # not executed
    import torchvision.models

    return torchvision.models


def import_timm() -> types.ModuleType:
    """timm, over the same torchvision package (skips if not installed)."""
    import_torchvision()
    return pytest.importorskip("timm")


def _small_head(module: nn.Module, channels: int, classes: int) -> nn.Module:
    """VGG/AlexNet's 4096-wide classifier (100M+ weights at 224 px) replaced by global average
    pooling and one Linear layer, so that the convolutional part runs at 32-64 px."""
    module.avgpool = nn.AdaptiveAvgPool2d(1)
    module.classifier = nn.Linear(channels, classes)
    return module


def build(family: str, name: str, classes: int = 10, seed: int = 0) -> nn.Module:
    """The architecture with seeded random weights and BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if family == "timm":
            module = import_timm().create_model(name, pretrained=False, num_classes=classes)
        else:
            models = import_torchvision()
            options = {"aux_logits": False, "init_weights": False} if name == "googlenet" else {}
            module = getattr(models, name)(num_classes=classes, **options)
    if name == "vgg11_bn":
        _small_head(module, 512, classes)
    if name == "alexnet":
        _small_head(module, 256, classes)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.modules.batchnorm._BatchNorm) and layer.running_mean is not None:
                size = layer.running_mean.shape
                layer.running_mean.normal_(0.0, 0.2, generator=generator)
                layer.running_var.uniform_(0.5, 2.0, generator=generator)
                if layer.affine:
                    layer.weight.uniform_(0.5, 1.5, generator=generator)
                    layer.bias.copy_(torch.empty(size).uniform_(-0.2, 0.2, generator=generator))
    return module.eval()


def export(module: nn.Module, size: int, path: Path, dynamo: bool) -> Path:
    """Exported at batch 1 (fixed: the compiler frees the batch dimension) by the TorchScript
    (``dynamo=False``) or the dynamo exporter."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(1, 3, size, size),), str(path), dynamo=dynamo, verbose=False)
    return path
