"""scikit-learn MLPClassifiers as skl2onnx writes them (opset 16, ZipMap on and off), compiled as
exported: the nodes that do not lead to the explained output (ArgMax, ArrayFeatureExtractor, ZipMap,
the label's Reshape/Cast) stay in the forward pass, a Softmax (also behind Identity) is stepped over,
and the input's float->float Cast passes relevance. The reference is the numpy LRP of reference.py
over the estimator's own coefs_ and intercepts_, not over the ONNX file."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import onnx
import pytest
import reference

import onnxlrp
from onnxlrp.errors import OnnxLrpError

pytest.importorskip("sklearn")
skl2onnx = pytest.importorskip("skl2onnx")
from sklearn.datasets import make_classification  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402


@functools.cache
def _classifier(activation: str = "relu") -> tuple[MLPClassifier, np.ndarray]:
    X, y = make_classification(300, 10, n_informative=6, n_classes=3, random_state=0, class_sep=1.5)
    X = X.astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier((16, 8), activation=activation, max_iter=100, random_state=0).fit(X, y)
    return clf, X


def _exported(tmp_path, zipmap: bool, activation: str = "relu") -> tuple[MLPClassifier, np.ndarray, str]:
    clf, X = _classifier(activation)
    model = skl2onnx.to_onnx(clf, X[:1], target_opset=16, options={"zipmap": zipmap})
    path = tmp_path / f"mlp_zipmap_{zipmap}.onnx"
    onnx.save(model, str(path))
    return clf, X, str(path)


def _reference(clf: MLPClassifier, x: np.ndarray, targets: np.ndarray, rule) -> np.ndarray:
    """LRP through the estimator's layers (numpy float64), seeded with the target logit."""
    activations = [x.astype(np.float64)]
    for W, b in zip(clf.coefs_[:-1], clf.intercepts_[:-1], strict=True):
        z = reference.dense_forward(activations[-1], W, b)
        activations.append(np.maximum(z, 0) if clf.activation == "relu" else np.tanh(z))
    logits = reference.dense_forward(activations[-1], clf.coefs_[-1], clf.intercepts_[-1])
    R = np.zeros_like(logits)
    R[np.arange(len(x)), targets] = logits[np.arange(len(x)), targets]
    for W, b, a in zip(clf.coefs_[::-1], clf.intercepts_[::-1], activations[::-1], strict=True):
        R = reference.dense_lrp(a, W, b, R, rule)
    return R


@pytest.mark.parametrize("zipmap", [False, True])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_skl2onnx_classifier_compiles_as_exported(zipmap, activation, tmp_path):
    clf, X, path = _exported(tmp_path, zipmap, activation)
    x = X[:6]
    targets = np.array([0, 1, 2, 2, 1, 0])
    for rule, reference_rule in (("lrp0", ("epsilon", 1e-16)), ("epsilon", ("epsilon", 1.0))):
        relevance_model = onnxlrp.compile(path, rule=rule)
        out = onnxlrp.RelevanceSession(relevance_model).run(x, target=targets)
        want = _reference(clf, x, targets, reference_rule)
        assert np.abs(out["relevance"] - want).max() <= 1e-5 * np.abs(want).max(), rule
    # the model's own outputs are still computed, ZipMap and label included
    names = [o.name for o in onnx.load(path).graph.output]
    assert all(name in out for name in names)
    label = out[names[0]]
    np.testing.assert_array_equal(np.asarray(label).reshape(-1), clf.predict(x))


def test_skl2onnx_explained_output_by_name(tmp_path):
    """--output names the probabilities: the Softmax behind the Identity is stepped over and the
    logits are explained, as by default; a non-float output is refused by name."""
    _, X, path = _exported(tmp_path, zipmap=False)
    x = X[:4]
    default = onnxlrp.explain(path, x, rule="lrp0")
    named = onnxlrp.explain(path, x, rule="lrp0", output="probabilities")
    np.testing.assert_array_equal(default, named)
    with pytest.raises(OnnxLrpError, match="label"):
        onnxlrp.compile(path, rule="lrp0", output="label")


def test_skl2onnx_output_option_on_the_command_line(tmp_path):
    from onnxlrp.cli import main

    _, X, path = _exported(tmp_path, zipmap=True)
    out = tmp_path / "mlp.lrp.onnx"
    assert main(["compile", path, "--rule", "lrp0", "--output", "output_probability", "-o", str(out)]) == 0
    relevance = onnxlrp.RelevanceSession(onnx.load(str(out))).run(X[:3])["relevance"]
    np.testing.assert_allclose(relevance, onnxlrp.explain(path, X[:3], rule="lrp0"), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("zipmap", [False, True])
def test_explain_reports_the_estimators_prediction_and_logit(zipmap, tmp_path):
    """skl2onnx's first output is the label: explain must read the class and the logit from the
    explained scores (behind the Softmax), as the estimator computes them, not from that first output."""
    import json

    from onnxlrp.cli import main

    clf, X, path = _exported(tmp_path, zipmap=zipmap)
    x = X[:12]
    np.save(tmp_path / "x.npy", x)
    assert (
        main(["explain", path, str(tmp_path / "x.npy"), "--rule", "lrp0", "--out", str(tmp_path / "out")])
        == 0
    )
    rows = json.loads((tmp_path / "out" / "explain.json").read_text())["inputs"]
    activations = x.astype(np.float64)
    for W, b in zip(clf.coefs_[:-1], clf.intercepts_[:-1], strict=True):
        activations = np.maximum(reference.dense_forward(activations, W, b), 0)
    logits = reference.dense_forward(activations, clf.coefs_[-1], clf.intercepts_[-1])
    predicted = clf.predict(x)
    assert len(set(predicted)) > 1  # the check can tell classes apart
    assert [row["predicted"] for row in rows] == predicted.tolist()
    np.testing.assert_allclose(
        [row["logit"] for row in rows], logits[np.arange(len(x)), predicted], rtol=1e-4
    )
