"""GraphInfo: what the compiler knows about the forward graph.

Producers and consumers of every tensor, the values of constant tensors (initializers, Constant
nodes and whole shape subgraphs), the static shape of every tensor, and the tensors relevance can
reach (those computed from the explained input's values). Shapes and constants come from one probe
run of the model in onnxruntime at batch size 1 (other symbolic dimensions, e.g. a sequence length,
at PROBE_LENGTH), which is exact where onnx's own shape inference is not (e.g. ceil_mode pooling).

The explained input is the first float input; a model whose inputs are all integers (token ids) is
explained at the output of the embedding lookup that reads the first of them (a Gather from a
constant table): ``source`` is that tensor.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from onnxlrp.errors import ModelLoadError, ResourceLimitError, UnsupportedModelError

FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16}
PROBE_LIMIT = 2**30  # bytes: the largest tensor the probe run may compute (at batch size 1)
INTEGER_TYPES = {onnx.TensorProto.INT64, onnx.TensorProto.INT32}
PROBE_LENGTH = 7  # the probe's size for symbolic dimensions other than the batch
# ops whose output depends on their input's shape only: relevance never flows through them
SHAPE_OPS = {"Shape", "Size"}


@dataclass
class GraphInfo:
    model: onnx.ModelProto
    input_name: str
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    producer: dict[str, onnx.NodeProto] = field(default_factory=dict)
    consumers: dict[str, list[onnx.NodeProto]] = field(default_factory=dict)
    dynamic: set[str] = field(default_factory=set)
    # tensors computed from the input's shape only (Shape, Size and arithmetic on them): their probe
    # values, fixed wherever they do not involve the batch size
    from_shapes: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = ""  # where input relevance is reported: input_name, or its embedding lookup's output
    relevant: set[str] = field(default_factory=set)  # computed from the source's or float inputs' values
    symbolic_dims: bool = False  # an input has a symbolic dimension besides the batch
    # tensor -> its axes whose size follows a symbolic dimension besides the batch (a sequence length)
    varying: dict[str, set[int]] = field(default_factory=dict)

    @property
    def nodes(self) -> list[onnx.NodeProto]:
        return list(self.model.graph.node)

    def const(self, name: str) -> np.ndarray | None:
        """The value of a tensor that does not depend on the model input, else None."""
        return self.constants.get(name)

    def const_or_from_shapes(self, name: str) -> np.ndarray | None:
        """A constant, or a value computed from shapes (the caller makes sure the batch size is not
        involved), else None."""
        value = self.constants.get(name)
        return self.from_shapes.get(name) if value is None else value

    def require_fixed(self, name: str, axes: Iterable[int], what: str) -> None:
        """Refuse (one line naming ``what``) when one of ``axes`` of ``name`` has a size that varies
        with a symbolic dimension (an emitter about to bake the probe's size into the graph)."""
        varying = sorted(set(self.varying.get(name, ())) & {a % max(len(self.shape(name)), 1) for a in axes})
        if varying:
            raise UnsupportedModelError(
                f"{what}: axis {varying[0]} of '{name}' varies with a symbolic input dimension (a sequence "
                "length); this op cannot read that size at run time yet. Fix the dimension in the model."
            )

    def shape(self, name: str) -> tuple[int, ...]:
        """Static shape at batch size 1 (the batch dimension reads 1)."""
        if name not in self.shapes:
            raise UnsupportedModelError(f"tensor '{name}': its shape is unknown")
        return self.shapes[name]

    def attr(self, node: onnx.NodeProto, name: str, default=None):
        for attribute in node.attribute:
            if attribute.name == name:
                return helper.get_attribute_value(attribute)
        return default


def weightless(model: onnx.ModelProto, large: int = 1024) -> onnx.ModelProto:
    """The model with its large float initializers turned into inputs of the same type and shape:
    what shape inference and the checker need, at a fraction of the copying."""
    graph = model.graph
    kept, stand_ins = [], []
    declared = {inp.name for inp in graph.input}
    for init in graph.initializer:
        if init.data_type in FLOAT_TYPES and int(np.prod(init.dims)) > large:
            if init.name not in declared:  # an initializer that is also an input is declared already
                stand_ins.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
        else:
            kept.append(init)
    light = helper.make_model(
        helper.make_graph(
            list(graph.node),
            graph.name,
            [*graph.input, *stand_ins],
            list(graph.output),
            kept,
            value_info=list(graph.value_info),
        ),
        opset_imports=list(model.opset_import),
    )
    light.ir_version = model.ir_version
    return light


def implicit_inputs(node: onnx.NodeProto) -> set[str]:
    """Outer-scope tensors the node's subgraphs (If/Loop/Scan bodies) read: inputs the node does
    not list, but depends on all the same."""
    read: set[str] = set()
    for attribute in node.attribute:
        graphs = [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs)
        for graph in graphs:
            defined = {i.name for i in graph.input} | {i.name for i in graph.initializer}
            for inner in graph.node:
                read.update(
                    name for name in (*inner.input, *implicit_inputs(inner)) if name and name not in defined
                )
                defined.update(inner.output)
    return read


def node_inputs(node: onnx.NodeProto) -> list[str]:
    """Every tensor a node reads: its listed inputs, then those its subgraphs read from outside."""
    listed = [name for name in node.input if name]
    return listed + sorted(implicit_inputs(node) - set(listed))


def fixed_dims(value: onnx.ValueInfoProto) -> list[int]:
    """A value's dimensions, -1 for each that is not a fixed number."""
    return [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]


def data_input(model: onnx.ModelProto, name: str | None = None) -> onnx.ValueInfoProto:
    """The model input that is explained: the float graph input ``name``, or the first float graph
    input that is not an initializer, or else the first integer input read as the indices of an
    embedding lookup (token ids)."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = [inp for inp in model.graph.input if inp.name not in initializers]
    floats = [inp for inp in inputs if inp.type.tensor_type.elem_type in FLOAT_TYPES]
    described = ", ".join(
        f"'{inp.name}' ({onnx.TensorProto.DataType.Name(inp.type.tensor_type.elem_type)})" for inp in inputs
    )
    if name is not None:
        chosen = [inp for inp in floats if inp.name == name]
        if not chosen:
            raise ModelLoadError(
                f"input '{name}' is not a float input of the model; its inputs are: {described}"
            )
        return chosen[0]
    if floats:
        return floats[0]
    for inp in inputs:
        if inp.type.tensor_type.elem_type in INTEGER_TYPES and embedding_lookup(model, inp.name) is not None:
            return inp
    raise ModelLoadError(
        "the model has no float input to explain (nor token ids read by an embedding lookup, a Gather "
        f"from a constant table); its inputs are: {described or 'none'}"
    )


def embedding_lookup(model: onnx.ModelProto, ids: str) -> onnx.NodeProto | None:
    """The first Gather that reads a constant float table at the indices ``ids`` (possibly
    reshaped or cast on the way: GPT-2 views its ids as [-1, seq])."""
    tables = {
        init.name for init in model.graph.initializer if init.data_type in FLOAT_TYPES and len(init.dims) == 2
    }
    names = {ids}
    for node in model.graph.node:
        if (
            node.op_type == "Gather"
            and len(node.input) > 1
            and node.input[1] in names
            and node.input[0] in tables
        ):
            return node
        if (
            node.op_type in ("Reshape", "Unsqueeze", "Squeeze", "Flatten", "Cast", "Identity")
            and node.input[0] in names
        ):
            names.add(node.output[0])
    return None


def _relevant(info: GraphInfo) -> set[str]:
    """Tensors computed from the values (not only the shapes) of the source or of any float input:
    relevance can reach them; integer inputs (attention masks) and shapes are context."""
    initializers = {init.name for init in info.model.graph.initializer}
    relevant = {info.source} | {
        inp.name
        for inp in info.model.graph.input
        if inp.name not in initializers and inp.type.tensor_type.elem_type in FLOAT_TYPES
    }
    for node in info.nodes:
        if node.op_type not in SHAPE_OPS and any(name in relevant for name in node_inputs(node)):
            relevant.update(name for name in node.output if name)
    return relevant


def _has_symbolic_dims(model: onnx.ModelProto) -> bool:
    """Whether an input (not an initializer) has a symbolic dimension besides the batch."""
    initializers = {init.name for init in model.graph.initializer}
    return any(
        not dim.HasField("dim_value") or dim.dim_value <= 0
        for inp in model.graph.input
        if inp.name not in initializers
        for dim in list(inp.type.tensor_type.shape.dim)[1:]
    )


def _probe_feed(
    model: onnx.ModelProto, rng: np.random.Generator, length: int = PROBE_LENGTH
) -> dict[str, np.ndarray]:
    initializers = {init.name for init in model.graph.initializer}
    feed = {}
    for inp in model.graph.input:
        if inp.name in initializers:
            continue
        tensor_type = inp.type.tensor_type
        dims = []
        for index, dim in enumerate(tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                dims.append(dim.dim_value)
            else:
                dims.append(1 if index == 0 else length)
        dtype = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        check_size(f"input '{inp.name}'", dims, np.dtype(dtype).itemsize)
        if tensor_type.elem_type in FLOAT_TYPES:
            feed[inp.name] = rng.standard_normal(dims, dtype=np.float32).astype(dtype)
        else:  # token ids 1 (0 is often padding), masks all ones
            feed[inp.name] = np.ones(dims, dtype)
    return feed


def check_size(what: str, dims: list[int], itemsize: int, limit: int = PROBE_LIMIT) -> None:
    """Refuse a tensor of ``dims`` (at batch size 1) that needs more than ``limit`` bytes, naming it."""
    size = math.prod(dims) * itemsize
    if size > limit:
        raise ResourceLimitError(
            f"{what} would hold {'x'.join(map(str, dims))} values = {size / 2**30:.1f} GiB at batch size 1, "
            f"over onnxlrp's limit of {limit / 2**30:.1f} GiB for one tensor"
        )


def check_probe_sizes(model: onnx.ModelProto, inferred: onnx.ModelProto) -> None:
    """Refuse, before the probe run, a tensor whose inferred static shape (at batch size 1) needs
    more than PROBE_LIMIT bytes: a few hundred bytes of Expand or ConstantOfShape can ask for GBs."""
    producer = {name: node for node in model.graph.node for name in node.output}
    for value in inferred.graph.value_info:
        tensor_type = value.type.tensor_type
        if value.name not in producer or not tensor_type.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in tensor_type.shape.dim]
        try:
            itemsize = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).itemsize
        except Exception:
            itemsize = 1
        node = producer[value.name]
        check_size(f"tensor '{value.name}' (output of node '{node.name}', {node.op_type})", dims, itemsize)


def analyse(model: onnx.ModelProto, input_name: str | None = None) -> GraphInfo:
    """Build GraphInfo: topology, constants and static shapes (one onnxruntime probe at batch 1);
    ``input_name`` is the explained input (default: the first float input)."""
    input_info = data_input(model, input_name)
    info = GraphInfo(model=model, input_name=input_info.name, source=input_info.name)
    if input_info.type.tensor_type.elem_type not in FLOAT_TYPES:
        lookup = embedding_lookup(model, input_info.name)
        assert lookup is not None  # data_input chose it for that
        info.source = lookup.output[0]
    for init in model.graph.initializer:
        info.constants[init.name] = numpy_helper.to_array(init)
    graph_inputs = {inp.name for inp in model.graph.input} - set(info.constants)
    info.dynamic |= graph_inputs
    for node in model.graph.node:
        reads = node_inputs(node)
        for name in node.output:
            info.producer[name] = node
        for name in reads:
            info.consumers.setdefault(name, []).append(node)
        if any(name in info.dynamic for name in reads) or node.op_type in {
            "RandomNormal",
            "RandomUniform",
        }:
            info.dynamic.update(node.output)
    shape_derived: set[str] = set()
    for node in model.graph.node:
        dynamic_inputs = [name for name in node.input if name in info.dynamic]
        if node.op_type in ("Shape", "Size") or (
            dynamic_inputs and all(name in shape_derived for name in dynamic_inputs)
        ):
            shape_derived.update(node.output)

    # shape inference and the probe run see the weights as inputs (fed below), so that hundreds of MB
    # of weights are neither copied into the checker nor serialised for onnxruntime
    probe = weightless(model)
    inferred = onnx.shape_inference.infer_shapes(probe, data_prop=True)
    check_probe_sizes(model, inferred)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in inferred.graph.value_info}
    types.update({vi.name: vi.type.tensor_type.elem_type for vi in model.graph.output})
    existing = {out.name for out in probe.graph.output}
    for node in model.graph.node:
        for name in node.output:
            if name and name not in existing and types.get(name):
                probe.graph.output.append(helper.make_tensor_value_info(name, types[name], None))
    weights = {inp.name: info.constants[inp.name] for inp in probe.graph.input if inp.name in info.constants}
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    feed = _probe_feed(model, np.random.default_rng(0))  # refuses huge inputs
    try:
        session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        names = [out.name for out in session.get_outputs()]
        values = session.run(names, {**feed, **weights})
        symbolic = _has_symbolic_dims(model)
        # a second probe, one longer, shows which sizes (and shape-derived values) follow the sequence
        again = _probe_feed(model, np.random.default_rng(0), PROBE_LENGTH + 1) if symbolic else None
        values_again = session.run(names, {**again, **weights}) if again is not None else None
    except Exception as error:
        raise ModelLoadError(f"onnxruntime cannot run the model: {error}") from None
    for index, (name, value) in enumerate(zip(names, values, strict=True)):
        value = np.asarray(value)
        info.shapes[name] = value.shape
        if name not in info.dynamic:
            info.constants[name] = value
        elif name in shape_derived:
            info.from_shapes[name] = value
        if values_again is not None:
            other = np.asarray(values_again[index])
            if other.shape != value.shape and other.ndim == value.ndim:
                info.varying[name] = {
                    axis for axis in range(value.ndim) if other.shape[axis] != value.shape[axis]
                }
            if name in info.from_shapes and not np.array_equal(other, value):
                del info.from_shapes[name]  # it follows the sequence length: not fixed
    info.symbolic_dims = values_again is not None
    for name, value in feed.items():
        info.shapes[name] = value.shape
        if again is not None and again[name].shape != value.shape:
            info.varying[name] = {a for a in range(value.ndim) if again[name].shape[a] != value.shape[a]}
    for name, value in info.constants.items():
        info.shapes.setdefault(name, value.shape)
    info.relevant = _relevant(info)
    return info
