"""The runtime matrix: the zoo's relevance graphs (3 models x 3 composites) run in every runtime a
deploying user might pick, each agreeing with Python onnxruntime and honouring a fed target.

Runtimes: onnxruntime-node and onnxruntime-web (WASM) under Node (npm packages from package.json), the
oldest onnxruntime we support (a separate virtual environment, see .ci/run), OpenVINO and onnx's
ReferenceEvaluator. A runtime that is not installed is skipped with a reason; CI installs them all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import onnxlrp
from onnxlrp import zoo

ROOT = Path(__file__).resolve().parents[1]
RUNNERS = Path(__file__).parent / "runtimes"
sys.path.insert(0, str(RUNNERS))
from run_job import run_job  # noqa: E402

MODELS = ("mnist-lenet5", "cifar10-paper", "cifar10-resnet")
RULES = ("epsilon", "epsilon-plus", "epsilon-gamma-box")
CASES = [(m, r) for m in MODELS for r in RULES]
# operators that some runtime lacks or gets wrong (MaxUnpool: OpenVINO, WebGPU, the reference
# evaluator; Min: WebGPU; ScatterElements: TensorRT, WebGPU)
UNPORTABLE = {"MaxUnpool", "Min", "ScatterElements", "ScatterND"}
OLD_ORT_PYTHON = Path(os.environ.get("ONNXLRP_OLD_ORT_PYTHON", ROOT / ".venv-ort-old" / "bin" / "python"))
TOLERANCE = 1e-5


def zoo_inputs(model: str, count: int) -> np.ndarray:
    """The first `count` sample images of a zoo model, preprocessed as it was trained."""
    entry = zoo.load(model)
    return np.concatenate([entry.preprocess(path) for path in zoo.sample_paths(model)[:count]])


@pytest.fixture(scope="module")
def matrix(tmp_path_factory) -> dict:
    """Compile the 9 graphs, write their inputs (2 samples; the second with a fed non-predicted
    target) and Python onnxruntime's outputs, the reference every runtime is compared with."""
    folder = tmp_path_factory.mktemp("runtimes")
    cases = {}
    for model in MODELS:
        x = zoo_inputs(model, 2)
        for rule in RULES:
            graph = onnxlrp.compile(zoo.resolve_model(model), composite=rule)
            case = folder / f"{model}.{rule}"
            case.mkdir()
            onnx.save(graph, case / "graph.onnx")
            session = onnxlrp.RelevanceSession(graph)
            predicted = session.run(x)
            # a class the second sample is not predicted as: the runtime must explain that one
            other = int((np.argmax(predicted["logits"][1]) + 5) % predicted["logits"].shape[1])
            target = np.array([-1, other], np.int64)
            np.save(case / "input.npy", x)
            np.save(case / "target.npy", target)
            cases[(model, rule)] = {
                "folder": case,
                "graph": graph,
                "expected": session.run(x, target=target),
                "predicted": predicted,
            }
    return cases


def _job(matrix: dict, runtime: str) -> dict:
    return {
        "cases": [
            {
                "model": str(c["folder"] / "graph.onnx"),
                "inputs": {
                    "input": str(c["folder"] / "input.npy"),
                    "target": str(c["folder"] / "target.npy"),
                },
                "outputs": str(c["folder"] / runtime),
            }
            for c in matrix.values()
        ]
    }


def _node_runner(backend: str):
    def run(job_file: Path) -> None:
        if shutil.which("node") is None:
            pytest.skip("node is not installed")
        package = "onnxruntime-node" if backend == "node" else "onnxruntime-web"
        if not (ROOT / "node_modules" / package).is_dir():
            pytest.skip(f"{package} is not installed: ONNXRUNTIME_NODE_INSTALL=skip npm ci")
        command = ["node", str(RUNNERS / "run_node.mjs"), backend, str(job_file)]
        subprocess.run(command, check=True, cwd=ROOT, capture_output=True, text=True, timeout=600)

    return run


def _old_onnxruntime(job_file: Path) -> None:
    if not OLD_ORT_PYTHON.exists():
        pytest.skip(f"no old onnxruntime at {OLD_ORT_PYTHON} (.ci/run makes it)")
    command = [str(OLD_ORT_PYTHON), str(RUNNERS / "run_job.py"), "ort", str(job_file)]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=600)


def _in_process(runtime: str, module: str):
    def run(job_file: Path) -> None:
        pytest.importorskip(module)
        run_job(runtime, json.loads(job_file.read_text()))

    return run


RUNTIMES = {
    "onnxruntime-node": _node_runner("node"),
    "onnxruntime-web-wasm": _node_runner("wasm"),
    "onnxruntime-oldest": _old_onnxruntime,
    "openvino": _in_process("openvino", "openvino"),
    "onnx-reference": _in_process("reference", "onnx.reference"),
}


@pytest.fixture(scope="module")
def run_in(matrix):
    """run_in(runtime) runs all 9 graphs in `runtime` once (one process for all of them); a skip or
    failure is repeated for every case."""
    outcome: dict[str, tuple[str, str]] = {}

    def run(runtime: str) -> None:
        if runtime not in outcome:
            job_file = next(iter(matrix.values()))["folder"].parent / f"{runtime}.json"
            job_file.write_text(json.dumps(_job(matrix, runtime)))
            try:
                RUNTIMES[runtime](job_file)
                outcome[runtime] = ("ok", "")
            except pytest.skip.Exception as skipped:
                outcome[runtime] = ("skip", str(skipped))
            except subprocess.CalledProcessError as error:
                outcome[runtime] = ("fail", f"{runtime} failed: {error.stderr[-3000:]}")
            except Exception as error:
                outcome[runtime] = ("fail", f"{runtime} failed: {error}")
        kind, message = outcome[runtime]
        if kind == "skip":
            pytest.skip(message)
        if kind == "fail":
            pytest.fail(message)

    return run


def _outputs(folder: Path) -> dict[str, np.ndarray]:
    names = json.loads((folder / "names.json").read_text())
    return {name: np.load(folder / f"{k}.npy") for k, name in enumerate(names)}


def assert_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """Per sample: max |got - want| <= 1e-5 x max |want|."""
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    for k in range(len(want)):
        scale = np.abs(want[k]).max()
        error = np.abs(got[k].astype(np.float64) - want[k]).max()
        assert error <= TOLERANCE * scale, f"{what}, sample {k}: max error {error:.3g} (scale {scale:.3g})"


@pytest.mark.parametrize("model, rule", CASES)
def test_graph_is_portable(matrix, model, rule):
    """The default graph: a plain int64 target input, no initializer behind it, IR 8 for opset 17,
    and no operator that a runtime lacks."""
    graph = matrix[(model, rule)]["graph"]
    target = next(i for i in graph.graph.input if i.name == "target")
    assert target.type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert "target" not in {t.name for t in graph.graph.initializer}
    assert graph.ir_version == 8
    ops = {n.op_type for n in graph.graph.node}
    assert not ops & UNPORTABLE
    # every initializer is used (onnxruntime warns about unused ones when a session is created)
    used = {name for n in graph.graph.node for name in n.input}
    assert not {t.name for t in graph.graph.initializer} - used
    assert all(len([o for o in n.output if o]) == 1 for n in graph.graph.node if n.op_type == "MaxPool")


@pytest.mark.parametrize("model, rule", CASES)
def test_fed_target_changes_the_map(matrix, model, rule):
    """Sanity of the matrix itself: the second sample's fed target gives a clearly different map
    from its predicted class's, so a runtime that ignores the feed cannot pass."""
    case = matrix[(model, rule)]
    got, predicted = case["expected"]["relevance"][1], case["predicted"]["relevance"][1]
    assert np.abs(got - predicted).max() > 0.1 * np.abs(got).max()


@pytest.mark.parametrize("runtime", list(RUNTIMES))
@pytest.mark.parametrize("model, rule", CASES)
def test_runtime_agrees(matrix, run_in, runtime, model, rule):
    run_in(runtime)
    case = matrix[(model, rule)]
    got = _outputs(case["folder"] / runtime)
    expected = case["expected"]
    assert list(got) == list(expected), f"{runtime}: outputs {list(got)}, expected {list(expected)}"
    assert_close(got["logits"], expected["logits"], f"{runtime} {model} {rule}: logits")
    predicted_map = case["predicted"]["relevance"][1]
    ignored = np.abs(got["relevance"][1] - predicted_map).max() <= TOLERANCE * np.abs(predicted_map).max()
    assert not ignored, (
        f"{runtime} {model} {rule}: the fed target was ignored (the predicted class explained)"
    )
    assert_close(got["relevance"], expected["relevance"], f"{runtime} {model} {rule}: relevance")


def test_compile_command_takes_the_runtime(tmp_path):
    """`onnxlrp compile --runtime onnxruntime` writes the onnxruntime-only form; both forms agree."""
    from onnxlrp.cli import main

    x = zoo_inputs("cifar10-paper", 2)
    maps = {}
    for runtime in ("portable", "onnxruntime"):
        out = tmp_path / f"{runtime}.onnx"
        assert (
            main(["compile", "cifar10-paper", "--rule", "epsilon", "--runtime", runtime, "-o", str(out)]) == 0
        )
        ops = {n.op_type for n in onnx.load(out).graph.node}
        assert ("MaxUnpool" in ops) == (runtime == "onnxruntime")
        maps[runtime] = onnxlrp.RelevanceSession(out).run(x, target=[-1, 4])["relevance"]
    assert_close(maps["onnxruntime"], maps["portable"], "onnxruntime form vs portable")
