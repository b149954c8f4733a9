"""The adversarial corpus (tests/corpus.py) over every command and the Python API.

A refused case must exit with code 2 and print exactly one line on stderr,
``onnxlrp <command>: error: <what and where>``, with no traceback, and leave every file that
existed before it ran unchanged. A case that succeeds must give finite results and also leave
every pre-existing file unchanged. Commands run in-process (`onnxlrp.cli.main`); the cases that
could hang or exhaust memory when broken (FIFOs, /dev/zero) run in a subprocess with a timeout and
a memory limit.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from corpus import CLASSES, SHAPE, small_net, write_corpus

import onnxlrp
from onnxlrp import zoo
from onnxlrp.cli import main

ZOO_SAMPLE = Path(__file__).resolve().parent.parent / "zoo" / "samples" / "mnist_test00001_2.png"


@pytest.fixture
def corpus(tmp_path, monkeypatch) -> Path:
    folder = write_corpus(tmp_path)
    monkeypatch.chdir(folder)
    return folder


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every regular file under ``folder`` (FIFOs are not read)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            out[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@dataclass
class Outcome:
    rc: int
    out: str
    err: str


def run_cli(argv: list[str], capsys) -> Outcome:
    try:
        rc = main(argv)
    except SystemExit as exit_:  # argparse
        rc = exit_.code if isinstance(exit_.code, int) else 2
    captured = capsys.readouterr()
    return Outcome(int(rc or 0), captured.out, captured.err)


def assert_refused(outcome: Outcome, command: str, *words: str) -> None:
    lines = [line for line in outcome.err.splitlines() if line.strip()]
    assert "Traceback" not in outcome.err, outcome.err
    assert outcome.rc == 2, (outcome.rc, outcome.err)
    assert len(lines) == 1, outcome.err
    assert lines[0].startswith(f"onnxlrp {command}: error: "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])


def assert_unchanged(before: dict[str, str], folder: Path) -> None:
    after = snapshot(folder)
    changed = [name for name, digest in before.items() if after.get(name) != digest]
    assert not changed, f"pre-existing files changed or removed: {changed}"


# ----------------------------------------------------------------------------- refused CLI cases
# (argv, words the error line must contain). Names are corpus files; the cwd is the corpus folder.
BAD_MODELS = {
    "empty.onnx": "empty",
    "truncated.onnx": "truncated.onnx",
    "text.onnx": "text.onnx",
    "no_outputs.onnx": "output",
    "mismatched.onnx": "w2",
    "duplicate.onnx": "w2",
    "if_outer.onnx": "if",
    "huge_expand.onnx": "huge",
    "huge_input.onnx": "GiB",
    "folder.onnx": "folder.onnx",
    "missing.onnx": "missing.onnx",
}

PARAMETERS = [
    ["--rule", "epsilon", "--epsilon", "0"],
    ["--rule", "epsilon", "--epsilon", "nan"],
    ["--rule", "epsilon", "--epsilon", "inf"],
    ["--rule", "epsilon", "--epsilon", "-1"],
    ["--rule", "gamma", "--gamma", "nan"],
    ["--rule", "gamma", "--gamma", "-1"],
    ["--rule", "alphabeta", "--alpha", "nan", "--beta", "nan"],
    ["--rule", "alphabeta", "--alpha", "3", "--beta", "1"],
    ["--rule", "alphabeta:3,1"],
    ["--rule", "epsilon:nan"],
    ["--composite", "epsilon-gamma-box", "--low", "nan"],
    ["--composite", "epsilon-gamma-box", "--low", "1", "--high", "0"],
    ["--composite", "epsilon-gamma-box", "--low", "0", "--high", "0"],
    ["--composite", "epsilon-gamma-box", "--high", "inf"],
    ["--rule", "no-such-rule"],
    ["--layer-rule", "Conv"],
    ["--layer-rule", "Conv=no-such-rule"],
    ["--layer-rule", "nosuchnode=zplus"],
]

REFUSED: list[tuple[str, list[str], tuple[str, ...]]] = []
for _name, _word in BAD_MODELS.items():
    _data = {"huge_expand.onnx": "x4.npy", "huge_input.onnx": "digit.png"}.get(_name, "x.npy")
    if _name != "if_outer.onnx":  # inspect reports unsupported nodes (exit 1), see below
        REFUSED.append((f"inspect {_name}", ["inspect", _name], (_word,)))
    REFUSED += [
        (f"compile {_name}", ["compile", _name, "-o", "out.onnx"], (_word,)),
        (f"explain {_name}", ["explain", _name, _data, "--out", "results"], (_word,)),
        (
            f"evaluate {_name}",
            ["evaluate", _name, _data, "--out", "results"],
            (_word,) if _data == "x.npy" else (),
        ),
    ]
for _params in PARAMETERS:
    REFUSED += [
        (f"compile {' '.join(_params)}", ["compile", "good.onnx", "-o", "out.onnx", *_params], ()),
        (f"explain {' '.join(_params)}", ["explain", "good.onnx", "x.npy", "--out", "results", *_params], ()),
    ]
REFUSED += [
    # outputs: never clobber, never a folder, never the input
    ("compile output is a folder", ["compile", "good.onnx", "-o", "folder.onnx"], ("folder.onnx",)),
    (
        "compile output is a folder --force",
        ["compile", "good.onnx", "-o", "folder.onnx", "--force"],
        ("folder.onnx",),
    ),
    (
        "compile output under a file",
        ["compile", "good.onnx", "-o", "precious.txt/out.onnx"],
        ("precious.txt",),
    ),
    ("compile output exists", ["compile", "good.onnx", "-o", "precious.txt"], ("precious.txt", "--force")),
    ("compile output == input", ["compile", "good.onnx", "-o", "good.onnx"], ("good.onnx",)),
    (
        "compile output == input --force",
        ["compile", "good.onnx", "-o", "./good.onnx", "--force"],
        ("good.onnx",),
    ),
    ("compile --start unknown", ["compile", "good.onnx", "-o", "out.onnx", "--start", "nope"], ("nope",)),
    ("compile --expose unknown", ["compile", "good.onnx", "-o", "out.onnx", "--expose", "nope"], ("nope",)),
    (
        "compile --expose twice",
        ["compile", "good.onnx", "-o", "out.onnx", "--expose", "r", "--expose", "r"],
        ("r",),
    ),
    (
        "compile --output-name unknown",
        ["compile", "good.onnx", "-o", "out.onnx", "--output-name", "nope"],
        ("nope",),
    ),
    ("compile --input unknown", ["compile", "good.onnx", "-o", "out.onnx", "--input", "nope"], ("nope",)),
    (
        "compile --input of the wrong model",
        ["compile", "two_inputs.onnx", "-o", "out.onnx", "--input", "x"],
        ("x",),
    ),
    # explain: inputs
    ("explain empty png", ["explain", "good.onnx", "empty.png", "--out", "results"], ("empty.png",)),
    ("explain corrupt png", ["explain", "good.onnx", "corrupt.png", "--out", "results"], ("corrupt.png",)),
    (
        "explain truncated png",
        ["explain", "good.onnx", "truncated.png", "--out", "results"],
        ("truncated.png",),
    ),
    ("explain text named png", ["explain", "good.onnx", "text.png", "--out", "results"], ("text.png",)),
    ("explain bomb png", ["explain", "good.onnx", "bomb.png", "--out", "results"], ("bomb.png", "pixels")),
    ("explain bigger bomb png", ["explain", "good.onnx", "bigger_bomb.png", "--out", "results"], ("pixels",)),
    ("explain missing image", ["explain", "good.onnx", "nope.png", "--out", "results"], ("nope.png",)),
    ("explain folder as image", ["explain", "good.onnx", "results", "--out", "results"], ("results",)),
    (
        "explain npy wrong shape",
        ["explain", "good.onnx", "x_wrong_shape.npy", "--out", "results"],
        ("x_wrong_shape.npy",),
    ),
    ("explain npy 2d", ["explain", "good.onnx", "x_2d.npy", "--out", "results"], ("x_2d.npy",)),
    ("explain npy batch 0", ["explain", "good.onnx", "x_batch0.npy", "--out", "results"], ("x_batch0.npy",)),
    (
        "explain npy object dtype",
        ["explain", "good.onnx", "x_object.npy", "--out", "results"],
        ("x_object.npy",),
    ),
    ("explain npy text", ["explain", "good.onnx", "x_text.npy", "--out", "results"], ("x_text.npy",)),
    ("explain npy nan", ["explain", "good.onnx", "x_nan.npy", "--out", "results"], ("x_nan.npy",)),
    (
        "explain npy beyond float32",
        ["explain", "good.onnx", "x_huge.npy", "--out", "results"],
        ("x_huge.npy",),
    ),
    # explain: options
    (
        "explain --target == classes",
        ["explain", "good.onnx", "x.npy", "--out", "results", "--target", str(CLASSES)],
        ("target",),
    ),
    (
        "explain --target -2",
        ["explain", "good.onnx", "x.npy", "--out", "results", "--target", "-2"],
        ("target",),
    ),
    (
        "explain --target 1000",
        ["explain", "good.onnx", "x.npy", "--out", "results", "--target", "1000"],
        ("target",),
    ),
    (
        "explain --batch-size 0",
        ["explain", "good.onnx", "x.npy", "--out", "results", "--batch-size", "0"],
        ("batch",),
    ),
    (
        "explain --batch-size -1",
        ["explain", "good.onnx", "x.npy", "--out", "results", "--batch-size", "-1"],
        ("batch",),
    ),
    (
        "explain --percentile 200",
        ["explain", "good.onnx", "x.npy", "--out", "results", "--percentile", "200"],
        ("percentile",),
    ),
    (
        "explain --percentile nan",
        ["explain", "good.onnx", "x.npy", "--out", "results", "--percentile", "nan"],
        ("percentile",),
    ),
    (
        "explain --percentile 0",
        ["explain", "good.onnx", "x.npy", "--out", "results", "--percentile", "0"],
        ("percentile",),
    ),
    (
        "explain --layer twice",
        ["explain", "good.onnx", "x.npy", "--out", "results", "--layer", "r", "--layer", "r"],
        ("r",),
    ),
    (
        "explain --layer unknown",
        ["explain", "good.onnx", "x.npy", "--out", "results", "--layer", "nope"],
        ("nope",),
    ),
    (
        "explain --max-channels 0",
        ["explain", "good.onnx", "x.npy", "--out", "results", "--layer", "r", "--max-channels", "0"],
        ("channels",),
    ),
    (
        "explain --neuron no index",
        ["explain", "good.onnx", "x.npy", "--out", "results", "--neuron", "r"],
        ("r",),
    ),
    (
        "explain --neuron out of range",
        ["explain", "good.onnx", "x.npy", "--out", "results", "--neuron", "r:7"],
        ("7",),
    ),
    (
        "explain --neuron unknown",
        ["explain", "good.onnx", "x.npy", "--out", "results", "--neuron", "nope:0"],
        ("nope",),
    ),
    (
        "explain --augment bad",
        ["explain", "good.onnx", "digit.png", "--out", "results", "--augment", "spin"],
        ("spin",),
    ),
    (
        "explain --augment hue on npy",
        ["explain", "good.onnx", "x.npy", "--out", "results", "--augment", "hue"],
        ("hue",),
    ),
    (
        "explain --hue-shift nan",
        ["explain", "good.onnx", "digit.png", "--out", "results", "--augment", "hue", "--hue-shift", "nan"],
        ("hue",),
    ),
    (
        "explain --input unknown",
        ["explain", "two_inputs.onnx", "x4.npy", "--out", "results", "--input", "nope"],
        ("nope",),
    ),
    (
        "explain a model with two inputs",
        ["explain", "two_inputs.onnx", "x4.npy", "--out", "results"],
        ("b", ".npz"),
    ),
    (
        "explain npz uneven",
        ["explain", "two_inputs.onnx", "ab_uneven.npz", "--out", "results"],
        ("ab_uneven.npz",),
    ),
    ("explain npz missing input", ["explain", "two_inputs.onnx", "a_only.npz", "--out", "results"], ("b",)),
    (
        "explain npz --neuron",
        ["explain", "two_inputs.onnx", "ab.npz", "--out", "results", "--neuron", "ya:0"],
        ("neuron",),
    ),
    ("explain npz for one input", ["explain", "good.onnx", "ab.npz", "--out", "results"], ("x",)),
    (
        "explain npz with images",
        ["explain", "two_inputs.onnx", "ab.npz", "digit.png", "--out", "results"],
        (".npz",),
    ),
    # explain: outputs
    (
        "explain --out is a file",
        ["explain", "good.onnx", "x.npy", "--out", "precious.txt"],
        ("precious.txt",),
    ),
    (
        "explain heatmap would replace its input",
        ["explain", "good.onnx", "digit.png", "--out", "."],
        ("digit.png",),
    ),
    (
        "explain --out under a file",
        ["explain", "good.onnx", "x.npy", "--out", "precious.txt/sub"],
        ("precious.txt",),
    ),
    # evaluate
    ("evaluate --n 0", ["evaluate", "good.onnx", "x.npy", "--out", "results", "--n", "0"], ("--n",)),
    ("evaluate --n -3", ["evaluate", "good.onnx", "x.npy", "--out", "results", "--n", "-3"], ("--n",)),
    (
        "evaluate --region 0",
        ["evaluate", "good.onnx", "x.npy", "--out", "results", "--region", "0"],
        ("region",),
    ),
    (
        "evaluate --region 100",
        ["evaluate", "good.onnx", "x.npy", "--out", "results", "--region", "100"],
        ("region",),
    ),
    (
        "evaluate --steps -1",
        ["evaluate", "good.onnx", "x.npy", "--out", "results", "--steps", "-1"],
        ("steps",),
    ),
    (
        "evaluate --batch-size 0",
        ["evaluate", "good.onnx", "x.npy", "--out", "results", "--batch-size", "0"],
        ("batch",),
    ),
    (
        "evaluate --blur-sigma nan",
        [
            "evaluate",
            "good.onnx",
            "x.npy",
            "--out",
            "results",
            "--perturbation",
            "blur",
            "--blur-sigma",
            "nan",
        ],
        ("sigma",),
    ),
    (
        "evaluate --epsilon 0",
        ["evaluate", "good.onnx", "x.npy", "--out", "results", "--rule", "epsilon", "--epsilon", "0"],
        ("epsilon",),
    ),
    (
        "evaluate method nan",
        ["evaluate", "good.onnx", "x.npy", "--out", "results", "-m", "epsilon:nan"],
        ("epsilon",),
    ),
    (
        "evaluate bad method",
        ["evaluate", "good.onnx", "x.npy", "--out", "results", "-m", "nonsense"],
        ("nonsense",),
    ),
    ("evaluate npy nan", ["evaluate", "good.onnx", "x_nan.npy", "--out", "results"], ("x_nan.npy",)),
    (
        "evaluate npy batch 0",
        ["evaluate", "good.onnx", "x_batch0.npy", "--out", "results"],
        ("x_batch0.npy",),
    ),
    (
        "evaluate npy wrong shape",
        ["evaluate", "good.onnx", "x_wrong_shape.npy", "--out", "results"],
        ("x_wrong_shape.npy",),
    ),
    ("evaluate npy object", ["evaluate", "good.onnx", "x_object.npy", "--out", "results"], ("x_object.npy",)),
    ("evaluate npy text", ["evaluate", "good.onnx", "x_text.npy", "--out", "results"], ("x_text.npy",)),
    ("evaluate unknown data", ["evaluate", "good.onnx", "nope", "--out", "results"], ("nope",)),
    (
        "evaluate malformed data set file",
        ["evaluate", "mnist-lenet5", "mnist", "--datasets", "datasets", "--out", "results"],
        ("mnist.npz",),
    ),
    (
        "evaluate --out is a file",
        ["evaluate", "good.onnx", "x.npy", "--out", "precious.txt"],
        ("precious.txt",),
    ),
    # reproduce
    ("reproduce --out is a file", ["reproduce", "--out", "precious.txt", "--quick"], ("precious.txt",)),
    # convert
    ("convert garbage", ["convert", "lrp-toolbox", "garbage.txt", "-o", "g.onnx"], ("garbage.txt",)),
    ("convert missing", ["convert", "lrp-toolbox", "nope.txt", "-o", "g.onnx"], ("nope.txt",)),
    ("convert empty", ["convert", "lrp-toolbox", "empty.png", "-o", "g.onnx"], ("empty.png",)),
    ("convert output exists", ["convert", "lrp-toolbox", "mlp.txt", "-o", "precious.txt"], ("precious.txt",)),
    (
        "convert output is a folder",
        ["convert", "lrp-toolbox", "mlp.txt", "-o", "folder.onnx", "--force"],
        ("folder.onnx",),
    ),
    (
        "convert output == input",
        ["convert", "lrp-toolbox", "mlp.txt", "-o", "mlp.txt", "--force"],
        ("mlp.txt",),
    ),
    (
        "convert bad --input-shape",
        ["convert", "lrp-toolbox", "mlp.txt", "-o", "m.onnx", "--input-shape", "0"],
        ("shape",),
    ),
    ("convert folder", ["convert", "lrp-toolbox", "results", "-o", "m.onnx"], ("results",)),
]


@pytest.mark.parametrize("argv,words", [(a, w) for _, a, w in REFUSED], ids=[n for n, _, _ in REFUSED])
def test_cli_refuses(corpus, capsys, argv, words):
    before = snapshot(corpus)
    outcome = run_cli(argv, capsys)
    assert_refused(outcome, argv[0], *words)
    assert_unchanged(before, corpus)


def test_inspect_marks_control_flow_reading_activations(corpus, capsys):
    outcome = run_cli(["inspect", "if_outer.onnx"], capsys)
    assert outcome.rc == 1 and "Traceback" not in outcome.err
    row = next(line for line in outcome.out.splitlines() if line.startswith("if "))
    assert "If" in row and "NO" in row


def test_explain_refuses_to_overwrite_previous_results(corpus, capsys):
    assert run_cli(["explain", "good.onnx", "x.npy", "--out", "results"], capsys).rc == 0
    before = snapshot(corpus)
    assert "results/explain.json" in before
    assert_refused(
        run_cli(["explain", "good.onnx", "x.npy", "--out", "results"], capsys), "explain", "--force"
    )
    assert_unchanged(before, corpus)
    assert (
        run_cli(
            ["explain", "good.onnx", "x.npy", "--out", "results", "--force", "--epsilon", "0.5"], capsys
        ).rc
        == 0
    )


def test_evaluate_refuses_to_overwrite_previous_results(corpus, capsys):
    args = [
        "evaluate",
        "good.onnx",
        "x.npy",
        "--out",
        "results",
        "--rule",
        "epsilon",
        "--no-progress",
        "--steps",
        "3",
    ]
    assert run_cli(args, capsys).rc == 0
    before = snapshot(corpus)
    assert any(name.startswith("results/aopc") for name in before)
    assert_refused(run_cli(args, capsys), "evaluate", "--force")
    assert_unchanged(before, corpus)
    assert run_cli([*args, "--force"], capsys).rc == 0


def test_reproduce_refuses_a_folder_with_results(corpus, capsys):
    (corpus / "figs").mkdir()
    (corpus / "figs" / "index.html").write_text("mine")
    before = snapshot(corpus)
    assert_refused(run_cli(["reproduce", "--out", "figs", "--quick"], capsys), "reproduce", "--force")
    assert_unchanged(before, corpus)


def test_zoo_with_a_broken_manifest(corpus, capsys, monkeypatch):
    (corpus / "zoo").mkdir()
    monkeypatch.setenv("ONNXLRP_ZOO", str(corpus / "zoo"))
    assert_refused(run_cli(["zoo"], capsys), "zoo", "manifest")
    (corpus / "zoo" / "manifest.json").write_text("{not json")
    assert_refused(run_cli(["zoo"], capsys), "zoo", "manifest")
    assert_refused(run_cli(["explain", "mnist-lenet5", "digit.png"], capsys), "explain", "manifest")


def test_parse_errors_are_one_line(corpus, capsys):
    for argv in (
        ["compile"],
        ["compile", "good.onnx", "--epsilon", "abc"],
        ["explain", "good.onnx", "x.npy", "--target", "x"],
    ):
        outcome = run_cli(argv, capsys)
        assert_refused(outcome, argv[0])


# ----------------------------------------------------------------------------- accepted CLI cases
def _relevance_files(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.load(p) for p in sorted(folder.glob("*.npy"))}


@pytest.mark.parametrize(
    "model,extra",
    [
        ("good.onnx", []),
        ("ir3.onnx", []),
        ("fp16.onnx", []),
        ("fp64.onnx", []),
        ("pruned.onnx", ["--composite", "epsilon-gamma-box"]),
        ("pruned.onnx", ["--rule", "wsquare"]),
        ("pruned.onnx", ["--rule", "gamma"]),
        ("pruned.onnx", ["--first-rule", "zbox", "--rule", "epsilon"]),
        ("good.onnx", ["--rule", "alphabeta", "--alpha", "1", "--beta", "0"]),
        ("good.onnx", ["--rule", "epsilon", "--epsilon", "1e-9"]),
        ("good.onnx", ["--layer", "r", "--max-channels", "1", "--target", "2"]),
        ("good.onnx", ["--target", "-1"]),
        ("fp16.onnx", ["--neuron", "r:0", "--layer", "r"]),
        ("ir3.onnx", ["--neuron", "r:1"]),
    ],
)
def test_cli_explains_finitely(corpus, capsys, model, extra):
    before = snapshot(corpus)
    outcome = run_cli(["explain", model, "x.npy", "--out", "results", "--quiet", *extra], capsys)
    assert outcome.rc == 0, outcome.err
    assert_unchanged(before, corpus)
    arrays = _relevance_files(corpus / "results")
    assert arrays and all(np.isfinite(a).all() for a in arrays.values())
    summary = json.loads((corpus / "results" / "explain.json").read_text())  # strict JSON: no NaN
    json.dumps(summary, allow_nan=False)


@pytest.mark.parametrize("model", ["ir3.onnx", "fp16.onnx", "fp64.onnx"])
def test_cli_evaluates_unusual_models(corpus, capsys, model):
    args = ["evaluate", model, "x.npy", "--out", "results", "--rule", "epsilon", "--steps", "2"]
    outcome = run_cli([*args, "--no-progress"], capsys)
    assert outcome.rc == 0, outcome.err
    aopc = json.loads((corpus / "results" / "aopc.json").read_text())["aopc"]
    assert all(np.isfinite(row["aopc"]) for row in aopc)


def test_cli_compile_writes_with_the_umask_mode(corpus, capsys):
    old = os.umask(0o022)
    try:
        assert run_cli(["compile", "good.onnx", "-o", "out.onnx"], capsys).rc == 0
    finally:
        os.umask(old)
    assert (os.stat(corpus / "out.onnx").st_mode & 0o777) == 0o644


def test_cli_16bit_png_reads_like_its_8bit_copy(corpus, capsys):
    assert run_cli(["explain", "good.onnx", "digit.png", "--out", "r8", "--quiet"], capsys).rc == 0
    assert run_cli(["explain", "good.onnx", "grey16.png", "--out", "r16", "--quiet"], capsys).rc == 0
    r8, r16 = np.load(corpus / "r8" / "digit.npy"), np.load(corpus / "r16" / "grey16.npy")
    assert np.abs(r8).max() > 0
    np.testing.assert_allclose(r16, r8, atol=1e-6 * np.abs(r8).max())


def test_cli_two_inputs_choose_one(corpus, capsys):
    rng = np.random.default_rng(4)
    np.save(corpus / "a.npy", rng.standard_normal((2, 4)).astype(np.float32))
    assert run_cli(["compile", "two_inputs.onnx", "-o", "a.onnx", "--input", "a"], capsys).rc == 0
    assert run_cli(["compile", "two_inputs.onnx", "-o", "b.onnx", "--input", "b"], capsys).rc == 0
    names = [[o.name for o in onnx.load(str(corpus / f)).graph.input] for f in ("a.onnx", "b.onnx")]
    assert all({"a", "b"} <= set(n) for n in names)


@pytest.mark.parametrize("explained", ["a", "b"])
def test_cli_explains_each_input_of_a_two_input_model(corpus, capsys, explained):
    """The other input is fed from the .npz; LRP-0 on y = a Wa + b Wb gives R = x * w[:, target]."""
    args = ["explain", "two_inputs.onnx", "ab.npz", "--out", "r", "--rule", "lrp0", "--target", "0"]
    outcome = run_cli([*args, "--input", explained, "--quiet"], capsys)
    assert outcome.rc == 0, outcome.err
    model = onnx.load(str(corpus / "two_inputs.onnx"))
    weight = onnx.numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == f"w{explained}"))
    data = np.load(corpus / "ab.npz")[explained]
    relevance = np.stack([np.load(corpus / "r" / f"ab_{i:04d}.npy") for i in range(len(data))])
    np.testing.assert_allclose(relevance, data * weight[:, 0], rtol=1e-5, atol=1e-6)


def test_explain_with_a_zoo_file_path_preprocesses_like_the_zoo_name(corpus, capsys):
    zoo_file = zoo.resolve_model("mnist-lenet5")
    (corpus / "copy.onnx").write_bytes(zoo_file.read_bytes())  # a copy elsewhere: found by its sha256
    for model, out in (("mnist-lenet5", "by_name"), (str(zoo_file), "by_path"), ("copy.onnx", "by_copy")):
        assert run_cli(["explain", model, str(ZOO_SAMPLE), "--out", out, "--quiet"], capsys).rc == 0
    stem = ZOO_SAMPLE.stem
    expected = np.load(corpus / "by_name" / f"{stem}.npy")
    for out in ("by_name", "by_path", "by_copy"):
        assert json.loads((corpus / out / "explain.json").read_text())["inputs"][0]["predicted"] == 2
        np.testing.assert_array_equal(np.load(corpus / out / f"{stem}.npy"), expected)


# ----------------------------------------------------------------------------- subprocess cases
HANGING = [
    ["compile", "fifo.onnx", "-o", "out.onnx"],
    ["inspect", "fifo.onnx"],
    ["explain", "good.onnx", "fifo.png", "--out", "results"],
    ["explain", "good.onnx", "fifo.npy", "--out", "results"],
    ["evaluate", "good.onnx", "fifo.npy", "--out", "results"],
    ["convert", "lrp-toolbox", "fifo.txt", "-o", "m.onnx"],
    ["compile", "/dev/zero", "-o", "out.onnx"],
    ["explain", "good.onnx", "/dev/zero", "--out", "results"],
]


def _limit_memory() -> None:
    limit = 3 << 30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


@pytest.mark.parametrize("argv", HANGING, ids=[" ".join(a) for a in HANGING])
def test_special_files_are_refused_before_reading(corpus, argv):
    before = snapshot(corpus)
    code = "import sys; from onnxlrp.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, *argv],
            cwd=corpus,
            capture_output=True,
            text=True,
            timeout=120,
            preexec_fn=_limit_memory,
            env=env,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(argv)} hung")
    assert_refused(Outcome(done.returncode, done.stdout, done.stderr), argv[0])
    assert_unchanged(before, corpus)


def test_debug_shows_the_traceback(corpus):
    code = "import sys; from onnxlrp.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", code, "--debug", "compile", "text.onnx", "-o", "out.onnx"],
        cwd=corpus,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "Traceback" in done.stderr


# ----------------------------------------------------------------------------- the Python API
@pytest.mark.parametrize("model", [None, 123, [1, 2], "", "nope.onnx"])
def test_api_refuses_things_that_are_not_models(corpus, model):
    with pytest.raises(onnxlrp.OnnxLrpError):
        onnxlrp.compile(model)
    with pytest.raises(onnxlrp.OnnxLrpError):
        onnxlrp.RelevanceSession(model)


API_BAD_OPTIONS = [
    {"rule": "epsilon", "epsilon": 0.0},
    {"rule": "epsilon", "epsilon": float("nan")},
    {"rule": "epsilon", "epsilon": float("inf")},
    {"rule": "gamma", "gamma": float("nan")},
    {"rule": "gamma", "gamma": -0.5},
    {"rule": "alphabeta", "alpha": float("nan"), "beta": float("nan")},
    {"rule": "alphabeta", "alpha": 3.0, "beta": 1.0},
    {"rule": "zplus", "stabilizer": 0.0},
    {"rule": "gamma", "stabilizer": -1.0},
    {"composite": "epsilon-gamma-box", "low": float("nan")},
    {"composite": "epsilon-gamma-box", "low": 1.0, "high": -1.0},
    {"composite": "epsilon-gamma-box", "low": np.array([0.0, 2.0]), "high": np.array([1.0, 1.0])},
    {"rule": "epsilon", "rules_by_name": {"fc": "alphabeta:3,1"}},
    {"rule": "nope"},
    {"composite": "nope"},
    {"seed": "nope"},
    {"expose": ["r", "r"]},
    {"expose": ["nope"]},
    {"start": "nope"},
    {"output": "nope"},
    {"input": "nope"},
]


@pytest.mark.parametrize("options", API_BAD_OPTIONS, ids=[repr(o) for o in API_BAD_OPTIONS])
def test_api_compile_refuses_bad_options(options):
    with pytest.raises(onnxlrp.OnnxLrpError):
        onnxlrp.compile(small_net(), **options)


RULE_CONSTRUCTORS = [
    lambda: onnxlrp.rules.Epsilon(float("nan")),
    lambda: onnxlrp.rules.Epsilon(0.0),
    lambda: onnxlrp.rules.Gamma(float("inf")),
    lambda: onnxlrp.rules.AlphaBeta(3.0, 1.0),
    lambda: onnxlrp.rules.AlphaBeta(float("nan"), float("nan")),
    lambda: onnxlrp.rules.ZPlus(stabilizer=0.0),
    lambda: onnxlrp.rules.Flat(stabilizer=float("nan")),
    lambda: onnxlrp.rules.WSquare(stabilizer=-1.0),
    lambda: onnxlrp.rules.ZBox(1.0, 1.0),
    lambda: onnxlrp.rules.ZBox(np.zeros(3), np.array([1.0, np.nan, 1.0])),
    lambda: onnxlrp.rules.parse_rule("epsilon:abc"),
    lambda: onnxlrp.rules.parse_rule("epsilon:nan"),
]


@pytest.mark.parametrize("make", RULE_CONSTRUCTORS, ids=range(len(RULE_CONSTRUCTORS)))
def test_rules_refuse_bad_parameters(make):
    with pytest.raises(onnxlrp.OnnxLrpError):
        make()


@pytest.mark.parametrize("name", [n for n in BAD_MODELS if n not in ("folder.onnx", "missing.onnx")])
def test_api_compile_refuses_bad_models(corpus, name):
    with pytest.raises(onnxlrp.OnnxLrpError):
        onnxlrp.compile(corpus / name)


@pytest.fixture(scope="module")
def session() -> onnxlrp.RelevanceSession:
    return onnxlrp.RelevanceSession(onnxlrp.compile(small_net()))


def _x(n: int = 2) -> np.ndarray:
    return np.random.default_rng(5).standard_normal((n, *SHAPE)).astype(np.float32)


@pytest.mark.parametrize("target", [CLASSES, -2, 10**6, [0, CLASSES], 1.5, "a"])
def test_api_run_refuses_out_of_range_targets(session, target):
    with pytest.raises(onnxlrp.OnnxLrpError, match="target"):
        session.run(_x(), target=target)
    with pytest.raises(onnxlrp.OnnxLrpError, match="target"):
        onnxlrp.explain(small_net(), _x(), target=target)


@pytest.mark.parametrize(
    "x",
    [
        np.zeros((2, 3, 8, 8), np.float32),
        np.zeros((0, *SHAPE), np.float32),
        np.zeros(SHAPE, np.float32),
        np.full((1, *SHAPE), np.nan, np.float32),
        np.full((1, *SHAPE), 1e300),
        np.array([{"a": 1}], dtype=object),
    ],
    ids=["channels", "batch0", "no-batch", "nan", "beyond-float32", "object"],
)
def test_api_run_refuses_bad_inputs(session, x):
    with pytest.raises(onnxlrp.OnnxLrpError):
        session.run(x)


def test_api_run_accepts_valid_targets(session):
    x = _x(3)
    for target in (None, -1, 0, CLASSES - 1, [0, 1, -1], np.array([2, 2, 2])):
        out = session.run(x, target=target)
        assert np.isfinite(out["relevance"]).all()


def test_api_runs_every_float_input():
    from corpus import two_input_net

    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((2, 4)).astype(np.float32), rng.standard_normal((2, 5)).astype(np.float32)
    model = two_input_net()
    session_a = onnxlrp.RelevanceSession(onnxlrp.compile(model, input="a", rule="lrp0"))
    session_b = onnxlrp.RelevanceSession(onnxlrp.compile(model, input="b", rule="lrp0"))
    ra = session_a.run({"a": a, "b": b}, target=0)["relevance"]
    rb = session_b.run({"a": a, "b": b}, target=0)["relevance"]
    weights = {init.name: onnx.numpy_helper.to_array(init) for init in model.graph.initializer}
    # LRP-0 on y = a Wa + b Wb (one linear layer over both inputs): R = x * w[:, t] (bias-free)
    np.testing.assert_allclose(ra, a * weights["wa"][:, 0], atol=1e-5)
    np.testing.assert_allclose(rb, b * weights["wb"][:, 0], atol=1e-5)
    with pytest.raises(onnxlrp.OnnxLrpError, match="b"):
        session_a.run(a)  # the other input must be fed


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_api_other_float_types_match_the_reference(dtype):
    """Computed in float32: equal to the reference on the model's own (rounded) weights and input."""
    from corpus import small_net_weights
    from reference import reference_lrp, single_rule

    rounded = {k: v.astype(dtype).astype(np.float32) for k, v in small_net_weights().items()}
    x = _x(2).astype(dtype)
    session = onnxlrp.RelevanceSession(onnxlrp.compile(small_net(dtype), rule="epsilon", epsilon=0.1))
    relevance = session.run(x)["relevance"]
    reference = reference_lrp(small_net(weights=rounded), x.astype(np.float64), single_rule(("epsilon", 0.1)))
    expected = reference["relevance"]
    assert relevance.dtype == np.float32 and np.isfinite(relevance).all()
    assert np.abs(relevance - expected).max() <= 1e-5 * np.abs(expected).max()


def test_api_ir3_model_matches_its_modern_copy():
    from corpus import ir3_net

    x = _x(2)
    old = onnxlrp.explain(ir3_net(), x, rule="epsilon")
    new = onnxlrp.explain(small_net(), x, rule="epsilon")
    np.testing.assert_allclose(old, new, atol=1e-6 * np.abs(new).max())


def test_api_pruned_layer_gives_finite_relevance():
    from corpus import pruned_net

    for options in ({"rule": "gamma"}, {"rule": "wsquare"}, {"composite": "epsilon-gamma-box"}):
        relevance = onnxlrp.explain(pruned_net(), _x(2), **options)
        assert np.isfinite(relevance).all(), options
