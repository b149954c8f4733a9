"""Does the benchmark's way of timing bias the relevance / forward ratio? (benchmarks/ANALYSIS.md)

    python benchmarks/thread_pools.py [--cases resnet50:1 cifar-paper:64] [--rule epsilon] [--threads 2]

run.py times the forward and the relevance graph as two sessions alternating in one process, with
idle onnxruntime workers sleeping (`session.intra_op.allow_spinning=0`). This prints that ratio next
to three other ways, each in a fresh process:
- `nospin`: the benchmark's setting;
- `spin`: two per-session pools, both spinning (onnxruntime's default; the idle session's workers
  spin while the other runs);
- `global`: one global thread pool shared by both sessions, spinning;
- `alone`: each session alone in its own process, onnxruntime's defaults (the forward timed twice,
  before and after the relevance graph).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

from benchmarks import models  # noqa: E402
from benchmarks.run import RULES  # noqa: E402

CACHE = models.CACHE / "thread_pools"


def graphs(case: str, rule: str) -> tuple[Path, Path]:
    """The forward (batch freed) and its relevance graph, compiled once into the cache."""
    import onnx

    import onnxlrp
    from onnxlrp.canonical import free_batch_dimension

    CACHE.mkdir(parents=True, exist_ok=True)
    forward, relevance = CACHE / f"{case}.onnx", CACHE / f"{case}-{rule}.onnx"
    if not relevance.exists():
        model = onnx.load(str(models.load_case(case)[1]))
        free_batch_dimension(model)
        onnx.save(model, str(forward))
        onnx.save(onnxlrp.compile(model, **RULES[rule]), str(relevance))
    return forward, relevance


def feeds(session: ort.InferenceSession, case: str, batch: int) -> dict:
    x = models.sample_input(case, batch)
    feed = {session.get_inputs()[0].name: x}
    if "target" in {i.name for i in session.get_inputs()}:
        feed["target"] = np.full(batch, -1, np.int64)
    return feed


def options(mode: str, threads: int) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if mode == "global":
        so.use_per_session_threads = False
        return so
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    if mode == "nospin":
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def probe(mode: str, case: str, batch: int, rule: str, threads: int, rounds: int) -> float:
    """In a fresh process: the median per-round ratio (interleaved modes) or, for `alone`, the
    median seconds of one session (rule "" for the forward)."""
    if mode == "global":
        import onnxruntime.capi._pybind_state as state

        state.set_global_thread_pool_sizes(threads, 1)  # before the first session
    forward, relevance = graphs(case, rule or "epsilon")
    paths = [relevance if rule else forward] if mode == "alone" else [forward, relevance]
    cpu = ["CPUExecutionProvider"]
    sessions = [ort.InferenceSession(str(p), options(mode, threads), providers=cpu) for p in paths]
    fed = [(s, feeds(s, case, batch)) for s in sessions]
    runs = [lambda s=s, f=f: s.run(None, f) for s, f in fed]
    for run in runs:
        run()
    samples = []
    for _ in range(rounds):
        times = []
        for run in runs:
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        samples.append(times[0] if mode == "alone" else times[1] / times[0])
    return statistics.median(samples)


def in_process(*args) -> float:
    done = subprocess.run(
        [sys.executable, __file__, "--probe", json.dumps(args)], capture_output=True, text=True, check=True
    )
    return float(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["resnet50:1", "cifar-paper:64"])
    parser.add_argument("--rule", choices=list(RULES), default="epsilon")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        print(probe(*json.loads(args.probe)))
        return 0
    print("| case | batch | nospin (the benchmark's) | spin | global | alone |")
    print("| --- | --- | --- | --- | --- | --- |")
    for case, batch in (c.split(":") for c in args.cases):
        graphs(case, args.rule)
        common = (case, int(batch), args.rule, args.threads, args.rounds)
        cells = [in_process(mode, *common) for mode in ("nospin", "spin", "global")]
        forward = ("alone", case, int(batch), "", args.threads, args.rounds)
        before, relevance, after = in_process(*forward), in_process("alone", *common), in_process(*forward)
        alone = relevance / statistics.mean([before, after])
        print(f"| {case} | {batch} | " + " | ".join(f"{v:.2f}" for v in [*cells, alone]) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
