"""`onnxlrp reproduce`: every figure of the seed paper and an index.html linking them all.

The full pipeline runs twice: on small stand-in models and synthetic images (always), and
`reproduce --quick` on the real zoo (skipped while zoo/manifest.json is absent).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from onnxlrp import reproduce
from onnxlrp.cli import main
from onnxlrp.explaining import load_model

ROOT = Path(__file__).resolve().parent.parent
HAVE_ZOO = (ROOT / "zoo" / "manifest.json").is_file()
MNIST = ["mnist-lenet5", "mnist-lenet5-weak"]
CIFAR = ["cifar10-paper", "cifar10-resnet"]
VIT = "cifar10-vit"


def expected_figures() -> list[str]:
    names = [
        "fig2a_rules.png",
        "fig2b_virtual_class.png",
        "fig3_ambiguous_3_5.png",
        "fig4_weak_vs_strong.png",
    ]
    for model in MNIST:
        names += [f"fig5_first_conv_{model}.png", f"fig6_second_conv_{model}.png"]
        names += [f"fig5_first_pool_{model}.png", f"fig6_second_pool_{model}.png"]
    for model in CIFAR:
        names += [
            f"fig7_{model}.png",
            f"fig8_horse_{model}.png",
            f"fig8_automobile_{model}.png",
            f"fig9_{model}.png",
        ]
    names += [f"vit_horse_{VIT}.png", f"vit_automobile_{VIT}.png"]
    return names


def concept_figures(model: str) -> list[str]:
    folder = f"concepts/{model}/figures"
    names = ["fig7_concepts", "fig8_concepts_horse", "fig8_concepts_automobile", "fig9_concepts"]
    return [f"{folder}/{name}.png" for name in names]


def check_output(out: Path, concepts_drawn: bool = True) -> None:
    """Every figure written, shown once with a caption; the concept atlas of each CIFAR model
    built and linked, with its Figs. 7-9 (``concepts_drawn``) or the reason why there are none."""
    index = (out / "index.html").read_text()
    linked = set(re.findall(r"src='([^']+\.png)'", index))
    drawn = [name for model in CIFAR for name in concept_figures(model) if (out / name).is_file()]
    for name in expected_figures() + drawn:
        assert (out / name).is_file(), name
        assert name in linked, f"index.html does not show {name}"
        Image.open(out / name).verify()
    assert linked == {p.name for p in out.glob("*.png")} | set(drawn)
    for model in CIFAR:
        assert (out / "concepts" / model / "atlas.html").is_file()
        assert f"href='concepts/{model}/atlas.html'" in index
        summary = json.loads((out / "concepts" / model / "concepts.json").read_text())
        assert len(summary["channels"]) == summary["layer_shape"][0]  # every channel a candidate
        if concepts_drawn:
            assert set(concept_figures(model)) <= set(drawn), model
    for name in drawn:  # the caption says how the channels were chosen
        caption = index.split(f"src='{name}'")[1].split("</figcaption>")[0]
        assert "chosen over" in caption and "centre share" in caption, name
    if len(drawn) < 4 * len(CIFAR):
        assert "No concept figures:" in index
    assert index.count("<figcaption>") == len(linked)
    for model in CIFAR:
        crit = json.loads((out / f"criterion_{model}.json").read_text())
        shares = [c["inside_share_mean"] for c in crit["candidates"]]
        assert shares == sorted(shares, reverse=True)
        assert crit["background_neuron"] == crit["candidates"][-1]["unit"]
        assert crit["object_neurons"][0] == crit["candidates"][0]["unit"]
        assert (out / f"criterion_{model}.csv").is_file()


# ----------------------------------------------------------------------------- stand-ins
def conv_net(channels: int, pool: str, pads: int, kernel: int, seed: int) -> onnx.ModelProto:
    """conv(4) - relu - pool2 - conv(5) - relu - pool2 - flatten - gemm(10), input [N, channels, 32, 32]."""
    rng = np.random.default_rng(seed)
    size = ((32 + 2 * pads - kernel + 1) // 2 + 2 * pads - kernel + 1) // 2
    inits = [
        numpy_helper.from_array(
            rng.normal(size=(4, channels, kernel, kernel)).astype(np.float32) * 0.3, "w1"
        ),
        numpy_helper.from_array(rng.normal(size=(5, 4, kernel, kernel)).astype(np.float32) * 0.3, "w2"),
        numpy_helper.from_array(rng.normal(size=(10, 5 * size * size)).astype(np.float32) * 0.1, "w3"),
    ]
    p = [pads] * 4
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=p),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node(pool, ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], pads=p),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node(pool, ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p2"], ["f"]),
        helper.make_node("Gemm", ["f", "w3"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "standin",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", channels, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


def vit_standin(path: Path) -> Path:
    """A random-init one-block version of the zoo's ViT (its architecture, exported by torch)."""
    torch = pytest.importorskip("torch")
    from onnxlrp.converters.pytorch import export_module
    from zoo.training.zoo_models import CifarViT

    torch.manual_seed(0)
    export_module(
        CifarViT(dim=16, depth=1, heads=2, mlp_dim=32), torch.zeros(1, 3, 32, 32), path, verbose=False
    )
    return path


class FakeCifar:
    name = "synthetic images"

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.labels = np.arange(40) % 10
        self.images = [rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8) for _ in self.labels]

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> np.ndarray:
        return self.images[i]


def test_reproduce_standins(tmp_path, monkeypatch):
    models = {}
    for k, name in enumerate(MNIST + CIFAR):
        path = tmp_path / f"{name}.onnx"
        mnist = name.startswith("mnist")
        pool = "AveragePool" if mnist else "MaxPool"
        onnx.save(conv_net(1 if mnist else 3, pool, 0 if mnist else 1, 5 if mnist else 3, k), path)
        models[name] = path
    models[VIT] = vit_standin(tmp_path / f"{VIT}.onnx")

    def fake_load(name):
        handle = load_model(models[name])
        handle.name = name
        handle.classes = [str(i) for i in range(10)] if name.startswith("mnist") else reproduce_classes()
        handle.low, handle.high = 0.0, 1.0
        return handle

    def fake_mnist(limit):
        rng = np.random.default_rng(1)
        labels = np.arange(30) % 10
        return (
            [rng.integers(0, 256, size=(28, 28), dtype=np.uint8) for _ in labels],
            labels,
            "synthetic digits",
        )

    monkeypatch.setattr(reproduce, "load_model", fake_load)
    monkeypatch.setattr(reproduce, "mnist_test", fake_mnist)
    monkeypatch.setattr(reproduce, "CifarSource", FakeCifar)
    lines = []
    figures = reproduce.reproduce(tmp_path / "out", quick=True, log=lines.append)
    check_output(tmp_path / "out", concepts_drawn=False)  # random nets serve no class
    drawn = {n for m in CIFAR for n in concept_figures(m) if (tmp_path / "out" / n).is_file()}
    assert {f.file for f in figures} == set(expected_figures()) | drawn
    assert any("object neurons" in line for line in lines)  # the criterion is printed


def reproduce_classes():
    return ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_ambiguous_and_inside_share():
    logits = np.zeros((4, 10))
    logits[0, [3, 5]] = [5, 1]
    logits[1, [3, 5]] = [2, 2.5]  # the closest 3/5 pair
    logits[2, [3, 8]] = [2, 2.1]
    labels = np.array([3, 5, 3, 1])
    assert reproduce.ambiguous_35(labels, logits) == (1, pytest.approx(0.5))
    heat = np.zeros((32, 32))
    heat[10:12, 10:12] = -1.0
    assert reproduce.inside_share(heat) == 1.0
    heat[0, 0] = 4.0
    assert reproduce.inside_share(heat) == pytest.approx(0.5)
    assert reproduce.inside_share(np.ones((32, 32))) == pytest.approx(0.25)


@pytest.mark.skipif(not HAVE_ZOO, reason="zoo/manifest.json is absent (the zoo is not built)")
def test_reproduce_quick_zoo(tmp_path):
    out = tmp_path / "figs"
    assert main(["reproduce", "--quick", "--out", str(out)]) == 0
    check_output(out)


def test_fig9_rival_when_no_channel_gives_the_class_half():
    from onnxlrp.concept_figures import background_channel, rival_channel
    from onnxlrp.concepts import ConceptError

    def record(channel, share, centre, shares):
        return {"channel": channel, "share": share, "centre_share": centre, "class_shares": shares}

    summary = {
        "layer_shape": [4],
        "classes": ["a", "b", "c"],
        "channels": [
            record(0, 0.40, 0.10, [0.45, 0.30, 0.25]),  # the background channel, mostly class a
            record(1, 0.30, 0.70, [0.40, 0.35, 0.25]),  # mostly a, but under half
            record(2, 0.25, 0.90, [0.20, 0.60, 0.20]),  # an object channel of b
            record(3, 0.05, 0.95, [0.45, 0.10, 0.45]),  # below the average share: no candidate
        ],
    }
    assert background_channel(summary) == (0, 0)
    assert rival_channel(summary, 0, 0) == 1  # no channel gives a half: the best-centred of a's
    assert rival_channel(summary, 0, 1) == 2  # b's top object channel
    summary["channels"][1]["class_shares"] = [0.2, 0.5, 0.3]
    with pytest.raises(ConceptError, match="besides 0 gives most of its relevance to class a"):
        rival_channel(summary, 0, 0)
