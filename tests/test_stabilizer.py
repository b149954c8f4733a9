"""GraphBuilder.stabilize: d + eps * sign0(d), sign0(d) = +1 for d >= 0 else -1, computed in the graph
without a sign test (Clip of a steep line). Checked value by value against numpy's formula, in
onnxruntime and in onnx's reference evaluator (the operator semantics every runtime implements)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import IR_VERSION
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from onnxlrp.builder import GraphBuilder

TINIEST_NORMAL = np.finfo(np.float32).tiny  # 2^-126
VALUES = np.array(
    [
        *(0.0, -0.0, 1.0, -1.0, 1e-7, -1e-7, 1e-30, -1e-30, TINIEST_NORMAL, -TINIEST_NORMAL),
        *(3e38, -3e38, np.inf, -np.inf, 0.5e-6, -0.5e-6, 2.0, -2.0),
    ],
    dtype=np.float32,
)


def stabilizer_model(epsilon: float) -> onnx.ModelProto:
    graph = helper.make_graph(
        [],
        "stab",
        [helper.make_tensor_value_info("d", TensorProto.FLOAT, [None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])],
    )
    builder = GraphBuilder(graph, {"d", "y"})
    out = builder.stabilize("d", epsilon, like="d")
    graph.node.extend(builder.nodes)
    graph.node.append(helper.make_node("Identity", [out], ["y"]))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("epsilon", [1e-6, 1e-2, 0.25, 1.0])
def test_stabilize_adds_eps_with_the_sign_of_d_and_plus_at_zero(epsilon):
    eps = np.float32(epsilon)
    expected = VALUES + np.where(VALUES >= 0, eps, -eps).astype(np.float32)  # -0.0 >= 0: +eps
    model = stabilizer_model(epsilon)
    assert not any(n.op_type in ("Where", "GreaterOrEqual", "Cast") for n in model.graph.node)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    with np.errstate(over="ignore"):  # 2^127 d overflows to +-inf for |d| >= 2: Clip takes it
        reference = ReferenceEvaluator(model).run(None, {"d": VALUES})[0]
    for got in (session.run(None, {"d": VALUES})[0], reference):
        np.testing.assert_array_equal(got, expected)


def test_stabilize_with_a_known_sign_is_one_add():
    graph = helper.make_graph([], "g", [], [])
    builder = GraphBuilder(graph, {"d"})
    builder.stabilize("d", 0.5, like="d", sign=-1)
    assert [n.op_type for n in builder.nodes] == ["Add"]
