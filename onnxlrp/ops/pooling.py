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
from onnxlrp.rules import LinearLayer


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


@register("MaxPool", kind="maxpool", zeros="passed")
def emit_maxpool(ctx: EmitContext, node: onnx.NodeProto, relevance: list) -> dict:
    if ctx.attr(node, "storage_order", 0) != 0:
        raise UnsupportedModelError(f"node '{node.name}' (MaxPool): storage_order=1 is not supported")
    if len(node.output) < 2 or not node.output[1]:
        # let the forward MaxPool also return the argmax indices (flat offsets over N*C*H*W)
        indices = ctx.b.fresh("maxpool_indices")
        if len(node.output) < 2:
            node.output.append(indices)
        else:
            node.output[1] = indices
    if _windows_disjoint(ctx, node):  # each input in at most one window: indices are unique
        b = ctx.b
        window = _window(ctx, node)
        # MaxUnpool only checks that x's shape holds (out - 1) * stride + kernel - pads: grow the end
        # pads by what a ceil_mode window reaches past x (indices are positions in x itself)
        rank = len(window["kernel_shape"])
        in_spatial, out_spatial = ctx.info.shape(node.input[0])[2:], ctx.info.shape(node.output[0])[2:]
        for i, (k, s) in enumerate(zip(window["kernel_shape"], window["strides"], strict=True)):
            reach = (out_spatial[i] - 1) * s + k - window["pads"][i]
            window["pads"][rank + i] = max(window["pads"][rank + i], reach - in_spatial[i])
        routed = b.op("MaxUnpool", [relevance[0], node.output[1], b.op("Shape", [node.input[0]])], **window)
        return {0: routed}
    return {0: _scatter_back(ctx, node.input[0], relevance[0], node.output[1])}


def _window(ctx: EmitContext, node: onnx.NodeProto) -> dict:
    kernel = list(ctx.attr(node, "kernel_shape"))
    rank = len(kernel)
    return {
        "kernel_shape": kernel,
        "strides": list(ctx.attr(node, "strides", [1] * rank)),
        "pads": list(ctx.attr(node, "pads", [0] * 2 * rank)),
    }


def _windows_disjoint(ctx: EmitContext, node: onnx.NodeProto) -> bool:
    """No input element lies in two windows: then MaxUnpool routes the relevance (several times
    faster in onnxruntime than ScatterElements with reduction="add", which overlapping windows need)."""
    window = _window(ctx, node)
    dilations = list(ctx.attr(node, "dilations", [1] * len(window["kernel_shape"])))
    auto_pad = ctx.attr(node, "auto_pad", b"NOTSET")
    if (auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad) not in ("NOTSET", ""):
        return False
    return all(
        k == 1 or (d == 1 and s >= k)
        for k, s, d in zip(window["kernel_shape"], window["strides"], dilations, strict=True)
    )


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


@register("AveragePool", kind="avgpool")
def emit_avgpool(ctx: EmitContext, node: onnx.NodeProto, relevance: list) -> dict:
    """z = D * sum over the window (D = 1/divisor per window): a linear layer with weight D."""
    b = ctx.b
    x = node.input[0]
    channels = ctx.info.shape(x)[1]
    kernel = list(ctx.attr(node, "kernel_shape"))
    ones = np.ones((channels, 1, *kernel), np.float32)
    window_sum, window_sum_t = conv_maps(ctx, node, x, node.output[0], kernel, group=channels)
    pads = conv_geometry(ctx, node, x, node.output[0], kernel)[2]
    divisor_map = _avgpool_weight(node, ctx.info.shape(x), pads)

    def forward(inp: str, w: np.ndarray) -> str:
        return b.op("Mul", [window_sum(inp, ones), b.const(w, "pool_w")])

    tiling = _tiling_windows(ctx, node, kernel)

    def transpose(s: str, w: np.ndarray) -> str:
        scaled = b.op("Mul", [s, b.const(w, "pool_w")])
        if tiling:
            return _spread_over_tiles(ctx, scaled, x, node.output[0], kernel, pads)
        return window_sum_t(scaled, ones)

    layer = LinearLayer(x, divisor_map, None, forward, transpose, node.output[0], x in ctx.nonnegative)
    return {0: ctx.propagate(layer, relevance[0])}


def _tiling_windows(ctx: EmitContext, node: onnx.NodeProto, kernel: list) -> bool:
    """stride == kernel, no dilation: the windows tile the (padded) input."""
    strides = list(ctx.attr(node, "strides", [1] * len(kernel)))
    dilations = list(ctx.attr(node, "dilations", [1] * len(kernel)))
    return strides == kernel and all(d == 1 for d in dilations)


def _spread_over_tiles(ctx: EmitContext, s: str, x: str, pooled: str, kernel: list, pads: list) -> str:
    """The transposed window sum of tiling windows: every input element gets its window's value
    (nearest-neighbour Resize; 2-20x faster in onnxruntime than the depthwise ConvTranspose), cut to
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
