"""Max pooling is winner-take-all: each window's relevance goes to its first maximum in row-major
order (onnxruntime's `Indices`, PyTorch's gradient and zennit agree).

The default graph finds the winners with operators every runtime implements (Slice, ArgMax, Equal,
SpaceToDepth/DepthToSpace, depthwise ConvTranspose, ReduceSum): a window's taps, stacked in
row-major order, give ArgMax's first maximum. `runtime="onnxruntime"` routes through MaxPool's
`Indices` output with MaxUnpool/ScatterElements instead, which only onnxruntime (CPU) implements.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np
import onnx

from onnxlrp.errors import UnsupportedModelError
from onnxlrp.ops import EmitContext, register
from onnxlrp.ops.linear import conv_geometry

NEGATIVE_INFINITY = np.array(-np.inf, np.float32)


class Windows(NamedTuple):
    """A pool's windows: explicit pads (end pads grown by what a ceil_mode window reaches past x) and
    the ConvTranspose output_padding that gives back x's spatial shape."""

    kernel: list
    strides: list
    dilations: list
    pads: list
    output_padding: list


@register("MaxPool", kind="maxpool", zeros="passed", facts=("order_preserving", "pool", "piecewise_linear"))
def emit_maxpool(ctx: EmitContext, node: onnx.NodeProto, relevance: list) -> dict:
    if ctx.attr(node, "storage_order", 0) != 0:
        raise UnsupportedModelError(f"node '{node.name}' (MaxPool): storage_order=1 is not supported")
    kernel = list(ctx.attr(node, "kernel_shape"))
    w = Windows(kernel, *conv_geometry(ctx, node, node.input[0], node.output[0], kernel))
    if ctx.runtime == "onnxruntime":
        return {0: _route_by_indices(ctx, node, relevance[0], w)}
    square_tiles = len(kernel) == 2 and kernel[0] == kernel[1] == w.strides[0] == w.strides[1]
    if square_tiles and w.dilations == [1, 1]:
        return {0: _route_square_tiles(ctx, node, relevance[0], w)}
    return {0: _route_windows(ctx, node, relevance[0], w)}


def route_to_first_max(
    ctx: EmitContext, windows: str, relevance: str, axis: int, taps: int, ndim: int
) -> str:
    """Window values (`ndim` axes) with the taps on `axis`, in row-major order -> the relevance (the
    same shape without `axis`) at each window's first maximum (ArgMax picks the first of equal
    values), zero at its other taps."""
    b = ctx.b
    first = b.op("ArgMax", [windows], axis=axis, keepdims=1)
    shape = [1] * ndim
    shape[axis] = taps
    tap = b.const(np.arange(taps, dtype=np.int64).reshape(shape), "taps")
    mask = b.op("Cast", [b.op("Equal", [first, tap])], to=onnx.TensorProto.FLOAT)
    return b.op("Mul", [mask, b.op("Unsqueeze", [relevance, b.const(np.array([axis], np.int64))])])


def _pad(ctx: EmitContext, x: str, begin: list, end: list, value: np.ndarray | None = None) -> str:
    """Pad the spatial axes of x (zeros, or the scalar `value`)."""
    if not any(begin) and not any(end):
        return x
    b = ctx.b
    pads = b.const(np.array([0, 0, *begin, 0, 0, *end], np.int64))
    return b.op("Pad", [x, pads] + ([b.const(value, "pad_value")] if value is not None else []))


def _crop(ctx: EmitContext, x: str, starts: list, ends: list) -> str:
    """x[:, :, starts[0]:ends[0], starts[1]:ends[1], ...]."""
    b = ctx.b
    axes = np.arange(2, 2 + len(starts), dtype=np.int64)
    bounds = [b.const(np.array(v, np.int64)) for v in (starts, ends)]
    return b.op("Slice", [x, *bounds, b.const(axes)])


def _route_square_tiles(ctx: EmitContext, node: onnx.NodeProto, relevance: str, w: Windows) -> str:
    """Windows that tile the (padded) input, k x k with stride k: SpaceToDepth stacks each window's
    taps in row-major order, DepthToSpace puts the routed relevance back."""
    b = ctx.b
    x, y = node.input[0], node.output[0]
    channels, *in_spatial = ctx.info.shape(x)[1:]
    out = list(ctx.info.shape(y)[2:])
    k = w.kernel[0]
    covered = [o * k for o in out]
    begin = w.pads[:2]
    end = [max(0, c - p - i) for c, p, i in zip(covered, begin, in_spatial, strict=True)]
    grid = _pad(ctx, x, begin, end, NEGATIVE_INFINITY)
    extent = [p + i + e for p, i, e in zip(begin, in_spatial, end, strict=True)]
    if extent != covered:  # floor mode: the last rows/columns are in no window
        grid = _crop(ctx, grid, [0, 0], covered)
    stacked = b.op("SpaceToDepth", [grid], blocksize=k)  # [N, k*k*C, Ho, Wo], channel = tap * C + c
    windows = b.op("Reshape", [stacked, b.const(np.array([0, k * k, channels, *out], np.int64))])
    routed = route_to_first_max(ctx, windows, relevance, axis=1, taps=k * k, ndim=5)
    routed = b.op("Reshape", [routed, b.const(np.array([0, k * k * channels, *out], np.int64))])
    placed = b.op("DepthToSpace", [routed], blocksize=k, mode="DCR")  # on the covered grid
    ends = [min(c, p + i) for c, p, i in zip(covered, begin, in_spatial, strict=True)]
    if begin != [0, 0] or ends != covered:
        placed = _crop(ctx, placed, begin, ends)
    uncovered = [i - (e - s) for i, s, e in zip(in_spatial, begin, ends, strict=True)]
    return _pad(ctx, placed, [0, 0], uncovered)


def _route_windows(ctx: EmitContext, node: onnx.NodeProto, relevance: str, w: Windows) -> str:
    """Any windows (overlapping, dilated, padded, any rank): one strided Slice per tap stacks the
    windows; one-hot ConvTransposes put the routed relevance back."""
    b = ctx.b
    x, y = node.input[0], node.output[0]
    rank = len(w.kernel)
    channels = ctx.info.shape(x)[1]
    out = list(ctx.info.shape(y)[2:])
    taps = int(np.prod(w.kernel))
    padded = _pad(ctx, x, w.pads[:rank], w.pads[rank:], NEGATIVE_INFINITY)
    axes, steps = b.const(np.arange(2, 2 + rank, dtype=np.int64)), b.const(np.array(w.strides, np.int64))
    two = b.const(np.array([2], np.int64))
    stacked = []
    for tap in itertools.product(*[range(k) for k in w.kernel]):  # row-major
        start = [t * d for t, d in zip(tap, w.dilations, strict=True)]
        end = [s + (o - 1) * st + 1 for s, o, st in zip(start, out, w.strides, strict=True)]
        starts, ends = b.const(np.array(start, np.int64)), b.const(np.array(end, np.int64))
        stacked.append(b.op("Unsqueeze", [b.op("Slice", [padded, starts, ends, axes, steps]), two]))
    windows = b.op("Concat", stacked, axis=2)  # [N, C, taps, *out]
    routed = route_to_first_max(ctx, windows, relevance, axis=2, taps=taps, ndim=rank + 3)
    routed = b.op("Reshape", [routed, b.const(np.array([0, channels * taps, *out], np.int64))])
    # each tap's relevance to its place with a depthwise one-hot ConvTranspose, then the taps summed
    # (one group per tap: onnxruntime-web's WebGPU gets grouped ConvTransposes with several input
    # channels per group wrong for small kernels)
    one_hot = np.zeros((channels, taps, taps), np.float32)
    one_hot[:, np.arange(taps), np.arange(taps)] = 1
    one_hot = one_hot.reshape(channels * taps, 1, *w.kernel)
    placed = b.op(
        "ConvTranspose",
        [routed, b.const(one_hot, "one_hot")],
        strides=w.strides,
        dilations=w.dilations,
        pads=w.pads,
        group=channels * taps,
        output_padding=w.output_padding if any(w.output_padding) else None,
    )
    in_spatial = list(ctx.info.shape(x)[2:])
    placed = b.op("Reshape", [placed, b.const(np.array([0, channels, taps, *in_spatial], np.int64))])
    return b.op("ReduceSum", [placed, two], keepdims=0)


def _route_by_indices(ctx: EmitContext, node: onnx.NodeProto, relevance: str, w: Windows) -> str:
    """onnxruntime only: MaxPool's `Indices` output (flat offsets over N*C*H*W) with MaxUnpool where
    the windows are disjoint, ScatterElements(add) where they overlap."""
    b = ctx.b
    x, indices = node.input[0], b.forward_output(node, 1, "maxpool_indices")
    disjoint = zip(w.kernel, w.strides, w.dilations, strict=True)
    if all(k == 1 or (d == 1 and s >= k) for k, s, d in disjoint):  # each input in one window at most
        inputs = [relevance, indices, b.op("Shape", [x])]
        return b.op("MaxUnpool", inputs, kernel_shape=w.kernel, strides=w.strides, pads=w.pads)
    minus_one = b.const(np.array([-1], np.int64))
    shape = b.op("Shape", [x])
    zeros = b.op("Reshape", [b.op("ConstantOfShape", [shape]), minus_one])
    flat = [b.op("Reshape", [t, minus_one]) for t in (indices, relevance)]
    scattered = b.op("ScatterElements", [zeros, *flat], axis=0, reduction="add")
    return b.op("Reshape", [scattered, shape])
