"""scikit-learn MLPs -> ONNX (onnxlrp.converters.sklearn_mlp) -> explained end to end with onnxlrp."""

from __future__ import annotations

import functools
import pickle
import warnings

import numpy as np
import onnxruntime as ort
import pytest

sklearn = pytest.importorskip("sklearn")
from sklearn.datasets import load_digits, make_classification  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.neural_network import MLPClassifier, MLPRegressor  # noqa: E402

from onnxlrp.converters import sklearn_mlp  # noqa: E402
from onnxlrp.errors import OnnxLrpError  # noqa: E402


def _fit(estimator, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(X, y)


def _data(n_classes=3, n=300, seed=0):
    X, y = make_classification(
        n, 10, n_informative=6, n_redundant=2, n_classes=n_classes, random_state=seed, class_sep=1.5
    )
    return X.astype(np.float32), y


@functools.cache
def _fitted(activation, n_classes, hidden):
    X, y = _data(n_classes)
    clf = _fit(
        MLPClassifier(hidden_layer_sizes=hidden, activation=activation, max_iter=100, random_state=0), X, y
    )
    return pickle.dumps(clf), X


def _classifier(activation="relu", n_classes=3, hidden=(16, 8)):
    """A fitted classifier (a fresh copy: tests may edit its weights) and its training inputs."""
    blob, X = _fitted(activation, n_classes, hidden)
    return pickle.loads(blob), X


def _run(model, X):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"input": X}), strict=True))


def _onnxlrp():
    onnxlrp = pytest.importorskip("onnxlrp")
    if not hasattr(onnxlrp, "compile"):
        pytest.skip("onnxlrp.compile not available yet")
    return onnxlrp


def numpy_epsilon_lrp(clf, X, target, eps):
    """Tiny epsilon-LRP on the fitted weights (float64): (input relevance, leakage per sample).

    leakage = the relevance absorbed by biases and the stabiliser, so that
    sum(R_input) + leakage == target logit exactly.
    """
    acts = [np.asarray(X, np.float64)]
    act = {
        "relu": lambda v: np.maximum(v, 0),
        "tanh": np.tanh,
        "logistic": lambda v: 1 / (1 + np.exp(-v)),
        "identity": lambda v: v,
    }[clf.activation]
    zs = []
    for k, (w, b) in enumerate(zip(clf.coefs_, clf.intercepts_, strict=True)):
        w, b = w.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64)
        z = acts[-1] @ w + b
        zs.append(z)
        acts.append(act(z) if k < len(clf.coefs_) - 1 else z)
    logits = acts[-1]
    R = np.zeros_like(logits)
    R[np.arange(len(X)), target] = logits[np.arange(len(X)), target]
    start = R.sum(axis=1)
    for k in reversed(range(len(clf.coefs_))):
        w = clf.coefs_[k].astype(np.float32).astype(np.float64)
        z = zs[k]
        s = R / (z + eps * np.where(z >= 0, 1.0, -1.0))
        R = acts[k] * (s @ w.T)
    return R, start - R.sum(axis=1)


# ----------------------------------------------------------------------------------------------------
# conversion


@pytest.mark.parametrize("activation", ["relu", "tanh", "logistic", "identity"])
@pytest.mark.parametrize("dense", ["gemm", "matmul"])
def test_probabilities_match_predict_proba(activation, dense):
    clf, X = _classifier(activation)
    out = _run(sklearn_mlp.mlp_to_onnx(clf, dense=dense), X)
    np.testing.assert_allclose(out["probabilities"], clf.predict_proba(X), atol=1e-5)
    logits = sklearn_mlp.numpy_forward(clf, X)
    assert np.abs(out["logits"] - logits).max() <= 1e-5 * np.abs(logits).max()
    assert (out["logits"].argmax(axis=1) == clf.predict(X)).all()


def test_probabilities_match_skl2onnx():
    skl2onnx = pytest.importorskip("skl2onnx")
    clf, X = _classifier()
    reference = skl2onnx.to_onnx(clf, X[:1], options={id(clf): {"zipmap": False}}, target_opset=17)
    session = ort.InferenceSession(reference.SerializeToString(), providers=["CPUExecutionProvider"])
    ref_out = dict(
        zip(
            [o.name for o in session.get_outputs()],
            session.run(None, {session.get_inputs()[0].name: X}),
            strict=True,
        )
    )
    out = _run(sklearn_mlp.mlp_to_onnx(clf), X)
    np.testing.assert_allclose(out["probabilities"], ref_out["probabilities"], atol=1e-5)
    np.testing.assert_array_equal(clf.classes_[out["logits"].argmax(axis=1)], ref_out["label"])


def test_binary_classifier_has_one_logit_and_two_probabilities():
    X, y = _data(n_classes=2)
    clf = _fit(MLPClassifier(hidden_layer_sizes=(8,), max_iter=100, random_state=0), X, y)
    model = sklearn_mlp.mlp_to_onnx(clf)
    out = _run(model, X)
    assert out["logits"].shape == (len(X), 1)
    np.testing.assert_allclose(out["probabilities"], clf.predict_proba(X), atol=1e-5)


def test_regressor_outputs_predictions():
    X, y = _data()
    reg = _fit(MLPRegressor(hidden_layer_sizes=(8,), max_iter=100, random_state=0), X, y.astype(np.float64))
    out = _run(sklearn_mlp.mlp_to_onnx(reg), X)
    np.testing.assert_allclose(out["logits"][:, 0], reg.predict(X), rtol=1e-5, atol=1e-5)
    assert set(out) == {"logits"}


def test_poisson_regressor_has_exp_predictions():
    X, y = _data()
    reg = _fit(
        MLPRegressor(loss="poisson", hidden_layer_sizes=(8,), max_iter=100, random_state=0), X, y + 1.0
    )
    out = _run(sklearn_mlp.mlp_to_onnx(reg), X)
    np.testing.assert_allclose(out["predictions"][:, 0], reg.predict(X), rtol=1e-5, atol=1e-5)


def test_rejects_other_estimators_and_unfitted():
    from sklearn.linear_model import LogisticRegression

    with pytest.raises(OnnxLrpError, match="MLPClassifier"):
        sklearn_mlp.mlp_to_onnx(LogisticRegression())
    with pytest.raises(OnnxLrpError, match="not fitted"):
        sklearn_mlp.mlp_to_onnx(MLPClassifier())


# ----------------------------------------------------------------------------------------------------
# explained end to end


@pytest.mark.parametrize("dense", ["gemm", "matmul"])
@pytest.mark.parametrize("eps", [0.01, 1.0])
def test_epsilon_relevance_matches_numpy(dense, eps):
    onnxlrp = _onnxlrp()
    clf, X = _classifier()
    compiled = onnxlrp.compile(sklearn_mlp.mlp_to_onnx(clf, dense=dense), rule="epsilon", epsilon=eps)
    result = onnxlrp.RelevanceSession(compiled).run(X)
    target = clf.predict(X)  # classes are 0..2, so labels are indices
    expected, leakage = numpy_epsilon_lrp(clf, X, target, eps)
    relevance = result["relevance"]
    assert relevance.shape == X.shape
    assert np.abs(relevance - expected).max() <= 1e-5 * np.abs(expected).max()
    # conservation up to the bias/stabiliser leakage: sum R = target logit - leakage
    logits = result["logits"][np.arange(len(X)), target]
    np.testing.assert_allclose(relevance.sum(axis=1), logits - leakage, rtol=1e-4, atol=1e-5)


def test_bias_free_mlp_conserves_relevance():
    onnxlrp = _onnxlrp()
    clf, X = _classifier()
    for b in clf.intercepts_:
        b[:] = 0
    result = onnxlrp.RelevanceSession(onnxlrp.compile(sklearn_mlp.mlp_to_onnx(clf), rule="lrp0")).run(X)
    logits = result["logits"].max(axis=1)
    np.testing.assert_allclose(result["relevance"].sum(axis=1), logits, rtol=1e-4, atol=1e-6)


def test_digits_explained_with_a_chosen_target():
    """sklearn's bundled digits (8x8 images): explain a non-predicted class too."""
    onnxlrp = _onnxlrp()
    digits = load_digits()
    X = (digits.data / 16.0).astype(np.float32)
    clf = _fit(
        MLPClassifier(hidden_layer_sizes=(32,), max_iter=60, random_state=0), X[:500], digits.target[:500]
    )
    model = sklearn_mlp.mlp_to_onnx(clf)
    x = X[500:510]
    np.testing.assert_allclose(_run(model, x)["probabilities"], clf.predict_proba(x), atol=1e-5)
    target = (clf.predict(x) + 1) % 10
    result = onnxlrp.RelevanceSession(onnxlrp.compile(model, rule="epsilon", epsilon=0.01)).run(
        x, target=target.astype(np.int64)
    )
    expected, _ = numpy_epsilon_lrp(clf, x, target, 0.01)
    assert np.abs(result["relevance"] - expected).max() <= 1e-5 * np.abs(expected).max()
