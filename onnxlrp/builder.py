"""GraphBuilder: emits ONNX nodes and constants for the relevance graph, with unique names.

Helpers that take tensor names accept ``None`` for "a zero tensor" and skip the work it would need,
so rules can drop terms that are zero at compile time (a zero weight part, a non-negative input).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, overload

import numpy as np
import onnx
from onnx import helper, numpy_helper


def _content_key(array: np.ndarray, samples: int = 32, elementwise=None) -> tuple:
    """Type, shape and a strided sample of the values: equal arrays share a key, and unequal arrays
    of one shape rarely do (those few get compared in full). With ``elementwise``: the key of
    ``elementwise(array)``, computed from the sample alone."""
    flat = array.reshape(-1)
    step = max(1, flat.size // samples)
    sample = flat[::step][:samples]
    return array.dtype.str, array.shape, (sample if elementwise is None else elementwise(sample)).tobytes()


def _positive(a: np.ndarray) -> np.ndarray:
    return np.maximum(a, 0).astype(a.dtype)


def _negative(a: np.ndarray) -> np.ndarray:
    return np.minimum(a, 0).astype(a.dtype)


def _write_tensor(tensor: onnx.TensorProto, array: np.ndarray, name: str) -> None:
    """Fill an initializer in place (numpy_helper.from_array would build one to be copied in)."""
    tensor.name = name
    tensor.data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
    tensor.dims.extend(array.shape)
    tensor.raw_data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


class GraphBuilder:
    """Collects nodes, and writes initializers straight into ``graph`` (no copies of large weights
    later). Every name it makes starts with ``prefix``. A constant equal to one already in ``graph``
    or made before is not stored twice (e.g. a strided transpose reuses the forward conv's weight).
    A weight's positive or negative part, or a weight rearranged by `derived`, is computed in the
    graph from the stored weight (onnxruntime folds these nodes once, when the session starts), so
    the file holds each weight once."""

    def __init__(
        self,
        graph: onnx.GraphProto,
        taken_names: set[str],
        stored: Mapping[str, np.ndarray] | None = None,
        prefix: str = "lrp",
    ) -> None:
        """``stored``: values of initializers already in ``graph``, by name, for reuse."""
        self.nodes: list[onnx.NodeProto] = []
        self._graph = graph
        self._taken = set(taken_names)
        self._prefix = prefix
        self._counter = 0
        self._written: set[str] = set()  # initializers this builder added to the graph
        self._stored: dict[tuple, list[tuple[np.ndarray, str]]] = {}
        # content key of a weight's positive / negative part -> (weight, its name, which part)
        self._parts: dict[tuple, list[tuple[np.ndarray, str, bool]]] = {}
        for name, array in (stored or {}).items():
            self._remember(array, name)

    def _remember(self, array: np.ndarray, name: str) -> None:
        self._stored.setdefault(_content_key(array), []).append((array, name))
        if array.ndim >= 2 and array.dtype == np.float32:
            for positive, part in ((True, _positive), (False, _negative)):
                key = _content_key(array, elementwise=part)
                self._parts.setdefault(key, []).append((array, name, positive))

    def _part_name(self, array: np.ndarray) -> str | None:
        """Relu(W) or W - Relu(W) (= min(W, 0), exactly) when ``array`` is that part of a stored W."""
        for weight, name, positive in self._parts.get(_content_key(array), []):
            if positive and np.array_equal(array, _positive(weight)):
                return self.op("Relu", [name], hint="w_pos")
            if not positive and np.array_equal(array, _negative(weight)):
                return self.op("Sub", [name, self.const(_positive(weight))], hint="w_neg")
        return None

    def _stored_name(self, array: np.ndarray) -> str | None:
        for stored, name in self._stored.get(_content_key(array), []):
            if np.array_equal(stored, array):
                return name
        return None

    def fresh(self, hint: str) -> str:
        """A new tensor/node name not used anywhere in the model."""
        while True:
            self._counter += 1
            name = f"{self._prefix}/{hint}_{self._counter}"
            if name not in self._taken:
                self._taken.add(name)
                return name

    def forward_output(self, node: onnx.NodeProto, index: int, hint: str) -> str:
        """Output ``index`` of the forward node ``node``, which gets it (a fresh name) when it leaves
        that optional output out (MaxPool's Indices): the one way the relevance graph changes a
        forward node."""
        if len(node.output) > index and node.output[index]:
            return node.output[index]
        name = self.fresh(hint)
        while len(node.output) < index:
            node.output.append("")
        if len(node.output) == index:
            node.output.append(name)
        else:
            node.output[index] = name
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, n_out: int = 1, **attrs) -> str:
        """Add one node; returns its (first) output name."""
        return self.op_multi(op_type, inputs, hint=hint, n_out=n_out, **attrs)[0]

    def op_multi(
        self, op_type: str, inputs: list[str], hint: str | None = None, n_out: int = 1, **attrs
    ) -> list[str]:
        outputs = [self.fresh(hint or op_type.lower()) for _ in range(n_out)]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=outputs[0], **attrs))
        return outputs

    def const(
        self,
        value: np.ndarray | np.generic | float | int | list[Any],
        hint: str = "const",
        dtype: Any = np.float32,
    ) -> str:
        """An initializer holding ``value``, stored once however often it is asked for."""
        array = np.asarray(value, dtype=dtype if not isinstance(value, np.ndarray) else value.dtype)
        name = self._stored_name(array)
        if name is None:
            name = self._part_name(array)
            if name is None:
                name = self.fresh(hint)
                _write_tensor(self._graph.initializer.add(), array, name)
                self._written.add(name)
            self._remember(array, name)
        return name

    def drop_unread_constants(self) -> None:
        """Remove the constants this builder stored that no node of the graph reads (made for
        relevance nodes that were then pruned as not needed)."""
        read = {name for node in self._graph.node for name in node.input}
        initializers = self._graph.initializer
        for index in reversed(range(len(initializers))):
            if initializers[index].name in self._written and initializers[index].name not in read:
                del initializers[index]

    def derived(self, array: np.ndarray, make: Callable[[], str]) -> str:
        """The constant ``array``, which ``make()`` computes in the graph from stored constants (and
        returns the name of); made once however often it is asked for."""
        name = self._stored_name(array)
        if name is None:
            name = make()
            self._remember(array, name)
        return name

    # --- arithmetic that treats None as zero -------------------------------------------------
    @overload
    def add(self, a: str, b: str | None) -> str: ...
    @overload
    def add(self, a: str | None, b: str) -> str: ...
    @overload
    def add(self, a: str | None, b: str | None) -> str | None: ...
    def add(self, a: str | None, b: str | None) -> str | None:
        if a is None:
            return b
        if b is None:
            return a
        return self.op("Add", [a, b])

    @overload
    def sub(self, a: str, b: str | None) -> str: ...
    @overload
    def sub(self, a: str | None, b: str) -> str: ...
    @overload
    def sub(self, a: str | None, b: str | None) -> str | None: ...
    def sub(self, a: str | None, b: str | None) -> str | None:
        if b is None:
            return a
        if a is None:
            return self.op("Neg", [b])
        return self.op("Sub", [a, b])

    @overload
    def mul(self, a: str, b: str) -> str: ...
    @overload
    def mul(self, a: str | None, b: str | None) -> str | None: ...
    def mul(self, a: str | None, b: str | None) -> str | None:
        if a is None or b is None:
            return None
        return self.op("Mul", [a, b])

    def scale(self, a: str | None, factor: float) -> str | None:
        if a is None or factor == 0:
            return None
        if factor == 1:
            return a
        return self.op("Mul", [a, self.const(np.float32(factor))])

    @overload
    def div(self, a: str, b: str) -> str: ...
    @overload
    def div(self, a: str | None, b: str) -> str | None: ...
    def div(self, a: str | None, b: str) -> str | None:
        if a is None:
            return None
        return self.op("Div", [a, b])

    def total(self, terms: Sequence[str | None]) -> str | None:
        result: str | None = None
        for term in terms:
            result = self.add(result, term)
        return result

    def positive_part(self, x: str) -> str:
        return self.op("Relu", [x], hint="pos")

    def negative_part(self, x: str) -> str:
        # not Min(x, 0): onnxruntime-web's WebGPU got Min wrong; x - Relu(x) is exact and runs anywhere
        return self.op("Sub", [x, self.positive_part(x)], hint="neg")

    def stabilize(
        self, d: str | None, epsilon: float, like: str, sign: int = 0, rectified: str | None = None
    ) -> str:
        """d + epsilon * sign0(d), sign0(0) = +1. A zero ``d`` (None) becomes epsilon shaped like ``like``.

        ``rectified`` = Relu(d), when the relevance divided by the result is zero wherever d < 0: then
        Relu(d) + epsilon is the same wherever it matters (d >= 0), one Add on a tensor the forward
        pass computes anyway.

        ``sign`` = +1 or -1 when the caller knows d >= 0 or d <= 0: then it is one Add. (For d <= 0 the
        shift is -epsilon also where d == 0; a rule only says so when every contribution to such a d is
        zero, so the relevance is unchanged.) Otherwise the shift is Clip(2^127 d + epsilon, -epsilon,
        epsilon): +epsilon for d >= 0, -epsilon for d <= -epsilon 2^-126 (for epsilon <= 1: every
        negative normal float; subnormals count as zero, as on runtimes that flush them). Three
        arithmetic passes, a quarter cheaper in onnxruntime than a Cast of d >= 0 and 6-10x cheaper
        than a Where (benchmarks/ANALYSIS.md)."""
        if d is None:
            d = self.op("Mul", [like, self.const(np.float32(0))])
        if epsilon == 0:
            return d
        if rectified is not None:
            return self.op("Add", [rectified, self.const(np.float32(epsilon))], hint="stab")
        if sign:
            return self.op("Add", [d, self.const(np.float32(sign * epsilon))], hint="stab")
        eps = self.const(np.float32(epsilon))
        steep = self.op("Add", [self.op("Mul", [d, self.const(np.float32(2.0**127))]), eps])
        shift = self.op("Clip", [steep, self.const(np.float32(-epsilon)), eps])
        return self.op("Add", [d, shift], hint="stab")

    def ones_like(self, x: str) -> str:
        shape = self.op("Shape", [x])
        return self.op(
            "ConstantOfShape", [shape], hint="ones", value=numpy_helper.from_array(np.ones(1, np.float32))
        )

    def reshape_like(self, x: str, like: str) -> str:
        return self.op("Reshape", [x, self.op("Shape", [like])])
