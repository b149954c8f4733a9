"""Transformer ops: LayerNormalization, Softmax, products of two activations, and the selections and
masks around attention (Gather of one position, Where, Expand; float Casts are in quantization.py).

LayerNormalization with its standard deviation held constant is the linear layer
y = (x - mean(x)) * w / sigma + b and takes a linear-layer rule (kind "norm"); an in-graph Softmax
takes a softmax rule, a product of two activations (Q K^T, A V, gated units) a product rule
(rules.py).
"""

from __future__ import annotations

import numpy as np
import onnx

from onnxlrp.errors import UnsupportedModelError
from onnxlrp.ops import EmitContext, carried_inputs, has_fact, register, spec_for
from onnxlrp.ops.elementwise import reduce_to
from onnxlrp.rules import Product, SoftmaxLayer


def _axis(ctx: EmitContext, node: onnx.NodeProto, default: int) -> int:
    rank = len(ctx.info.shape(node.input[0]))
    return int(ctx.attr(node, "axis", default)) % rank


@register("LayerNormalization", kind="norm", facts=())
def emit_layer_norm(ctx: EmitContext, node: onnx.NodeProto, relevance: list) -> dict:
    """sigma = sqrt(var(x) + eps) is read from the forward pass (the node's InvStdDev output) and
    held constant; the centring (x - mean(x)) stays part of the linear map, as in LXT."""
    b, info = ctx.b, ctx.info
    x = node.input[0]
    shape = info.shape(x)
    axis = _axis(ctx, node, -1)
    if axis == 0:
        raise UnsupportedModelError(
            f"node '{node.name}' (LayerNormalization): it normalises over the batch axis"
        )
    scale = info.const(node.input[1])
    bias = info.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if scale is None or (len(node.input) > 2 and node.input[2] and bias is None):
        raise UnsupportedModelError(
            f"node '{node.name}' (LayerNormalization): scale and bias must be constant"
        )
    axes = b.const(np.arange(axis, len(shape), dtype=np.int64))
    count = np.float32(1.0 / np.prod(shape[axis:]))

    def centred(t: str) -> str:
        mean = b.op("Mul", [b.op("ReduceSum", [t, axes], keepdims=1), b.const(count)])
        return b.op("Sub", [t, mean])

    # 1 / sigma: the node's optional InvStdDev output (the forward pass computes it anyway)
    inverse_sigma = b.forward_output(node, 2, "inv_std")

    def forward(t: str, w: np.ndarray) -> str:
        return b.op(
            "Mul", [b.op("Mul", [centred(t), inverse_sigma]), b.const(w.astype(np.float32), "ln_scale")]
        )

    def transpose(s: str, w: np.ndarray) -> str:
        return centred(
            b.op("Mul", [b.op("Mul", [s, b.const(w.astype(np.float32), "ln_scale")]), inverse_sigma])
        )

    layer = ctx.linear_layer(x, scale, bias, forward, transpose, node.output[0])
    return {0: ctx.propagate(layer, relevance[0])}


@register("Softmax", kind="softmax", zeros="kept", facts=("piecewise_linear",))
def emit_softmax(ctx: EmitContext, node: onnx.NodeProto, relevance: list) -> dict:
    layer = SoftmaxLayer(node.input[0], node.output[0], _axis(ctx, node, -1))
    return {0: ctx.propagate_softmax(layer, relevance[0])}


def _attention_weights(name: str, ctx: EmitContext) -> bool:
    """Whether a tensor is a Softmax output, possibly reshaped or transposed."""
    node = ctx.info.producer.get(name)
    while node is not None and (
        has_fact(node.op_type, "shape_only") or node.op_type in ("Transpose", "Cast")
    ):
        node = ctx.info.producer.get(node.input[0])
    return node is not None and node.op_type == "Softmax"


def emit_product(ctx: EmitContext, node: onnx.NodeProto, relevance: list) -> dict:
    """MatMul or Mul of two activations: the node's product rule splits R between the factors."""
    b, info = ctx.b, ctx.info
    a, c = node.input[0], node.input[1]
    out_shape = info.shape(node.output[0])
    if node.op_type == "MatMul":
        if len(info.shape(a)) < 2 or len(info.shape(c)) < 2:
            raise UnsupportedModelError(f"node '{node.name}' (MatMul): a 1-D factor of two activations")

        def swap(t: str) -> str:
            rank = len(info.shape(t))
            return b.op("Transpose", [t], perm=[*range(rank - 2), rank - 1, rank - 2])

        maps = (
            lambda s: reduce_to(ctx, b.op("MatMul", [s, swap(c)]), info.shape(a), out_shape),
            lambda s: reduce_to(ctx, b.op("MatMul", [swap(a), s]), info.shape(c), out_shape),
        )
    else:
        maps = (
            lambda s: reduce_to(ctx, b.op("Mul", [s, c]), info.shape(a), out_shape),
            lambda s: reduce_to(ctx, b.op("Mul", [s, a]), info.shape(c), out_shape),
        )
    product = Product((a, c), node.output[0], maps, (_attention_weights(a, ctx), _attention_weights(c, ctx)))
    shares = ctx.propagate_product(product, relevance[0])
    return {i: share for i, share in enumerate(shares) if share is not None}


@register("Where", data_inputs=(1, 2), zeros="passed")
def emit_where(ctx: EmitContext, node: onnx.NodeProto, relevance: list) -> dict:
    """Each selected value's relevance goes back to the input it came from (masks: the fill gets none)."""
    b, info = ctx.b, ctx.info
    zero = b.const(np.float32(0))
    out_shape = info.shape(node.output[0])
    result = {}
    for index in carried_inputs(spec_for(node.op_type), node, info):
        picked = [relevance[0], zero] if index == 1 else [zero, relevance[0]]
        chosen = b.op("Where", [node.input[0], *picked])
        result[index] = reduce_to(ctx, chosen, info.shape(node.input[index]), out_shape)
    return result


@register("Expand", zeros="passed", facts=("order_preserving",))
def emit_expand(ctx: EmitContext, node: onnx.NodeProto, relevance: list) -> dict:
    """Copies made by broadcasting give their relevance back to the original."""
    info = ctx.info
    return {0: reduce_to(ctx, relevance[0], info.shape(node.input[0]), info.shape(node.output[0]))}


@register("Gather", zeros="passed", facts=("order_preserving", "piecewise_linear"))
def emit_gather(ctx: EmitContext, node: onnx.NodeProto, relevance: list) -> dict:
    """One position picked along a non-batch axis (a class token: hidden[:, 0]): its relevance goes
    back to that position, the others get none. The axis' length is read at run time."""
    b, info = ctx.b, ctx.info
    axis = _axis(ctx, node, 0)
    index = info.const(node.input[1])
    if index is None or index.ndim != 0 or axis == 0:
        raise UnsupportedModelError(
            f"node '{node.name}' (Gather): only one constant position along a non-batch axis is supported"
        )
    rank = len(info.shape(node.input[0]))
    length = b.op("Gather", [b.op("Shape", [node.input[0]]), b.const(np.array(axis, np.int64))])
    position = b.op("Mod", [b.op("Add", [b.const(index.astype(np.int64)), length]), length])
    positions = b.op("Range", [b.const(np.array(0, np.int64)), length, b.const(np.array(1, np.int64))])
    mask = b.op("Cast", [b.op("Equal", [positions, position])], to=onnx.TensorProto.FLOAT)
    broadcast = [1] * rank
    broadcast[axis] = -1
    mask = b.op("Reshape", [mask, b.const(np.array(broadcast, np.int64))])
    spread = b.op("Unsqueeze", [relevance[0], b.const(np.array([axis], np.int64))])
    return {0: b.op("Mul", [spread, mask])}
