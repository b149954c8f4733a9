"""Small torch networks exported to ONNX for the compiler tests (random weights, fixed seeds)."""

from __future__ import annotations

from pathlib import Path

import onnx
import torch
from torch import nn

from onnxlrp.converters.pytorch import export_module


def paper_mnist(bias: bool = True) -> nn.Module:
    """The seed paper's Table 1 net: 32x32x1, avg pooling."""
    return nn.Sequential(
        nn.Conv2d(1, 10, 5, bias=bias),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(10, 25, 5, bias=bias),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(25, 100, 4, bias=bias),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(100, 10, 1, bias=bias),
        nn.Flatten(),
    )


def paper_cifar(channels: int = 300) -> nn.Module:
    """The seed paper's Table 2 net: 32x32x3, max pooling, dense 300-100-10."""
    c = channels
    return nn.Sequential(
        nn.Conv2d(3, c, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(c, c, 2),
        nn.ReLU(),
        nn.Dropout(0.1),
        nn.MaxPool2d(2),
        nn.Conv2d(c, c, 3, padding=1),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.MaxPool2d(2),
        nn.Conv2d(c, c, 2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c, 300),
        nn.ReLU(),
        nn.Linear(300, 100),
        nn.ReLU(),
        nn.Linear(100, 10),
    )


def vgg_style() -> nn.Module:
    """Padded 3x3 convs, overlapping max pools (3x3 stride 2), dense head with a Softmax."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, padding=1),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, padding=1, ceil_mode=True),
        nn.Flatten(),
        nn.Linear(16 * 9 * 9, 32),
        nn.ReLU(),
        nn.Linear(32, 10),
        nn.Softmax(dim=1),
    )


def export(module: nn.Module, shape: tuple[int, ...], path: Path, seed: int = 0) -> onnx.ModelProto:
    """Seeded random weights (biases too), exported with a dynamic batch; returns the model."""
    torch.manual_seed(seed)
    for parameter in module.parameters():
        nn.init.uniform_(parameter, -0.5, 0.5) if parameter.ndim == 1 else None
    export_module(module.eval(), torch.zeros(1, *shape), path, verbose=False)
    return onnx.load(str(path))
