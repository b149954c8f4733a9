"""Pooling: average pooling is a linear layer; max pooling is winner-take-all.

Max-pool ties: all relevance of a window goes to its first maximum in row-major order (onnxruntime's
`Indices` output, the same convention as PyTorch's gradient and zennit).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from onnxlrp.errors import UnsupportedModelError
from onnxlrp.ops import EmitContext, register
from onnxlrp.ops.linear import conv_geometry, conv_maps


def _scatter_back(ctx: EmitContext, x: str, relevance: str, flat_indices: str) -> str:
    """Add each relevance value into a zero tensor shaped like x at its flat index."""
    b = ctx.b
    minus_one = b.const(np.array([-1], np.int64))
    shape = b.op("Shape", [x])
    zeros = b.op("ConstantOfShape", [shape])
    zeros = b.op("Reshape", [zeros, minus_one])
    values = b.op("Reshape", [relevance, minus_one])
    indices = b.op("Reshape", [flat_indices, minus_one])
    scattered = b.op("ScatterElements", [zeros, indices, values], axis=0, reduction="add")
    return b.op("Reshape", [scattered, shape])


@register("MaxPool", kind="maxpool", zeros="passed", facts=("order_preserving", "pool", "piecewise_linear"))
def emit_maxpool(ctx: EmitContext, node: onnx.NodeProto, relevance: list) -> dict:
    if ctx.attr(node, "storage_order", 0) != 0:
        raise UnsupportedModelError(f"node '{node.name}' (MaxPool): storage_order=1 is not supported")
    # the forward MaxPool's argmax indices (flat offsets over N*C*H*W)
    indices = ctx.b.forward_output(node, 1, "maxpool_indices")
    kernel = list(ctx.attr(node, "kernel_shape"))
    # explicit pads, the end pads grown by what a ceil_mode window reaches past x: what MaxUnpool's
    # size check needs (the indices are positions in x itself)
    strides, dilations, pads, _ = conv_geometry(ctx, node, node.input[0], node.output[0], kernel)
    if _windows_disjoint(kernel, strides, dilations):  # each input in at most one window: unique indices
        b = ctx.b
        inputs = [relevance[0], indices, b.op("Shape", [node.input[0]])]
        return {0: b.op("MaxUnpool", inputs, kernel_shape=kernel, strides=strides, pads=pads)}
    return {0: _scatter_back(ctx, node.input[0], relevance[0], indices)}


def _windows_disjoint(kernel: list, strides: list, dilations: list) -> bool:
    """No input element lies in two windows: then MaxUnpool routes the relevance (faster in
    onnxruntime than ScatterElements with reduction="add", which overlapping windows need)."""
    return all(k == 1 or (d == 1 and s >= k) for k, s, d in zip(kernel, strides, dilations, strict=True))


def _avgpool_weight(node: onnx.NodeProto, x_shape, pads) -> np.ndarray:
    """1/divisor of every output window (count_include_pad and ceil_mode included), measured by
    running the pooling op itself on ones and dividing by the number of in-image taps."""
    kernel = next(a for a in node.attribute if a.name == "kernel_shape").ints
    one_channel = (1, 1, *x_shape[2:])
    pool = helper.make_node(
        "AveragePool", ["x"], ["avg"], **{a.name: helper.get_attribute_value(a) for a in node.attribute}
    )
    count = helper.make_node(
        "Conv",
        ["x", "k"],
        ["count"],
        pads=pads,
        **{
            a.name: helper.get_attribute_value(a)
            for a in node.attribute
            if a.name in ("strides", "dilations")
        },
    )
    graph = helper.make_graph(
        [pool, count],
        "divisor",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, one_channel)],
        [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in ("avg", "count")],
        [onnx.numpy_helper.from_array(np.ones((1, 1, *kernel), np.float32), "k")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    avg, count = session.run(None, {"x": np.ones(one_channel, np.float32)})
    if avg.shape != count.shape:
        raise UnsupportedModelError(f"node '{node.name}' (AveragePool): cannot reproduce its windows")
    return np.where(count > 0, avg / np.maximum(count, 1), 0).astype(np.float32)


@register("AveragePool", kind="avgpool", facts=("order_preserving", "pool", "piecewise_linear"))
def emit_avgpool(ctx: EmitContext, node: onnx.NodeProto, relevance: list) -> dict:
    """z = D * sum over the window (D = 1/divisor per window): a linear layer with weight D."""
    b = ctx.b
    x = node.input[0]
    channels = ctx.info.shape(x)[1]
    kernel = list(ctx.attr(node, "kernel_shape"))
    ones = np.ones((channels, 1, *kernel), np.float32)
    window_sum, window_sum_t = conv_maps(ctx, node, x, node.output[0], kernel, group=channels)
    strides, dilations, pads, _ = conv_geometry(ctx, node, x, node.output[0], kernel)
    divisor_map = _avgpool_weight(node, ctx.info.shape(x), pads)
    tiling = strides == kernel and all(d == 1 for d in dilations)  # the windows tile the padded input

    def forward(inp: str, w: np.ndarray) -> str:
        return b.op("Mul", [window_sum(inp, ones), b.const(w, "pool_w")])

    def transpose(s: str, w: np.ndarray) -> str:
        scaled = b.op("Mul", [s, b.const(w, "pool_w")])
        if tiling:
            return _spread_over_tiles(ctx, scaled, x, node.output[0], kernel, pads)
        return window_sum_t(scaled, ones)

    layer = ctx.linear_layer(x, divisor_map, None, forward, transpose, node.output[0])
    return {0: ctx.propagate(layer, relevance[0])}


def _spread_over_tiles(ctx: EmitContext, s: str, x: str, pooled: str, kernel: list, pads: list) -> str:
    """The transposed window sum of tiling windows: every input element gets its window's value
    (nearest-neighbour Resize, faster in onnxruntime than the depthwise ConvTranspose), cut to
    x's extent (begin pads, ceil-mode windows) and zero where no window reaches (floor mode)."""
    b = ctx.b
    rank = len(kernel)
    up = b.op(
        "Resize",
        [s, "", b.const(np.array([1, 1, *kernel], np.float32))],
        mode="nearest",
        coordinate_transformation_mode="asymmetric",
        nearest_mode="floor",
    )
    in_spatial, out_spatial = ctx.info.shape(x)[2:], ctx.info.shape(pooled)[2:]
    starts = [pads[i] for i in range(rank)]
    ends = [min(out_spatial[i] * kernel[i], pads[i] + in_spatial[i]) for i in range(rank)]
    uncovered = [in_spatial[i] - (ends[i] - starts[i]) for i in range(rank)]
    if starts != [0] * rank or ends != [out_spatial[i] * kernel[i] for i in range(rank)]:
        axes = np.arange(2, 2 + rank, dtype=np.int64)
        up = b.op(
            "Slice",
            [up, b.const(np.array(starts, np.int64)), b.const(np.array(ends, np.int64)), b.const(axes)],
        )
    if any(uncovered):
        up = b.op("Pad", [up, b.const(np.array([0] * (2 + rank) + [0, 0] + uncovered, np.int64))])
    return up
