"""ViT, BERT and GPT-2 (HuggingFace, random init) exported by both torch exporters, compiled under the
attnlrp and cp-lrp composites, against the independent float64 reference (attnlrp_reference.py) and,
when it is installed, against LXT itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

import attnlrp_reference as ref  # noqa: E402
import transformer_models as tm  # noqa: E402

import onnxlrp  # noqa: E402

KINDS = ("vit", "bert", "gpt2")
EXPORTERS = ("torchscript", "dynamo")
COMPOSITES = ("attnlrp", "cp-lrp")
TOLERANCE = 1e-5  # relative L2 per sample, float32 graph vs float64 reference


def rel_l2(ours: np.ndarray, theirs: np.ndarray) -> float:
    """The largest relative L2 distance over the samples."""
    ours, theirs = ours.reshape(len(ours), -1), theirs.reshape(len(theirs), -1)
    return float(max(np.linalg.norm(o - t) / np.linalg.norm(t) for o, t in zip(ours, theirs, strict=True)))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(torch module, ONNX path) per (kind, exporter, bias), built on first use."""
    cache: dict = {}
    folder = tmp_path_factory.mktemp("transformers")

    def get(kind: str, exporter: str, bias: bool = True):
        """exporter: torchscript, dynamo, or torchscript16 (opset 16: LayerNorm decomposed)."""
        key = (kind, exporter, bias)
        if key not in cache:
            model = tm.build(kind, bias=bias)
            opset = 16 if exporter == "torchscript16" else None
            path = tm.export(
                model, folder / f"{kind}_{exporter}_{bias}.onnx", dynamo=exporter == "dynamo", opset=opset
            )
            cache[key] = (model, path)
        return cache[key]

    return get


def reference(kind: str, model, inputs: dict, cp: bool, target: np.ndarray | None = None):
    """(word/pixel relevance [N, seq] or [N, C, H, W], logits at the explained position, target)."""
    w = tm.weights(model)
    if kind == "vit":
        logits, source = ref.vit(w, inputs["pixel_values"], tm.HEADS, tm.PATCH, cp)
        position = None
    elif kind == "bert":
        mask = inputs["attention_mask"].astype(np.float64)
        logits, source, _, _ = ref.bert(w, inputs["input_ids"], mask, tm.HEADS, cp)
        position = None
    else:
        logits, source, _ = ref.gpt2(w, inputs["input_ids"], tm.HEADS, cp)
        position = -1
    explained = logits.value if position is None else logits.value[:, position]
    if target is None:
        target = explained.argmax(-1)
    ref.propagate(logits, ref.seed_at(logits.value, target, position))
    relevance = source.relevance if kind == "vit" else source.relevance.sum(-1)
    return relevance, explained, target


def run(path, composite: str, inputs: dict, **options) -> dict:
    session = onnxlrp.RelevanceSession(onnxlrp.compile(str(path), composite=composite, **options))
    return session.run(inputs)


@pytest.mark.slow
@pytest.mark.parametrize("composite", COMPOSITES)
@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("kind", KINDS)
def test_matches_reference(models, kind, exporter, composite):
    model, path = models(kind, exporter)
    cp = composite == "cp-lrp"
    relevance_graph = onnxlrp.compile(str(path), composite=composite)
    read = {name for node in relevance_graph.graph.node for name in node.input}
    assert [i.name for i in relevance_graph.graph.initializer if i.name not in read] == []  # none dead
    session = onnxlrp.RelevanceSession(relevance_graph)
    lengths = (7,) if kind == "vit" else (5, 9)  # one graph serves every sequence length
    for seq in lengths:
        inputs = tm.example_inputs(kind, batch=3, seq=seq)
        out = session.run(inputs)
        expected, logits, _target = reference(kind, model, inputs, cp)
        explained = out["logits"] if kind != "gpt2" else out["logits"][:, -1]
        np.testing.assert_allclose(explained, logits, rtol=1e-4, atol=1e-4)
        error = rel_l2(out["relevance"], expected)
        print(f"{kind} {exporter} {composite} seq {seq}: relative L2 {error:.2e}")
        assert out["relevance"].shape == expected.shape
        assert error <= TOLERANCE, f"{kind} {exporter} {composite}: relative L2 {error:.3g}"


@pytest.mark.slow
@pytest.mark.parametrize("composite", COMPOSITES)
@pytest.mark.parametrize("kind", KINDS)
def test_decomposed_layer_norm(models, kind, composite):
    """LayerNorm written as ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul, Add (opset 16):
    propagated op by op (sigma a function of x alone, so x takes all of x / sigma) it gives the
    reference's LayerNorm rule."""
    model, path = models(kind, "torchscript16")
    inputs = tm.example_inputs(kind, batch=2, seq=6)
    out = run(path, composite, inputs)
    expected, _, _ = reference(kind, model, inputs, composite == "cp-lrp")
    assert rel_l2(out["relevance"], expected) <= TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("composite", COMPOSITES)
def test_gamma_on_linear_layers(models, composite):
    """gamma= puts zennit's generalised gamma rule on every linear layer (LayerNorm keeps LRP-0)."""
    model, path = models("vit", "torchscript")
    inputs = tm.example_inputs("vit", batch=2)
    out = run(path, composite, inputs, gamma=0.25)
    logits, pixels = ref.vit(
        tm.weights(model), inputs["pixel_values"], tm.HEADS, tm.PATCH, composite == "cp-lrp", gamma=0.25
    )
    ref.propagate(logits, ref.seed_at(logits.value, logits.value.argmax(-1)))
    assert rel_l2(out["relevance"], pixels.relevance) <= TOLERANCE
    plain, _, _ = reference("vit", model, inputs, composite == "cp-lrp")
    assert rel_l2(out["relevance"], plain) > 1e-2  # the rule changed something


@pytest.mark.slow
@pytest.mark.parametrize("composite", COMPOSITES)
def test_padding_gets_no_relevance(models, composite):
    """An attention mask is fed through: masked (padding) tokens are attended by nobody, so the
    class token's logit gives them no relevance, and the rest still matches the reference."""
    model, path = models("bert", "torchscript")
    inputs = tm.example_inputs("bert", batch=2, seq=8)
    inputs["attention_mask"][:, 5:] = 0
    out = run(path, composite, inputs)
    expected, _, _ = reference("bert", model, inputs, composite == "cp-lrp")
    assert np.all(out["relevance"][:, 5:] == 0)
    assert rel_l2(out["relevance"], expected) <= TOLERANCE


@pytest.mark.slow
def test_embedding_relevance_outputs(models):
    """The position and token-type embeddings' shares are their own outputs (expose), and the word,
    position and token-type relevance together are what reaches the embedding sum."""
    model, path = models("bert", "torchscript")
    graph = onnxlrp.compile(str(path), composite="attnlrp")
    inputs = tm.example_inputs("bert", batch=2, seq=6)
    out = onnxlrp.RelevanceSession(graph).run(inputs)
    exposed = sorted(name for name in out if name.startswith("relevance:"))
    assert len(exposed) == 2, exposed
    w = tm.weights(model)
    logits, _word, pos, typ = ref.bert(
        w, inputs["input_ids"], inputs["attention_mask"].astype(float), tm.HEADS, False
    )
    ref.propagate(logits, ref.seed_at(logits.value, logits.value.argmax(-1)))
    ours = sorted(out[name].reshape(2, -1).sum(-1)[0] for name in exposed)
    theirs = sorted([pos.relevance[0].sum(), typ.relevance[0].sum()])
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_bias_free_conservation(models, kind):
    """Without biases or constant embeddings, CP-LRP conserves: the input relevance sums to the logit
    (the softmax is what leaks under attnlrp)."""
    _, path = models(kind, "torchscript", bias=False)
    inputs = tm.example_inputs(kind, batch=2, seq=6)
    out = run(path, "cp-lrp", inputs)
    logits = out["logits"] if kind != "gpt2" else out["logits"][:, -1]
    explained = logits.max(-1)
    totals = out["relevance"].reshape(2, -1).sum(-1)
    np.testing.assert_allclose(totals, explained, rtol=1e-4)


@pytest.mark.slow
def test_explains_any_position_and_target(models):
    model, path = models("gpt2", "torchscript")
    inputs = tm.example_inputs("gpt2", batch=2, seq=6)
    target = np.array([3, 17])
    graph = onnxlrp.compile(str(path), composite="attnlrp", position=2)
    out = onnxlrp.RelevanceSession(graph).run(inputs, target=target)
    w = tm.weights(model)
    logits, source, _ = ref.gpt2(w, inputs["input_ids"], tm.HEADS, cp=False)
    ref.propagate(logits, ref.seed_at(logits.value, target, 2))
    assert rel_l2(out["relevance"], source.relevance.sum(-1)) <= TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "composite"), [("bert", "attnlrp"), ("gpt2", "attnlrp"), ("gpt2", "cp-lrp")]
)
def test_matches_lxt(models, tmp_path, kind, composite):
    """LXT's efficient AttnLRP (and its CP-LRP map for GPT-2) on the same weights, in float64."""
    pytest.importorskip("lxt")
    _, path = models(kind, "torchscript")
    inputs = tm.example_inputs(kind, batch=2, seq=6)
    np.savez(tmp_path / "inputs.npz", **inputs)
    script = Path(__file__).parent / "lxt_relevance.py"
    command = [
        sys.executable,
        str(script),
        kind,
        composite,
        str(tmp_path / "inputs.npz"),
        str(tmp_path / "lxt.npy"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    theirs = np.load(tmp_path / "lxt.npy")
    error = rel_l2(run(path, composite, inputs)["relevance"], theirs)
    print(f"{kind} {composite} vs LXT: relative L2 {error:.2e}")
    assert error <= 1e-3
