"""`onnxlrp explain` on token models: ids from .npy or text through a local tokenizer.json, relevance
per token as .npy and an HTML page."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("torch")

import attnlrp_reference as ref
import transformer_models as tm

from onnxlrp.cli import main
from onnxlrp.errors import OnnxLrpError
from onnxlrp.tokens import load_token_inputs, token_html


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    model = tm.build("gpt2")
    return model, tm.export(model, tmp_path_factory.mktemp("tokens") / "gpt2.onnx")


@pytest.mark.slow
def test_explain_ids_and_text(gpt2, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    model, path = gpt2
    words = ["[UNK]", *["the", "cat", "sat", "on", "a", "mat"]]
    tokenizer = tokenizers.Tokenizer(
        tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, "[UNK]")
    )
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    ids = np.array([[5, 17, 3, 9, 42]], np.int64)
    np.save(tmp_path / "ids.npy", ids)
    out = tmp_path / "out"
    args = ["explain", str(path), str(tmp_path / "ids.npy"), "the cat sat", "--out", str(out)]
    assert main([*args, "--tokenizer", str(tmp_path / "tokenizer.json")]) == 0
    records = json.loads((out / "explain.json").read_text())
    assert [r["name"] for r in records] == ["ids", "text001"]
    assert records[1]["tokens"] == ["the", "cat", "sat"]
    for name, sequence in (("ids", ids), ("text001", np.array([[1, 2, 3]]))):
        logits, word, _ = ref.gpt2(tm.weights(model), sequence, tm.HEADS, cp=False)
        ref.propagate(logits, ref.seed_at(logits.value, logits.value[:, -1].argmax(-1), -1))
        expected = word.relevance.sum(-1)[0]
        ours = np.load(out / f"{name}.npy")
        assert np.linalg.norm(ours - expected) <= 1e-5 * np.linalg.norm(expected)
        assert (out / f"{name}.html").read_text().count("<span") == len(expected)


def test_text_needs_a_tokenizer():
    with pytest.raises(OnnxLrpError, match="--tokenizer"):
        load_token_inputs(["some text"])


def test_html_colours_by_sign():
    page = token_html(["up", "down", "<b>"], np.array([2.0, -1.0, 0.0]), "t")
    assert "background:rgb(255,0,0)" in page  # the largest positive: full red
    assert "background:rgb(128,128,255)" in page  # half the scale, negative: blue
    assert "&lt;b&gt;" in page  # tokens are escaped
