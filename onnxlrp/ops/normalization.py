"""InstanceNormalization and GroupNormalization: affine layers whose statistics are per sample.

y = gamma * (x - mu) / sigma + beta with mu, sigma over each sample's group of channels (every channel
its own group for InstanceNormalization). As BatchNormalization's running statistics are, mu and sigma
are held constant: the layer is y = a * x + c with a = gamma / sigma and c = beta - a * mu, a diagonal
linear layer whose weight and bias differ from sample to sample. Its weight map multiplies by the
per-sample 1 / sigma (> 0) and the constant gamma, so the rules that transform the weight by a
positively homogeneous map (W, W+, W-, W + g W+) see a's exact parts, and the bias c is a tensor of
the relevance graph.
"""

from __future__ import annotations

import numpy as np
import onnx

from onnxlrp.errors import UnsupportedModelError
from onnxlrp.ops import EmitContext, register
from onnxlrp.rules import WSquare


@register("InstanceNormalization", "GroupNormalization", kind="affine")
def emit_normalization(ctx: EmitContext, node: onnx.NodeProto, relevance: list) -> dict:
    if isinstance(ctx.rule, WSquare):
        raise UnsupportedModelError(
            f"node '{node.name}' ({node.op_type}): w^2 needs a constant weight; this layer's weight "
            "gamma / sigma differs from sample to sample"
        )
    b, info = ctx.b, ctx.info
    x, z = node.input[0], node.output[0]
    shape = info.shape(x)
    channels, rank = shape[1], len(shape)
    groups = channels if node.op_type == "InstanceNormalization" else int(ctx.attr(node, "num_groups"))
    gamma, beta = (info.const(node.input[i]) for i in (1, 2))
    if gamma is None or beta is None:
        raise UnsupportedModelError(
            f"node '{node.name}' ({node.op_type}): its scale and bias must be constant"
        )
    epsilon = ctx.attr(node, "epsilon", 1e-5)

    # 1 / sigma per sample and group, repeated over each group's channels: [N, C, 1, ...]
    grouped = b.op("Reshape", [x, b.const(np.array([0, groups, -1], np.int64))])
    centred = b.op("Sub", [grouped, b.op("GlobalAveragePool", [grouped])])  # mean over each group
    variance = b.op("GlobalAveragePool", [b.mul(centred, centred)])
    inverse = b.op("Reciprocal", [b.op("Sqrt", [b.op("Add", [variance, b.const(np.float32(epsilon))])])])
    per_group = b.op("Expand", [inverse, b.const(np.array([1, groups, channels // groups], np.int64))])
    inverse_sigma = b.op(
        "Reshape", [per_group, b.const(np.array([0, channels] + [1] * (rank - 2), np.int64))]
    )
    channel = (1, channels) + (1,) * (rank - 2)

    def scale_by(tensor: str, weight: np.ndarray) -> str:
        return b.mul(
            b.mul(tensor, inverse_sigma), b.const(weight.reshape(channel).astype(np.float32), "gamma")
        )

    bias = b.op("Sub", [z, scale_by(x, gamma)])  # c = y - a x, from the forward output itself
    layer = ctx.linear_layer(x, gamma.astype(np.float32), bias, scale_by, scale_by, z)
    return {0: ctx.propagate(layer, relevance[0])}
