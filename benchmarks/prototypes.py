"""Prototypes of compiler rewrites, applied to a compiled relevance graph after the fact.

They do not change onnxlrp; run.py measures them so that the compiler can adopt the ones that pay.
Adopted earlier and removed from here: the stride-1 ConvTranspose -> flipped-kernel Conv rewrite and
keeping ConvTranspose for narrow layers (compiler since 7f3254c), the checker and shape inference on
a weightless skeleton, and sign-aware z+ denominators (compiler since 531308f).

- ``pointwise_strided_transpose``: every 1x1 ConvTranspose with stride s > 1 (the transpose of a 1x1
  strided "downsample" Conv, as in ResNet-50) becomes a 1x1 Conv (channel mix, in/out swapped) on
  the small map, followed by zero interleaving: Reshape [N,C,H,1,W,1] -> Pad zeros to [N,C,H,s,W,s]
  -> Reshape [N,C,sH,sW] -> Slice to the ConvTranspose's output size. Exact. Measured: no gain.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def pointwise_strided_transpose(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """(a copy with 1x1 strided ConvTransposes rewritten as 1x1 Conv + zero interleave, how many)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {
        v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
        for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    }
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {i.name: i for i in graph.initializer}
    nodes, new_inits, rewritten = [], [], 0
    for node in graph.node:
        a = _attrs(node)
        shape = shapes.get(node.input[0]) if node.op_type == "ConvTranspose" else None
        w = numpy_helper.to_array(inits[node.input[1]]) if shape and node.input[1] in inits else None
        if (
            w is None
            or w.ndim != 4
            or w.shape[2:] != (1, 1)
            or a.get("group", 1) != 1
            or any(a.get("pads", [0] * 4))
            or a.get("strides", [1, 1])[0] != a.get("strides", [1, 1])[1]
            or a.get("strides", [1, 1])[0] == 1
            or "output_shape" in a
            or None in shape[1:]
            or (len(node.input) > 2 and node.input[2])
        ):
            nodes.append(node)
            continue
        s = a["strides"][0]
        op = a.get("output_padding", [0, 0])
        _, _, h, wd = shape
        c_out = w.shape[1]
        base = node.output[0] + "_pst"
        wname = base + "_w"
        new_inits.append(numpy_helper.from_array(np.ascontiguousarray(w.transpose(1, 0, 2, 3)), wname))
        consts = {
            "s6": np.array([0, c_out, h, 1, wd, 1], np.int64),
            "pads": np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, s - 1, 0, s - 1], np.int64),
            "s4": np.array([0, c_out, h * s, wd * s], np.int64),
            "starts": np.array([0, 0], np.int64),
            "ends": np.array([(h - 1) * s + 1 + op[0], (wd - 1) * s + 1 + op[1]], np.int64),
            "axes": np.array([2, 3], np.int64),
        }
        for key, value in consts.items():
            new_inits.append(numpy_helper.from_array(value, f"{base}_{key}"))
        nodes += [
            helper.make_node(
                "Conv", [node.input[0], wname], [base + "_y"], name=base + "_conv", kernel_shape=[1, 1]
            ),
            helper.make_node("Reshape", [base + "_y", base + "_s6"], [base + "_y6"], name=base + "_r6"),
            helper.make_node("Pad", [base + "_y6", base + "_pads"], [base + "_p6"], name=base + "_pad"),
            helper.make_node("Reshape", [base + "_p6", base + "_s4"], [base + "_y4"], name=base + "_r4"),
            helper.make_node(
                "Slice",
                [base + "_y4", base + "_starts", base + "_ends", base + "_axes"],
                [node.output[0]],
                name=base + "_slice",
            ),
        ]
        rewritten += 1
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for n in graph.node for name in n.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    return out, rewritten


# --------------------------------------------------------------------------- compile time
