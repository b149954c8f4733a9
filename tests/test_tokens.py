"""Token renderings (HTML, PNG) and the local tokenizer of onnxlrp.tokens."""

from __future__ import annotations

import re

import numpy as np
import pytest

from onnxlrp import tokens


def span_colours(page: str) -> list[tuple[int, int, int]]:
    return [
        tuple(int(h[k : k + 2], 16) for k in (0, 2, 4))
        for h in re.findall(r'<span class="t" style="background:#([0-9a-f]{6})"', page)
    ]


def test_html_colours_follow_sign_and_symmetric_scale():
    relevance = np.array([2.0, -1.0, 0.0, 0.5, -2.0])
    page = tokens.render_html(["a", "b", "c", "d", "e"], relevance, "target 1")
    colours = span_colours(page)
    assert len(colours) == 5
    assert colours[0] == (255, 0, 0)  # the largest positive: full red
    assert colours[4] == (0, 0, 255)  # -max: full blue (symmetric scale, bound 2)
    assert colours[2] == (255, 255, 255)  # zero: white
    r, g, b = colours[1]  # -1 of 2: half-way to blue, from the formula (1-|v|, 1-|v|, 1)
    assert b == 255 and abs(r - 127.5) <= 1 and abs(g - 127.5) <= 1
    r, g, b = colours[3]  # +0.5 of 2: a quarter of the way to red: (1, 1-v, 1-v)
    assert r == 255 and abs(g - 191.25) <= 1 and abs(b - 191.25) <= 1


def test_html_escapes_tokens_and_title(tmp_path):
    words = ["<script>alert(1)</script>", "a&b", '"quoted"']
    page = tokens.render_html(words, [1.0, -1.0, 0.5], "next token: <b>&", tmp_path / "t.html")
    assert "<script>" not in page and "<b>&" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "a&amp;b" in page and "&quot;quoted&quot;" in page
    assert "<title>next token: &lt;b&gt;&amp;</title>" in page
    assert (tmp_path / "t.html").read_text(encoding="utf-8") == page


def test_lengths_must_agree():
    with pytest.raises(ValueError, match="2 tokens but 3"):
        tokens.render_html(["a", "b"], [1.0, 2.0, 3.0], "t")


def test_png_written(tmp_path):
    from PIL import Image

    path = tmp_path / "tokens.png"
    words = [f"tok{k}" for k in range(30)]
    tokens.render_png(words, np.linspace(-1, 1, 30), "class positive", path)
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"))
    assert rgb.shape[0] > 50 and rgb.shape[1] > 300
    red = (rgb[..., 0] > 240) & (rgb[..., 1] < 30) & (rgb[..., 2] < 30)
    blue = (rgb[..., 2] > 240) & (rgb[..., 0] < 30) & (rgb[..., 1] < 30)
    assert red.sum() > 100 and blue.sum() > 100  # the +1 and -1 tokens' boxes


def tiny_tokenizer(path):
    """A WordLevel tokenizer trained in-process on a few sentences, saved as tokenizer.json."""
    tk = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers, trainers

    tokenizer = tk.Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["[UNK]", "[CLS]"])
    tokenizer.train_from_iterator(
        ["the cat sat on the mat", "a dog & a cat", "the film was <great>"], trainer=trainer
    )
    tokenizer.save(str(path))
    return tokenizer


def test_tokenizer_round_trip(tmp_path):
    trained = tiny_tokenizer(tmp_path / "tokenizer.json")
    loaded = tokens.load_tokenizer(tmp_path / "tokenizer.json")
    result = tokens.tokenize(loaded, "the cat & the dog")
    assert result.tokens == ["the", "cat", "&", "the", "dog"]
    assert result.ids.dtype == np.int64
    assert list(result.ids) == trained.encode("the cat & the dog").ids
    assert [loaded.id_to_token(int(i)) for i in result.ids] == result.tokens
    assert tokens.tokenize(loaded, "the zebra").tokens == ["the", "[UNK]"]
    page = tokens.render_html(result.tokens, np.arange(5.0) - 2, "t")
    assert "&amp;" in page


def test_tokenizer_errors(tmp_path):
    pytest.importorskip("tokenizers")
    with pytest.raises(tokens.TokenizerError, match="does not exist"):
        tokens.load_tokenizer(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(tokens.TokenizerError, match=r"not a tokenizer\.json"):
        tokens.load_tokenizer(bad)
