"""Linear layers: Conv, ConvTranspose, Gemm, MatMul and a free-standing BatchNormalization.

Each emitter describes its op as a `LinearLayer` (forward and transpose maps over a weight array)
and lets the node's rule write the relevance nodes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from onnxlrp.builder import GraphBuilder
from onnxlrp.errors import UnsupportedModelError
from onnxlrp.graph import GraphInfo
from onnxlrp.ops import PRODUCT_KIND, EmitContext, register
from onnxlrp.ops.attention import emit_product

# Write a stride-1 Conv's transpose as a Conv (flipped kernel) instead of a ConvTranspose: same
# result, faster in onnxruntime (benchmarks/ measures it; the switch exists for that comparison).
STRIDE1_TRANSPOSE_AS_CONV = True
MIN_CHANNELS_FOR_CONV_TRANSPOSE = 16


def explicit_pads(
    ctx: EmitContext, node: onnx.NodeProto, in_spatial, out_spatial, kernel, strides, dilations
):
    """The node's pads as a begin+end list, resolving auto_pad with the static shapes."""
    rank = len(kernel)
    auto_pad = ctx.attr(node, "auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad in ("NOTSET", ""):
        return list(ctx.attr(node, "pads", [0] * (2 * rank)))
    if auto_pad == "VALID":
        return [0] * (2 * rank)
    begins, ends = [], []
    for size, out, k, s, d in zip(in_spatial, out_spatial, kernel, strides, dilations, strict=True):
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        small = total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else total - small)
        ends.append(total - begins[-1])
    return begins + ends


def conv_geometry(ctx: EmitContext, node: onnx.NodeProto, x: str, out: str, kernel):
    """strides, dilations, explicit pads (end pads grown to match the real output size) and
    ConvTranspose output_padding so that the transpose gives back exactly x's spatial shape."""
    rank = len(kernel)
    in_spatial = ctx.info.shape(x)[2:]
    out_spatial = ctx.info.shape(out)[2:]
    strides = list(ctx.attr(node, "strides", [1] * rank))
    dilations = list(ctx.attr(node, "dilations", [1] * rank))
    pads = explicit_pads(ctx, node, in_spatial, out_spatial, kernel, strides, dilations)
    output_padding = []
    for i in range(rank):
        span = (out_spatial[i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1
        # ceil_mode pooling: the last window may need more end padding than declared
        pads[rank + i] = max(pads[rank + i], span - in_spatial[i] - pads[i])
        output_padding.append(in_spatial[i] - (span - pads[i] - pads[rank + i]))
    return strides, dilations, pads, output_padding


def conv_maps(ctx: EmitContext, node: onnx.NodeProto, x: str, out: str, kernel, group: int):
    """forward (Conv) and transpose (ConvTranspose) maps for a convolution-shaped op."""
    b = ctx.b
    strides, dilations, pads, output_padding = conv_geometry(ctx, node, x, out, kernel)
    geometry: dict[str, Any] = {"strides": strides, "dilations": dilations, "pads": pads, "group": group}

    def forward(inp: str, weight: np.ndarray) -> str:
        return b.op("Conv", [inp, b.const(weight, "w")], **geometry)

    rank = len(kernel)
    conv_pads = [(kernel[i % rank] - 1) * dilations[i % rank] - pads[i] for i in range(2 * rank)]
    for i in range(rank):
        conv_pads[rank + i] += output_padding[i]
    # the Conv form only pays off when the transpose produces enough channels (benchmarks/ measures
    # where: slower for a 1-channel first layer, faster from 64 channels on)
    wide = ctx.info.shape(x)[1] // group >= MIN_CHANNELS_FOR_CONV_TRANSPOSE
    as_conv = STRIDE1_TRANSPOSE_AS_CONV and wide and all(s == 1 for s in strides) and min(conv_pads) >= 0

    def transpose(s: str, weight: np.ndarray) -> str:
        if as_conv:  # a stride-1 transposed conv is a Conv with the flipped, in/out-swapped kernel (faster)
            return b.op(
                "Conv",
                [s, flipped_kernel_const(b, weight, group)],
                strides=strides,
                dilations=dilations,
                pads=conv_pads,
                group=group,
            )
        extra = {"output_padding": output_padding} if any(output_padding) else {}
        return b.op("ConvTranspose", [s, b.const(weight, "w")], **geometry, **extra)

    return forward, transpose


def flipped_kernel(weight: np.ndarray, group: int) -> np.ndarray:
    """The Conv kernel that computes a stride-1 ConvTranspose with `weight` ([out, in/group, *k])."""
    c_out, c_in_per_group, *kernel = weight.shape
    grouped = weight.reshape(group, c_out // group, c_in_per_group, *kernel)
    swapped = np.swapaxes(grouped, 1, 2).reshape(group * c_in_per_group, c_out // group, *kernel)
    return np.ascontiguousarray(np.flip(swapped, axis=tuple(range(2, weight.ndim))))


def flipped_kernel_const(b: GraphBuilder, weight: np.ndarray, group: int) -> str:
    """flipped_kernel(weight, group) as a constant computed from weight's own: Reshape, Transpose and
    Slice nodes that onnxruntime folds when the session starts, so the file stores the weight once."""

    def make() -> str:
        c_out, c_in_per_group, *kernel = weight.shape
        w = b.const(weight, "w")
        if group == 1:
            swapped = b.op("Transpose", [w], perm=[1, 0, *range(2, weight.ndim)])
        else:
            grouped = b.op(
                "Reshape", [w, b.const([group, c_out // group, c_in_per_group, *kernel], dtype=np.int64)]
            )
            swapped = b.op("Transpose", [grouped], perm=[0, 2, 1, *range(3, weight.ndim + 1)])
            shape = [group * c_in_per_group, c_out // group, *kernel]
            swapped = b.op("Reshape", [swapped, b.const(shape, dtype=np.int64)])
        spatial = [axis for axis in range(2, weight.ndim) if weight.shape[axis] > 1]
        if not spatial:
            return swapped
        ends = np.iinfo(np.int64).min
        inputs = [[-1] * len(spatial), [ends] * len(spatial), spatial, [-1] * len(spatial)]
        return b.op("Slice", [swapped, *(b.const(v, dtype=np.int64) for v in inputs)], hint="wt")

    return b.derived(flipped_kernel(weight, group), make)


def layer_bias(ctx: EmitContext, node: onnx.NodeProto, own_bias: np.ndarray | None):
    """The layer's bias shaped to broadcast against its output, and its output tensor (after a fused
    bias Add when there is one)."""
    bias, output = own_bias, node.output[0]
    if node.output[0] in ctx.bias_adds:
        extra, output = ctx.bias_adds[node.output[0]]
        bias = extra if bias is None else bias + extra
    return bias, output


def _const_input(ctx: EmitContext, node: onnx.NodeProto, index: int, what: str) -> np.ndarray:
    value = ctx.info.const(node.input[index])
    if value is None:
        raise UnsupportedModelError(
            f"node '{node.name}' ({node.op_type}): its {what} '{node.input[index]}' is computed from the "
            "input; "
            "only constant weights are supported"
        )
    return value.astype(np.float32)


@register("Conv", kind="conv", facts=("linear_map", "piecewise_linear"))
def emit_conv(ctx: EmitContext, node: onnx.NodeProto, relevance: list) -> dict:
    x = node.input[0]
    weight = _const_input(ctx, node, 1, "weight")
    rank = weight.ndim - 2
    own_bias = None
    if len(node.input) > 2 and node.input[2]:
        own_bias = _const_input(ctx, node, 2, "bias").reshape((1, -1) + (1,) * rank)
    bias, output = layer_bias(ctx, node, own_bias)
    forward, transpose = conv_maps(ctx, node, x, node.output[0], weight.shape[2:], ctx.attr(node, "group", 1))
    layer = ctx.linear_layer(x, weight, bias, forward, transpose, output)
    return {0: ctx.propagate(layer, relevance[0])}


def _matmul_layer(ctx: EmitContext, node, x_index: int, weight: np.ndarray, own_bias, trans_x: bool):
    """z = x' @ W (activation left) or z = W @ x' (activation right), x' = x or x^T."""
    b = ctx.b
    x = node.input[x_index]
    right = x_index == 1

    def maybe_t(name: str) -> str:
        return b.op("Transpose", [name], perm=[1, 0]) if trans_x else name

    def forward(inp: str, w: np.ndarray) -> str:
        operands = [b.const(w, "w"), maybe_t(inp)] if right else [maybe_t(inp), b.const(w, "w")]
        return b.op("MatMul", operands)

    def transpose(s: str, w: np.ndarray) -> str:
        perm = [*range(w.ndim - 2), w.ndim - 1, w.ndim - 2]
        wt = b.derived(np.swapaxes(w, -1, -2), lambda: b.op("Transpose", [b.const(w, "w")], perm=perm))
        return maybe_t(b.op("MatMul", [wt, s] if right else [s, wt]))

    bias, output = layer_bias(ctx, node, own_bias)
    return ctx.linear_layer(x, weight, bias, forward, transpose, output)


def _activation_index(ctx: EmitContext, node: onnx.NodeProto) -> int:
    dynamic = [i for i in (0, 1) if node.input[i] in ctx.info.relevant]
    if len(dynamic) != 1:
        raise UnsupportedModelError(
            f"node '{node.name}' ({node.op_type}): both operands depend on the input; only a product with "
            "a constant weight is a linear layer"
        )
    return dynamic[0]


@register("Gemm", kind="dense", data_inputs=(0, 1), facts=("linear_map", "piecewise_linear"))
def emit_gemm(ctx: EmitContext, node: onnx.NodeProto, relevance: list) -> dict:
    x_index = _activation_index(ctx, node)
    trans = [ctx.attr(node, "transA", 0), ctx.attr(node, "transB", 0)]
    weight = _const_input(ctx, node, 1 - x_index, "weight")
    if trans[1 - x_index]:
        weight = weight.T
    weight = (ctx.attr(node, "alpha", 1.0) * weight).astype(np.float32)
    bias = None
    if len(node.input) > 2 and node.input[2]:
        bias = (ctx.attr(node, "beta", 1.0) * _const_input(ctx, node, 2, "bias C")).astype(np.float32)
    layer = _matmul_layer(ctx, node, x_index, weight, bias, bool(trans[x_index]))
    return {x_index: ctx.propagate(layer, relevance[0])}


def _matmul_kind(node: onnx.NodeProto, info: GraphInfo) -> str:
    """dense (a constant weight), or a product of two activations (Q K^T, A V)."""
    return PRODUCT_KIND if all(name in info.relevant for name in node.input[:2]) else "dense"


@register(
    "MatMul",
    kind="dense",
    data_inputs=(0, 1),
    facts=("linear_map", "piecewise_linear"),
    kind_of=_matmul_kind,
)
def emit_matmul(ctx: EmitContext, node: onnx.NodeProto, relevance: list) -> dict:
    if _matmul_kind(node, ctx.info) == PRODUCT_KIND:
        return emit_product(ctx, node, relevance)
    x_index = _activation_index(ctx, node)
    weight = _const_input(ctx, node, 1 - x_index, "weight")
    layer = _matmul_layer(ctx, node, x_index, weight, None, False)
    return {x_index: ctx.propagate(layer, relevance[0])}


@register("BatchNormalization", kind="affine", facts=("piecewise_linear",))
def emit_batchnorm(ctx: EmitContext, node: onnx.NodeProto, relevance: list) -> dict:
    """A BatchNormalization that could not be folded: the affine map y = a x + c per channel."""
    scale, shift, mean, var = (_const_input(ctx, node, i, "statistics") for i in range(1, 5))
    a = scale / np.sqrt(var + ctx.attr(node, "epsilon", 1e-5))
    rank = len(ctx.info.shape(node.input[0]))
    channel = (1, -1) + (1,) * (rank - 2)
    b = ctx.b

    def scale_by(inp: str, w: np.ndarray) -> str:
        return b.op("Mul", [inp, b.const(w.reshape(channel), "bn")])

    bias, output = layer_bias(ctx, node, (shift - mean * a).reshape(channel))
    layer = ctx.linear_layer(node.input[0], a.astype(np.float32), bias, scale_by, scale_by, output)
    return {0: ctx.propagate(layer, relevance[0])}


@register("ConvTranspose", kind="conv", facts=("linear_map", "piecewise_linear"))
def emit_conv_transpose(ctx: EmitContext, node: onnx.NodeProto, relevance: list) -> dict:
    """An upsampling layer is linear too: its transpose is a Conv with the same weight and geometry."""
    b = ctx.b
    x, out = node.input[0], node.output[0]
    weight = _const_input(ctx, node, 1, "weight")
    rank = weight.ndim - 2
    kernel = weight.shape[2:]
    group = ctx.attr(node, "group", 1)
    strides = list(ctx.attr(node, "strides", [1] * rank))
    dilations = list(ctx.attr(node, "dilations", [1] * rank))
    in_spatial, out_spatial = ctx.info.shape(x)[2:], ctx.info.shape(out)[2:]
    output_padding = list(ctx.attr(node, "output_padding", [0] * rank))
    pads = list(ctx.attr(node, "pads", []))
    if not pads:
        auto_pad = ctx.attr(node, "auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        begins, ends = [], []
        for i in range(rank):
            total = strides[i] * (in_spatial[i] - 1) + output_padding[i] + (kernel[i] - 1) * dilations[i] + 1
            total -= out_spatial[i]
            begin = total - total // 2 if auto_pad == "SAME_UPPER" else total // 2  # the ONNX spec's split
            begins.append(begin)
            ends.append(total - begin)
        pads = begins + ends
    geometry: dict[str, Any] = {"strides": strides, "dilations": dilations, "pads": pads, "group": group}

    def forward(inp: str, w: np.ndarray) -> str:
        extra: dict[str, Any] = {"output_padding": output_padding} if any(output_padding) else {}
        return b.op("ConvTranspose", [inp, b.const(w, "w")], **geometry, **extra)

    def transpose(s: str, w: np.ndarray) -> str:
        return b.op("Conv", [s, b.const(w, "w")], **geometry)

    own_bias = None
    if len(node.input) > 2 and node.input[2]:
        own_bias = _const_input(ctx, node, 2, "bias").reshape((1, -1) + (1,) * rank)
    bias, output = layer_bias(ctx, node, own_bias)
    layer = ctx.linear_layer(x, weight, bias, forward, transpose, output)
    return {0: ctx.propagate(layer, relevance[0])}
