"""Emit and assemble: the relevance graph written into the canonical model.

Seed the explained tensor, walk the relevance path (last node first) letting each node's registered
emitter write its relevance nodes, then add the graph outputs (input relevance, the forward outputs,
exposed relevances, per-channel relevances of conditioned tensors) and the target and mask inputs,
and check the result.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from onnxlrp import conditioning
from onnxlrp.analysis import bias_adds, nonnegative, rectified_inputs
from onnxlrp.builder import GraphBuilder
from onnxlrp.errors import UnsupportedModelError
from onnxlrp.graph import GraphInfo, weightless
from onnxlrp.ops import EmitContext, spec_for
from onnxlrp.plan import Plan

TARGET = "target"
RELEVANCE = "relevance"
RELEVANCE_SEED = "relevance_seed"
INPUT_PROPERTY = "onnxlrp:input"  # metadata: the explained input (RelevanceSession reads it)
CLASSES_PROPERTY = "onnxlrp:classes"  # metadata: how many classes a target may name


def exposed_name(tensor: str) -> str:
    """The graph output that carries the relevance arriving at `tensor`."""
    return f"{RELEVANCE}:{tensor}"


def emit(plan: Plan) -> onnx.ModelProto:
    """The relevance graph of a plan (built into ``plan.model``)."""
    model, info, options, explained = plan.model, plan.info, plan.options, plan.explained
    if any(name in (TARGET, RELEVANCE, RELEVANCE_SEED) for name in _all_names(model)):
        raise UnsupportedModelError(
            f"the model already uses one of the names {TARGET}, {RELEVANCE}, {RELEVANCE_SEED}"
        )
    initializers = {init.name for init in model.graph.initializer} - {inp.name for inp in model.graph.input}
    b = GraphBuilder(model.graph, _all_names(model), {name: info.constants[name] for name in initializers})
    if options.start is None:
        shape = info.shape(explained)
        if len(shape) not in (2, 3):
            raise UnsupportedModelError(
                f"the explained output '{explained}' has shape {shape}; it must be [batch, classes] or "
                "[batch, sequence, classes] (or pass start= to seed relevance at a tensor yourself)"
            )
        seed_relevance = _seed(
            b, explained, shape[-1], options.seed, options.position if len(shape) == 3 else None
        )
    else:
        seed_relevance = RELEVANCE_SEED
    relevance: dict[str, list[str]] = {explained: [seed_relevance]}
    nonnegative_tensors = nonnegative(info)
    fused_biases = bias_adds(info)
    rectified = rectified_inputs(info, plan.path, plan.rules, explained, options.logit_seed)
    refused: list[str] = []  # every node refused, reported together
    channel_sources: dict[str, str] = {}  # conditioned tensor -> its per-channel relevance
    for node in plan.path:
        arriving: list[str | None] = []
        for name in node.output:
            total = _total(b, relevance[name]) if name in relevance else None
            if total is not None and name in plan.conditioned:
                total, channel_sources[name] = conditioning.apply_mask(b, info, name, total)
            if total is not None:
                relevance[name] = [total]  # summed once (totals below reuses it)
            arriving.append(total)
        if all(total is None for total in arriving):
            continue  # nothing reaches it (CP-LRP's attention weights, or only through a refused node)
        ctx = EmitContext(
            b, info, plan.rules.get(node.name), nonnegative_tensors, fused_biases, rectified, options.runtime
        )
        spec = spec_for(node.op_type)
        assert spec is not None  # the plan refused unsupported nodes
        try:
            produced = spec.emit(ctx, node, arriving)
        except UnsupportedModelError as error:
            refused.append(str(error))
            continue
        except Exception as error:
            if refused:
                continue  # a consequence of relevance missing below a refused node
            raise UnsupportedModelError(f"node '{node.name}' ({node.op_type}): {error}") from error
        for index, name in produced.items():
            relevance.setdefault(node.input[index], []).append(name)
    if len(refused) == 1:
        raise UnsupportedModelError(refused[0])
    if refused:
        listed = "\n".join(f"  - {message}" for message in refused)
        raise UnsupportedModelError(f"{len(refused)} nodes cannot be explained:\n{listed}")
    totals = {name: _total(b, parts) for name, parts in relevance.items()}
    return _assemble(model, info, b, totals, explained, options.start, list(options.expose), channel_sources)


def _seed(b: GraphBuilder, logits: str, classes: int, mode: str, position: int | None = None) -> str:
    """logit * one-hot(target) (mode "logit") or the one-hot alone ("onehot"). Logits with a
    sequence axis ([N, seq, classes]) are explained at one ``position`` (negative: from the end,
    the sequence length read at run time)."""
    row = logits
    if position is not None:
        length = b.op("Gather", [b.op("Shape", [logits]), b.const(np.array(1, np.int64))])
        index = b.op("Mod", [b.op("Add", [b.const(np.array(position, np.int64)), length]), length])
        row = b.op("Gather", [logits, index], axis=1)
    predicted = b.op("ArgMax", [row], axis=-1, keepdims=0)
    chosen = b.op("Where", [b.op("Less", [TARGET, b.const(np.array(0, np.int64))]), predicted, TARGET])
    column = b.op("Unsqueeze", [chosen, b.const(np.array([1], np.int64))])
    mask = b.op(
        "Cast",
        [b.op("Equal", [column, b.const(np.arange(classes, dtype=np.int64)[None], "classes")])],
        to=onnx.TensorProto.FLOAT,
    )
    if position is not None:  # [N, 1, classes] * [1, seq, 1]: the target at that position only
        steps = b.op("Range", [b.const(np.array(0, np.int64)), length, b.const(np.array(1, np.int64))])
        at = b.op("Cast", [b.op("Equal", [steps, index])], to=onnx.TensorProto.FLOAT)
        at = b.op("Reshape", [at, b.const(np.array([1, -1, 1], np.int64))])
        mask = b.op("Mul", [b.op("Unsqueeze", [mask, b.const(np.array([1], np.int64))]), at])
    if mode == "onehot":
        return mask
    if mode != "logit":
        raise ValueError(f"seed must be 'logit' or 'onehot', got '{mode}'")
    return b.op("Mul", [logits, mask], hint="seed")


def _value_info(name: str, shape: tuple, elem_type: int = onnx.TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem_type, ["N", *shape[1:]])


def _input_dims(value: onnx.ValueInfoProto) -> tuple[int | str, ...]:
    """A graph input's declared dimensions (symbolic ones by name)."""
    return tuple(d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim)


def _declared_shapes(
    model: onnx.ModelProto, info: GraphInfo
) -> tuple[dict[str, tuple[int | str, ...]], str | None]:
    """Static shapes to declare on outputs, and the first tensor whose shape onnx's own inference
    gets otherwise than the runtime (onnx 1.2x counts a ceil_mode pooling window that starts in the
    end padding, onnxruntime and PyTorch do not), if any. Such a dimension is left symbolic so that
    checkers and runtimes both accept the outputs. In a model with symbolic dimensions besides the
    batch (a sequence length), a size onnx cannot infer statically stays symbolic too."""
    inferred_graph = onnx.shape_inference.infer_shapes(weightless(model)).graph
    inferred = [*inferred_graph.value_info, *inferred_graph.output]
    onnx_dims = {
        vi.name: [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        for vi in inferred
    }
    declared: dict[str, tuple[int | str, ...]] = {}
    differ: dict[str, str] = {}
    for name, shape in info.shapes.items():
        theirs = onnx_dims.get(name)
        if theirs is None or len(theirs) != len(shape):
            declared[name] = shape
            continue
        declared[name] = tuple(
            d if t == d or (t is None and not info.symbolic_dims) else f"{name}:dim{i}"
            for i, (d, t) in enumerate(zip(shape, theirs, strict=True))
        )
        if any(t is not None and t != d for d, t in zip(shape, theirs, strict=True)):
            differ[name] = f"'{name}' (onnx: {theirs}, onnxruntime: {list(shape)})"
    in_order = [differ[name] for node in model.graph.node for name in node.output if name in differ]
    return declared, next(iter(in_order), None)


def _with_shape(output: onnx.ValueInfoProto, shapes: dict[str, tuple[int | str, ...]]) -> onnx.ValueInfoProto:
    """A forward output as the relevance graph declares it: as the model does, or with the runtime's
    shape where the model leaves the shape out (onnxruntime runs such a model; onnx's checker
    requires a shape on a graph output)."""
    if not output.type.HasField("tensor_type") or output.name not in shapes:
        return output  # e.g. skl2onnx's ZipMap output: a sequence of maps
    tensor = output.type.tensor_type
    if tensor.HasField("shape"):
        return output
    return _value_info(output.name, shapes[output.name], tensor.elem_type or onnx.TensorProto.FLOAT)


def _total(b: GraphBuilder, parts: list[str]) -> str:
    """The sum of one or more relevance parts."""
    result = parts[0] if len(parts) == 1 else b.total(parts)
    assert result is not None  # parts is never empty
    return result


def _all_names(model: onnx.ModelProto) -> set[str]:
    names = {i.name for i in model.graph.input} | {i.name for i in model.graph.initializer}
    for node in model.graph.node:
        names.update(node.input)
        names.update(node.output)
        names.add(node.name)
    return names


def _ancestors(model: onnx.ModelProto, tensors: set[str]) -> list[onnx.NodeProto]:
    needed, keep = set(tensors), []
    for node in reversed(model.graph.node):
        if any(name in needed for name in node.output):
            keep.append(node)
            needed.update(node.input)
    return list(reversed(keep))


def _assemble(
    model: onnx.ModelProto,
    info: GraphInfo,
    b: GraphBuilder,
    totals: dict[str, str],
    explained: str,
    start: str | None,
    expose: list[str],
    channel_sources: dict[str, str],
) -> onnx.ModelProto:
    graph = model.graph
    shapes, disagreement = _declared_shapes(model, info)
    input_info = next(i for i in graph.input if i.name == info.input_name)
    input_shape = _input_dims(input_info) if info.symbolic_dims else info.shape(info.input_name)
    if expose == ["all"]:
        expose = [name for name in totals if name != info.source and name not in info.constants]
    expose += [name for name in _embedding_sinks(info, totals) if name not in expose]
    missing = [name for name in expose if name not in totals]
    if missing:
        raise UnsupportedModelError(
            f"cannot expose {', '.join(repr(m) for m in missing)}: no relevance reaches them "
            f"(tensors on the relevance path: {', '.join(sorted(totals))})"
        )
    if info.source not in totals:
        raise UnsupportedModelError(f"no relevance reaches the input '{info.input_name}'")
    if info.source == info.input_name:
        b.nodes.append(helper.make_node("Identity", [totals[info.source]], [RELEVANCE], name=RELEVANCE))
        outputs = [_value_info(RELEVANCE, input_shape, input_info.type.tensor_type.elem_type)]
    else:  # token ids: the embedding lookup's relevance summed over the hidden axis, one per token
        hidden = b.const(np.array([-1], np.int64))
        b.nodes.append(
            helper.make_node(
                "ReduceSum", [totals[info.source], hidden], [RELEVANCE], name=RELEVANCE, keepdims=0
            )
        )
        outputs = [_value_info(RELEVANCE, input_shape)]
    if start is None:
        outputs += [_with_shape(output, shapes) for output in _copies(graph.output)]
    else:
        outputs.append(_value_info(start, shapes[start]))
        needed = {start} | {name for node in b.nodes for name in node.input}
        keep = {node.name for node in _ancestors(model, needed)}  # node names are unique (canonicalize)
        for index in reversed(range(len(graph.node))):
            if graph.node[index].name not in keep:
                del graph.node[index]
    for name in expose:
        b.nodes.append(
            helper.make_node("Identity", [totals[name]], [exposed_name(name)], name=exposed_name(name))
        )
        outputs.append(_value_info(exposed_name(name), shapes[name]))

    # the relevance graph is built in the (already copied) forward model: its weights are not copied again
    graph.node.extend(_needed(b.nodes, {o.name for o in outputs} | set(channel_sources.values())))
    b.drop_unread_constants()
    del graph.output[:]
    graph.output.extend(outputs)
    del graph.value_info[:]
    if start is None:
        # a plain input (no default initializer: outside Python onnxruntime such an input is not one)
        graph.input.append(helper.make_tensor_value_info(TARGET, onnx.TensorProto.INT64, ["N"]))
    else:
        graph.input.append(_value_info(RELEVANCE_SEED, shapes[start]))
    conditioning.declare(graph, info, channel_sources)
    graph.name = f"{graph.name}_lrp"
    model.producer_name, model.producer_version = "onnxlrp", ""
    properties = {prop.key: prop.value for prop in model.metadata_props}
    properties[INPUT_PROPERTY] = info.input_name
    if start is None:
        properties[CLASSES_PROPERTY] = str(info.shape(explained)[-1])  # [N, classes] or [N, seq, classes]
    helper.set_model_props(model, properties)
    model.ir_version = _ir_version(model)
    try:
        check_structure(model)
    except UnsupportedModelError:
        if disagreement is None:
            raise
        # the relevance nodes are sized by the runtime, which onnx's inference (run by onnxruntime
        # too when it loads a model) then contradicts
        raise UnsupportedModelError(
            f"onnx's shape inference and onnxruntime disagree on the shape of {disagreement}, so a "
            "relevance graph would not load (a ceil_mode pooling window that starts in the end padding "
            "counts for onnx only: export without ceil_mode, or with pads that make it unnecessary)"
        ) from None
    return model


def _embedding_sinks(info: GraphInfo, totals: dict[str, str]) -> list[str]:
    """Lookups in constant tables that relevance reaches without flowing on (a token model's position
    and token-type embeddings, whose sums with the word embeddings give them a share)."""
    if info.source == info.input_name:
        return []
    sinks = []
    for name in totals:
        node = info.producer.get(name)
        if (
            name not in info.relevant
            and node is not None
            and node.op_type == "Gather"
            and node.input[0] in info.constants
            and name in info.shapes
        ):
            sinks.append(name)
    return sinks


def _needed(nodes: list[onnx.NodeProto], outputs: set[str]) -> list[onnx.NodeProto]:
    """The relevance nodes some output depends on (a share nobody reads, such as the relevance a
    constant offset absorbs when it is not exposed, is not computed)."""
    needed, kept = set(outputs), []
    for node in reversed(nodes):
        if any(name in needed for name in node.output):
            kept.append(node)
            needed.update(node.input)
    return list(reversed(kept))


def _copies(messages) -> list:
    """Detached copies of protobuf messages (to refill the repeated field they come from)."""
    return [type(m).FromString(m.SerializeToString()) for m in messages]


def check_structure(model: onnx.ModelProto) -> None:
    """onnx.checker.check_model(full_check=True) on the model with its large weights replaced by
    inputs of the same type and shape: the same checks (shape inference never needs the values of
    float weights) without copying the weights into the checker. A failure is the compiler's fault,
    reported on one line."""
    try:
        onnx.checker.check_model(weightless(model), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UnsupportedModelError(
            f"the relevance graph fails onnx's checker ({first}); please report the model"
        ) from None


def _ir_version(model: onnx.ModelProto) -> int:
    """The lowest IR version the opsets allow (opset 17: IR 8), so that older runtimes read the model."""
    return helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
