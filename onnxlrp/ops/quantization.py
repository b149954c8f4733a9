"""Type conversions on the data path: float Casts and int8 QDQ round trips.

A model from onnxruntime's static quantizer (QDQ form) computes each layer in float on
DequantizeLinear outputs: the weights behind DequantizeLinear are constants (the analysis folds them
into the layer's weights), and an activation's QuantizeLinear -> DequantizeLinear round trip is an
element-wise function of it, like an activation: relevance passes through unchanged (and stays
float). The forward nodes are left as they are, so the relevance graph computes the quantized model's
own outputs.
"""

from __future__ import annotations

import onnx

from onnxlrp.errors import UnsupportedModelError
from onnxlrp.graph import FLOAT_TYPES
from onnxlrp.ops import EmitContext, register

# The operator form of int8 models (fused int8 kernels): refused, naming the QDQ form instead.
QUANTIZED_OPERATORS = frozenset(
    {
        "QLinearConv",
        "QLinearMatMul",
        "MatMulInteger",
        "ConvInteger",
        "QGemm",
        "QLinearAdd",
        "QLinearMul",
        "QLinearGlobalAveragePool",
        "QLinearAveragePool",
        "QLinearConcat",
        "QLinearSigmoid",
        "QLinearLeakyRelu",
        "DynamicQuantizeLinear",
    }
)
QDQ_HINT = (
    "int8 models in operator form (QLinearConv, QLinearMatMul, QGemm, ...) are not supported; quantize "
    "in QDQ form instead: onnxruntime.quantization.quantize_static(..., quant_format=QuantFormat.QDQ)"
)


@register("QuantizeLinear", "DequantizeLinear")
def emit_round_trip(ctx: EmitContext, node: onnx.NodeProto, relevance: list) -> dict:
    """Relevance passes through a quantization round trip unchanged."""
    return {0: relevance[0]}


@register("Cast", facts=("piecewise_linear",))
def emit_cast(ctx: EmitContext, node: onnx.NodeProto, relevance: list) -> dict:
    """A Cast between float types passes relevance unchanged; other Casts have no relevance."""
    if ctx.attr(node, "to") not in FLOAT_TYPES:
        raise UnsupportedModelError(
            f"node '{node.name}' (Cast): a cast to {onnx.TensorProto.DataType.Name(ctx.attr(node, 'to'))} "
            "on the relevance path"
        )
    return {0: relevance[0]}
