"""Reductions over whole axes: ReduceMean/ReduceSum and GlobalAveragePool are linear layers (weight
1/K or 1 on each of the K reduced elements); ReduceMax and GlobalMaxPool are winner-take-all, ties to
the first maximum in row-major order of the reduced axes (as max pooling)."""

from __future__ import annotations

import numpy as np
import onnx

from onnxlrp.errors import UnsupportedModelError
from onnxlrp.ops import EmitContext, register
from onnxlrp.ops.maxpool import route_to_first_max


def _axes(ctx: EmitContext, node: onnx.NodeProto) -> list[int] | None:
    """The reduced axes, sorted and non-negative; None for a no-op (noop_with_empty_axes)."""
    rank = len(ctx.info.shape(node.input[0]))
    if node.op_type.startswith("Global"):
        return list(range(2, rank))
    axes: list[int]
    if len(node.input) > 1 and node.input[1]:
        given = ctx.info.const(node.input[1])
        if given is None:
            raise UnsupportedModelError(f"node '{node.name}' ({node.op_type}): its axes must be constant")
        axes = [int(a) for a in np.asarray(given).ravel()]
    else:
        axes = list(ctx.attr(node, "axes", []))
    if not axes:
        if ctx.attr(node, "noop_with_empty_axes", 0):
            return None
        axes = list(range(rank))
    axes = sorted(a % rank for a in axes)
    if 0 in axes:
        raise UnsupportedModelError(
            f"node '{node.name}' ({node.op_type}): it reduces over the batch axis, which mixes the samples"
        )
    return axes


def _keepdims(ctx: EmitContext, node: onnx.NodeProto) -> bool:
    return node.op_type.startswith("Global") or bool(ctx.attr(node, "keepdims", 1))


@register("GlobalAveragePool", kind="avgpool", facts=("order_preserving", "pool", "piecewise_linear"))
@register("ReduceMean", "ReduceSum", kind="avgpool")
def emit_reduce_mean(ctx: EmitContext, node: onnx.NodeProto, relevance: list) -> dict:
    axes = _axes(ctx, node)
    if axes is None:
        return {0: relevance[0]}
    b = ctx.b
    x = node.input[0]
    shape = ctx.info.shape(x)
    if node.op_type == "ReduceMean":  # its weight 1 / count is baked into the graph
        ctx.info.require_fixed(x, axes, f"node '{node.name}' (ReduceMean)")
    count = int(np.prod([shape[a] for a in axes]))
    weight = np.array(1.0 if node.op_type == "ReduceSum" else 1.0 / count, np.float32)
    axes_const = b.const(np.array(axes, np.int64))
    keepdims = _keepdims(ctx, node)

    def forward(inp: str, w: np.ndarray) -> str:
        return b.op("Mul", [b.op("ReduceSum", [inp, axes_const], keepdims=int(keepdims)), b.const(w)])

    def transpose(s: str, w: np.ndarray) -> str:
        spread = b.op("Mul", [s, b.const(w)])  # broadcasts over the reduced axes: rules multiply by x
        return spread if keepdims else b.op("Unsqueeze", [spread, axes_const])

    layer = ctx.linear_layer(x, weight, None, forward, transpose, node.output[0])
    return {0: ctx.propagate(layer, relevance[0])}


@register(
    "GlobalMaxPool", kind="maxpool", zeros="passed", facts=("order_preserving", "pool", "piecewise_linear")
)
@register("ReduceMax", kind="maxpool", zeros="passed")
def emit_reduce_max(ctx: EmitContext, node: onnx.NodeProto, relevance: list) -> dict:
    axes = _axes(ctx, node)
    if axes is None:
        return {0: relevance[0]}
    b = ctx.b
    x = node.input[0]
    shape = ctx.info.shape(x)
    kept = [a for a in range(1, len(shape)) if a not in axes]
    ctx.info.require_fixed(x, kept, f"node '{node.name}' ({node.op_type})")
    perm = [0, *kept, *axes]
    moved = x if perm == sorted(perm) else b.op("Transpose", [x], perm=perm)
    groups = [0, *[shape[a] for a in kept]]
    flat = b.op("Reshape", [moved, b.const(np.array([*groups, -1], np.int64))])
    rel = b.op("Reshape", [relevance[0], b.const(np.array(groups, np.int64))])
    taps = int(np.prod([shape[a] for a in axes]))
    routed = route_to_first_max(ctx, flat, rel, axis=len(groups), taps=taps, ndim=len(groups) + 1)
    routed = b.reshape_like(routed, moved)
    if moved != x:
        routed = b.op("Transpose", [routed], perm=[int(i) for i in np.argsort(perm)])
    return {0: routed}
