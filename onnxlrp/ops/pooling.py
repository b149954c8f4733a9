"""Average pooling: a linear layer whose weight is 1/divisor of each window (max pooling: maxpool.py)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from onnxlrp.errors import UnsupportedModelError
from onnxlrp.ops import EmitContext, register
from onnxlrp.ops.linear import conv_geometry, conv_maps


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
