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


def _crop(ctx: EmitContext, x: str, starts: list, ends: list, steps: list | None = None) -> str:
    """x[:, :, starts[0]:ends[0]:steps[0], starts[1]:ends[1]:steps[1], ...]."""
    b = ctx.b
    axes = np.arange(2, 2 + len(starts), dtype=np.int64)
    bounds = [b.const(np.array(v, np.int64)) for v in (starts, ends)]
    if steps is not None and any(s != 1 for s in steps):
        bounds.append(b.const(axes))
        return b.op("Slice", [x, *bounds, b.const(np.array(steps, np.int64))])
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
    windows for ArgMax. A tap at offset o = s*q + r (per axis, stride s) puts its share at input row
    s*(i + q) + r of window i: the shares are shifted by q on the pooled grid (Pad), summed per phase r,
    and the phases interleaved back (Reshape/Transpose), all at the pooled size."""
    b = ctx.b
    x, y = node.input[0], node.output[0]
    rank = len(w.kernel)
    channels, *in_spatial = ctx.info.shape(x)[1:]
    out = list(ctx.info.shape(y)[2:])
    padded = _pad(ctx, x, w.pads[:rank], w.pads[rank:], NEGATIVE_INFINITY)
    one = b.const(np.array([1], np.int64))
    offsets = [
        [t * d for t, d in zip(tap, w.dilations, strict=True)]
        for tap in itertools.product(*[range(k) for k in w.kernel])  # row-major
    ]
    extent = [p + i + e for p, i, e in zip(w.pads[:rank], in_spatial, w.pads[rank:], strict=True)]
    phases_in: dict[tuple, str] = {}
    stacked = []
    for offset in offsets:
        q = [o // s for o, s in zip(offset, w.strides, strict=True)]
        r = tuple(o % s for o, s in zip(offset, w.strides, strict=True))
        if r not in phases_in:  # the padded input's rows r, r + s, ...
            phases_in[r] = _crop(ctx, padded, list(r), extent, w.strides)
        tap = _crop(ctx, phases_in[r], q, [v + o for v, o in zip(q, out, strict=True)])
        stacked.append(b.op("Unsqueeze", [tap, one]))
    first = b.op("ArgMax", [b.op("Concat", stacked, axis=1)], axis=1, keepdims=1)  # [N, 1, C, *out]
    shares = b.op("Unsqueeze", [relevance, one])
    reach = [(k - 1) * d // s for k, d, s in zip(w.kernel, w.dilations, w.strides, strict=True)]
    phases: dict[tuple, list[str]] = {}
    for tap, offset in enumerate(offsets):
        won = b.op("Equal", [first, b.const(np.array(tap, np.int64))])
        share = b.op("Mul", [b.op("Cast", [won], to=onnx.TensorProto.FLOAT), shares])
        q = [o // s for o, s in zip(offset, w.strides, strict=True)]
        r = tuple(o % s for o, s in zip(offset, w.strides, strict=True))
        shifted = _pad(ctx, share, [0, *q], [0, *[m - v for m, v in zip(reach, q, strict=True)]])
        phases.setdefault(r, []).append(shifted)
    summed = {r: terms[0] if len(terms) == 1 else b.op("Sum", terms) for r, terms in phases.items()}
    grid = [(o + m) for o, m in zip(out, reach, strict=True)]  # the pooled rows a phase covers
    parts = []
    for r in itertools.product(*[range(s) for s in w.strides]):  # row-major: DepthToSpace's DCR order
        if r not in summed:  # no tap lands there (stride > kernel)
            zeros = b.const(np.zeros([1] * (rank + 3), np.float32), "zeros")
            summed[r] = b.op("Expand", [zeros, b.op("Shape", [next(iter(summed.values()))])])
        parts.append(summed[r])
    phased = b.op("Concat", parts, axis=1) if len(parts) > 1 else parts[0]  # [N, S, C, *grid]
    if rank == 2 and w.strides[0] == w.strides[1]:
        flat = b.op("Reshape", [phased, b.const(np.array([0, -1, *grid], np.int64))])
        placed = b.op("DepthToSpace", [flat], blocksize=w.strides[0], mode="DCR") if len(parts) > 1 else flat
    else:  # [N, s_1 ... s_R, C, U_1 ... U_R] -> [N, C, U_1, s_1, ..., U_R, s_R] -> [N, C, U_1 s_1, ...]
        split = b.op("Reshape", [phased, b.const(np.array([0, *w.strides, channels, *grid], np.int64))])
        perm = [0, 1 + rank, *itertools.chain.from_iterable((2 + rank + d, 1 + d) for d in range(rank))]
        covered = [u * s for u, s in zip(grid, w.strides, strict=True)]
        shape = b.const(np.array([0, channels, *covered], np.int64))
        placed = b.op("Reshape", [b.op("Transpose", [split], perm=perm), shape])
    covered = [u * s for u, s in zip(grid, w.strides, strict=True)]
    begin = w.pads[:rank]
    ends = [min(c, p + i) for c, p, i in zip(covered, begin, in_spatial, strict=True)]
    if any(begin) or ends != covered:
        placed = _crop(ctx, placed, begin, ends)
    uncovered = [i - (e - s) for i, s, e in zip(in_spatial, begin, ends, strict=True)]
    return _pad(ctx, placed, [0] * rank, uncovered)


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
