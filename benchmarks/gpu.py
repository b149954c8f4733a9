"""GPU benchmark: onnxlrp on onnxruntime-gpu (CUDA) against zennit and PyTorch on CUDA.

Runs on the lent GPU machine (see ../shared/gpu/README.md for getting onnxruntime-gpu there):

    PYTHONPATH=/tmp/ortsite:. python3 benchmarks/gpu.py --out results.json [--deadline 300]

Per case (net x batch) and rule it first checks that onnxlrp (CUDA) and zennit (CUDA) agree (max
|difference| / max |zennit|; cuDNN may use TF32, so ~1e-3 is expected), then times in interleaved
rounds: onnxruntime forward, onnxlrp forward + relevance (both with inputs and outputs bound on the
GPU through IOBinding), PyTorch forward, PyTorch input gradient and zennit. Medians in ms.
`benchmarks/gpu_table.py` (run here) turns the JSON into the table in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

import onnxlrp  # noqa: E402
import onnxlrp.loading  # noqa: E402
from benchmarks import models  # noqa: E402
from benchmarks.zennit_compat import Gradient, logit_seed, make_composite  # noqa: E402

RULES = {"epsilon": {"rule": "epsilon"}, "epsilon-plus": {"composite": "epsilon-plus"}}
CASES = [
    ("lenet", 1),
    ("lenet", 64),
    ("cifar-paper", 1),
    ("cifar-paper", 64),
    ("resnet9", 1),
    ("resnet9", 64),
    ("resnet50", 1),
    ("resnet50", 64),
]
PROVIDERS = [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
DEVICE = "cuda"  # --smoke runs the same code on the CPU, to check the script before spending GPU time


def bound_runner(model, x: np.ndarray, input_name: str, output_names: list[str]):
    """A zero-argument callable running `model` on `x` with input and outputs kept on the GPU."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        model if isinstance(model, str) else model.SerializeToString(), options, providers=PROVIDERS
    )
    binding = session.io_binding()
    binding.bind_ortvalue_input(input_name, ort.OrtValue.ortvalue_from_numpy(x, DEVICE, 0))
    if "target" in {i.name for i in session.get_inputs()}:  # a relevance graph: explain the prediction
        target = np.full(len(x), -1, np.int64)
        binding.bind_ortvalue_input("target", ort.OrtValue.ortvalue_from_numpy(target, DEVICE, 0))
    for name in output_names:
        binding.bind_output(name, DEVICE, 0)

    def run():
        session.run_with_iobinding(binding)
        return binding

    return run, session, binding


def cuda_timed(fn):
    def run():
        result = fn()
        if DEVICE == "cuda":
            torch.cuda.synchronize()
        return result

    return run


def interleaved(fns: dict, rounds: int, deadline: float) -> dict:
    for fn in fns.values():
        fn()
        fn()
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for key, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
        if time.time() > deadline:
            break
    return {
        k: {
            "median_ms": 1e3 * statistics.median(v),
            "min_ms": 1e3 * min(v),
            "max_ms": 1e3 * max(v),
            "runs": len(v),
        }
        for k, v in times.items()
    }


def run_case(case: str, batch: int, rounds: int, deadline: float) -> dict:
    _, onnx_path, source = models.load_case(case)
    twin = models.folded_twin(case, onnx_path).to(DEVICE).eval()
    x = models.sample_input(case, batch)
    xt = torch.from_numpy(x).to(DEVICE)
    name = session_input(onnx_path)
    forward, _, _ = bound_runner(
        str(onnx_path), x, name, [o.name for o in onnxlrp.loading.load_model(str(onnx_path)).graph.output]
    )
    fns = {"ort_fwd": forward}

    def torch_forward():
        with torch.no_grad():
            return twin(xt)

    def torch_gradient():
        xg = xt.clone().requires_grad_(True)
        out = twin(xg)
        return torch.autograd.grad(out, xg, logit_seed(out.detach()))[0]

    fns["torch_fwd"] = cuda_timed(torch_forward)
    fns["torch_grad"] = cuda_timed(torch_gradient)
    agreement = {}
    for rule, options in RULES.items():
        relevance_model = onnxlrp.compile(str(onnx_path), **options)
        run, _, binding = bound_runner(relevance_model, x, name, ["relevance"])
        fns[f"lrp:{rule}"] = run
        run()
        ours = binding.copy_outputs_to_cpu()[0]
        hooked = copy.deepcopy(twin)  # zennit's hooks stay registered while timing: one copy per rule
        attributor = Gradient(model=hooked, composite=make_composite(rule, hooked))
        attributor.__enter__()
        theirs = attributor(xt, logit_seed)[1].detach().cpu().numpy()
        agreement[rule] = float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-30))
        fns[f"zennit:{rule}"] = cuda_timed(lambda a=attributor: a(xt, logit_seed)[1])
    timings = interleaved(fns, rounds, deadline)
    return {"case": case, "batch": batch, "weights": source, "agreement": agreement, "timings": timings}


def session_input(onnx_path) -> str:
    return ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).get_inputs()[0].name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--deadline", type=float, default=300, help="seconds for the whole run")
    parser.add_argument("--smoke", action="store_true", help="LeNet at batch 1 on the CPU, 2 rounds")
    args = parser.parse_args()
    global DEVICE, PROVIDERS, CASES
    if args.smoke:
        DEVICE, PROVIDERS, CASES, args.rounds = "cpu", ["CPUExecutionProvider"], [("lenet", 1)], 2
    else:
        assert "CUDAExecutionProvider" in ort.get_available_providers(), ort.get_available_providers()
    torch.backends.cudnn.benchmark = False
    end = time.time() + args.deadline
    results = {
        "device": torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu (smoke)",
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "cases": [],
    }
    for case, batch in CASES:
        if time.time() > end - 20:
            print(f"deadline: skipping {case} b{batch}", flush=True)
            continue
        start = time.time()
        per_case_deadline = min(end - 10, time.time() + max(10.0, (end - time.time()) / 4))
        result = run_case(case, batch, args.rounds, per_case_deadline)
        results["cases"].append(result)
        Path(args.out).write_text(json.dumps(results, indent=1))
        medians = {k: round(v["median_ms"], 2) for k, v in result["timings"].items()}
        print(
            f"{case} b{batch}: {time.time() - start:.1f}s agreement {result['agreement']} {medians}",
            flush=True,
        )


if __name__ == "__main__":
    main()
