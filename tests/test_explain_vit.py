"""`onnxlrp explain` on a ViT: the pixel heatmap and the relevance per patch token."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

import onnxlrp  # noqa: E402
from onnxlrp.cli import main  # noqa: E402
from onnxlrp.converters.pytorch import export_module  # noqa: E402
from onnxlrp.explaining import load_model, patch_embedding  # noqa: E402
from zoo.training.zoo_models import CifarViT  # noqa: E402


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    path = tmp_path_factory.mktemp("vit") / "vit.onnx"
    torch.manual_seed(0)
    export_module(
        CifarViT(dim=16, depth=2, heads=2, mlp_dim=32), torch.zeros(1, 3, 32, 32), path, verbose=False
    )
    return path


def test_patch_embedding_found(vit):
    assert patch_embedding(load_model(vit)) == "/patch_embed/Conv_output_0"


def test_explain_draws_patch_tokens(vit, tmp_path):
    rng = np.random.default_rng(0)
    image = tmp_path / "img.png"
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "out"
    assert main(["explain", str(vit), str(image), "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "explain.json").read_text())
    assert summary["rule"] == "composite attnlrp"  # the default for a model with attention
    assert summary["inputs"][0]["files"][2:] == ["img.tokens.png", "img.tokens.npy"]
    tokens = np.load(out / "img.tokens.npy")
    assert tokens.shape == (8, 8)
    # the patch-token map is the relevance reaching the patch embedding, summed per token
    graph = onnxlrp.compile(str(vit), composite="attnlrp", expose=["/patch_embed/Conv_output_0"])
    x = np.load(out / "img.npy")  # the pixel relevance the folder holds
    with Image.open(image) as im:
        pixels = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0  # no zoo entry: [0, 1]
    direct = onnxlrp.RelevanceSession(graph).run(pixels.transpose(2, 0, 1)[None])
    np.testing.assert_allclose(x, direct["relevance"][0], rtol=1e-5, atol=1e-7)
    expected = direct["relevance:/patch_embed/Conv_output_0"][0].sum(0)
    np.testing.assert_allclose(tokens, expected, rtol=1e-5, atol=1e-7)
    with Image.open(out / "img.tokens.png") as im:
        assert im.size[0] > im.size[1]  # three panels in a row
