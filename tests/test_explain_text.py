"""`onnxlrp explain` on text models: token ids from --text with a local tokenizer.json or from .npy,
rendered as HTML/PNG; a classifier (with an attention-mask input) and a small language model."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tokenizers")

import onnxlrp  # noqa: E402
from onnxlrp.cli import main  # noqa: E402
from onnxlrp.errors import OnnxLrpError  # noqa: E402
from onnxlrp.explaining import load_model, token_feeds  # noqa: E402
from tests.test_tokens import tiny_tokenizer  # noqa: E402
from zoo.training.zoo_models import Block  # noqa: E402

VOCAB = 16


class TextNet(torch.nn.Module):
    """Embedding + position embedding, one attention block, a head on token 0 (classifier, with an
    attention mask) or on every token (language model, logits [N, seq, vocab])."""

    def __init__(self, lm: bool) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, 16)
        self.pos = torch.nn.Parameter(torch.randn(1, 32, 16) * 0.1)
        self.block = Block(16, 2, 32)
        self.head = torch.nn.Linear(16, VOCAB if lm else 3)
        self.lm = lm

    def forward(self, ids, mask=None):
        h = self.embed(ids) + self.pos[:, : ids.shape[1]]
        if mask is not None:
            h = h * mask[..., None].to(h.dtype)
        h = self.block(h)
        return self.head(h) if self.lm else self.head(h[:, 0])


def export(tmp_path, lm: bool):
    torch.manual_seed(1)
    model = TextNet(lm).eval()
    ids = torch.randint(0, VOCAB, (2, 5))
    names = ["input_ids"] if lm else ["input_ids", "attention_mask"]
    args = (ids,) if lm else (ids, torch.ones_like(ids))
    path = tmp_path / ("lm.onnx" if lm else "cls.onnx")
    axes = {n: {0: "batch", 1: "seq"} for n in names}
    axes["logits"] = {0: "batch", 1: "seq"} if lm else {0: "batch"}
    with torch.no_grad():
        torch.onnx.export(
            model, args, str(path), input_names=names, output_names=["logits"], dynamic_axes=axes,
            opset_version=17, dynamo=False,
        )  # fmt: skip
    return model, path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("text")
    tiny_tokenizer(folder / "tokenizer.json")
    return folder, export(folder, lm=False), export(folder, lm=True)


def test_text_classifier_from_text(files, tmp_path):
    folder, (model, path), _ = files
    out = tmp_path / "out"
    text = "the cat & the <great> zebra"
    assert main(["explain", str(path), "--text", text, "--tokenizer", str(folder / "tokenizer.json"),
                 "--out", str(out)]) == 0  # fmt: skip
    summary = json.loads((out / "explain.json").read_text())
    assert summary["rule"] == "composite attnlrp"  # the default for a model with attention
    entry = summary["inputs"][0]
    assert entry["tokens"] == ["the", "cat", "&", "the", "<", "great", ">", "[UNK]"]
    from tokenizers import Tokenizer

    ids = torch.tensor([Tokenizer.from_file(str(folder / "tokenizer.json")).encode(text).ids])
    with torch.no_grad():
        logits = model(ids, torch.ones_like(ids))[0].numpy()  # torch, not the ONNX graph
    assert entry["predicted"] == int(logits.argmax())
    assert entry["logit"] == pytest.approx(float(logits.max()), rel=1e-4)
    relevance = np.load(out / "text_0000.npy")
    assert relevance.shape == (8,)
    direct = onnxlrp.RelevanceSession(onnxlrp.compile(str(path), composite="attnlrp")).run(
        {"input_ids": ids.numpy(), "attention_mask": np.ones((1, 8), np.int64)}
    )
    np.testing.assert_allclose(relevance, direct["relevance"][0], rtol=1e-6)
    page = (out / "text_0000.html").read_text()
    shown = re.findall(r'<span class="t" style="background:#[0-9a-f]{6}" title="[^"]*">([^<]*)</span>', page)
    assert shown == ["the", "cat", "&amp;", "the", "&lt;", "great", "&gt;", "[UNK]"]
    assert f"predicted {entry['predicted']}" in page
    assert (out / "text_0000.png").stat().st_size > 1000


def test_language_model_from_npy_ids(files, tmp_path):
    folder, _, (model, path) = files
    ids = np.array([[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]])
    np.save(tmp_path / "ids.npy", ids)
    out = tmp_path / "out"
    argv = ["explain", str(path), str(tmp_path / "ids.npy"), "--position", "2", "--target", "4"]
    assert main([*argv, "--tokenizer", str(folder / "tokenizer.json"), "--out", str(out)]) == 0
    summary = json.loads((out / "explain.json").read_text())
    assert [e["name"] for e in summary["inputs"]] == ["ids_0000", "ids_0001"]
    with torch.no_grad():
        logits = model(torch.from_numpy(ids)).numpy()[:, 2]
    for k, entry in enumerate(summary["inputs"]):
        assert entry["target"] == 4 and entry["predicted"] == int(logits[k].argmax())
        assert entry["logit"] == pytest.approx(float(logits[k, 4]), rel=1e-4)
        assert len(entry["tokens"]) == 6
    page = (out / "ids_0000.html").read_text()
    assert "next token after position 2" in page and "target 4 " in page


def test_token_feeds_and_errors(files, tmp_path, capsys):
    _, (_, path), (_, lm_path) = files
    feeds = token_feeds(load_model(path), np.array([3, 4, 5]))
    assert set(feeds) == {"input_ids", "attention_mask"}
    np.testing.assert_array_equal(feeds["attention_mask"], np.ones((1, 3), np.int64))
    assert main(["explain", str(lm_path), "--text", "the cat", "--out", str(tmp_path / "o")]) == 2
    assert "--text needs --tokenizer" in capsys.readouterr().err
    np.save(tmp_path / "floats.npy", np.zeros((2, 3), np.float32))
    assert main(["explain", str(lm_path), str(tmp_path / "floats.npy"), "--out", str(tmp_path / "o")]) == 2
    assert "expected integer token ids" in capsys.readouterr().err
    from onnx import TensorProto, helper, numpy_helper, save

    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["emb", "ids"], ["h"]),
            helper.make_node("Add", ["h", "pos"], ["logits"]),
        ],
        "g",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", "S"]),
            helper.make_tensor_value_info("pos", TensorProto.INT64, ["N", "S"]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", "S", 2])],
        [numpy_helper.from_array(np.ones((4, 2), np.float32), "emb")],
    )
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "odd_input.onnx")
    with pytest.raises(OnnxLrpError, match="input 'pos': do not know what to feed it"):
        token_feeds(load_model(tmp_path / "odd_input.onnx"), np.array([1]))


def test_outputs_claimed_before_work_and_replaced_only_with_force(files, tmp_path, capsys):
    """A second explain into the same folder is refused (nothing rewritten) until --force."""
    _, _, (_, lm_path) = files
    out = tmp_path / "out"
    out.mkdir()
    np.save(tmp_path / "ids.npy", np.array([1, 2, 3]))
    argv = ["explain", str(lm_path), str(tmp_path / "ids.npy"), "--out", str(out)]
    assert main(argv) == 0
    written = {f.name: f.stat().st_mtime_ns for f in out.iterdir()}
    assert set(written) == {"ids_0000.html", "ids_0000.png", "ids_0000.npy", "explain.json"}
    assert main(argv) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert {f.name: f.stat().st_mtime_ns for f in out.iterdir()} == written
    assert main([*argv, "--force"]) == 0
    assert json.loads((out / "explain.json").read_text())["inputs"][0]["name"] == "ids_0000"


@pytest.mark.slow
def test_gpt2_ids_and_positional_text_match_the_reference(tmp_path):
    """A HuggingFace GPT-2 (random init): .npy ids and a positional text, against the independent
    float64 AttnLRP reference of tests/attnlrp_reference.py."""
    pytest.importorskip("transformers")
    import attnlrp_reference as ref
    import tokenizers
    import transformer_models as tm

    model = tm.build("gpt2")
    path = tm.export(model, tmp_path / "gpt2.onnx")
    words = ["[UNK]", "the", "cat", "sat", "on", "a", "mat"]
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
    summary = json.loads((out / "explain.json").read_text())
    assert [e["name"] for e in summary["inputs"]] == ["text_0000", "ids_0000"]
    assert summary["inputs"][0]["tokens"] == ["the", "cat", "sat"]
    for name, sequence in (("ids_0000", ids), ("text_0000", np.array([[1, 2, 3]]))):
        logits, word, _ = ref.gpt2(tm.weights(model), sequence, tm.HEADS, cp=False)
        ref.propagate(logits, ref.seed_at(logits.value, logits.value[:, -1].argmax(-1), -1))
        expected = word.relevance.sum(-1)[0]
        ours = np.load(out / f"{name}.npy")
        assert np.linalg.norm(ours - expected) <= 1e-5 * np.linalg.norm(expected)
        assert (out / f"{name}.html").read_text().count('<span class="t"') == len(expected)
