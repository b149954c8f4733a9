"""Standalone prototypes of compiler speed-ups, applied to a compiled relevance graph after the fact.

They do not change onnxlrp; run.py measures them so that the compiler can adopt the ones that pay.

- ``convtranspose_to_conv``: every stride-1, dilation-1 ConvTranspose with a constant weight
  (the transposed maps T_W of stride-1 Convs) becomes a Conv with the flipped, in/out-swapped kernel:
  ConvTranspose(s, W; pads p, group g) == Conv(s, W'; pads k-1-p, group g), with
  W'[g*co+o, i] = W[g*ci+i, o, ::-1, ::-1] per group (W: [C_in, C_out/g, kh, kw] as ConvTranspose
  reads it). Exact; onnxruntime's Conv is faster than its ConvTranspose on CPU.
- ``pointwise_strided_transpose``: every 1x1 ConvTranspose with stride s > 1 (the transpose of a 1x1
  strided "downsample" Conv, as in ResNet-50) becomes a 1x1 Conv (channel mix, in/out swapped) on
  the small map, followed by zero interleaving: Reshape [N,C,H,1,W,1] -> Pad zeros to [N,C,H,s,W,s]
  -> Reshape [N,C,sH,sW] -> Slice to the ConvTranspose's output size. Exact.

(The stride-1 rewrite ConvTranspose -> Conv with the flipped kernel, prototyped here first, is in the
compiler since commit 7f3254c; ``convtranspose_to_conv`` then finds nothing to rewrite.)
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def convtranspose_to_conv(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """(a copy with stride-1 ConvTransposes rewritten as Convs, how many were rewritten)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {i.name: i for i in graph.initializer}
    users: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    new_inits, rewritten = [], 0
    for node in graph.node:
        if node.op_type != "ConvTranspose" or node.input[1] not in inits:
            continue
        a = _attrs(node)
        w = numpy_helper.to_array(inits[node.input[1]])
        rank = w.ndim - 2
        strides = a.get("strides", [1] * rank)
        dilations = a.get("dilations", [1] * rank)
        auto_pad = a.get("auto_pad", b"NOTSET")
        if (
            any(s != 1 for s in strides)
            or any(d != 1 for d in dilations)
            or any(a.get("output_padding", [0] * rank))
            or "output_shape" in a
            or auto_pad not in (b"NOTSET", "NOTSET")
        ):
            continue
        group = a.get("group", 1)
        kernel = w.shape[2:]
        pads = a.get("pads", [0] * (2 * rank))
        conv_pads = [k - 1 - p for k, p in zip(list(kernel) * 2, pads, strict=True)]
        if any(p < 0 for p in conv_pads):
            continue
        c_in, c_out_g = w.shape[0], w.shape[1]
        c_in_g = c_in // group
        flipped = np.flip(w, axis=tuple(range(2, 2 + rank)))
        per_group = flipped.reshape(group, c_in_g, c_out_g, *kernel).swapaxes(1, 2)
        w_conv = np.ascontiguousarray(per_group.reshape(group * c_out_g, c_in_g, *kernel)).astype(w.dtype)
        name = node.input[1] + "_as_conv"
        new_inits.append(numpy_helper.from_array(w_conv, name))
        node.op_type = "Conv"
        node.input[1] = name
        del node.attribute[:]
        node.attribute.extend(
            [
                helper.make_attribute("kernel_shape", list(kernel)),
                helper.make_attribute("pads", conv_pads),
                helper.make_attribute("strides", [1] * rank),
                helper.make_attribute("group", group),
            ]
        )
        rewritten += 1
    still_used = {name for node in graph.node for name in node.input}
    kept = [i for i in graph.initializer if i.name in still_used or i.name in {x.name for x in graph.input}]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    return out, rewritten


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
def skeleton(model: onnx.ModelProto, limit: int = 1024) -> onnx.ModelProto:
    """The model without its weights: every initializer over `limit` bytes becomes a graph input of
    the same type and shape (small ones, e.g. Reshape shapes, stay: shape inference reads them)."""
    graph = model.graph
    big = [i for i in graph.initializer if i.ByteSize() > limit]
    small = [i for i in graph.initializer if i.ByteSize() <= limit]
    inputs = list(graph.input) + [
        helper.make_tensor_value_info(i.name, i.data_type, list(i.dims)) for i in big
    ]
    result = helper.make_model(
        helper.make_graph(
            list(graph.node), graph.name, inputs, list(graph.output), small, value_info=graph.value_info
        ),
        opset_imports=list(model.opset_import),
    )
    result.ir_version = model.ir_version
    return result


class weightless_checks:
    """Within the block, onnx.checker.check_model and onnx.shape_inference.infer_shapes see the model
    without its weights. Both only need the graph and the initializers' shapes; with the weights,
    each serialises the whole model (hundreds of MB for a ResNet-50 relevance graph) first.
    onnxlrp calls check_model(full_check=True) once and infer_shapes twice per compile, and only
    reads types and shapes from infer_shapes' result, so its output is unchanged."""

    def __enter__(self):
        self.saved = (onnx.checker.check_model, onnx.shape_inference.infer_shapes)
        check, infer = self.saved

        def check_model(model, full_check=False, **kwargs):
            if isinstance(model, onnx.ModelProto):
                model = skeleton(model)
            return check(model, full_check=full_check, **kwargs)

        def infer_shapes(model, *args, **kwargs):
            return infer(skeleton(model) if isinstance(model, onnx.ModelProto) else model, *args, **kwargs)

        onnx.checker.check_model, onnx.shape_inference.infer_shapes = check_model, infer_shapes
        return self

    def __exit__(self, *exc):
        onnx.checker.check_model, onnx.shape_inference.infer_shapes = self.saved
        return False


# --------------------------------------------------------------------------- stabilisers
NONNEG_PASS = {"Relu", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Flatten", "Reshape"}


def _nonnegative_tensors(graph: onnx.GraphProto, inits: dict) -> set[str]:
    """Tensors >= 0 by construction: ReLU outputs, pooled/reshaped non-negative tensors, Convs with
    non-negative weights and bias on non-negative inputs, sums of non-negative tensors/constants."""
    known: set[str] = set()

    def nonneg(name: str) -> bool:
        return name in known or (name in inits and bool(np.all(inits[name] >= 0)))

    for node in graph.node:
        op, ins = node.op_type, [i for i in node.input if i]
        if (
            op == "Relu"
            or (op in NONNEG_PASS and nonneg(ins[0]))
            or (op in ("Conv", "Add", "Identity", "Identity") and ins and all(nonneg(i) for i in ins))
        ):
            known.add(node.output[0])
    return known


def nonneg_denominators(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Where a stabilised denominator d + eps * sign0(d) has d >= 0 by construction (the z+ rule on
    ReLU outputs: d = x+ W+ + b+), drop the sign test: d + eps. When d = Conv(x, W+) + b+, fold
    b+ + eps into the Conv's bias, so the whole denominator is one Conv (GreaterOrEqual, Where and
    two Adds disappear per layer). Exact up to float rounding."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    known = _nonnegative_tensors(graph, inits)
    drop, new_inits, rewritten = set(), [], 0
    for add in graph.node:
        if add.op_type != "Add" or len(add.input) != 2:
            continue
        d, shift = add.input
        where = producer.get(shift)
        if where is None or where.op_type != "Where":
            continue
        test = producer.get(where.input[0])
        if test is None or test.op_type != "GreaterOrEqual" or test.input[0] != d or d not in known:
            continue
        eps = float(inits[where.input[1]])
        drop.update({id(where), id(test)})
        rewritten += 1
        inner = producer.get(d)
        conv = producer.get(inner.input[0]) if inner is not None and inner.op_type == "Add" else None
        bias = inner.input[1] if conv is not None else None
        if (
            conv is not None
            and conv.op_type == "Conv"
            and len(conv.input) == 2
            and bias in inits
            and len(consumers[conv.output[0]]) == 1
            and {id(n) for n in consumers[d]} == {id(add), id(test)}
        ):
            c_out = inits[conv.input[1]].shape[0]
            folded = np.broadcast_to(inits[bias], (1, c_out, 1, 1)).reshape(c_out) + np.float32(eps)
            name = add.output[0] + "_bias"
            new_inits.append(numpy_helper.from_array(folded.astype(np.float32), name))
            conv.input.append(name)
            conv.output[0] = add.output[0]
            drop.update({id(inner), id(add)})
        else:
            name = add.output[0] + "_eps"
            new_inits.append(numpy_helper.from_array(np.array(eps, np.float32), name))
            add.input[1] = name
    kept = [n for n in graph.node if id(n) not in drop]
    del graph.node[:]
    graph.node.extend(kept)
    used = {i for n in graph.node for i in n.input}
    keep_inits = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep_inits + [i for i in new_inits if i.name in used])
    return out, rewritten


# --------------------------------------------------------------------------- first-layer transposes
def narrow_transposes_back(model: onnx.ModelProto, min_channels: int = 16) -> tuple[onnx.ModelProto, int]:
    """Undo the compiler's stride-1 Conv rewrite where the transpose produces fewer than
    `min_channels` channels per group (the first layer's: 1 or 3 input channels; LeNet's second, 10):
    there onnxruntime's Conv is 2-8x slower than ConvTranspose (benchmarks/transpose_micro.py).
    Recognises the rewritten transposes by their weight names ("lrp/wt...", written by
    onnxlrp.ops.linear.flipped_kernel). Inverse of the rewrite: W_ct = per-group swap of the flipped
    kernel, pads k-1-p."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {i.name: i for i in graph.initializer}
    new_inits, rewritten = [], 0
    for node in graph.node:
        if (
            node.op_type != "Conv"
            or node.input[1] not in inits
            or "wt" not in node.input[1].rsplit("/", 1)[-1]
        ):
            continue
        a = _attrs(node)
        w = numpy_helper.to_array(inits[node.input[1]])
        group = a.get("group", 1)
        if (
            w.ndim != 4
            or w.shape[0] // group >= min_channels
            or any(s != 1 for s in a.get("strides", [1, 1]))
        ):
            continue
        kh, kw = w.shape[2:]
        c_out_g, c_in_g = w.shape[0] // group, w.shape[1]
        per_group = np.flip(w, axis=(2, 3)).reshape(group, c_out_g, c_in_g, kh, kw).swapaxes(1, 2)
        w_ct = np.ascontiguousarray(per_group.reshape(group * c_in_g, c_out_g, kh, kw))
        pads = a.get("pads", [0, 0, 0, 0])
        ct_pads = [kh - 1 - pads[0], kw - 1 - pads[1], kh - 1 - pads[2], kw - 1 - pads[3]]
        if any(p < 0 for p in ct_pads):
            continue
        name = node.input[1] + "_ct"
        new_inits.append(numpy_helper.from_array(w_ct, name))
        node.op_type = "ConvTranspose"
        node.input[1] = name
        del node.attribute[:]
        node.attribute.extend(
            [
                helper.make_attribute("kernel_shape", [kh, kw]),
                helper.make_attribute("pads", ct_pads),
                helper.make_attribute("group", group),
            ]
        )
        rewritten += 1
    used = {i for n in graph.node for i in n.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    return out, rewritten
