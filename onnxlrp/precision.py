"""Float16, bfloat16 and float64 models are compiled as float32 models.

The relevance graph computes in float32 whatever the model's float type. float16 cannot hold what
the rules need: its smallest normal number is 6e-5 and its largest 65504, so the default stabiliser
1e-6 vanishes and products such as x * T_W(R / z) overflow or underflow; float64 doubles memory and
time, and onnxruntime lacks float64 kernels for several of the operators the graph uses. Relevance is
a float32 result in every case (the README's contract); the graph's inputs and outputs are float32.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

OTHER_FLOATS = {onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}
FLOAT = onnx.TensorProto.FLOAT


def _as_float32(tensor: onnx.TensorProto) -> None:
    if tensor.data_type in OTHER_FLOATS:
        tensor.CopyFrom(
            numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name)
        )


def _value_types(values) -> None:
    for value in values:
        tensor_type = value.type.tensor_type
        if tensor_type.elem_type in OTHER_FLOATS:
            tensor_type.elem_type = FLOAT


def _graph_to_float32(graph: onnx.GraphProto) -> None:
    for init in graph.initializer:
        _as_float32(init)
    _value_types([*graph.input, *graph.output, *graph.value_info])
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR:
                _as_float32(attribute.t)
            elif attribute.type == onnx.AttributeProto.GRAPH:
                _graph_to_float32(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for subgraph in attribute.graphs:
                    _graph_to_float32(subgraph)
            elif attribute.name in ("to", "dtype") and attribute.i in OTHER_FLOATS:
                attribute.i = FLOAT  # Cast's target, a Random*/EyeLike output type


def to_float32(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model (changed in place) with every float16/bfloat16/float64 tensor, weight, Cast and
    typed attribute made float32, subgraphs included."""
    _graph_to_float32(model.graph)
    return model
