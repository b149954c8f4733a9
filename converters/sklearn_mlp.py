"""scikit-learn MLPClassifier / MLPRegressor -> an ONNX model onnxlrp can explain.

Path taken: the ONNX graph is built directly from the fitted ``coefs_`` / ``intercepts_`` (not by
editing skl2onnx's output, whose classifier graph ends in ArgMax/label and ZipMap outputs and has no
tensor named for the logits). The network is

    input [N, n_features] -> (Gemm | MatMul + Add) -> hidden activation -> ... -> Gemm -> "logits"

with hidden activations relu -> Relu, tanh -> Tanh, logistic -> Sigmoid, identity -> nothing. The
outputs are ``logits`` (first, the tensor onnxlrp explains by default: the pre-activation of the last
layer) and, for a classifier, ``probabilities`` equal to ``predict_proba``: ``Softmax(logits)`` for
several classes, ``[1 - p, p]`` with ``p = Sigmoid(logits)`` for a binary classifier (whose logits
have one column: the log-odds of ``classes_[1]``), ``Sigmoid(logits)`` for multilabel. A regressor's
``logits`` are its predictions (with ``loss="poisson"``: their log, and ``predictions = Exp(logits)``
is a second output). Weights are stored as float32.

The tests (tests/test_sklearn.py) check ``probabilities`` against skl2onnx's conversion and against
``predict_proba`` to 1e-5. This module needs numpy and onnx only; scikit-learn is not imported (the
estimator is read through its fitted attributes).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxlrp.errors import ModelLoadError, UnsupportedModelError

from . import IR_VERSION, OPSET

__all__ = ["IR_VERSION", "OPSET", "mlp_to_onnx", "numpy_forward"]

_ACTIVATIONS = {"relu": "Relu", "tanh": "Tanh", "logistic": "Sigmoid", "identity": None}
_NUMPY_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda v: np.maximum(v, 0),
    "tanh": np.tanh,
    "logistic": lambda v: 1 / (1 + np.exp(-v)),
    "identity": lambda v: v,
}


def _check_estimator(estimator) -> tuple[list[np.ndarray], list[np.ndarray], str, str, bool]:
    name = type(estimator).__name__
    if name not in ("MLPClassifier", "MLPRegressor"):
        raise UnsupportedModelError(f"expected a fitted MLPClassifier or MLPRegressor, got {name}")
    coefs = getattr(estimator, "coefs_", None)
    intercepts = getattr(estimator, "intercepts_", None)
    if coefs is None or intercepts is None:
        raise ModelLoadError(f"the {name} is not fitted (no coefs_/intercepts_)")
    activation = estimator.activation
    if activation not in _ACTIVATIONS:
        raise UnsupportedModelError(f"unsupported hidden activation {activation!r}")
    out = getattr(estimator, "out_activation_", "identity")
    if out not in ("softmax", "logistic", "identity", "exp"):
        raise UnsupportedModelError(f"unsupported output activation {out!r}")
    is_classifier = name == "MLPClassifier"
    return list(coefs), list(intercepts), activation, out, is_classifier


def numpy_forward(estimator, X: np.ndarray) -> np.ndarray:
    """The logits (last layer's pre-activation) in float64, from the fitted weights."""
    coefs, intercepts, activation, _, _ = _check_estimator(estimator)
    h = np.asarray(X, dtype=np.float64)
    for k, (w, b) in enumerate(zip(coefs, intercepts, strict=True)):
        h = h @ w + b
        if k < len(coefs) - 1:
            h = _NUMPY_ACTIVATIONS[activation](h)
    return h


def mlp_to_onnx(estimator, dense: str = "gemm", graph_name: str | None = None) -> onnx.ModelProto:
    """Build the ONNX model of a fitted MLPClassifier/MLPRegressor (see the module docstring).

    ``dense``: "gemm" (one Gemm per layer) or "matmul" (MatMul + bias Add, as many exporters write).
    """
    if dense not in ("gemm", "matmul"):
        raise ValueError(f"dense must be 'gemm' or 'matmul', got {dense!r}")
    coefs, intercepts, activation, out_activation, is_classifier = _check_estimator(estimator)
    nodes, inits = [], []
    cur = "input"
    n_layers = len(coefs)
    for k, (w, b) in enumerate(zip(coefs, intercepts, strict=True)):
        last = k == n_layers - 1
        out = "logits" if last else f"dense_{k}"
        wname, bname = f"dense_{k}.weight", f"dense_{k}.bias"
        inits.append(numpy_helper.from_array(np.asarray(w, dtype=np.float32), wname))
        inits.append(numpy_helper.from_array(np.asarray(b, dtype=np.float32), bname))
        if dense == "gemm":
            nodes.append(helper.make_node("Gemm", [cur, wname, bname], [out], name=f"dense_{k}"))
        else:
            mm = f"dense_{k}_matmul"
            nodes.append(helper.make_node("MatMul", [cur, wname], [mm], name=mm))
            nodes.append(helper.make_node("Add", [mm, bname], [out], name=f"dense_{k}_bias"))
        cur = out
        op = _ACTIVATIONS[activation]
        if not last and op:
            act = f"{activation}_{k}"
            nodes.append(helper.make_node(op, [cur], [act], name=act))
            cur = act

    n_out = coefs[-1].shape[1]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", n_out])]
    if is_classifier:
        n_classes = len(estimator.classes_)
        if out_activation == "softmax":
            nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=1))
        elif out_activation == "logistic" and n_out == 1:
            nodes.append(helper.make_node("Sigmoid", ["logits"], ["p1"], name="sigmoid"))
            inits.append(numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"))
            nodes.append(helper.make_node("Sub", ["one", "p1"], ["p0"], name="complement"))
            nodes.append(helper.make_node("Concat", ["p0", "p1"], ["probabilities"], name="concat", axis=1))
            n_classes = 2
        else:  # multilabel: one sigmoid per label
            nodes.append(helper.make_node("Sigmoid", ["logits"], ["probabilities"], name="sigmoid"))
        outputs.append(helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", n_classes]))
    elif out_activation == "exp":  # MLPRegressor(loss="poisson"): predictions = exp(logits)
        nodes.append(helper.make_node("Exp", ["logits"], ["predictions"], name="exp"))
        outputs.append(helper.make_tensor_value_info("predictions", TensorProto.FLOAT, ["N", n_out]))

    graph = helper.make_graph(
        nodes,
        graph_name or f"sklearn_{type(estimator).__name__}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", coefs[0].shape[0]])],
        outputs,
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="onnxlrp.converters.sklearn_mlp"
    )
    model.ir_version = IR_VERSION
    if is_classifier:
        labels = ",".join(str(c) for c in estimator.classes_)
        helper.set_model_props(model, {"classes": labels})
    onnx.checker.check_model(model, full_check=True)
    return model
