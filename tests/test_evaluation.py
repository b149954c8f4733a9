"""Tests of onnxlrp.evaluation: region perturbation curves and AOPC (fast, deterministic)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxlrp import evaluation as ev

C, H, W, K = 3, 8, 8, 4  # channels, height, width, classes


def linear_onnx(weights: np.ndarray, softmax: bool = False) -> onnx.ModelProto:
    """logits = flatten(x) @ weights (MatMul, no bias), optionally followed by Softmax."""
    _d, k = weights.shape
    nodes = [
        helper.make_node("Flatten", ["x"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w"], ["logits"]),
    ]
    out = "logits"
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1))
        out = "probs"
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", C, H, W])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", k])],
        [numpy_helper.from_array(weights.astype(np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(1234)
    weights = rng.standard_normal((C * H * W, K)).astype(np.float32)
    x = rng.uniform(-1, 1, size=(64, C, H, W)).astype(np.float32)
    forward = ev.onnx_forward(linear_onnx(weights))
    targets = forward(x).argmax(axis=1)
    # exact relevance of a bias-free linear model: w_it * x_i
    exact = x * weights[:, targets].T.reshape(-1, C, H, W)
    return weights, x, forward, targets, exact


def shuffled(relevance: np.ndarray, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    flat = relevance.reshape(len(relevance), -1).copy()
    for row in flat:
        rng.shuffle(row)
    return flat.reshape(relevance.shape)


def test_exact_relevance_beats_shuffled_morf(setup):
    # The noise is uniform on [-1, 1] (mean 0), so replacing region r lowers the logit by
    # sum_{i in r} w_i x_i in expectation: ordering by the exact relevance is the fastest drop.
    _, x, forward, targets, exact = setup
    kw = {"region": 2, "steps": 8, "value_range": (-1.0, 1.0), "seed": 0}
    good, good_se = ev.aopc(ev.perturbation_curve(forward, x, exact, targets, **kw))
    bad, bad_se = ev.aopc(ev.perturbation_curve(forward, x, shuffled(exact), targets, **kw))
    rand, _ = ev.aopc(ev.perturbation_curve(forward, x, ev.random_relevance(x.shape, 0), targets, **kw))
    assert good > bad + 3 * max(good_se, bad_se)
    assert good > rand
    assert good > 0


def test_exact_relevance_lerf_is_lowest(setup):
    _, x, forward, targets, exact = setup
    kw = {"region": 2, "steps": 8, "value_range": (-1.0, 1.0), "order": "lerf"}
    good, _ = ev.aopc(ev.perturbation_curve(forward, x, exact, targets, **kw))
    bad, _ = ev.aopc(ev.perturbation_curve(forward, x, shuffled(exact), targets, **kw))
    assert good < bad
    assert good < 0  # least relevant first: the target logit rises


def test_first_point_is_unperturbed_logit(setup):
    _, x, forward, targets, exact = setup
    curves = ev.perturbation_curve(forward, x, exact, targets, region=4, steps=3)
    assert curves.shape == (len(x), 4)
    clean = forward(x)[np.arange(len(x)), targets]
    np.testing.assert_allclose(curves[:, 0], clean, rtol=1e-6, atol=1e-6)


def test_full_perturbation_is_method_independent(setup):
    # after all regions are replaced, every method sees the same (noise) image
    _, x, forward, targets, exact = setup
    a = ev.perturbation_curve(forward, x, exact, targets, region=4)
    b = ev.perturbation_curve(forward, x, shuffled(exact), targets, region=4)
    assert a.shape[1] == (H // 4) * (W // 4) + 1
    np.testing.assert_allclose(a[:, -1], b[:, -1], rtol=1e-5, atol=1e-5)


def test_deterministic_under_seed(setup):
    _, x, forward, targets, exact = setup
    kw = {"region": 2, "steps": 5}
    a = ev.perturbation_curve(forward, x, exact, targets, seed=3, **kw)
    b = ev.perturbation_curve(forward, x, exact, targets, seed=3, **kw)
    c = ev.perturbation_curve(forward, x, exact, targets, seed=4, **kw)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[:, 1:], c[:, 1:])
    np.testing.assert_array_equal(ev.random_relevance(x.shape, 5), ev.random_relevance(x.shape, 5))


@pytest.mark.parametrize("perturbation", ["uniform", "blur"])
def test_batch_size_does_not_change_result(setup, perturbation):
    _, x, forward, targets, exact = setup
    x, targets, exact = x[:10], targets[:10], exact[:10]
    kw = {"region": 2, "steps": 6, "seed": 11, "perturbation": perturbation}
    ref = ev.perturbation_curve(forward, x, exact, targets, batch_size=1000, **kw)
    for bs in (1, 5, 7, 70):
        np.testing.assert_allclose(
            ev.perturbation_curve(forward, x, exact, targets, batch_size=bs, **kw), ref, rtol=0, atol=1e-5
        )


class Recorder:
    """A numpy forward function that keeps every batch it is given."""

    def __init__(self, weights):
        self.weights = weights
        self.batches = []

    def __call__(self, batch):
        self.batches.append(batch.copy())
        return batch.reshape(len(batch), -1) @ self.weights


def test_all_channels_of_a_region_are_perturbed(setup):
    weights, x, _, targets, _ = setup
    rng = np.random.default_rng(0)
    x1 = x[:1]
    relevance = np.zeros_like(x1)
    relevance[0, 1, 5, 6] = 10.0  # one pixel of one channel: region (row 1, col 1) of 4x4 tiles
    rec = Recorder(weights)
    ev.perturbation_curve(rec, x1, relevance, targets[:1], region=4, steps=2, value_range=(-1, 1))
    seen = np.concatenate(rec.batches)
    assert len(seen) == 3
    np.testing.assert_array_equal(seen[0], x1[0])  # step 0: clean
    changed = seen[1] != x1[0]
    assert changed[:, 4:8, 4:8].all()  # all 3 channels of the 4x4 region
    assert changed.sum() == C * 16  # and nothing else
    changed2 = seen[2] != x1[0]
    assert changed2.sum() == 2 * C * 16  # cumulative: a second region on top of the first
    np.testing.assert_array_equal(seen[2][changed], seen[1][changed])  # same noise kept
    assert (seen[1] >= -1).all() and (seen[1] <= 1).all()
    del rng


def test_region_relevance_sums_channels_and_ragged_edges():
    rel = np.ones((2, 3, 5, 5), dtype=np.float32)
    rel[1, 2] = 2.0
    out = ev.region_relevance(rel, 2)
    assert out.shape == (2, 9)
    np.testing.assert_allclose(out[0], [12, 12, 6, 12, 12, 6, 6, 6, 3])
    np.testing.assert_allclose(out[1], np.array([12, 12, 6, 12, 12, 6, 6, 6, 3]) * 4 / 3)
    ids, n = ev.region_map(5, 5, 2)
    assert n == 9 and ids[4, 4] == 8 and ids[0, 3] == 1


def test_region_order_ties_are_stable():
    rel = np.zeros((1, 1, 4, 4))
    rel[0, 0, 3, 3] = 1.0
    np.testing.assert_array_equal(ev.region_order(rel, 2, "morf")[0], [3, 0, 1, 2])
    np.testing.assert_array_equal(ev.region_order(rel, 2, "lerf")[0], [0, 1, 2, 3])


def test_aopc_formula():
    curves = np.array([[5.0, 3.0, 1.0], [2.0, 2.0, -1.0]])
    per = ev.aopc_per_image(curves)
    np.testing.assert_allclose(per, [(0 + 2 + 4) / 3, (0 + 0 + 3) / 3])
    mean, se = ev.aopc(curves)
    assert mean == pytest.approx(1.5)
    assert se == pytest.approx(np.std(per, ddof=1) / np.sqrt(2))


def test_blur_replaces_with_blurred_copy(setup):
    weights, x, _, targets, exact = setup
    rec = Recorder(weights)
    ev.perturbation_curve(
        rec, x[:1], exact[:1], targets[:1], region=H, steps=1, perturbation="blur", blur_sigma=1.0
    )
    blurred = ev.gaussian_blur(x[0], 1.0)
    np.testing.assert_allclose(rec.batches[0][1], blurred, rtol=1e-6)
    assert np.abs(blurred - x[0]).max() > 0.1
    # a constant image stays constant
    np.testing.assert_allclose(ev.gaussian_blur(np.full((1, 6, 6), 0.3), 2.0), 0.3, rtol=1e-9)


def test_bad_arguments(setup):
    _, x, forward, targets, exact = setup
    with pytest.raises(ValueError, match="steps"):
        ev.perturbation_curve(forward, x, exact, targets, region=4, steps=5)
    with pytest.raises(ValueError, match="shape"):
        ev.perturbation_curve(forward, x, exact[:, :1], targets)
    with pytest.raises(ValueError, match="order"):
        ev.perturbation_curve(forward, x, exact, targets, order="up")


def test_logit_model_strips_softmax(setup):
    weights, x, forward, _, _ = setup
    soft = ev.onnx_forward(linear_onnx(weights, softmax=True))
    np.testing.assert_allclose(soft(x), forward(x), rtol=1e-5, atol=1e-5)


def test_parse_method():
    assert ev.parse_method("epsilon:1").kwargs == {"rule": "epsilon", "epsilon": 1.0}
    assert ev.parse_method("epsilon").label == "epsilon:1"
    m = ev.parse_method("alphabeta:3,2")
    assert m.label == "alphabeta:3,2" and m.kwargs == {"rule": "alphabeta", "alpha": 3.0, "beta": 2.0}
    assert ev.parse_method("alphabeta:2").kwargs["beta"] == 1.0
    assert ev.parse_method("composite:epsilon-plus").kwargs == {"composite": "epsilon-plus"}
    assert ev.parse_method("random").kind == "random"
    assert ev.parse_method("gradxinput").kind == "gradxinput"
    assert ev.parse_method("lrp0").kwargs == {"rule": "lrp0"}
    with pytest.raises(ValueError):
        ev.parse_method("composite:nope")
    with pytest.raises(ValueError):
        ev.parse_method("banana")
    with pytest.raises(ValueError):
        ev.parse_method("lrp0:3")


def test_dataset_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("ONNXLRP_DATASETS", str(tmp_path / "missing"))
    with pytest.raises(ev.DatasetError, match="does not exist"):
        ev.load_dataset("mnist", zoo_model=object())
    with pytest.raises(ev.DatasetError, match="needs"):
        ev.load_dataset("mnist", zoo_model=object(), datasets_dir=tmp_path)
    with pytest.raises(ev.DatasetError, match="neither"):
        ev.load_dataset(tmp_path / "nothing.npy")
    np.save(tmp_path / "bad.npy", np.zeros((3, 4)))
    with pytest.raises(ev.DatasetError, match=r"\[N, C, H, W\]"):
        ev.load_dataset(tmp_path / "bad.npy")
    np.save(tmp_path / "ok.npy", np.zeros((5, 1, 4, 4)))
    x, labels, idx = ev.load_dataset(tmp_path / "ok.npy", n=3)
    assert x.shape == (3, 1, 4, 4) and labels is None and list(idx) == [0, 1, 2]


def test_select_indices_spread():
    idx = ev.select_indices(10000, 1000)
    assert len(idx) == 1000 and idx[0] == 0 and idx[1] == 10 and idx[-1] == 9990
    assert len(ev.select_indices(5, 10)) == 5


def test_gradient_x_input_op_check(setup):
    weights = setup[0]
    assert ev.gradient_x_input_ok(linear_onnx(weights)) == []


def test_finite_difference_check_on_linear(setup):
    _weights, x, forward, targets, exact = setup
    assert ev.finite_difference_check(forward, x[:4], exact[:4], targets[:4]) < 1e-3
    assert ev.finite_difference_check(forward, x[:4], shuffled(exact[:4]), targets[:4]) > 1e-2


def test_random_baseline_only_evaluate(setup, tmp_path):
    weights, x, *_ = setup
    model = linear_onnx(weights, softmax=True)
    res = ev.evaluate(model, x[:8], ["random"], region=4, steps=2, batch_size=5)
    assert list(res.curves) == ["random"] and res.curves["random"].shape == (8, 3)
    paths = ev.write_results(res, tmp_path)
    assert all(p.exists() for p in paths.values())
    assert paths["png"].stat().st_size > 1000
    both = ev.plot_json([paths["json"], paths["json"]], tmp_path / "both.png")
    assert both.stat().st_size > 1000


# ------------------------------------------------------------------- with the compiler (skipped if absent)


def _compiler():
    import onnxlrp

    if not hasattr(onnxlrp, "compile") or not hasattr(onnxlrp, "RelevanceSession"):
        pytest.skip("onnxlrp.compile / RelevanceSession not available yet")
    return onnxlrp


def relu_mlp_onnx(rng) -> tuple[onnx.ModelProto, list[np.ndarray]]:
    """Flatten -> Gemm(+bias) -> Relu -> Gemm(+bias): a piecewise-linear net with biases."""
    w1 = rng.standard_normal((C * H * W, 16)).astype(np.float32) * 0.2
    b1 = rng.standard_normal(16).astype(np.float32) * 0.1
    w2 = rng.standard_normal((16, K)).astype(np.float32)
    b2 = rng.standard_normal(K).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["x"], ["f"], axis=1),
            helper.make_node("Gemm", ["f", "w1", "b1"], ["h"]),
            helper.make_node("Relu", ["h"], ["a"]),
            helper.make_node("Gemm", ["a", "w2", "b2"], ["logits"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", C, H, W])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", K])],
        [numpy_helper.from_array(a, n) for a, n in [(w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2")]],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model, [w1, b1, w2, b2]


def test_gradxinput_equals_analytic_gradient_times_input():
    _compiler()
    rng = np.random.default_rng(5)
    model, (w1, b1, w2, _) = relu_mlp_onnx(rng)
    x = rng.uniform(-1, 1, size=(6, C, H, W)).astype(np.float32)
    forward = ev.onnx_forward(model)
    targets = forward(x).argmax(axis=1)
    method = ev.parse_method("gradxinput")
    rel = ev.compute_relevance(model, x, targets, method)
    f = x.reshape(len(x), -1).astype(np.float64)
    mask = (f @ w1 + b1) > 0
    grad = ((mask * w2[:, targets].T) @ w1.T).reshape(x.shape)  # d logit_t / dx
    np.testing.assert_allclose(rel, x * grad, rtol=1e-4, atol=1e-5)
    assert ev.finite_difference_check(forward, x, rel, targets, step=1e-3) < 1e-2


def test_cli_evaluate_on_npy(tmp_path, setup):
    _compiler()
    import argparse

    from onnxlrp.cli import evaluate_cmd

    def main(argv):  # the evaluate subcommand alone: other subcommands may not exist yet
        parser = argparse.ArgumentParser(prog="onnxlrp")
        evaluate_cmd.register(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(argv)
        return args.func(args)

    weights, x, *_ = setup
    model_path = tmp_path / "lin.onnx"
    onnx.save(linear_onnx(weights), model_path)
    data = tmp_path / "x.npy"
    np.save(data, x[:12])
    out = tmp_path / "res"
    rc = main(
        ["evaluate", str(model_path), str(data), "--method", "epsilon:1", "--rule", "lrp0", "--n", "12",
         "--region", "4", "--steps", "3", "--batch-size", "7", "--out", str(out), "--no-progress"]
    )  # fmt: skip
    assert rc == 0
    import json

    doc = json.loads((out / "aopc.json").read_text())
    labels = [r["method"] for r in doc["aopc"]]
    assert labels == ["epsilon:1", "lrp0", "gradxinput", "random"]
    assert doc["settings"]["steps"] == 3 and doc["settings"]["n"] == 12
    assert (out / "aopc.png").exists()
    by = {r["method"]: r["aopc"] for r in doc["aopc"]}
    assert by["lrp0"] == pytest.approx(by["gradxinput"])
    assert by["lrp0"] > by["random"]


def test_region_scores_give_the_same_curves(setup):
    _, x, forward, targets, exact = setup
    kw = {"region": 2, "steps": 4, "seed": 2}
    a = ev.perturbation_curve(forward, x[:6], exact[:6], targets[:6], **kw)
    b = ev.perturbation_curve(forward, x[:6], ev.region_relevance(exact[:6], 2), targets[:6], **kw)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="region scores"):
        ev.perturbation_curve(forward, x[:6], np.zeros((6, 5)), targets[:6], **kw)


@pytest.mark.datasets
def test_zoo_mnist_end_to_end(tmp_path):
    """A few MNIST test images through the zoo model: LRP beats random (skipped without zoo/data)."""
    _compiler()
    zoo = pytest.importorskip("onnxlrp.zoo")
    if not ev.default_datasets_dir().joinpath("mnist.npz").is_file():
        pytest.skip("../shared/datasets/mnist.npz is absent")
    try:
        path, entry = zoo.locate("mnist-lenet5")
    except Exception as error:  # model file not built yet
        pytest.skip(f"zoo model mnist-lenet5 unavailable: {error}")
    del zoo
    x, labels, idx = ev.load_dataset("mnist", entry, n=40)
    assert x.shape == (40, 1, 32, 32) and idx[1] == 250
    res = ev.evaluate(path, x, ["epsilon:1", "random"], region=4, steps=16, labels=labels)
    table = {r["method"]: r["aopc"] for r in res.table()}
    assert res.accuracy > 0.8
    assert table["epsilon:1"] > table["random"]


def test_paired_difference_and_table():
    a = np.array([[3.0, 1.0], [2.0, 0.0], [4.0, 1.0]])
    b = np.array([[3.0, 2.0], [2.0, 1.0], [4.0, 3.0]])
    d, se = ev.paired_difference(a, b)
    per = ev.aopc_per_image(a) - ev.aopc_per_image(b)
    assert d == pytest.approx(per.mean()) and se == pytest.approx(per.std(ddof=1) / np.sqrt(3))
    res = ev.EvaluationResult("m", "d", {"x": a, "random": b}, {})
    rows = {r["method"]: r for r in res.table()}
    assert rows["x"]["vs_random"] == pytest.approx(d) and rows["random"]["vs_random"] == 0.0


def test_aopc_over_first_steps_equals_shorter_run(setup):
    _, x, forward, targets, exact = setup
    long = ev.perturbation_curve(forward, x[:8], exact[:8], targets[:8], region=2, steps=10, seed=1)
    short = ev.perturbation_curve(forward, x[:8], exact[:8], targets[:8], region=2, steps=4, seed=1)
    np.testing.assert_allclose(ev.aopc(long, steps=4), ev.aopc(short), rtol=1e-12)
    with pytest.raises(ValueError):
        ev.aopc(short, steps=5)
