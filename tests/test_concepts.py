"""Concept scans, receptive fields, the atlas and `onnxlrp concepts` on a small residual net."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from onnxlrp.atlas import AtlasData, build_atlas, reference_tiles
from onnxlrp.cli import main
from onnxlrp.concepts import (
    ConceptError,
    class_shares,
    concept_graph,
    image_concepts,
    receptive_boxes,
    scan_channels,
    top_images,
)
from onnxlrp.errors import OutputExistsError
from tests import reference
from tests.nets import export
from tests.test_conditioning import Residual

LAYER = "/merged/Relu"  # the residual block's output, [6, 4, 4]


@pytest.fixture(scope="module")
def net_path(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("concepts") / "residual.onnx"
    export(Residual(), (3, 8, 8), path)
    return path


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    return rng.uniform(-1, 1, (30, 3, 8, 8)).astype(np.float32), rng.integers(0, 5, 30)


def test_scan_gives_each_channels_relevance_and_activation(net_path, data, tmp_path):
    x, labels = data
    graph = concept_graph(net_path, LAYER, rule="epsilon")
    assert graph.tensor == "/merged/Relu_output_0" and graph.shape == (6, 4, 4) and graph.classes == 5
    result = scan_channels(graph, x, tmp_path, targets=labels, shard_size=8, batch_size=5, progress=False)
    want = reference.reference_lrp(
        str(net_path), x.astype(np.float64), reference.single_rule(("epsilon", 1.0)), target=labels
    )
    at_layer = want[f"relevance:{graph.tensor}"]
    expected = at_layer.reshape(len(x), 6, -1).sum(-1)
    np.testing.assert_allclose(
        result.array("relevance"), expected, rtol=0, atol=1e-5 * np.abs(expected).max()
    )
    activation = reference.reference_forward(str(net_path), x.astype(np.float64))[graph.tensor]
    np.testing.assert_allclose(
        result.array("activation"), activation.reshape(len(x), 6, -1).max(-1), atol=1e-5
    )
    np.testing.assert_array_equal(result.array("target"), labels)


def test_top_images_and_class_shares():
    scores = np.array([[1.0, 5.0], [3.0, 4.0], [2.0, 6.0]])
    np.testing.assert_array_equal(top_images(scores, 2), [[1, 2], [2, 0]])
    shares = class_shares(np.array([[1.0, -2.0], [3.0, 1.0], [-1.0, 1.0]]), np.array([0, 1, 1]), 3)
    np.testing.assert_allclose(shares, [[0.25, 0.75, 0.0], [0.0, 1.0, 0.0]])


def test_receptive_boxes_follow_the_geometry(net_path):
    graph = concept_graph(net_path, LAYER, rule="epsilon")
    boxes = receptive_boxes(graph)
    # merged = relu(pool + conv3x3(relu(conv3x3(pool)))), pool = maxpool2(relu(conv3x3(x))): position
    # i of the layer sees pooled rows i-2..i+2, i.e. input rows 2(i-2)-1 .. 2(i+2)+1+1, clipped
    for i in range(4):
        for j in range(4):
            rows = (max(0, 2 * max(0, i - 2) - 1), min(8, 2 * min(3, i + 2) + 3))
            cols = (max(0, 2 * max(0, j - 2) - 1), min(8, 2 * min(3, j + 2) + 3))
            assert tuple(boxes[i, j]) == (*rows, *cols), (i, j)


def test_conditional_heatmaps_of_all_channels_sum_to_the_heatmap(net_path, data):
    x, labels = data
    graph = concept_graph(net_path, LAYER, composite="epsilon-plus")
    found = image_concepts(graph, x[0], target=int(labels[0]), top=6)
    assert sorted(found.channels) == list(range(6))
    assert np.all(np.diff(found.relevance) <= 0)
    scale = np.abs(found.heatmap).max()
    assert np.abs(found.heatmaps.sum(0) - found.heatmap).max() <= 1e-5 * scale


def test_atlas_is_written_once(net_path, data, tmp_path):
    x, labels = data
    graph = concept_graph(net_path, LAYER, rule="epsilon")
    atlas = AtlasData(
        x, labels, np.arange(len(x)), [f"class{k}" for k in range(5)], -1.0, 1.0, {"model": "residual"}
    )
    page = build_atlas(graph, atlas, tmp_path, top=3, channels=4, log=lambda *a: None, progress=False)
    text = page.read_text()
    summary = json.loads((tmp_path / "concepts.json").read_text())
    assert len(summary["channels"]) == 4 and "residual" in text and "search" in text
    channel = summary["channels"][0]["channel"]
    assert len(reference_tiles(tmp_path, channel)) == 3
    assert abs(sum(summary["channels"][0]["class_shares"]) - 1) < 1e-3
    with pytest.raises(OutputExistsError):
        build_atlas(graph, atlas, tmp_path, top=3, channels=4, log=lambda *a: None, progress=False)


def test_data_the_model_cannot_read(net_path, tmp_path):
    graph = concept_graph(net_path, LAYER, rule="epsilon")
    with pytest.raises(ConceptError, match=r"inputs shaped \(1, 8, 8\); the model reads \(3, 8, 8\)"):
        scan_channels(graph, np.zeros((4, 1, 8, 8), np.float32), tmp_path, progress=False)


def test_concepts_command(net_path, data, tmp_path, capsys):
    x, _ = data
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "atlas"
    args = [
        "concepts",
        str(net_path),
        str(tmp_path / "x.npy"),
        "--top",
        "2",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main([*args, "--layer", LAYER]) == 0
    assert (out / "atlas.html").is_file() and len(list((out / "channels").glob("*.png"))) == 12
    assert main([*args, "--layer", "/merged/Relu", "--channels", "2"]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert main([*args, "--layer", "nope"]) == 2
    assert "layer 'nope' is neither a tensor nor a node" in capsys.readouterr().err
    assert main([*args, "--layer", "/inner/Relu", "--force"]) == 2
    assert "residual branch" in capsys.readouterr().err


def test_explain_concepts_with_an_atlas(net_path, data, tmp_path, capsys):
    x, _ = data
    np.save(tmp_path / "x.npy", x[:2])
    atlas = tmp_path / "atlas"
    np.save(tmp_path / "all.npy", x)
    assert (
        main(
            [
                "concepts",
                str(net_path),
                str(tmp_path / "all.npy"),
                "--layer",
                LAYER,
                "--top",
                "2",
                "--out",
                str(atlas),
                "--no-progress",
            ]
        )
        == 0
    )
    out = tmp_path / "explained"
    args = ["explain", str(net_path), str(tmp_path / "x.npy"), "--out", str(out), "--quiet"]
    assert main([*args, "--concepts", LAYER, "--concepts-top", "3", "--atlas", str(atlas)]) == 0
    stem = "x_0000.concepts-merged_Relu_output_0"
    found = json.loads((out / f"{stem}.json").read_text())
    values = [c["relevance"] for c in found["channels"]]
    assert len(values) == 3 and values == sorted(values, reverse=True)
    assert np.load(out / f"{stem}.npy").shape == (3, 3, 8, 8)
    assert (out / f"{stem}.png").is_file()
    # the same folder again: --force (explain never replaces an earlier explanation without it)
    assert main([*args, "--concepts", "/pool/MaxPool", "--atlas", str(atlas), "--force"]) == 2
    assert "an atlas of layer '/merged/Relu_output_0'" in capsys.readouterr().err


def test_figures_pick_object_and_background_channels(net_path, tmp_path):
    from onnxlrp.concept_figures import background_channel, concept_figures, object_channels, predictions

    x = np.random.default_rng(5).uniform(-1, 1, (60, 3, 8, 8)).astype(np.float32)
    graph = concept_graph(net_path, LAYER, rule="epsilon")
    labels = predictions(graph, x)  # every image "correctly classified"
    atlas = AtlasData(x, labels, np.arange(len(x)), [f"c{k}" for k in range(5)], -1.0, 1.0)
    build_atlas(graph, atlas, tmp_path, top=3, log=lambda *a: None, progress=False)
    summary = json.loads((tmp_path / "concepts.json").read_text())
    records = {r["channel"]: r for r in summary["channels"]}
    served = [
        k
        for k in range(5)
        if any(r["class_shares"][k] >= 0.5 and r["share"] >= 1 / 6 for r in records.values())
    ]
    assert served  # a random net predicts mostly one class: one class has object channels
    for k in served:
        chosen = object_channels(summary, k)
        assert all(records[c]["class_shares"][k] >= 0.5 for c in chosen)
        centre = [records[c]["centre_share"] for c in chosen]
        assert centre == sorted(centre, reverse=True)
    background, _ = background_channel(summary)
    eligible = [r["centre_share"] for r in records.values() if r["share"] >= 1 / 6]
    assert records[background]["centre_share"] == min(eligible)
    written = concept_figures(
        graph, atlas, tmp_path, tmp_path / "figures", classes=(served[0], served[-1]), images=3
    )
    assert [p.name for p in written] == [
        "fig7_concepts.png",
        f"fig8_concepts_c{served[0]}.png",
        f"fig8_concepts_c{served[-1]}.png",
        "fig9_concepts.png",
    ]


def test_atlas_of_a_layer_with_a_dead_channel_stays_valid_json(net_path, data, tmp_path):
    """A channel that is never active gets no relevance and no centre share: null, not NaN (which
    would make the page's JSON.parse fail)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(net_path))
    for init in model.graph.initializer:
        value = numpy_helper.to_array(init).copy()
        if init.name == "conv1.weight":
            value[0] = 0.0
        elif init.name == "conv1.bias":
            value[0] = -1.0
        else:
            continue
        init.CopyFrom(numpy_helper.from_array(value, init.name))
    x, labels = data
    graph = concept_graph(model, "/act1/Relu", rule="epsilon")
    atlas = AtlasData(x, labels, np.arange(len(x)), [f"class{k}" for k in range(5)], -1.0, 1.0)
    page = build_atlas(graph, atlas, tmp_path, top=2, log=lambda *a: None, progress=False)

    def refuse(constant):
        raise AssertionError(f"{constant} in the JSON")

    summary = json.loads((tmp_path / "concepts.json").read_text(), parse_constant=refuse)
    dead = next(r for r in summary["channels"] if r["channel"] == 0)
    assert dead["share"] == 0 and dead["centre_share"] is None
    embedded = page.read_text().split('type="application/json">')[1].split("</script>")[0]
    json.loads(embedded, parse_constant=refuse)


def test_concepts_of_a_folder_of_images(net_path, data, tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(5):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"img{k}.png")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "atlas"
    args = ["concepts", str(net_path), str(folder), "--layer", LAYER, "--top", "2", "--out", str(out)]
    assert main([*args, "--no-progress"]) == 0
    summary = json.loads((out / "concepts.json").read_text())
    assert summary["images"] == 5 and len(summary["channels"]) == 6
