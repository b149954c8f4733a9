"""Analyse: what the compiler needs to know about a canonical model before it emits anything.

The explained tensor, the nodes relevance flows through (and those it cannot), the nodes that take a
rule and the first layers, and the facts that let emitters write cheaper nodes: non-negative tensors,
bias Adds fused into linear layers, ReLU inputs whose relevance is zero wherever they are negative.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from onnxlrp.errors import UnsupportedModelError
from onnxlrp.graph import FLOAT_TYPES, GraphInfo, implicit_inputs
from onnxlrp.ops import (
    LINEAR_KINDS,
    REGISTRY,
    RULE_PROTOCOLS,
    SUM_KIND,
    AnyRule,
    carried_inputs,
    has_fact,
    spec_for,
)
from onnxlrp.ops.quantization import QDQ_HINT, QUANTIZED_OPERATORS


def _class_scores(info: GraphInfo, name: str) -> str | None:
    """The float [batch, classes] tensor behind a model output (through a ZipMap), else None."""
    producer = info.producer.get(name)
    if producer is not None and producer.op_type == "ZipMap":  # a sequence of maps of a float tensor
        name = producer.input[0]
    output = next((o for o in info.model.graph.output if o.name == name), None)
    if output is not None and output.type.tensor_type.elem_type not in FLOAT_TYPES:
        return None
    shape = info.shapes.get(name)
    return name if shape is not None and len(shape) == 2 and shape[1] > 1 else None


def explained_tensor(info: GraphInfo, output: str | None) -> str:
    """The tensor explained: the chosen output (default: the first float output with a class axis,
    looking through a ZipMap), or the logits behind a Softmax/LogSoftmax producing it, also through
    Identity and float Casts."""
    outputs = [o.name for o in info.model.graph.output]
    if output is None:
        name = next((scores for o in outputs if (scores := _class_scores(info, o))), outputs[0])
    else:
        if output not in outputs and output not in info.producer:
            raise UnsupportedModelError(
                f"output '{output}' is not a tensor of the model (outputs: {outputs})"
            )
        if _class_scores(info, output) is None and (
            output in outputs or len(info.shapes.get(output, ())) != 2
        ):
            choices = [o for o in outputs if _class_scores(info, o)]
            raise UnsupportedModelError(
                f"output '{output}' is not a float [batch, classes] tensor; outputs that are: {choices}"
            )
        name = _class_scores(info, output) or output
    node = info.producer.get(name)
    while node is not None and (
        node.op_type in ("Softmax", "LogSoftmax", "Identity")
        or (node.op_type == "Cast" and info.attr(node, "to") in FLOAT_TYPES)
    ):
        name = node.input[0]
        node = info.producer.get(name)
    return name


def fused_bias(info: GraphInfo, node: onnx.NodeProto) -> tuple[str, np.ndarray] | None:
    """(z, bias) when ``node`` is the Add of a constant bias to a linear layer's output z (MatMul +
    bias, Conv + BiasAdd), which the layer's rule takes in; else None."""
    if node.op_type != "Add":
        return None
    graph_outputs = {o.name for o in info.model.graph.output}
    for own, other in ((0, 1), (1, 0)):
        z, bias = node.input[own], info.const(node.input[other])
        producer = info.producer.get(z)
        if (
            bias is not None
            and producer is not None
            and has_fact(producer.op_type, "linear_map")
            and len(info.consumers.get(z, [])) == 1
            and z not in graph_outputs
            and z in info.dynamic
            and bias.ndim <= len(info.shape(z))
        ):
            return z, bias
    return None


def bias_adds(info: GraphInfo) -> dict[str, tuple[np.ndarray, str]]:
    """Linear-layer outputs followed by an Add of a constant (MatMul + bias, Conv + BiasAdd)."""
    found = {}
    for node in info.nodes:
        fused = fused_bias(info, node)
        if fused is not None:
            found[fused[0]] = (fused[1].astype(np.float32), node.output[0])
    return found


def nonnegative(info: GraphInfo) -> set[str]:
    """Tensors that are >= 0 by construction: ReLU outputs, and what pools, reshapes, joins or sums
    only tensors >= 0 (every dynamic input known to be, every float constant input without a
    negative value: a residual sum of two ReLU outputs is, a Pad with a negative fill is not)."""
    known: set[str] = set()

    def holds(name: str) -> bool:
        if name in info.dynamic:
            return name in known
        value = info.const(name)
        return value is None or value.dtype.kind != "f" or not np.any(value < 0)

    for node in info.nodes:
        inputs = [name for name in node.input if name]
        if has_fact(node.op_type, "nonnegative") or (
            has_fact(node.op_type, "order_preserving")
            and any(name in info.dynamic for name in inputs)
            and all(holds(name) for name in inputs)
        ):
            known.add(node.output[0])
    return known


def zero_keeping(
    info: GraphInfo,
    path: list[onnx.NodeProto],
    rules: Mapping[str, AnyRule],
    explained: str,
    logit_seed: bool,
) -> set[str]:
    """Tensors whose relevance is zero wherever the tensor is zero (see ops.ZEROS). The seed
    logit * onehot is such a relevance; a one-hot or user seed is not."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in path:
        for index in carried_inputs(spec_for(node.op_type), node, info):
            consumers.setdefault(node.input[index], []).append(node)
    keeping: set[str] = set()

    def holds(tensor: str) -> bool:  # a tensor no relevance reaches has none anywhere
        return tensor in keeping or (tensor != explained and tensor not in consumers)

    def keeps(node: onnx.NodeProto) -> bool:
        spec = spec_for(node.op_type)
        zeros = "never" if spec is None else spec.zeros
        zeros = zeros(node, info) if callable(zeros) else zeros
        if zeros == "rule":
            return node.name in rules and rules[node.name].keeps_zeros
        return zeros == "kept" or (zeros == "passed" and all(holds(out) for out in node.output if out))

    for node in path:  # last node first: every consumer of a node's outputs is settled before it
        for tensor in node.output:
            if tensor == explained:
                kept = logit_seed
            else:
                kept = tensor in consumers and all(keeps(c) for c in consumers[tensor])
            if kept:
                keeping.add(tensor)
    return keeping


def rectified_inputs(
    info: GraphInfo,
    path: list[onnx.NodeProto],
    rules: Mapping[str, AnyRule],
    explained: str,
    logit_seed: bool,
) -> dict[str, str]:
    """z -> Relu(z) for tensors read only by one Relu whose output's relevance is zero wherever it is
    zero: the relevance reaching z is then zero wherever z < 0, and a rule may divide by Relu(z) + eps
    instead of z + eps * sign(z) (builder.stabilize)."""
    keeping = zero_keeping(info, path, rules, explained, logit_seed)
    graph_outputs = {o.name for o in info.model.graph.output}
    rectified = {}
    for node in path:
        if node.op_type == "Relu" and node.output[0] in keeping:
            z = node.input[0]
            if info.consumers.get(z) == [node] and z not in graph_outputs and z != explained:
                rectified[z] = node.output[0]
    return rectified


def relevance_path(info: GraphInfo, start: str) -> tuple[list[onnx.NodeProto], list[onnx.NodeProto]]:
    """(nodes relevance flows through, last first; those among them with no registered emitter)."""
    carrying, path, unsupported = {start}, [], []
    for node in reversed(info.nodes):
        if not any(name in carrying for name in node.output):
            continue
        spec = spec_for(node.op_type)
        inputs = carried_inputs(spec, node, info)
        outer = [name for name in implicit_inputs(node) if name in info.dynamic]
        if spec is None and outer:  # control flow whose subgraphs read activations from outside
            unsupported.append(node)
            path.append(node)
            carrying.update(outer)
            continue
        if not inputs:
            continue
        if spec is None:
            unsupported.append(node)
        path.append(node)
        carrying.update(node.input[i] for i in inputs)
    if info.source not in carrying:
        raise UnsupportedModelError(
            f"tensor '{start}' does not depend on the model input '{info.input_name}'"
        )
    return path, list(reversed(unsupported))


def refuse_unsupported(unsupported: list[onnx.NodeProto]) -> None:
    """Raise one error that lists every unsupported node and the supported operators."""
    if unsupported:
        listed = "\n".join(f"  - node '{n.name}': op {n.op_type}" for n in unsupported)
        hint = f"\n{QDQ_HINT}" if any(n.op_type in QUANTIZED_OPERATORS for n in unsupported) else ""
        raise UnsupportedModelError(
            f"{len(unsupported)} node(s) use operators onnxlrp cannot propagate relevance through:\n"
            f"{listed}\nSupported operators: {', '.join(sorted(REGISTRY))}{hint}"
        )


def rule_takers(info: GraphInfo, path: list[onnx.NodeProto]) -> dict[str, tuple[str, str]]:
    """Nodes on the path that take a rule, as name -> (op type, kind): linear layers, and sums of
    several activations."""
    takers = {}
    for node in path:
        spec = spec_for(node.op_type)
        if spec is None:
            continue
        kind = spec.node_kind(node, info)
        if kind in RULE_PROTOCOLS and (kind != SUM_KIND or len(carried_inputs(spec, node, info)) > 1):
            takers[node.name] = (node.op_type, kind)
    return takers


def first_layers(info: GraphInfo) -> set[str]:
    """Linear layers reached from the model input without passing another linear layer."""
    first, frontier, visited = set(), [info.source], set()
    while frontier:
        tensor = frontier.pop()
        for node in info.consumers.get(tensor, []):
            if node.name in visited:
                continue
            visited.add(node.name)
            spec = spec_for(node.op_type)
            if spec is not None and spec.node_kind(node, info) in LINEAR_KINDS:
                first.add(node.name)
            else:
                frontier.extend(node.output)
    return first
