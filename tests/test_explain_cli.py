"""`onnxlrp explain`: files written, image sizes, tile counts; the saved .npy equals the graph output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import onnxlrp
from onnxlrp import heatmap
from onnxlrp.cli import main
from onnxlrp.explanations import safe_name

ROOT = Path(__file__).resolve().parent.parent
HAVE_ZOO = (ROOT / "zoo" / "manifest.json").is_file()


def tiny_net(channels: int = 3, size: int = 8) -> onnx.ModelProto:
    """conv1 (4 maps) - relu - maxpool (pool1) - conv2 (6 maps) - relu - global avg pool - gemm (3 logits)."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(4, channels, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array((rng.normal(size=4) * 0.1).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.normal(size=(6, 4, 3, 3)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.normal(size=(3, 6)).astype(np.float32), "w3"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["conv1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv1"], ["relu1"]),
        helper.make_node("MaxPool", ["relu1"], ["pool1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["pool1", "w2"], ["conv2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv2"], ["relu2"]),
        helper.make_node("GlobalAveragePool", ["relu2"], ["pool2"]),
        helper.make_node("Flatten", ["pool2"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w3"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", channels, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


@pytest.fixture
def tiny(tmp_path):
    """(model path, image paths, preprocessed batch) for three 8x8 RGB PNGs."""
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_net(), path)
    rng = np.random.default_rng(1)
    images, xs = [], []
    for i in range(3):
        img = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        Image.fromarray(img).save(tmp_path / f"im{i}.png")
        images.append(tmp_path / f"im{i}.png")
        xs.append(img.transpose(2, 0, 1).astype(np.float32) / 255.0)  # the plain-model preprocessing
    return path, images, np.stack(xs)


def session(model_path, **kwargs):
    return onnxlrp.RelevanceSession(onnxlrp.compile(onnx.load(model_path), **kwargs))


def test_explain_images(tiny, tmp_path):
    model, images, x = tiny
    out = tmp_path / "out"
    assert main(["explain", str(model), *map(str, images), "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "explain.json").read_text())
    expected = session(model, rule="epsilon").run(x)
    for i, item in enumerate(summary["inputs"]):
        assert item["name"] == f"im{i}"
        assert Image.open(out / f"im{i}.png").size == heatmap.explanation_figure_size()
        saved = np.load(out / f"im{i}.npy")
        assert saved.shape == (3, 8, 8) and saved.dtype == np.float32
        np.testing.assert_allclose(saved, expected["relevance"][i], rtol=1e-5, atol=1e-6)
        assert item["predicted"] == int(expected["logits"][i].argmax()) == item["target"]


def test_explain_npy_rule_target(tiny, tmp_path):
    model, _, x = tiny
    np.save(tmp_path / "batch.npy", x)
    out = tmp_path / "out"
    args = ["explain", str(model), str(tmp_path / "batch.npy"), "--out", str(out), "--quiet"]
    assert main([*args, "--rule", "alphabeta", "--alpha", "2", "--target", "1"]) == 0
    expected = session(model, rule="alphabeta", alpha=2.0, beta=1.0).run(x, target=np.ones(3, np.int64))
    for i in range(3):
        np.testing.assert_allclose(
            np.load(out / f"batch_{i:04d}.npy"), expected["relevance"][i], rtol=1e-5, atol=1e-6
        )
    summary = json.loads((out / "explain.json").read_text())
    assert [item["target"] for item in summary["inputs"]] == [1, 1, 1]
    assert "alpha-beta (2/1)" in summary["rule"]


def test_explain_layer_grid(tiny, tmp_path):
    model, images, x = tiny
    out = tmp_path / "out"
    assert (
        main(["explain", str(model), str(images[0]), "--layer", "conv1", "--out", str(out), "--quiet"]) == 0
    )
    layer = np.load(out / "im0.layer-conv1.npy")
    assert layer.shape == (4, 8, 8)  # one map per channel of conv1
    expected = session(model, rule="epsilon", expose=["conv1"]).run(x[:1])
    np.testing.assert_allclose(layer, expected["relevance:conv1"][0], rtol=1e-5, atol=1e-6)
    width, height = Image.open(out / "im0.layer-conv1.png").size
    rows, cols = heatmap.grid_shape(4)
    assert (rows, cols) == (2, 2)
    assert width == cols * heatmap.CELL_PX and height > rows * heatmap.CELL_PX


def test_explain_neuron(tiny, tmp_path):
    model, images, x = tiny
    out = tmp_path / "out"
    args = ["explain", str(model), *map(str, images[:2]), "--out", str(out), "--quiet"]
    assert main([*args, "--neuron", "pool1:2", "--neuron", "conv2:1,0,3"]) == 0
    channel_seed = np.zeros((2, 4, 4, 4), np.float32)
    channel_seed[:, 2] = 1.0  # INDEX = channel: 1 at every position of channel 2
    unit_seed = np.zeros((2, 6, 4, 4), np.float32)
    unit_seed[:, 1, 0, 3] = 1.0  # INDEX = c,h,w: one unit
    by_channel = session(model, rule="epsilon", start="pool1").run(x[:2], relevance_seed=channel_seed)
    by_unit = session(model, rule="epsilon", start="conv2").run(x[:2], relevance_seed=unit_seed)
    for i in range(2):
        np.testing.assert_allclose(
            np.load(out / f"im{i}.neuron-pool1-2.npy"), by_channel["relevance"][i], rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(
            np.load(out / f"im{i}.neuron-conv2-1_0_3.npy"), by_unit["relevance"][i], rtol=1e-5, atol=1e-6
        )
        assert Image.open(out / f"im{i}.neuron-pool1-2.png").size == heatmap.explanation_figure_size()


def test_explain_augment(tiny, tmp_path):
    model, images, _ = tiny
    out = tmp_path / "out"
    assert (
        main(["explain", str(model), str(images[0]), "--augment", "flip,hue", "--out", str(out), "--quiet"])
        == 0
    )
    names = [item["name"] for item in json.loads((out / "explain.json").read_text())["inputs"]]
    assert names == ["im0", "im0_flip", "im0_hue"]
    img = np.asarray(Image.open(images[0]))
    from onnxlrp import augment

    x = np.stack(
        [v.transpose(2, 0, 1).astype(np.float32) / 255.0 for _, v in augment.augment(img, ["flip", "hue"])]
    )
    expected = session(model, rule="epsilon").run(x)["relevance"]
    for i, name in enumerate(names):
        np.testing.assert_allclose(np.load(out / f"{name}.npy"), expected[i], rtol=1e-5, atol=1e-6)
        assert (out / f"{name}.png").is_file()


def test_explain_errors(tiny, tmp_path, capsys):
    model, images, _ = tiny
    assert main(["explain", str(model), str(images[0]), "--neuron", "pool1", "--out", str(tmp_path)]) == 2
    assert main(["explain", str(model), str(images[0]), "--neuron", "nosuch:1", "--out", str(tmp_path)]) == 2
    assert main(["explain", str(tmp_path / "missing.onnx"), str(images[0]), "--out", str(tmp_path)]) == 2
    assert "error" in capsys.readouterr().err


@pytest.mark.skipif(not HAVE_ZOO, reason="zoo/manifest.json is absent (the zoo is not built)")
def test_explain_zoo_mnist(tmp_path):
    from onnxlrp import zoo

    paths = [str(p) for p in zoo.sample_paths("mnist-lenet5")][:2]
    out = tmp_path / "out"
    args = ["explain", "mnist-lenet5", *paths, "--out", str(out), "--quiet", "--layer", "", "--neuron", ""]
    handle_model = zoo.load("mnist-lenet5")
    convs = [n.output[0] for n in handle_model.model.graph.node if n.op_type == "Conv"]
    args[args.index("--layer") + 1] = convs[0]
    args[args.index("--neuron") + 1] = f"{convs[1]}:3"
    assert main(args) == 0
    summary = json.loads((out / "explain.json").read_text())
    assert len(summary["inputs"]) == len(paths)
    x = np.concatenate(
        [np.asarray(handle_model.preprocess(np.asarray(Image.open(p))), np.float32) for p in paths]
    )
    expected = session(handle_model.path, rule="epsilon", expose=[convs[0]]).run(x)
    for i, item in enumerate(summary["inputs"]):
        name = item["name"]
        np.testing.assert_allclose(
            np.load(out / f"{name}.npy"), expected["relevance"][i], rtol=1e-4, atol=1e-5
        )
        layer = np.load(out / f"{name}.layer-{safe_name(convs[0])}.npy")
        assert layer.shape[0] == 10  # LeNet-5's first conv: 10 feature maps
        assert Image.open(out / f"{name}.png").size == heatmap.explanation_figure_size()
