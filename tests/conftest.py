"""Shared test helpers: one-node ONNX models and onnxruntime runs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).parent))  # lets tests `import reference`

IR_VERSION = 10  # onnx writes IR 14; onnxruntime reads at most 13


def one_node_model(
    op: str,
    x_shape: tuple,
    inits: dict[str, np.ndarray] | None = None,
    extra_inputs: tuple[str, ...] = (),
    n_outputs: int = 1,
    opset: int = 17,
    **attrs,
) -> onnx.ModelProto:
    """A model with one float input "x", one node op(x, *inits/extra_inputs, **attrs) and output "y"."""
    inits = inits or {}
    names = ["x", *inits.keys(), *extra_inputs]
    outs = ["y"] + [f"y{i}" for i in range(1, n_outputs)]
    node = helper.make_node(op, names, outs, name=f"{op.lower()}0", **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = IR_VERSION
    return model


def ort_run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: np.asarray(x, np.float32)})


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


# Property-based tests run derandomized and without the example database: the same examples on
# every machine and every run, so CI never flakes.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("onnxlrp", derandomize=True, database=None, deadline=None)
_hypothesis_settings.load_profile("onnxlrp")
