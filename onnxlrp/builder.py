"""GraphBuilder: emits ONNX nodes and constants for the relevance graph, with unique names.

Helpers that take tensor names accept ``None`` for "a zero tensor" and skip the work it would need,
so rules can drop terms that are zero at compile time (a zero weight part, a non-negative input).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


class GraphBuilder:
    """Collects nodes and initializers; every name it makes starts with ``prefix``."""

    def __init__(self, taken_names: set[str], prefix: str = "lrp") -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._taken = set(taken_names)
        self._prefix = prefix
        self._counter = 0
        self._scalars: dict[tuple, str] = {}

    def fresh(self, hint: str) -> str:
        """A new tensor/node name not used anywhere in the model."""
        while True:
            self._counter += 1
            name = f"{self._prefix}/{hint}_{self._counter}"
            if name not in self._taken:
                self._taken.add(name)
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

    def const(self, value: np.ndarray | float | int | list, hint: str = "const", dtype=np.float32) -> str:
        """An initializer holding ``value``; small scalars and vectors are shared."""
        array = np.asarray(value, dtype=dtype if not isinstance(value, np.ndarray) else value.dtype)
        key = None
        if array.size <= 8:
            key = (array.dtype.str, array.shape, array.tobytes())
            if key in self._scalars:
                return self._scalars[key]
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(array, name))
        if key is not None:
            self._scalars[key] = name
        return name

    # --- arithmetic that treats None as zero -------------------------------------------------
    def add(self, a: str | None, b: str | None) -> str | None:
        if a is None:
            return b
        if b is None:
            return a
        return self.op("Add", [a, b])

    def sub(self, a: str | None, b: str | None) -> str | None:
        if b is None:
            return a
        if a is None:
            return self.op("Neg", [b])
        return self.op("Sub", [a, b])

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

    def div(self, a: str | None, b: str) -> str | None:
        if a is None:
            return None
        return self.op("Div", [a, b])

    def total(self, terms: list[str | None]) -> str | None:
        result = None
        for term in terms:
            result = self.add(result, term)
        return result

    def positive_part(self, x: str) -> str:
        return self.op("Relu", [x], hint="pos")

    def negative_part(self, x: str) -> str:
        return self.op("Min", [x, self.const(np.float32(0))], hint="neg")

    def stabilize(self, d: str | None, epsilon: float, like: str) -> str:
        """d + epsilon * sign0(d), sign0(0) = +1. A zero ``d`` (None) becomes epsilon shaped like ``like``."""
        if d is None:
            d = self.op("Mul", [like, self.const(np.float32(0))])
        if epsilon == 0:
            return d
        is_nonneg = self.op("GreaterOrEqual", [d, self.const(np.float32(0))])
        shift = self.op(
            "Where", [is_nonneg, self.const(np.float32(epsilon)), self.const(np.float32(-epsilon))]
        )
        return self.op("Add", [d, shift], hint="stab")

    def ones_like(self, x: str) -> str:
        shape = self.op("Shape", [x])
        return self.op(
            "ConstantOfShape", [shape], hint="ones", value=numpy_helper.from_array(np.ones(1, np.float32))
        )

    def reshape_like(self, x: str, like: str) -> str:
        return self.op("Reshape", [x, self.op("Shape", [like])])
