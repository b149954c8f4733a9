"""How much a relevance graph costs next to the forward pass it explains.

`benchmark(model, batch=..., **compile_settings)` compiles the model, runs the onnxruntime forward
pass and the relevance graph (forward + relevance in one session) in interleaved rounds (each once
per round, rotating the order, so machine noise hits both alike), and reports median times, the
median of the per-round ratios, each one's peak memory (measured in a fresh subprocess) and the
compile time. The timing and memory helpers are shared with benchmarks/run.py.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from onnxlrp import runtime
from onnxlrp.assembly import TARGET
from onnxlrp.canonical import free_batch_dimension
from onnxlrp.compiler import compile
from onnxlrp.errors import OnnxLrpError
from onnxlrp.loading import ModelLike, load_model, save_model
from onnxlrp.profiling import Profile, profile_sessions

Progress = Callable[[str], None]


# --------------------------------------------------------------------------- timing
def interleaved(
    fns: dict[str, Callable[[], object]],
    rounds: int,
    budget_s: float | None = None,
    warmup: int = 1,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Run every callable once per round, rotating the order, after `warmup` runs each; stop after
    `rounds` rounds, or (at least 3 rounds in) once `budget_s` seconds have passed. Returns the
    seconds of every run per callable, read from `clock` (time.process_time: CPU seconds, steadier
    than wall time on a busy machine when the runs use one thread)."""
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    start = time.perf_counter()
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0 = clock()
            fns[name]()
            times[name].append(clock() - t0)
        if progress is not None:
            progress("round")
        if budget_s is not None and r >= 2 and time.perf_counter() - start > budget_s:
            break
    return times


def summary(ts: Sequence[float]) -> dict[str, float]:
    """Median, quartiles, extremes and count of a list of seconds."""
    q1, median, q3 = np.percentile(ts, [25, 50, 75])
    return {
        "median": float(median),
        "q1": float(q1),
        "q3": float(q3),
        "min": min(ts),
        "max": max(ts),
        "n": len(ts),
    }


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """Median over rounds of a_i / b_i (both measured in the same round)."""
    return float(statistics.median(x / y for x, y in zip(a, b, strict=True)))


# --------------------------------------------------------------------------- memory
def _status_kib(name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (peak RSS) to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def measure_peak(load: Callable[[], Callable[[], object]]) -> dict[str, float | str]:
    """Peak memory of `load()` (which builds a tool) and of one run of the tool it returns.
    run_mib: the peak during the run minus the RSS just before it (activations, buffers, arena);
    total_mib: the process's peak minus its RSS before loading (adds the weights and the session).
    Call in a fresh process (Linux only): peaks come from VmHWM reset through /proc/self/clear_refs."""
    before_load = _status_kib("VmRSS")
    fn = load()
    setup_peak = _status_kib("VmHWM")
    before = _status_kib("VmRSS")
    if not before or not _reset_peak():
        return {"error": "peak memory needs Linux's /proc/self/status and /proc/self/clear_refs"}
    fn()
    peak = _status_kib("VmHWM")
    return {"run_mib": (peak - before) / 1024, "total_mib": (max(setup_peak, peak) - before_load) / 1024}


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """The options of every benchmarked session: `threads` intra-op threads (None: onnxruntime's
    default), idle workers sleep instead of spinning (two sessions alternate in one process)."""
    return runtime.session_options(threads, spinning=False)


def _timed_session(
    path: str, x: np.ndarray, threads: int | None, providers: list[str]
) -> Callable[[], object]:
    session = ort.InferenceSession(path, session_options(threads), providers=providers)
    feed: dict[str, np.ndarray] = {session.get_inputs()[0].name: x}
    if TARGET in {i.name for i in session.get_inputs()}:  # a relevance graph: explain the predicted class
        feed[TARGET] = np.full(len(x), -1, np.int64)
    return lambda: session.run(None, feed)


_PROBE = (
    "import json, sys; import numpy as np; from onnxlrp import benchmarking as b; "
    "path, x, threads, providers = json.loads(sys.argv[1]); "
    "x = np.load(x); "
    "print(json.dumps(b.measure_peak(lambda: b._timed_session(path, x, threads, providers))))"
)


def memory_in_subprocess(path: str, x_file: str, threads: int | None, providers: list[str]) -> dict:
    """measure_peak of one session over the ONNX file `path` on the input saved in `x_file`, in a
    fresh Python process (so nothing else this process holds counts)."""
    package_root = str(Path(__file__).resolve().parent.parent)
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    )
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps([path, x_file, threads, providers])],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        return {"error": (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]}
    return json.loads(lines[-1])


# --------------------------------------------------------------------------- the benchmark
@dataclass
class BenchmarkResult:
    """What `benchmark` measured (seconds, MiB)."""

    batch: int
    input_shape: tuple[int, ...]
    settings: dict
    providers: list[str]
    forward: dict[str, float]
    relevance: dict[str, float]
    ratio: float  # median over rounds of relevance / forward
    compile_s: float
    model_mib: float
    graph_mib: float
    memory: dict[str, dict] = field(default_factory=dict)  # "forward"/"relevance" -> measure_peak
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)
    profile: Profile | None = None  # onnxruntime's per-op profile of both, when asked for

    def report(self) -> str:
        """A few lines for a terminal."""
        rule = ", ".join(f"{k}={v}" for k, v in self.settings.items() if v is not None) or "defaults"
        f, r = self.forward, self.relevance
        lines = [
            f"input {'x'.join(map(str, self.input_shape))} ({rule}; {', '.join(self.providers)})",
            f"forward    {1e3 * f['median']:9.2f} ms  [{1e3 * f['q1']:.2f}, {1e3 * f['q3']:.2f}]",
            f"relevance  {1e3 * r['median']:9.2f} ms  [{1e3 * r['q1']:.2f}, {1e3 * r['q3']:.2f}]"
            "  (forward + relevance in one session)",
            f"ratio      {self.ratio:9.2f}     median of {r['n']} interleaved rounds",
            f"compile    {self.compile_s:9.2f} s",
            f"file size  {self.model_mib:9.1f} MiB model, {self.graph_mib:.1f} MiB relevance graph",
        ]
        for name, peak in self.memory.items():
            if "error" in peak:
                lines.append(f"memory     {name}: not measured ({peak['error']})")
            else:
                lines.append(
                    f"memory     {name:<9} run {peak['run_mib']:7.1f} MiB, whole process "
                    f"{peak['total_mib']:.1f} MiB"
                )
        if self.profile is not None:
            lines.append(self.profile.report())
        load = " ".join(f"{v:.1f}" for v in self.load)
        lines.append(f"load average at start {load} (other work on the machine skews the times)")
        return "\n".join(lines)


def steps(rounds: int, memory: bool, compile_repeats: int, profile: bool = False) -> int:
    """How many times `benchmark` calls its progress callback with these settings."""
    return compile_repeats + rounds + (2 if memory else 0) + (1 if profile else 0)


def _input_shape(session: ort.InferenceSession, batch: int) -> tuple[int, ...]:
    info = session.get_inputs()[0]
    rest = info.shape[1:]
    if not all(isinstance(d, int) and d > 0 for d in rest):
        raise OnnxLrpError(
            f"input '{info.name}' has shape {info.shape}: only the batch dimension may be free to benchmark"
        )
    return (batch, *rest)


def benchmark(
    model: ModelLike,
    batch: int = 1,
    rounds: int = 20,
    providers: list[str] | None = None,
    threads: int | None = None,
    memory: bool = True,
    compile_repeats: int = 3,
    seed: int = 0,
    progress: Progress | None = None,
    profile_runs: int = 0,
    **compile_settings,
) -> BenchmarkResult:
    """Compile `model` with `compile_settings` and time its relevance graph against its forward
    pass on a random batch (uniform in [-1, 1]) of size `batch`; with `profile_runs`, also profile
    both with onnxruntime's profiler over that many runs (where the time goes, per kind of work)."""
    if batch < 1 or rounds < 1 or compile_repeats < 1 or profile_runs < 0:
        raise OnnxLrpError("batch, rounds and compile repeats must be at least 1 (profile runs 0 or more)")
    providers = providers or ["CPUExecutionProvider"]
    unknown = [p for p in providers if p not in ort.get_available_providers()]
    if unknown:
        raise OnnxLrpError(
            f"provider(s) {', '.join(unknown)} not available; this onnxruntime has "
            f"{', '.join(ort.get_available_providers())}"
        )
    tick = progress or (lambda _: None)
    forward_model = load_model(model)
    free_batch_dimension(forward_model)
    compile_times, graph = [], None
    for _ in range(compile_repeats):
        start = time.perf_counter()
        graph = compile(forward_model, **compile_settings)
        compile_times.append(time.perf_counter() - start)
        tick("compile")
    assert graph is not None
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as folder:
        forward_path, graph_path = Path(folder) / "forward.onnx", Path(folder) / "relevance.onnx"
        save_model(forward_model, forward_path)
        save_model(graph, graph_path)
        probe = ort.InferenceSession(str(graph_path), session_options(threads), providers=providers)
        shape, input_name = _input_shape(probe, batch), probe.get_inputs()[0].name
        del probe
        x = np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)
        fns = {
            "forward": _timed_session(str(forward_path), x, threads, providers),
            "relevance": _timed_session(str(graph_path), x, threads, providers),
        }
        load = os.getloadavg()
        times = interleaved(fns, rounds, progress=tick)
        del fns
        peaks = {}
        if memory:
            x_file = str(Path(folder) / "x.npy")
            np.save(x_file, x)
            for name, path in (("forward", forward_path), ("relevance", graph_path)):
                peaks[name] = memory_in_subprocess(str(path), x_file, threads, providers)
                tick("memory")
        profile = None
        if profile_runs:
            forward_feed = {input_name: x}
            profile = profile_sessions(
                str(forward_path),
                str(graph_path),
                forward_feed,
                {**forward_feed, TARGET: np.full(batch, -1, np.int64)},
                runs=profile_runs,
                threads=threads,
                providers=providers,
            )
            tick("profile")
        return BenchmarkResult(
            batch=batch,
            input_shape=shape,
            settings=dict(compile_settings),
            providers=providers,
            forward=summary(times["forward"]),
            relevance=summary(times["relevance"]),
            ratio=paired_ratio(times["relevance"], times["forward"]),
            compile_s=statistics.median(compile_times),
            model_mib=forward_path.stat().st_size / 2**20,
            graph_mib=graph_path.stat().st_size / 2**20,
            memory=peaks,
            load=load,
            profile=profile,
        )
