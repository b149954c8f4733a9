"""Max pooling is winner-take-all: each window's relevance goes to its first maximum in row-major
order (onnxruntime's `Indices`, PyTorch's gradient and zennit agree).

The default graph finds the winners with operators every runtime implements (Slice, Pad,
Reshape/Transpose, Concat, ArgMax, Equal, Sum): a window's taps, stacked in row-major order, give
ArgMax's first maximum. `runtime="onnxruntime"` routes through MaxPool's
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
    """A pool's windows: explicit pads (end pads grown by what a ceil_mode window reaches past x)."""

    kernel: list
    strides: list
    dilations: list
    pads: list


@register("MaxPool", kind="maxpool", zeros="passed", facts=("order_preserving", "pool", "piecewise_linear"))
def emit_maxpool(ctx: EmitContext, node: onnx.NodeProto, relevance: list) -> dict:
    if ctx.attr(node, "storage_order", 0) != 0:
        raise UnsupportedModelError(f"node '{node.name}' (MaxPool): storage_order=1 is not supported")
    kernel = list(ctx.attr(node, "kernel_shape"))
    strides, dilations, pads, _ = conv_geometry(ctx, node, node.input[0], node.output[0], kernel)
    w = Windows(kernel, strides, dilations, pads)
    if ctx.runtime == "onnxruntime":
        return {0: _route_by_indices(ctx, node, relevance[0], w)}
    if w.strides == kernel and all(d == 1 for d in w.dilations):
        return {0: _route_tiles(ctx, node, relevance[0], w)}
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
    """Pad the axes of x after the first two (zeros, or the scalar `value`)."""
    if not any(begin) and not any(end):
        return x
    b = ctx.b
    pads = b.const(np.array([0, 0, *begin, 0, 0, *end], np.int64))
    return b.op("Pad", [x, pads] + ([b.const(value, "pad_value")] if value is not None else []))


def _crop(ctx: EmitContext, x: str, starts: list, ends: list, steps: list | None = None) -> str:
    """x[:, :, starts[0]:ends[0]:steps[0], starts[1]:ends[1]:steps[1], ...]."""
    b = ctx.b
    axes = b.const(np.arange(2, 2 + len(starts), dtype=np.int64))
    bounds = [b.const(np.array(v, np.int64)) for v in (starts, ends)]
    if steps is not None and any(s != 1 for s in steps):
        return b.op("Slice", [x, *bounds, axes, b.const(np.array(steps, np.int64))])
    return b.op("Slice", [x, *bounds, axes])


def _transpose(ctx: EmitContext, x: str, perm: list) -> str:
    return x if perm == sorted(perm) else ctx.b.op("Transpose", [x], perm=perm)


def _blocks_last(ctx: EmitContext, x: str, channels: int, grid: list, blocks: list) -> str:
    """[N, C, g_1 b_1, ..., g_R b_R] -> [N, C, g_1, ..., g_R, b_1 ... b_R] (each block's values, row-major,
    on the last axis). The 2-D Transpose swaps two middle axes and keeps the last: a cheap copy, unlike
    SpaceToDepth/DepthToSpace, which move single values."""
    b = ctx.b
    rank = len(grid)
    split = [channels, *itertools.chain.from_iterable(zip(grid, blocks, strict=True))]
    perm = [0, 1, *range(2, 2 + 2 * rank, 2), *range(3, 3 + 2 * rank, 2)]
    moved = _transpose(ctx, b.op("Reshape", [x, b.const(np.array([0, *split], np.int64))]), perm)
    return b.op("Reshape", [moved, b.const(np.array([0, channels, *grid, int(np.prod(blocks))], np.int64))])


def _blocks_back(ctx: EmitContext, x: str, channels: int, grid: list, blocks: list) -> str:
    """The inverse of `_blocks_last`."""
    b = ctx.b
    rank = len(grid)
    perm = [0, 1, *itertools.chain.from_iterable((2 + d, 2 + rank + d) for d in range(rank))]
    moved = b.op("Reshape", [x, b.const(np.array([0, channels, *grid, *blocks], np.int64))])
    covered = [g * k for g, k in zip(grid, blocks, strict=True)]
    return b.op(
        "Reshape",
        [_transpose(ctx, moved, perm), b.const(np.array([0, channels, *covered], np.int64))],
    )


def _place(ctx: EmitContext, placed: str, begin: list, covered: list, in_spatial: list) -> str:
    """Relevance on the padded grid [N, C, *covered] -> on x: the pads cropped, zeros where no window
    reaches."""
    rank = len(in_spatial)
    ends = [min(c, p + i) for c, p, i in zip(covered, begin, in_spatial, strict=True)]
    if any(begin) or ends != covered:
        placed = _crop(ctx, placed, begin, ends)
    uncovered = [i - (e - s) for i, s, e in zip(in_spatial, begin, ends, strict=True)]
    return _pad(ctx, placed, [0] * rank, uncovered)


def _shares(ctx: EmitContext, first: str, relevance: str, taps: int) -> list[str]:
    """Each tap's share of the relevance, [N, C, *out]: all of it where the tap is its window's first
    maximum (`first`, ArgMax's tap index per window), zero elsewhere. One Equal/Mul per tap on
    same-shaped tensors: onnxruntime broadcasts slowly along a short last axis."""
    b = ctx.b
    shares = []
    for tap in range(taps):
        won = b.op("Equal", [first, b.const(np.array(tap, np.int64))])
        shares.append(b.op("Mul", [b.op("Cast", [won], to=onnx.TensorProto.FLOAT), relevance]))
    return shares


def _route_tiles(ctx: EmitContext, node: onnx.NodeProto, relevance: str, w: Windows) -> str:
    """Windows that tile the (padded) input, stride = kernel: each window's taps, row-major, moved to
    the last axis for ArgMax, and the routed relevance moved back."""
    b = ctx.b
    x, y = node.input[0], node.output[0]
    channels, *in_spatial = ctx.info.shape(x)[1:]
    out = list(ctx.info.shape(y)[2:])
    rank = len(out)
    covered = [o * k for o, k in zip(out, w.kernel, strict=True)]
    begin = w.pads[:rank]
    end = [max(0, c - p - i) for c, p, i in zip(covered, begin, in_spatial, strict=True)]
    grid = _pad(ctx, x, begin, end, NEGATIVE_INFINITY)
    extent = [p + i + e for p, i, e in zip(begin, in_spatial, end, strict=True)]
    if extent != covered:  # floor mode: the last rows/columns are in no window
        grid = _crop(ctx, grid, [0] * rank, covered)
    first = b.op("ArgMax", [_blocks_last(ctx, grid, channels, out, w.kernel)], axis=-1, keepdims=0)
    last = b.const(np.array([-1], np.int64))
    shares = _shares(ctx, first, relevance, int(np.prod(w.kernel)))
    routed = b.op("Concat", [b.op("Unsqueeze", [share, last]) for share in shares], axis=-1)
    placed = _blocks_back(ctx, routed, channels, out, w.kernel)
    return _place(ctx, placed, begin, covered, in_spatial)


def _route_windows(ctx: EmitContext, node: onnx.NodeProto, relevance: str, w: Windows) -> str:
    """Any windows (overlapping, dilated, padded, any rank). A tap at offset o = s*q + r (per axis,
    stride s) reads the padded input's phase r (rows r, r + s, ...: one strided Slice per phase)
    from pooled row q on; the taps, stacked row-major, give ArgMax's first maximum. Each tap's share
    goes back shifted by q (Pad), summed per phase, and the phases are interleaved into the input's
    rows (on the last axis, then Reshape/Transpose), all at the pooled size."""
    b = ctx.b
    x, y = node.input[0], node.output[0]
    rank = len(w.kernel)
    channels, *in_spatial = ctx.info.shape(x)[1:]
    out = list(ctx.info.shape(y)[2:])
    padded = _pad(ctx, x, w.pads[:rank], w.pads[rank:], NEGATIVE_INFINITY)
    extent = [p + i + e for p, i, e in zip(w.pads[:rank], in_spatial, w.pads[rank:], strict=True)]
    one, last = b.const(np.array([1], np.int64)), b.const(np.array([-1], np.int64))
    phase_of: dict[tuple, str] = {}
    taps, stacked = [], []
    for tap in itertools.product(*[range(k) for k in w.kernel]):  # row-major
        offset = [t * d for t, d in zip(tap, w.dilations, strict=True)]
        q = [o // s for o, s in zip(offset, w.strides, strict=True)]
        r = tuple(o % s for o, s in zip(offset, w.strides, strict=True))
        if r not in phase_of:
            strided = any(r) or any(s > 1 for s in w.strides)
            phase_of[r] = _crop(ctx, padded, list(r), extent, w.strides) if strided else padded
        crop = _crop(ctx, phase_of[r], q, [v + o for v, o in zip(q, out, strict=True)])
        stacked.append(b.op("Unsqueeze", [crop, one]))
        taps.append((q, r))
    first = b.op("ArgMax", [b.op("Concat", stacked, axis=1)], axis=1, keepdims=0)  # [N, C, *out]
    reach = [(k - 1) * d // s for k, d, s in zip(w.kernel, w.dilations, w.strides, strict=True)]
    phases: dict[tuple, list[str]] = {}
    for (q, r), share in zip(taps, _shares(ctx, first, relevance, len(taps)), strict=True):
        rest = [m - v for m, v in zip(reach, q, strict=True)]
        phases.setdefault(r, []).append(_pad(ctx, share, q, rest))
    summed = {r: terms[0] if len(terms) == 1 else b.op("Sum", terms) for r, terms in phases.items()}
    grid = [o + m for o, m in zip(out, reach, strict=True)]  # the pooled rows each phase spans
    parts = []
    for r in itertools.product(*[range(s) for s in w.strides]):  # row-major, as _blocks_back reads
        if r not in summed:  # no tap lands in this phase (stride > kernel)
            zeros = b.const(np.zeros([1] * (rank + 2), np.float32), "zeros")
            summed[r] = b.op("Expand", [zeros, b.op("Shape", [next(iter(summed.values()))])])
        parts.append(b.op("Unsqueeze", [summed[r], last]))
    if len(parts) == 1:  # stride 1
        placed = summed[r]
    else:
        phased = b.op("Concat", parts, axis=-1)  # [N, C, *grid, S]
        placed = _blocks_back(ctx, phased, channels, grid, w.strides)
    covered = [g * s for g, s in zip(grid, w.strides, strict=True)]
    return _place(ctx, placed, w.pads[:rank], covered, in_spatial)


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
