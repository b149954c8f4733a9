"""Ops that only move values around: relevance is moved back the same way."""

from __future__ import annotations

import numpy as np
import onnx

from onnxlrp.errors import UnsupportedModelError
from onnxlrp.ops import EmitContext, register


@register(
    "Flatten",
    "Reshape",
    "Squeeze",
    "Unsqueeze",
    zeros="passed",
    facts=("order_preserving", "shape_only", "piecewise_linear"),
)
def emit_reshape(ctx: EmitContext, node: onnx.NodeProto, relevance: list) -> dict:
    return {0: ctx.b.reshape_like(relevance[0], node.input[0])}


@register("Transpose", zeros="passed", facts=("order_preserving", "piecewise_linear"))
def emit_transpose(ctx: EmitContext, node: onnx.NodeProto, relevance: list) -> dict:
    rank = len(ctx.info.shape(node.input[0]))
    perm = list(ctx.attr(node, "perm", list(reversed(range(rank)))))
    inverse = [perm.index(i) for i in range(rank)]
    return {0: ctx.b.op("Transpose", [relevance[0]], perm=inverse)}


def _axis(ctx: EmitContext, node: onnx.NodeProto, default: int = 0) -> int:
    axis = ctx.attr(node, "axis", default)
    rank = len(ctx.info.shape(node.output[0]))
    axis = axis + rank if axis < 0 else axis
    if axis == 0:
        raise UnsupportedModelError(f"node '{node.name}' ({node.op_type}): joining along the batch axis")
    return axis


@register("Concat", data_inputs=None, zeros="passed", facts=("order_preserving", "piecewise_linear"))
def emit_concat(ctx: EmitContext, node: onnx.NodeProto, relevance: list) -> dict:
    axis = _axis(ctx, node)
    for name in node.input:
        ctx.info.require_fixed(name, [axis], f"node '{node.name}' (Concat)")
    sizes = np.array([ctx.info.shape(name)[axis] for name in node.input], np.int64)
    parts = ctx.b.op_multi("Split", [relevance[0], ctx.b.const(sizes)], n_out=len(sizes), axis=axis)
    return {i: part for i, part in enumerate(parts) if node.input[i] in ctx.info.relevant}


@register("Split", zeros="passed", facts=("order_preserving",))
def emit_split(ctx: EmitContext, node: onnx.NodeProto, relevance: list) -> dict:
    axis = _axis(ctx, node)
    b = ctx.b
    parts = []
    for name, rel in zip(node.output, relevance, strict=True):
        parts.append(rel if rel is not None else b.op("Mul", [name, b.const(np.float32(0))]))
    return {0: b.op("Concat", parts, axis=axis)}


@register("Pad", zeros="passed", facts=("order_preserving", "piecewise_linear"))
def emit_pad(ctx: EmitContext, node: onnx.NodeProto, relevance: list) -> dict:
    mode = ctx.attr(node, "mode", b"constant")
    if (mode.decode() if isinstance(mode, bytes) else mode) != "constant":
        raise UnsupportedModelError(f"node '{node.name}' (Pad): only mode=constant is supported")
    in_shape, out_shape = ctx.info.shape(node.input[0]), ctx.info.shape(node.output[0])
    pads = ctx.info.const(node.input[1]) if len(node.input) > 1 else np.array(ctx.attr(node, "pads"))
    if pads is None:
        raise UnsupportedModelError(f"node '{node.name}' (Pad): pads must be constant")
    rank = len(in_shape)
    axes = list(range(rank))
    if len(node.input) > 3 and node.input[3]:
        given = ctx.info.const(node.input[3])
        if given is None:
            raise UnsupportedModelError(f"node '{node.name}' (Pad): axes must be constant")
        axes = [a % rank for a in given.tolist()]
    ctx.info.require_fixed(node.input[0], range(1, rank), f"node '{node.name}' (Pad)")
    begins = dict(zip(axes, pads[: len(axes)].tolist(), strict=True))
    starts = [begins.get(a, 0) for a in range(1, rank)]
    ends = [begins.get(a, 0) + in_shape[a] for a in range(1, rank)]
    if any(s < 0 for s in starts) or any(e > o for e, o in zip(ends, out_shape[1:], strict=True)):
        raise UnsupportedModelError(f"node '{node.name}' (Pad): negative pads (cropping) are not supported")
    b = ctx.b
    cut = b.op(
        "Slice",
        [
            relevance[0],
            b.const(np.array(starts, np.int64)),
            b.const(np.array(ends, np.int64)),
            b.const(np.arange(1, rank, dtype=np.int64)),
        ],
    )
    return {0: cut}


@register("Slice", zeros="passed", facts=("piecewise_linear",))
def emit_slice(ctx: EmitContext, node: onnx.NodeProto, relevance: list) -> dict:
    """Relevance of the kept part goes back in place; the cut-off part gets none (zero padding)."""
    in_shape = ctx.info.shape(node.input[0])
    rank = len(in_shape)
    # bounds computed from shapes (TorchScript's torch.chunk) are fixed once the shapes are: the batch
    # axis, the one shape that varies, may not be sliced (below)
    values = [ctx.info.const_or_from_shapes(name) if name else None for name in node.input[1:]]
    first, last = values[0], values[1]
    if first is None or last is None or any(v is None for i, v in enumerate(values[2:]) if node.input[i + 3]):
        raise UnsupportedModelError(
            f"node '{node.name}' (Slice): starts, ends, axes and steps must be constant or computed "
            "from shapes"
        )
    starts, ends = first.tolist(), last.tolist()
    axes = values[2].tolist() if len(values) > 2 and values[2] is not None else list(range(len(starts)))
    steps = values[3].tolist() if len(values) > 3 and values[3] is not None else [1] * len(starts)
    if any(step != 1 for step in steps):
        raise UnsupportedModelError(f"node '{node.name}' (Slice): only step 1 is supported")
    ctx.info.require_fixed(node.input[0], axes, f"node '{node.name}' (Slice)")
    pads = [0] * (2 * rank)
    for start, end, axis in zip(starts, ends, axes, strict=True):
        axis %= rank
        size = in_shape[axis]
        begin = min(max(start + size if start < 0 else start, 0), size)
        stop = min(max(end + size if end < 0 else end, 0), size)
        if axis == 0:
            raise UnsupportedModelError(f"node '{node.name}' (Slice): slicing the batch axis")
        pads[axis], pads[rank + axis] = begin, size - max(stop, begin)
    b = ctx.b
    return {0: b.op("Pad", [relevance[0], b.const(np.array(pads, np.int64))], mode="constant")}
