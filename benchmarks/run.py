"""onnxlrp benchmarks (issue 6): one command runs every case and writes BENCHMARKS.md.

    python benchmarks/run.py            # full run (tens of minutes on 2 cores)
    python benchmarks/run.py --quick    # smoke test: LeNet only, a few runs, writes nothing unless --out

Per case (net x batch) and rule (epsilon / EpsilonPlus composite) it checks that onnxlrp and zennit
agree, then times, in interleaved rounds (every tool once per round, so machine noise hits all of
them alike): onnxruntime forward, PyTorch forward, PyTorch input gradient, onnxlrp relevance
(forward + relevance in one onnxruntime session) and zennit. Each tool's peak memory is measured in
a fresh subprocess. It also times onnxlrp.compile, onnxruntime session options on the relevance
graph, and the prototype compiler rewrites of benchmarks/prototypes.py.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Set before torch loads its OpenMP runtime: worker threads that wait passively instead of spinning.
# On this shared, oversubscribed 2-core machine torch's default (spinning) OpenMP barrier made
# small-op torch and zennit runs 5-10x slower than with PASSIVE; documented in BENCHMARKS.md.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

import onnxlrp  # noqa: E402
from benchmarks import models, prototypes  # noqa: E402
from benchmarks.zennit_compat import Gradient, logit_seed, make_composite, zennit  # noqa: E402
from onnxlrp import benchmarking, profiling  # noqa: E402

RULES = {"epsilon": {"rule": "epsilon"}, "epsilon-plus": {"composite": "epsilon-plus"}}
# onnxlrp / onnxruntime forward per rule: about 2x the forward's arithmetic for epsilon, 3x for the
# two-weight rules (the floors), with 15% for everything else
LRP_ORT_TARGETS = {"epsilon": 2.3, "epsilon-plus": 3.3}


# --------------------------------------------------------------------------- tools
def ort_options(threads: int, level=None, mem_pattern: bool | None = None) -> ort.SessionOptions:
    """onnxlrp.benchmarking's session options (idle workers sleep: the tools run interleaved in one
    process), with an optional graph optimisation level and memory-pattern switch."""
    options = benchmarking.session_options(threads)
    if level is not None:
        options.graph_optimization_level = level
    if mem_pattern is not None:
        options.enable_mem_pattern = mem_pattern
    return options


class Tools:
    """Callables for one (case, batch): each runs one full computation on the fixed input."""

    def __init__(self, case: str, batch: int, threads: int, rules=tuple(RULES)) -> None:
        self.case, self.batch = case, batch
        self.model, self.onnx_path, self.source = models.load_case(case)
        self.twin = models.folded_twin(case, self.onnx_path)
        self.x = models.sample_input(case, batch)
        self.xt = torch.from_numpy(self.x)
        self.threads = threads
        self.rules = rules
        self.relevance_models = {}
        self.compile_times = {}
        for rule in rules:
            start = time.perf_counter()
            self.relevance_models[rule] = onnxlrp.compile(str(self.onnx_path), **RULES[rule])
            self.compile_times[rule] = time.perf_counter() - start

    def ort_forward(self):
        sess = ort.InferenceSession(
            str(self.onnx_path), ort_options(self.threads), providers=["CPUExecutionProvider"]
        )
        name = sess.get_inputs()[0].name
        return lambda: sess.run(None, {name: self.x})

    def lrp(self, rule: str, proto: onnx.ModelProto | None = None, options=None):
        sess = onnxlrp.RelevanceSession(
            proto or self.relevance_models[rule], options=options or ort_options(self.threads)
        )
        return lambda: sess.run(self.x)["relevance"]

    def torch_forward(self):
        def run():
            with torch.no_grad():
                return self.twin(self.xt)

        return run

    def torch_gradient(self):
        return input_gradient(self.twin, self.xt)

    def zennit(self, rule: str):
        return zennit_attribution(self.model, rule, self.xt)

    def make(self, tool: str):
        if tool == "ort_fwd":
            return self.ort_forward()
        if tool == "torch_fwd":
            return self.torch_forward()
        if tool == "torch_grad":
            return self.torch_gradient()
        kind, rule = tool.split(":")
        return self.lrp(rule) if kind == "lrp" else self.zennit(rule)


def input_gradient(model: torch.nn.Module, x: torch.Tensor):
    """PyTorch's input gradient (forward + backward) of the seeded logit; parameters frozen, as a
    user explaining a trained model would have them (no weight gradients are computed either way)."""
    model.requires_grad_(False)

    def run():
        xg = x.clone().requires_grad_(True)
        out = model(xg)
        return torch.autograd.grad(out, xg, logit_seed(out.detach()))[0]

    return run


def zennit_attribution(model: torch.nn.Module, rule: str, x: torch.Tensor, own_copy: bool = True):
    """zennit as a competent user runs it: the hooks and canonizers registered once (the attributor
    kept open) on the user's own copy of the model, parameters frozen. The copy matters: two
    attributors left open on one model stack both composites' hooks on every layer (twice the work,
    and a relevance that is neither rule's). own_copy=False: `model` is already the attributor's alone
    (the memory probe, where a copy would count twice)."""
    model = (copy.deepcopy(model) if own_copy else model).requires_grad_(False)
    attributor = Gradient(model=model, composite=make_composite(rule, model))
    attributor.__enter__()
    x = x.clone()  # zennit sets requires_grad on the tensor it is given
    return lambda: attributor(x, logit_seed)[1]


def agreement(tools: Tools, rule: str) -> dict:
    """max |onnxlrp - zennit| / max |zennit| on the tools' input: against zennit on the folded twin
    (bit-identical weights; the correctness check) and on the BatchNorm model through zennit's
    canonizers (differs by the float32 rounding of two different BatchNorm foldings)."""
    rel = tools.lrp(rule)()
    result = {}
    for label, model in (("same_weights", tools.twin), ("canonizer", tools.model)):
        model = copy.deepcopy(model)
        with Gradient(model=model, composite=make_composite(rule, model)) as attributor:
            ref = attributor(tools.xt, logit_seed)[1].detach().numpy()
        result[label] = float(np.abs(rel - ref).max() / max(np.abs(ref).max(), 1e-30))
        if label == "same_weights":
            result["sum_lrp"], result["sum_zennit"] = float(rel.sum()), float(ref.sum())
        if label == "canonizer" and model is tools.twin:
            break
    return result


# --------------------------------------------------------------------------- timing
# one timing loop for the library's `onnxlrp benchmark` and these tables
interleaved, summary, paired_ratio = benchmarking.interleaved, benchmarking.summary, benchmarking.paired_ratio


# --------------------------------------------------------------------------- memory
def _probe_tool(case: str, batch: int, tool: str):
    """Only what `tool` needs, loaded from files prepared beforehand (no compile, no export here)."""
    _, onnx_path, _ = models.load_case(case)
    x = models.sample_input(case, batch)
    if tool == "ort_fwd":
        sess = ort.InferenceSession(str(onnx_path), ort_options(torch.get_num_threads()))
        name = sess.get_inputs()[0].name
        return lambda: sess.run(None, {name: x})
    kind, _, rule = tool.partition(":")
    if kind == "lrp":
        sess = onnxlrp.RelevanceSession(
            str(_relevance_file(case, rule)), options=ort_options(torch.get_num_threads())
        )
        return lambda: sess.run(x)["relevance"]
    if kind == "torch_grad":
        return input_gradient(models.folded_twin(case, onnx_path), torch.from_numpy(x))
    return zennit_attribution(models.load_case(case)[0], rule, torch.from_numpy(x), own_copy=False)


def _relevance_file(case: str, rule: str) -> Path:
    onnx_path = models.load_case(case)[1]
    return models.CACHE / f"{case}-{onnx_path.stem}-{rule}.relevance.onnx"


def _compile_if_missing(case: str, rule: str) -> bool:
    """Compile the case's relevance graph into the cache unless it is there; True when it compiled."""
    path = _relevance_file(case, rule)
    if path.exists():
        return False
    _, onnx_path, _ = models.load_case(case)
    onnx.save(onnxlrp.compile(str(onnx_path), **RULES[rule]), str(path))
    return True


def profile_probe(case: str, batch: int, rule: str, runs: int) -> dict:
    """Run inside a fresh subprocess: onnxruntime's profile of the forward and the relevance graph
    (one thread: kernel times add up to the run; with more, kernels overlap waits)."""
    _, onnx_path, _ = models.load_case(case)
    x = models.sample_input(case, batch)
    name = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    feed = {name: x}
    prof = profiling.profile_sessions(
        str(onnx_path),
        str(_relevance_file(case, rule)),
        feed,
        {**feed, "target": np.full(batch, -1, np.int64)},
        runs=runs,
        threads=1,
    )
    return prof.summary()


def measure_profile(case: str, batch: int, rule: str, runs: int = 3) -> dict:
    """profile_probe in a fresh process (in this one, earlier cases' memory skewed big profiles)."""
    _compile_if_missing(case, rule)
    return _probe("--profile-probe", [case, batch, rule, runs])


def memory_probe(case: str, batch: int, tool: str, threads: int) -> dict:
    """Run inside a fresh subprocess: load the tool, run it once and report peak RSS.
    run_mib: peak during the first run minus the RSS just before it (what the computation itself
    needs: activations, relevance buffers, onnxruntime's arena, autograd's saved tensors);
    total_mib: the process's peak minus its RSS after the imports (adds the model or relevance graph
    and the session). Compiled relevance graphs are prepared first (then the process re-executes
    itself, so compiling does not count). Peaks come from VmHWM, not ru_maxrss: Linux keeps
    ru_maxrss across fork + exec, so a child of a big parent would report the parent's size."""
    kind, _, rule = tool.partition(":")
    models.load_case(case)  # exports into the cache if needed
    if kind == "lrp" and _compile_if_missing(case, rule):
        sys.stdout.flush()
        os.execv(sys.executable, [sys.executable, *sys.argv])
    torch.set_num_threads(threads)
    return {**benchmarking.measure_peak(lambda: _probe_tool(case, batch, tool)), "v": 3}


def measure_memory(case: str, batch: int, tool: str, threads: int) -> dict:
    """memory_probe in a fresh process."""
    return _probe(
        "--memory-probe", [case, batch, tool, threads], env=dict(os.environ, OMP_NUM_THREADS=str(threads))
    )


def _probe(flag: str, payload: list, env: dict | None = None) -> dict:
    """This script run again with `flag payload` (one of its probes) in a fresh process: the JSON it
    prints last, or the error it ended with."""
    cmd = [sys.executable, str(Path(__file__).resolve()), flag, json.dumps(payload)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        return {"error": (done.stderr or done.stdout)[-400:]}
    return json.loads(lines[-1])


# --------------------------------------------------------------------------- experiments
def compile_times(case: str, repeats: int) -> dict:
    """onnxlrp.compile from a loaded ModelProto (the slower case: the compiler copies it): the
    median and range over the repeats, after one warm-up."""
    _, path, _ = models.load_case(case)
    proto = onnx.load(str(path))
    result = {}
    for rule, kwargs in RULES.items():
        onnxlrp.compile(proto, **kwargs)
        ts = []
        for _ in range(repeats):
            start = time.perf_counter()
            onnxlrp.compile(proto, **kwargs)
            ts.append(time.perf_counter() - start)
        result[rule] = {"median": statistics.median(ts), "min": min(ts), "max": max(ts)}
    result["nodes"] = len(proto.graph.node)
    return result


def session_options(tools: Tools, rule: str, rounds: int, budget: float) -> dict:
    levels = {
        "DISABLE_ALL": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "BASIC": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "EXTENDED": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "ALL": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    fns = {name: tools.lrp(rule, options=ort_options(tools.threads, level)) for name, level in levels.items()}
    fns["ALL, mem_pattern off"] = tools.lrp(rule, options=ort_options(tools.threads, levels["ALL"], False))
    times = interleaved(fns, rounds, budget)
    base = times["ALL"]
    return {
        name: {"median": summary(ts)["median"], "vs_ALL": paired_ratio(ts, base)}
        for name, ts in times.items()
    }


PROTOTYPES = {
    "1x1 strided ConvTranspose -> 1x1 Conv + zero interleave": prototypes.pointwise_strided_transpose,
}


def prototype_speedups(tools: Tools, rule: str, rounds: int, budget: float) -> list[dict]:
    """Each prototype rewrite of the compiled graph: exactness and paired speed-up (before/after)."""
    results = []
    for name, rewrite in PROTOTYPES.items():
        proto, count = rewrite(tools.relevance_models[rule])
        entry = {"prototype": name, "rewritten": count}
        if count:
            fns = {"before": tools.lrp(rule), "after": tools.lrp(rule, proto)}
            a, b = fns["before"](), fns["after"]()
            entry["max_rel_diff"] = float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-30))
            times = interleaved(fns, rounds, budget)
            entry["before"] = summary(times["before"])["median"]
            entry["after"] = summary(times["after"])["median"]
            entry["speedup"] = paired_ratio(times["before"], times["after"])
        results.append(entry)
    return results


# --------------------------------------------------------------------------- report
def machine() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "zennit": zennit.__version__ if hasattr(zennit, "__version__") else "0.5.1",
        "numpy": np.__version__,
        "onnxlrp": onnxlrp.__version__,
        "load_start": os.getloadavg(),
    }


def ms(t: float) -> str:
    return f"{t * 1e3:.1f}" if t < 10 else f"{t * 1e3:.0f}"


def verdict(value: float, target: float, higher_is_better: bool) -> str:
    ok = value >= target if higher_is_better else value <= target
    return "met" if ok else "MISSED"


def write_report(res: dict, path: Path) -> None:
    m = res["machine"]
    lines = [
        "# onnxlrp benchmarks",
        "",
        f"Generated by `python benchmarks/run.py{' --quick' if res['quick'] else ''}` on {res['date']} "
        f"({res['wall_s'] / 60:.1f} min).",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores; load average at start "
        f"{m['load_start'][0]:.1f}, at end {res['load_end'][0]:.1f} (a shared machine: other jobs run "
        "beside this one).",
        f"- Versions: Python {m['python']}, torch {m['torch']}, onnx {m['onnx']}, onnxruntime "
        f"{m['onnxruntime']}, "
        f"zennit {m['zennit']}, numpy {m['numpy']}, onnxlrp {m['onnxlrp']}.",
        f"- Threads: {res['threads']} everywhere (torch.set_num_threads, onnxruntime intra_op_num_threads; "
        "inter_op 1).",
        "- Weights: "
        + "; ".join(f"{c}: {s}" for c, s in res["sources"].items())
        + ". Inputs: uniform in [-1, 1].",
        "- Times: median over interleaved rounds (every tool once per round, rotating order) after one "
        "warm-up "
        "run each; spread = interquartile range [q1, q3]. Ratios: median over rounds of the per-round ratio. "
        "Compare ratios, not absolute times, between runs: the machine is shared and noisy.",
        "- onnxlrp = one onnxruntime session computing forward + relevance (`RelevanceSession.run`). "
        "zennit = `Gradient(model, composite)` with the hooks registered once on its own copy of the model, "
        "parameters frozen, seed one-hot * logit. "
        "PyTorch yardsticks run the BatchNorm-folded twin of the ONNX model (same weights as onnxruntime).",
        *(f"- **Known problem of this run:** {c}" for c in res.get("caveats", [])),
        "",
        "## Targets",
        "",
        "| target | case | value | verdict |",
        "| --- | --- | --- | --- |",
    ]
    for row in res["rows"]:
        b, case, rule = row["batch"], row["case"], row["rule"]
        lrp_ort, target = row["ratios"]["lrp/ort_fwd"], LRP_ORT_TARGETS[rule]
        lines.append(
            f"| onnxlrp / ort forward <= {target} | {case} b{b} {rule} | {lrp_ort:.2f} | "
            f"{verdict(lrp_ort, target, False)} |"
        )
    for row in res["rows"]:
        b, case, rule = row["batch"], row["case"], row["rule"]
        target = 3.0 if b == 1 else 1.5
        z = row["ratios"]["zennit/lrp"]
        lines.append(
            f"| zennit / onnxlrp >= {target} | {case} b{b} {rule} | {z:.2f} | {verdict(z, target, True)} |"
        )
    for row in res["rows"]:
        mem = row.get("memory", {})
        lm, zm = mem.get("lrp", {}), mem.get("zennit", {})
        if "run_mib" in lm and "run_mib" in zm:
            lines.append(
                f"| peak memory of the run: onnxlrp <= zennit | {row['case']} b{row['batch']} "
                f"{row['rule']} | "
                f"{lm['run_mib']:.0f} vs {zm['run_mib']:.0f} MiB | "
                f"{verdict(zm['run_mib'] - lm['run_mib'], 0, True)} |"
            )
    for row in res["rows"]:
        mem = row.get("memory", {})
        lm, zm = mem.get("lrp", {}), mem.get("zennit", {})
        if "total_mib" in lm and "total_mib" in zm:
            lines.append(
                f"| (secondary) whole-process peak: onnxlrp <= zennit | {row['case']} b{row['batch']} "
                f"{row['rule']} | {lm['total_mib']:.0f} vs {zm['total_mib']:.0f} MiB | "
                f"{verdict(zm['total_mib'] - lm['total_mib'], 0, True)} |"
            )
    for bert in res.get("transformers") or []:
        name = f"BERT {bert.get('layers')}x{bert.get('hidden')}"
        for row in bert.get("rows", []):
            lines.append(
                f"| attnlrp relevance / ort forward <= 3.0 (1 thread) | {name} b{row['batch']} | "
                f"{row['ratio']:.2f} | {verdict(row['ratio'], 3.0, False)} |"
            )
            if row["lxt"] is not None and row["batch"] == 1:
                speedup = row["lxt"] / row["relevance"]
                lines.append(
                    f"| LXT / onnxlrp >= 3.0 (1 thread) | {name} b1 | {speedup:.2f} | "
                    f"{verdict(speedup, 3.0, True)} |"
                )
        if bert.get("layers") == 12:
            lines.append(
                f"| compile < 3 s (BERT-base-sized, median) | {name} | {bert['compile_s']:.2f} s | "
                f"{verdict(bert['compile_s'], 3.0, False)} |"
            )
    for case, ct in res["compile"].items():
        worst = max(ct[r]["median"] for r in RULES)
        label = verdict(worst, 1.0, False)
        if case != "resnet50":
            label = f"(not ResNet-50: {label})"
        lines.append(
            f"| compile < 1 s (ResNet-50-sized, median) | {case} ({ct['nodes']} nodes) | "
            f"{worst:.2f} s | {label} |"
        )
    lines += [
        "",
        "## Agreement with zennit (checked before timing)",
        "",
        "max |onnxlrp - zennit| / max |zennit| over the relevance map. *same weights*: zennit on a "
        "BatchNorm-free twin holding the ONNX file's folded weights (bit-identical to onnxlrp's): the "
        "correctness check. *canonizer*: zennit on the BatchNorm model with its canonizers (merging "
        "BatchNorm "
        "itself): adds the rounding difference of two BatchNorm foldings, amplified through the net.",
        "",
        "| case | batch | rule | same weights | canonizer | sum onnxlrp | sum zennit |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for a in res["agreement"]:
        lines.append(
            f"| {a['case']} | {a['batch']} | {a['rule']} | {a['same_weights']:.2g} | "
            f"{a.get('canonizer', float('nan')):.2g} | "
            f"{a['sum_lrp']:.4g} | {a['sum_zennit']:.4g} |"
        )
    lines += [
        "",
        "## Times (ms: median [q1, q3], n rounds)",
        "",
        "| case | batch | rule | ort forward | torch forward | torch gradient | onnxlrp | zennit | "
        "onnxlrp/ort | zennit/onnxlrp | onnxlrp/torch grad |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def cell(s):
        return f"{ms(s['median'])} [{ms(s['q1'])}, {ms(s['q3'])}] n={s['n']}"

    for row in res["rows"]:
        t, r = row["times"], row["ratios"]
        lines.append(
            f"| {row['case']} | {row['batch']} | {row['rule']} | {cell(t['ort_fwd'])} | "
            f"{cell(t['torch_fwd'])} | "
            f"{cell(t['torch_grad'])} | {cell(t['lrp'])} | {cell(t['zennit'])} | {r['lrp/ort_fwd']:.2f} | "
            f"{r['zennit/lrp']:.2f} | {r['lrp/torch_grad']:.2f} |"
        )
    lines += [
        "",
        "## Peak memory (MiB, one fresh subprocess per measurement)",
        "",
        "*run*: peak RSS during the first run minus the RSS just before it (activations, relevance "
        "buffers, onnxruntime's arena, autograd graph); *total*: the process's peak RSS minus its RSS after "
        "the imports (adds the model, the session and its weight copies). Peak RSS is read from "
        "/proc/self/status VmHWM after resetting it through /proc/self/clear_refs.",
        "",
        "| case | batch | rule | ort forward run/total | torch gradient run/total | onnxlrp run/total | "
        "zennit run/total |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]

    def mem(d):
        if not d:
            return "-"
        if "error" in d:
            return "error"
        return f"{d['run_mib']:.0f} / {d['total_mib']:.0f}"

    for row in res["rows"]:
        mm = row.get("memory", {})
        lines.append(
            f"| {row['case']} | {row['batch']} | {row['rule']} | {mem(mm.get('ort_fwd'))} | "
            f"{mem(mm.get('torch_grad'))} | "
            f"{mem(mm.get('lrp'))} | {mem(mm.get('zennit'))} |"
        )
    lines += [
        "",
        "## Compile time (onnxlrp.compile, s: median [min, max] over the repeats)",
        "",
        "| case | ONNX nodes | epsilon | epsilon-plus |",
        "| --- | --- | --- | --- |",
    ]
    for case, ct in res["compile"].items():
        cells = [f"{ct[r]['median']:.2f} [{ct[r]['min']:.2f}, {ct[r]['max']:.2f}]" for r in RULES]
        lines.append(f"| {case} | {ct['nodes']} | " + " | ".join(cells) + " |")
    if res.get("session_options"):
        lines += [
            "",
            "## onnxruntime session options on the relevance graph",
            "",
            "Time relative to the default (ORT_ENABLE_ALL, enable_mem_pattern on); < 1 is faster.",
            "",
            "| case | batch | rule | " + " | ".join(next(iter(res["session_options"]))["results"]) + " |",
            "| --- | --- | --- | "
            + " | ".join("---" for _ in next(iter(res["session_options"]))["results"])
            + " |",
        ]
        for so in res["session_options"]:
            lines.append(
                f"| {so['case']} | {so['batch']} | {so['rule']} | "
                + " | ".join(f"{v['vs_ALL']:.2f}" for v in so["results"].values())
                + " |"
            )
    if res.get("prototypes"):
        lines += [
            "",
            "## Prototype compiler rewrites (benchmarks/prototypes.py)",
            "",
            "Applied to the compiled relevance graph after the fact; exactness = max relative difference of "
            "the relevance; speed-up = median per-round ratio before/after (> 1: the rewrite is faster). "
            "Rows with 0 rewritten: the graph has nothing to rewrite.",
            "",
            "| prototype | case | batch | rule | rewritten | max rel diff | before ms | after ms | "
            "speed-up |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for p in res["prototypes"]:
            if p["rewritten"]:
                lines.append(
                    f"| {p['prototype']} | {p['case']} | {p['batch']} | {p['rule']} | {p['rewritten']} | "
                    f"{p['max_rel_diff']:.1g} | {ms(p['before'])} | {ms(p['after'])} | {p['speedup']:.2f}x |"
                )
            else:
                lines.append(
                    f"| {p['prototype']} | {p['case']} | {p['batch']} | {p['rule']} | 0 | - | - | - | - |"
                )
    lines += profile_section(res["rows"])
    lines += transformer_section(res.get("transformers"))
    lines += history_section()
    if res.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in res["notes"]]
    analysis = Path(__file__).resolve().parent / "ANALYSIS.md"
    if analysis.exists():  # hand-written reading of the numbers (kept out of the generated tables)
        lines += ["", analysis.read_text().strip()]
    lines += [
        "",
        "## How to rerun",
        "",
        "```",
        ". .venv/bin/activate",
        "pip install --no-deps -r benchmarks/requirements.txt   # zennit 0.5.1; --no-deps keeps the CPU "
        "torch",
        "python benchmarks/run.py            # full run, rewrites BENCHMARKS.md",
        "python benchmarks/run.py --quick    # smoke test: LeNet only, ~30 s (--no-memory: ~5 s)",
        "python benchmarks/run.py --cases resnet9 --merge-into full.json   # rerun nets into a --json",
        "python benchmarks/history.py       # the compiler commits side by side (then rerun the report)",
        "python benchmarks/transpose_micro.py   # ConvTranspose vs Conv per layer (compiler heuristic)",
        "python benchmarks/thread_pools.py      # the timing method against sessions run alone",
        "python benchmarks/run.py --from-json benchmarks/results.json   # rewrite this report from raw data",
        "```",
        "",
        "zennit imports torchvision at import time; benchmarks/zennit_compat.py puts a two-class stub of "
        "`torchvision.models.resnet` into sys.modules first (see its docstring). The ResNet-50 here is "
        "written "
        "in benchmarks/models.py (torchvision's bottleneck layout, random weights, BatchNorm statistics "
        "calibrated on random inputs); zennit's own ResNetCanonizer handles its residual sums, and a "
        "small AttributeCanonizer does the same for the ResNet-9's.",
        "",
    ]
    path.write_text("\n".join(lines))


def profile_section(rows: list[dict]) -> list[str]:
    """Where the relevance graph's time goes: onnxruntime profiles per kind of work."""
    rows = [row for row in rows if "ratio" in row.get("profile", {})]
    if not rows:
        return []
    lines = [
        "",
        "## Where the time goes (onnxruntime's profiler, kernel time)",
        "",
        "The relevance graph's kernel time in units of the forward's whole kernel time, split by kind of "
        "work (`onnxlrp.profiling`; the same split `onnxlrp benchmark MODEL --profile` prints). *linear "
        "x fwd linear*: its convolutions and matrix products against the forward's (the arithmetic "
        "floor: 2 for epsilon, 3 for EpsilonPlus). Profiled with **one thread** (the timing above uses "
        "more: the relevance graph's element-wise and layout work scales worse with threads than "
        "convolutions, so its ratio is higher there); the profiler's clock leaves out the gaps "
        "between kernels.",
        "",
        "| case | batch | rule | relevance / forward | linear x fwd linear | linear | element-wise | "
        "layout | pooling, reductions | costliest other ops (x forward) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        prof = row["profile"]
        shares = [prof["shares"][kind] for kind in profiling.KINDS]
        others = [f"{op} {t:.2f}" for op, t, _ in prof["top"] if profiling.kind_of(op) != profiling.KINDS[0]][
            :4
        ]
        lines.append(
            f"| {row['case']} | {row['batch']} | {row['rule']} | {prof['ratio']:.2f} | "
            + f"{prof['linear']:.2f} | "
            + " | ".join(f"{v:.2f}" for v in shares)
            + f" | {', '.join(others)} |"
        )
    return lines


def history_section() -> list[str]:
    """The table of benchmarks/history.json (python benchmarks/history.py), if it exists."""
    path = Path(__file__).resolve().parent / "history.json"
    if not path.exists():
        return []
    history = json.loads(path.read_text())
    commits = list(history["commits"])
    lines = [
        "",
        "## Which change moved what (benchmarks/history.py, one run)",
        "",
        "The relevance graphs compiled by each commit, run interleaved with the onnxruntime forward pass: "
        "onnxlrp / onnxruntime forward, median over rounds of the per-round ratio (CPU, 2 threads). "
        "*max diff*: the largest relative difference of any commit's relevance from the first's.",
        "",
        *(f"- `{c}`: {label}" for c, label in history["commits"].items()),
        "",
        "| case | batch | rule | forward ms | " + " | ".join(f"`{c}`" for c in commits) + " | max diff |",
        "| --- | --- | --- | --- | " + " | ".join("---" for _ in commits) + " | --- |",
    ]
    for run in history["runs"]:
        ratios = [f"{run['commits'][c]['vs_forward']:.2f}" for c in commits]
        diff = max(v["max_rel_diff"] for v in run["commits"].values())
        lines.append(
            f"| {run['case']} | {run['batch']} | {run['rule']} | {run['forward_ms']:.1f} | "
            + " | ".join(ratios)
            + f" | {diff:.1g} |"
        )
    for rule in RULES:
        key = f"resnet50:{rule}"
        if all(key in history["compile"][c] for c in commits):
            cells = [history["compile"][c][key] for c in commits]
            lines.append(
                f"| resnet50 compile s | - | {rule} | - | "
                + " | ".join(f"{v['compile_s']:.2f}" for v in cells)
                + " | - |"
            )
            sizes = " | ".join(f"{v['mib']:.0f}" for v in cells)
            lines.append(f"| resnet50 graph MiB | - | {rule} | - | {sizes} | - |")
    return lines


def merge(old: dict, new: dict) -> dict:
    """`old` with every entry of the nets measured in `new` replaced by `new`'s (a partial rerun)."""
    cases = set(new["sources"]) | set(new["compile"])
    merged = dict(old)
    for key in ("rows", "agreement", "session_options", "prototypes"):
        merged[key] = [e for e in old.get(key, []) if e["case"] not in cases] + new.get(key, [])
        order = {c: i for i, c in enumerate(models.CASES)}
        merged[key].sort(key=lambda e: (order.get(e["case"], 99), e["batch"]))
    merged["sources"] = {**old["sources"], **new["sources"]}
    merged["compile"] = {**old["compile"], **new["compile"]}
    merged["notes"] = list(dict.fromkeys(old.get("notes", []) + new.get("notes", [])))
    merged["notes"].append(
        f"Merged report: {', '.join(sorted(cases))} from the run of {new['date']}, "
        f"the rest from {old['date']}."
    )
    merged["wall_s"] = old["wall_s"] + new["wall_s"]
    merged["load_end"] = new["load_end"]
    return merged


# --------------------------------------------------------------------------- transformers
def transformer_rows() -> list[dict]:
    """transformer_bench's BERT classifiers, one thread, with profiles, each in a fresh process (no
    zennit torchvision stub there for transformers to trip over): a small one (4 layers, hidden 256)
    at batch 1 and 32 and a BERT-base-sized one (12 layers, hidden 768) at batch 1 and 8; sequence 128."""
    script = Path(__file__).resolve().parent / "transformer_bench.py"
    results = []
    for layers, hidden, batches, rounds in ((4, 256, [1, 32], 15), (12, 768, [1, 8], 7)):
        print(f"== BERT {layers} layers, hidden {hidden}", flush=True)
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "bert.json"
            done = subprocess.run(
                [
                    *(sys.executable, str(script), "--layers", str(layers), "--hidden", str(hidden)),
                    *("--batches", *map(str, batches), "--rounds", str(rounds)),
                    *("--profile", "--json", str(out)),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode or not out.exists():
                error = (done.stderr.strip().splitlines() or ["no output"])[-1]
                results.append({"layers": layers, "hidden": hidden, "error": error})
                print(f"   failed: {error}", flush=True)
                continue
            result = json.loads(out.read_text())
        for row in result["rows"]:
            print(f"   batch {row['batch']}: ratio {row['ratio']:.2f}, lxt {row['lxt']}", flush=True)
            row.pop("profile_report", None)
        results.append(result)
    return results


def transformer_section(results: list[dict] | None) -> list[str]:
    """The BERT rows of the report."""
    if not results:
        return []
    lines = ["", "## Transformers (benchmarks/transformer_bench.py)", ""]
    from benchmarks import transformer_bench

    lines += [
        "BERT for sequence classification (random init, heads of 64, sequence 128): the `attnlrp` "
        "relevance graph against the onnxruntime forward (interleaved rounds, median of per-round "
        "ratios) and LXT 2.1's efficient AttnLRP (forward + backward in torch, "
        "`monkey_patch(modeling_bert, attnLRP)`, its own process), **one thread each**.",
    ]
    for result in results:
        if "error" in result:
            lines += [
                "",
                f"**{result['layers']} layers, hidden {result['hidden']}**: not measured "
                f"({result['error']}).",
            ]
            continue
        lines += [
            "",
            f"**{result['layers']} layers, hidden {result['hidden']}** (compile "
            f"{result['compile_s']:.2f} s, median of 3):",
            "",
            *transformer_bench.table(result),
            "",
            "| batch | profile: relevance / forward | linear x fwd linear | "
            + " | ".join(profiling.KINDS)
            + " |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for row in result["rows"]:
            prof = row["profile"]
            lines.append(
                f"| {row['batch']} | {prof['ratio']:.2f} | {prof['linear']:.2f} | "
                + " | ".join(f"{prof['shares'][kind]:.2f}" for kind in profiling.KINDS)
                + " |"
            )
    return lines


# --------------------------------------------------------------------------- main
def plan(quick: bool):
    if quick:
        return [("lenet", 2)], {"rounds": 5, "budget": 1.0}, ["lenet"]
    cases = [
        ("lenet", 1),
        ("lenet", 64),
        ("cifar-paper", 1),
        ("cifar-paper", 64),
        ("resnet9", 1),
        ("resnet9", 64),
        ("resnet50", 1),
        ("resnet50", 8),
    ]
    return cases, {"rounds": 30, "budget": 20.0}, list(models.CASES)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: LeNet only, a few rounds (~30 s)")
    parser.add_argument(
        "--out", type=Path, default=None, help="report path (default BENCHMARKS.md; --quick: none)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results as JSON")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--cases", nargs="*", default=None, help="only these nets (lenet cifar-paper resnet9 resnet50)"
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    parser.add_argument(
        "--no-transformers", action="store_true", help="skip the BERT rows (benchmarks/transformer_bench.py)"
    )
    parser.add_argument("--from-json", type=Path, default=None, help="rewrite the report from a --json file")
    parser.add_argument(
        "--redo-compile", action="store_true", help="with --from-json: measure compile times again"
    )
    parser.add_argument(
        "--redo-memory", action="store_true", help="with --from-json: re-measure outdated memory"
    )
    parser.add_argument(
        "--redo-agreement", action="store_true", help="with --from-json: check agreement again"
    )
    parser.add_argument(
        "--merge-into",
        type=Path,
        default=None,
        help="replace this run's cases in an earlier --json file, report that",
    )
    parser.add_argument(
        "--redo-profile", action="store_true", help="with --from-json: profile every row again"
    )
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)
    parser.add_argument("--profile-probe", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.from_json:
        res = json.loads(args.from_json.read_text())
        if args.redo_agreement:
            torch.set_num_threads(res["threads"])
            for a in res["agreement"]:
                tools = Tools(a["case"], a["batch"], res["threads"], rules=(a["rule"],))
                a.update(agreement(tools, a["rule"]))
                print(f"agreement {a}", flush=True)
            args.from_json.write_text(json.dumps(res, indent=1, default=str))
        if args.redo_memory:
            done = {}
            for row in res["rows"]:
                for key, value in row["memory"].items():
                    if value.get("v") != 3:
                        tool = key if key in ("ort_fwd", "torch_grad") else f"{key}:{row['rule']}"
                        at = (row["case"], row["batch"], tool)
                        if at not in done:
                            done[at] = measure_memory(row["case"], row["batch"], tool, res["threads"])
                        row["memory"][key] = done[at]
                        print(f"memory {row['case']} {row['batch']} {tool}: {row['memory'][key]}", flush=True)
            args.from_json.write_text(json.dumps(res, indent=1, default=str))
        if args.redo_profile:
            for row in res["rows"]:
                row["profile"] = measure_profile(row["case"], row["batch"], row["rule"])
                print(f"profile {row['case']} {row['batch']} {row['rule']}: {row['profile']}", flush=True)
            args.from_json.write_text(json.dumps(res, indent=1, default=str))
        if args.redo_compile:
            for case in res["compile"]:
                print(f"compile {case}", flush=True)
                res["compile"][case] = compile_times(case, 1 if res["quick"] else 7)
            args.from_json.write_text(json.dumps(res, indent=1, default=str))
        write_report(res, args.out or ROOT / "BENCHMARKS.md")
        return 0
    if args.profile_probe:
        case, batch, rule, runs = json.loads(args.profile_probe)
        print(json.dumps(profile_probe(case, batch, rule, runs)))
        return 0
    if args.memory_probe:
        case, batch, tool, threads = json.loads(args.memory_probe)
        print(json.dumps(memory_probe(case, batch, tool, threads)))
        return 0

    torch.set_num_threads(args.threads)
    start = time.time()
    for stale in models.CACHE.glob("*.relevance.onnx"):  # compiled by an earlier onnxlrp, perhaps
        stale.unlink()
    cases, timing, compile_cases = plan(args.quick)
    if args.cases:
        cases = [c for c in cases if c[0] in args.cases]
        compile_cases = [c for c in compile_cases if c in args.cases]
    res = {
        "machine": machine(),
        "quick": args.quick,
        "threads": args.threads,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "rows": [],
        "agreement": [],
        "sources": {},
        "compile": {},
        "session_options": [],
        "prototypes": [],
        "notes": [],
    }
    if any(c == "resnet50" for c, _ in cases):
        res["notes"].append(
            "ResNet-50 runs at batch 8, not 64 (zennit's EpsilonPlus at batch 64 takes minutes per run "
            "on 2 cores)."
        )

    for case in compile_cases:
        print(f"compile {case}", flush=True)
        res["compile"][case] = compile_times(case, 1 if args.quick else 7)

    for case, batch in cases:
        print(f"== {case} batch {batch}", flush=True)
        tools = Tools(case, batch, args.threads)
        res["sources"][case] = tools.source
        for rule in RULES:
            a = agreement(tools, rule)
            res["agreement"].append({"case": case, "batch": batch, "rule": rule, **a})
            print(f"   agreement {rule}: {a}", flush=True)
        names = ["ort_fwd", "torch_fwd", "torch_grad"] + [
            f"{k}:{r}" for r in RULES for k in ("lrp", "zennit")
        ]
        fns = {n: tools.make(n) for n in names}
        big = case == "resnet50"
        times = interleaved(fns, timing["rounds"] if not big else 7, timing["budget"] * (3 if big else 1))
        for rule in RULES:
            row = {
                "case": case,
                "batch": batch,
                "rule": rule,
                "times": {
                    "ort_fwd": summary(times["ort_fwd"]),
                    "torch_fwd": summary(times["torch_fwd"]),
                    "torch_grad": summary(times["torch_grad"]),
                    "lrp": summary(times[f"lrp:{rule}"]),
                    "zennit": summary(times[f"zennit:{rule}"]),
                },
                "ratios": {
                    "lrp/ort_fwd": paired_ratio(times[f"lrp:{rule}"], times["ort_fwd"]),
                    "zennit/lrp": paired_ratio(times[f"zennit:{rule}"], times[f"lrp:{rule}"]),
                    "lrp/torch_grad": paired_ratio(times[f"lrp:{rule}"], times["torch_grad"]),
                },
                "memory": {},
            }
            print(f"   {rule}: " + json.dumps({k: round(v, 2) for k, v in row["ratios"].items()}), flush=True)
            row["profile"] = measure_profile(case, batch, rule)
            print(f"   profile {rule}: {row['profile'].get('shares', row['profile'])}", flush=True)
            res["rows"].append(row)
        if not args.no_memory:
            probes = ["ort_fwd", "torch_grad"] + [f"{k}:{r}" for r in RULES for k in ("lrp", "zennit")]
            for tool in ["lrp:epsilon", "zennit:epsilon"] if args.quick else probes:
                result = measure_memory(case, batch, tool, args.threads)
                print(f"   memory {tool}: {result}", flush=True)
                for row in res["rows"][-len(RULES) :]:
                    if ":" not in tool:
                        row["memory"][tool] = result
                    elif tool.endswith(":" + row["rule"]):
                        row["memory"][tool.split(":")[0]] = result
        if args.quick or (case, batch) in {
            ("lenet", 64),
            ("cifar-paper", 64),
            ("resnet9", 1),
            ("resnet9", 64),
            ("resnet50", 1),
        }:
            rounds, budget = (3, 0.5) if args.quick else (9, 15.0)
            so = session_options(tools, "epsilon-plus", rounds, budget)
            res["session_options"].append(
                {"case": case, "batch": batch, "rule": "epsilon-plus", "results": so}
            )
            print(f"   session options: { {k: round(v['vs_ALL'], 2) for k, v in so.items()} }", flush=True)
            for rule in RULES:
                for p in prototype_speedups(tools, rule, rounds, budget):
                    res["prototypes"].append({"case": case, "batch": batch, "rule": rule, **p})
                    print(f"   prototype {rule}: {p}", flush=True)
        # free this case's sessions, models and hooks before the next (ResNet-50's arenas are GBs:
        # kept, they and the BERT subprocess ran a 24 GiB machine out of memory)
        del tools, fns, times
        gc.collect()
        if args.json:  # what is done so far survives a crash
            args.json.write_text(json.dumps(res, indent=1, default=str))

    if not args.quick and not args.no_transformers and not args.cases:
        res["transformers"] = transformer_rows()

    res["load_end"] = os.getloadavg()
    res["wall_s"] = time.time() - start
    if args.merge_into:
        res = merge(json.loads(args.merge_into.read_text()), res)
        args.merge_into.write_text(json.dumps(res, indent=1, default=str))
    out = args.out or (None if args.quick else ROOT / "BENCHMARKS.md")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str))
    if out is not None:
        write_report(res, out)
        print(f"wrote {out}")
    print(f"done in {res['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
