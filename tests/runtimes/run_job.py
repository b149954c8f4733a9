"""Run relevance graphs in a Python runtime: onnxruntime, OpenVINO or onnx's ReferenceEvaluator.

    python tests/runtimes/run_job.py ort|openvino|reference JOB.json

The job format is run_node.mjs's: {"cases": [{"model", "inputs": {name: .npy}, "outputs": DIR}]}; each
case writes DIR/<k>.npy for its k-th output and DIR/names.json. Needs only numpy and the runtime, so
that it also runs in a separate virtual environment with an old onnxruntime.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def _ort(model: str, feeds: dict) -> tuple[list, list]:
    import onnxruntime as ort

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    listed = {i.name for i in session.get_inputs()}
    missing = sorted(set(feeds) - listed)
    if missing:
        raise RuntimeError(f"{model}: the session does not list the inputs {missing}")
    names = [o.name for o in session.get_outputs()]
    return names, session.run(names, feeds)


def _openvino(model: str, feeds: dict) -> tuple[list, list]:
    import onnx
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    listed = {name for port in compiled.inputs for name in port.get_names()}
    missing = sorted(set(feeds) - listed)
    if missing:
        raise RuntimeError(f"{model}: the compiled model does not list the inputs {missing}")
    results = compiled(feeds)
    # OpenVINO merges the names of tensors joined by Identity: ask for each graph output by name
    names = [output.name for output in onnx.load(model, load_external_data=False).graph.output]
    return names, [np.asarray(results[compiled.output(name)]) for name in names]


def _reference(model: str, feeds: dict) -> tuple[list, list]:
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(model)
    missing = sorted(set(feeds) - set(evaluator.input_names))
    if missing:
        raise RuntimeError(f"{model}: the evaluator does not list the inputs {missing}")
    return list(evaluator.output_names), evaluator.run(None, feeds)


RUNTIMES = {"ort": _ort, "openvino": _openvino, "reference": _reference}


def run_job(runtime: str, job: dict) -> None:
    """Run every case of `job` in `runtime` and write its outputs."""
    run = RUNTIMES[runtime]
    for case in job["cases"]:
        feeds = {name: np.load(path) for name, path in case["inputs"].items()}
        names, values = run(case["model"], feeds)
        out = Path(case["outputs"])
        out.mkdir(parents=True, exist_ok=True)
        for k, value in enumerate(values):
            np.save(out / f"{k}.npy", np.asarray(value))
        (out / "names.json").write_text(json.dumps(names))


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in RUNTIMES:
        sys.exit(f"usage: run_job.py {'|'.join(RUNTIMES)} JOB.json")
    run_job(sys.argv[1], json.loads(Path(sys.argv[2]).read_text()))
