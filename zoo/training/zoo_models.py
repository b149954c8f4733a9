"""PyTorch definitions of the onnxlrp model zoo, and the preprocessing they were trained with.

Every model takes NCHW float32 images scaled to [-1, 1] (``x / 127.5 - 1``) and returns logits.
This file needs only torch and numpy, so that it also runs on the GPU training machine.

- ``MnistLeNet5``: the LRP toolbox's LeNet-5 (avg pools, no padding), input [N, 1, 32, 32].
- ``CifarPaperNet``: the seed paper's CIFAR-10 net (300-channel convs, max pools, dropout), [N, 3, 32, 32].
- ``CifarResNet9``: a narrow ResNet-9 in the style of David Page's DAWNBench net, with BatchNorm.
- ``CifarViT``: a small vision transformer written with explicit attention ops (q/k/v Linear,
  MatMul, Softmax, MatMul), so that its export is plain ONNX MatMul/Softmax/LayerNormalization/Erf.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

MNIST_CLASSES = [str(i) for i in range(10)]
CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


# --------------------------------------------------------------------------- preprocessing
def mnist_preprocess(images: np.ndarray) -> np.ndarray:
    """uint8 [N, 28, 28] (white digit on black) -> float32 [N, 1, 32, 32] in [-1, 1].

    Pixels are scaled by ``x / 127.5 - 1`` and padded by 2 pixels of -1 on each side
    (the LRP toolbox convention).
    """
    x = np.asarray(images, dtype=np.float32) / np.float32(127.5) - np.float32(1.0)
    x = np.pad(x, ((0, 0), (2, 2), (2, 2)), mode="constant", constant_values=-1.0)
    return x[:, None, :, :].astype(np.float32)


def cifar_preprocess(images: np.ndarray) -> np.ndarray:
    """uint8 [N, 32, 32, 3] RGB (NHWC) -> float32 [N, 3, 32, 32] in [-1, 1] (``x / 127.5 - 1``)."""
    x = np.asarray(images, dtype=np.float32) / np.float32(127.5) - np.float32(1.0)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)).astype(np.float32)


# --------------------------------------------------------------------------- models
class MnistLeNet5(nn.Module):
    """conv5x5x10-relu-avgpool2, conv5x5x25-relu-avgpool2, conv4x4x100-relu-avgpool2, conv1x1x10.

    32 -> 28 -> 14 -> 10 -> 5 -> 2 -> 1; no padding anywhere; output logits [N, 10].
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 10, 5),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Conv2d(10, 25, 5),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Conv2d(25, 100, 4),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Conv2d(100, 10, 1),
        )
        self.flatten = nn.Flatten()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.flatten(self.features(x))


class CifarPaperNet(nn.Module):
    """The seed paper's CIFAR-10 network (about 1.66M parameters).

    conv3x3x300 pad1 - relu - maxpool2 (16) - conv2x2x300 (15) - relu - dropout .1 - maxpool2 (7)
    - conv3x3x300 pad1 (7) - relu - dropout .2 - maxpool2 (3) - conv2x2x300 (2) - relu - maxpool2 (1)
    - flatten (300) - dense 300 - relu - dense 100 - relu - dense 10.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 300, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(300, 300, 2),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.MaxPool2d(2),
            nn.Conv2d(300, 300, 3, padding=1),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.MaxPool2d(2),
            nn.Conv2d(300, 300, 2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Linear(300, 300),
            nn.ReLU(),
            nn.Linear(300, 100),
            nn.ReLU(),
            nn.Linear(100, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.features(x)))


def conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    """conv3x3 (pad 1, no bias) - BatchNorm - ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    )


class Residual(nn.Module):
    """x + conv_bn(conv_bn(x)): an identity skip connection (exports as ONNX Add)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(conv_bn(channels, channels), conv_bn(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class CifarResNet9(nn.Module):
    """ResNet-9 in the style of David Page's DAWNBench CIFAR-10 net, narrowed to 64-128-256-384.

    prep conv_bn(64) - conv_bn(128) - maxpool2 - residual(128) - conv_bn(256) - maxpool2
    - conv_bn(384) - maxpool2 - residual(384) - global max pool - flatten - linear(10) * scale.
    ``scale`` (0.125, as Page) is folded into the linear layer by ``fold_scale()`` before export,
    so the exported graph has no Mul.
    """

    def __init__(self, widths: tuple[int, int, int, int] = (64, 128, 256, 384), scale: float = 0.125):
        super().__init__()
        w0, w1, w2, w3 = widths
        self.features = nn.Sequential(
            conv_bn(3, w0),
            conv_bn(w0, w1),
            nn.MaxPool2d(2),
            Residual(w1),
            conv_bn(w1, w2),
            nn.MaxPool2d(2),
            conv_bn(w2, w3),
            nn.MaxPool2d(2),
            Residual(w3),
            nn.AdaptiveMaxPool2d(1),
        )
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(w3, 10)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(self.flatten(self.features(x)))
        return y if self.scale == 1.0 else y * self.scale

    @torch.no_grad()
    def fold_scale(self) -> CifarResNet9:
        """Multiply the linear layer's weights by ``scale`` and set ``scale = 1`` (same logits)."""
        if self.scale != 1.0:
            self.linear.weight.mul_(self.scale)
            if self.linear.bias is not None:
                self.linear.bias.mul_(self.scale)
            self.scale = 1.0
        return self


class Attention(nn.Module):
    """Multi-head self-attention: softmax(q k^T / sqrt(d_head)) v, heads concatenated, projected."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """[N, T, D] -> [N, heads, T, D / heads]."""
        n, t, d = x.shape
        return x.reshape(n, t, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.split(self.q(x)), self.split(self.k(x)), self.split(self.v(x))
        attention = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * self.scale, dim=-1)
        out = torch.matmul(attention, v).transpose(1, 2).reshape(n, t, d)
        return self.proj(out)


class Block(nn.Module):
    """Pre-norm transformer block: x + attention(LN(x)), then x + MLP(LN(x)) with GELU."""

    def __init__(self, dim: int, heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CifarViT(nn.Module):
    """A small ViT for 32x32 images: patch embedding as a Conv with stride = patch, a learned class
    token (Concat), learned position embeddings (Add), ``depth`` pre-norm blocks, a final LayerNorm
    and a linear head on the class token. The patch tokens are the output of ``patch_embed``."""

    def __init__(
        self, patch: int = 4, dim: int = 64, depth: int = 4, heads: int = 4, mlp_dim: int = 128
    ) -> None:
        super().__init__()
        tokens = (32 // patch) ** 2
        self.patch_embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embed(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        h = torch.cat([cls, patches], dim=1) + self.pos_embed
        h = self.norm(self.blocks(h))
        return self.head(h[:, 0])


ZOO_ARCHITECTURES = {
    "mnist-lenet5": MnistLeNet5,
    "mnist-lenet5-weak": MnistLeNet5,
    "cifar10-paper": CifarPaperNet,
    "cifar10-resnet": CifarResNet9,
    "cifar10-vit": CifarViT,
}


def build(name: str) -> nn.Module:
    """A fresh (untrained) module for zoo model ``name``."""
    return ZOO_ARCHITECTURES[name]()
