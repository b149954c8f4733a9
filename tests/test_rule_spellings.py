"""Every command accepts the same rule spellings: eps, epsilon:0.25, alphabeta:3,2, composite:NAME, NAME.

The expected compile arguments below are written out by hand (not from onnxlrp.methods), and each
command's result is compared with onnxlrp.compile called with them.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import onnxlrp
from onnxlrp.cli import main
from onnxlrp.rules import AlphaBeta, Epsilon
from tests.test_explain_cli import tiny_net

# spelling -> (compile keyword arguments, the label `onnxlrp evaluate` reports)
SPELLINGS = {
    "eps": ({"rule": "epsilon"}, "epsilon:1"),
    "epsilon:0.25": ({"rule": Epsilon(0.25)}, "epsilon:0.25"),
    "alphabeta:3,2": ({"rule": AlphaBeta(3.0, 2.0)}, "alphabeta:3,2"),
    "composite:epsilon-plus": ({"composite": "epsilon-plus"}, "composite:epsilon-plus"),
    "epsilon-plus": ({"composite": "epsilon-plus"}, "composite:epsilon-plus"),
}


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("spellings")
    path = folder / "tiny.onnx"
    onnx.save(tiny_net(), path)
    x = np.random.default_rng(3).uniform(-1, 1, (4, 3, 8, 8)).astype(np.float32)
    np.save(folder / "x.npy", x)
    return path, folder / "x.npy", x


def reference(path, x, kwargs) -> np.ndarray:
    return onnxlrp.RelevanceSession(onnxlrp.compile(str(path), **kwargs)).run(x)["relevance"]


@pytest.mark.parametrize("spec", list(SPELLINGS))
def test_compile_accepts(spec, model_and_data, tmp_path):
    path, _, x = model_and_data
    out = tmp_path / "r.onnx"
    assert main(["compile", str(path), "--rule", spec, "-o", str(out)]) == 0
    got = onnxlrp.RelevanceSession(onnx.load(out)).run(x)["relevance"]
    np.testing.assert_array_equal(got, reference(path, x, SPELLINGS[spec][0]))


@pytest.mark.parametrize("spec", list(SPELLINGS))
def test_inspect_accepts(spec, model_and_data, capsys):
    path, _, _ = model_and_data
    assert main(["inspect", str(path), "--rule", spec]) == 0
    table = capsys.readouterr().out
    expected = "alphabeta" if "alphabeta" in spec else "epsilon"
    assert expected in table


@pytest.mark.parametrize("spec", list(SPELLINGS))
def test_explain_accepts(spec, model_and_data, tmp_path):
    path, npy, x = model_and_data
    assert main(["explain", str(path), str(npy), "--rule", spec, "--out", str(tmp_path), "--quiet"]) == 0
    want = reference(path, x, SPELLINGS[spec][0])
    for i in range(len(x)):
        np.testing.assert_array_equal(np.load(tmp_path / f"x_{i:04d}.npy"), want[i])


@pytest.mark.parametrize("spec", list(SPELLINGS))
def test_evaluate_accepts(spec, model_and_data, tmp_path):
    path, npy, _ = model_and_data
    args = ["evaluate", str(path), str(npy), "--rule", spec, "--baselines", "none", "--steps", "2"]
    assert main([*args, "--out", str(tmp_path), "--no-progress"]) == 0
    doc = json.loads((tmp_path / "aopc.json").read_text())
    assert [row["method"] for row in doc["aopc"]] == [SPELLINGS[spec][1]]


@pytest.mark.parametrize("command", ["compile", "inspect", "explain", "evaluate"])
def test_unknown_rule_is_one_error_line(command, model_and_data, tmp_path, capsys):
    path, npy, _ = model_and_data
    args = {
        "compile": ["compile", str(path), "-o", str(tmp_path / "r.onnx")],
        "inspect": ["inspect", str(path)],
        "explain": ["explain", str(path), str(npy), "--out", str(tmp_path)],
        "evaluate": ["evaluate", str(path), str(npy), "--out", str(tmp_path)],
    }[command]
    assert main([*args, "--rule", "banana"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "banana" in err[0] and err[0].startswith(f"onnxlrp {command}: error:")
