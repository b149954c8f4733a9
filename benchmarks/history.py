"""Which compiler change moved what: the relevance graphs of several onnxlrp commits, timed in one run.

    python benchmarks/history.py            # the commits in HISTORY, writes benchmarks/history.json
    python benchmarks/history.py --quick    # LeNet only, a few rounds
    python benchmarks/history.py --commits HEAD~1 HEAD --cases lenet:1 resnet9:64 --out /tmp/h.json
                                            # a focused before/after (--memory: peak memory too)

Each commit's `onnxlrp/` is exported with `git archive` and compiles every case in a subprocess
(also timing the ResNet-50 compile and recording the relevance graph's file size). Then, in this
process, every commit's relevance graph and the onnxruntime forward pass run interleaved (each once
per round), so every commit's ratio relevance / forward comes from the same rounds. The relevance of
each commit is compared with the first commit's: a change that moved the numbers would show here.
run.py includes the table in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

from benchmarks import models  # noqa: E402
from benchmarks.run import RULES, interleaved, ort_options, paired_ratio  # noqa: E402
from onnxlrp.benchmarking import memory_in_subprocess  # noqa: E402

OUT = ROOT / "benchmarks" / "history.json"
HISTORY = [
    ("267f410", "start of this round (Where stabiliser, ScatterElements, depthwise ConvTranspose)"),
    ("b16a413", "graph built in place, equal weights stored once"),
    ("531308f", "stabilisers without Where (known signs, Relu(z) + eps, Cast)"),
    ("4e795c5", "max pooling: MaxUnpool for disjoint windows"),
    ("e1dd743", "average pooling: Resize for tiling windows"),
    ("875b672", "no dead nodes"),
    ("1c40d8f", "start of the 2026-12-01 round (zennit baseline fixed, `onnxlrp benchmark`)"),
    ("a23828f", "W+, W- and transposed kernels computed in the graph (file = model size)"),
    ("0bca38b", "a sum of non-negative tensors is non-negative (ResNet-9's z+ skips x-)"),
    ("f25cf1b", "alpha-beta stabiliser in the bias constant"),
    ("f6c46af", "portable graph by default: max-pool relevance routed without MaxPool's Indices (issue 15)"),
    ("a459e94", "faster portable max-pool routing (taps moved last by a cheap Transpose, per-tap shares)"),
    ("15dd7be", "stabiliser of unknown sign as Clip of a steep line (no GreaterOrEqual/Cast)"),
]
CASES = [(net, batch) for net in ("lenet", "cifar-paper", "resnet9") for batch in (1, 64)] + [("resnet50", 1)]

COMPILE_SCRIPT = """
import json, statistics, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import onnx, onnxlrp
jobs, out, repeats = json.loads(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
result = {}
for case, path, rule, kwargs in jobs:
    proto = onnx.load(path)
    target = out / f"{case}-{rule}.onnx"
    times = []
    for _ in range(repeats if case == "resnet50" else 1):
        start = time.perf_counter()
        model = onnxlrp.compile(proto, **kwargs)
        times.append(time.perf_counter() - start)
    onnx.save(model, str(target))
    result[f"{case}:{rule}"] = {"file": str(target), "compile_s": statistics.median(times),
                                "mib": target.stat().st_size / 2**20}
print(json.dumps(result))
"""


def short_hash(revision: str) -> str:
    done = subprocess.run(["git", "rev-parse", "--short", revision], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or revision


def compile_at(commit: str, folder: Path, cases: list[str], repeats: int) -> dict:
    """Compile every case with onnxlrp as of `commit` (exported into `folder`)."""
    source = folder / commit
    source.mkdir()
    archive = subprocess.run(["git", "archive", commit, "onnxlrp"], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True)
    jobs = [(case, str(models.load_case(case)[1]), rule, kw) for case in cases for rule, kw in RULES.items()]
    done = subprocess.run(
        [sys.executable, "-c", COMPILE_SCRIPT, str(source), json.dumps(jobs), str(source), str(repeats)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _inputs(session: ort.InferenceSession) -> set[str]:
    return {i.name for i in session.get_inputs()}


def time_case(
    case: str,
    batch: int,
    rule: str,
    graphs: dict,
    rounds: int,
    budget: float,
    memory: bool = False,
    cpu_time: bool = False,
) -> dict:
    """Per commit: median per-round ratio (relevance graph / forward) and the difference of its
    relevance from the first commit's."""

    threads = 1 if cpu_time else 2

    def session(path: str) -> ort.InferenceSession:
        return ort.InferenceSession(path, ort_options(threads), providers=["CPUExecutionProvider"])

    x = models.sample_input(case, batch)
    forward = session(str(models.load_case(case)[1]))
    name = forward.get_inputs()[0].name
    sessions = {commit: session(graph) for commit, graph in graphs.items()}
    # graphs from before `target` became a plain input take none; later ones need it (-1: predicted)
    feeds = {
        c: {name: x, **({"target": np.full(len(x), -1, np.int64)} if "target" in _inputs(s) else {})}
        for c, s in sessions.items()
    }
    outputs = {c: s.run(["relevance"], feeds[c])[0] for c, s in sessions.items()}
    first = next(iter(outputs.values()))
    fns = {"forward": lambda: forward.run(None, {name: x})}
    fns.update({c: (lambda c=c, s=s: s.run(["relevance"], feeds[c])) for c, s in sessions.items()})
    times = interleaved(fns, rounds, budget, clock=time.process_time if cpu_time else time.perf_counter)
    result = {
        "forward_ms": 1e3 * statistics.median(times["forward"]),
        "commits": {
            c: {
                "ms": 1e3 * statistics.median(times[c]),
                "vs_forward": paired_ratio(times[c], times["forward"]),
                "max_rel_diff": float(np.abs(outputs[c] - first).max() / np.abs(first).max()),
            }
            for c in sessions
        },
    }
    if memory:
        del sessions, fns
        with tempfile.TemporaryDirectory() as folder:
            x_file = str(Path(folder) / "x.npy")
            np.save(x_file, x)
            for c, graph in graphs.items():
                result["commits"][c]["memory"] = memory_in_subprocess(
                    graph, x_file, threads, ["CPUExecutionProvider"]
                )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="LeNet only, 3 rounds")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--commits", nargs="+", help="these commits instead of HISTORY's")
    parser.add_argument("--cases", nargs="+", help="NET:BATCH pairs instead of the default cases")
    parser.add_argument("--rules", nargs="+", choices=list(RULES), default=list(RULES))
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--memory", action="store_true", help="also each graph's peak memory (subprocess)")
    parser.add_argument(
        "--cpu-time", action="store_true", help="1 thread, CPU seconds (steadier on a busy machine)"
    )
    args = parser.parse_args(argv)
    cases = [c for c in CASES if c[0] == "lenet"] if args.quick else CASES
    if args.cases:
        cases = [(net, int(batch)) for net, batch in (c.split(":") for c in args.cases)]
    history = [(short_hash(c), f"{c} (given on the command line)") for c in args.commits or []] or HISTORY
    rounds, budget = (3, 5.0) if args.quick else (15, 60.0)
    rounds = args.rounds or rounds
    result = {"commits": dict(history), "compile": {}, "runs": [], "cpu_time": args.cpu_time}
    with tempfile.TemporaryDirectory() as folder:
        for commit, label in history:
            print(f"compile at {commit}: {label}", flush=True)
            result["compile"][commit] = compile_at(commit, Path(folder), sorted({c for c, _ in cases}), 3)
        for case, batch in cases:
            for rule in args.rules:
                graphs = {c: result["compile"][c][f"{case}:{rule}"]["file"] for c, _ in history}
                row = time_case(case, batch, rule, graphs, rounds, budget, args.memory, args.cpu_time)
                result["runs"].append({"case": case, "batch": batch, "rule": rule, **row})
                ratios = {c: round(v["vs_forward"], 2) for c, v in row["commits"].items()}
                print(f"{case} b{batch} {rule}: {ratios}", flush=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
