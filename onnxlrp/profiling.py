"""Where a session's time goes: onnxruntime's own per-node profile, summed per operator type and
per kind of work, for the forward pass and the relevance graph side by side.

A relevance graph's floor is set by its linear maps (convolutions, matrix products): about twice the
forward's for epsilon / LRP-0 (the forward and one transposed map per layer), three times for the
two-weight rules. `profile_sessions` measures how far each kind of work is from that: the linear maps
in units of the forward's linear maps, and every kind in units of the forward's whole run, so that
the relevance / forward ratio reads as a sum of its parts.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from onnxlrp import runtime

# Operator types as onnxruntime's CPU profile names them (after its fusions and NCHWc layouts).
LINEAR = frozenset(
    {
        "Conv",
        "ConvTranspose",
        "FusedConv",
        "Gemm",
        "FusedGemm",
        "MatMul",
        "FusedMatMul",
        "MatMulInteger",
        "ConvInteger",
        "QLinearConv",
        "QLinearMatMul",
        "DynamicQuantizeMatMul",
        "MatMulIntegerToFloat",
        "Einsum",
        "Attention",
        "MultiHeadAttention",
    }
)
LAYOUT = frozenset(
    {
        "ReorderInput",
        "ReorderOutput",
        "Transpose",
        "Reshape",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Concat",
        "Split",
        "Slice",
        "Pad",
        "Expand",
        "Tile",
        "Gather",
        "GatherElements",
        "Identity",
        "Shape",
        "SpaceToDepth",
        "DepthToSpace",
    }
)
POOLING = frozenset(
    {
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "MaxUnpool",
        "ScatterElements",
        "ArgMax",
        "ArgMin",
        "ReduceSum",
        "ReduceMean",
        "ReduceMax",
        "Resize",
        "Upsample",
    }
)
KINDS = ("linear maps", "element-wise", "layout", "pooling and reductions")


def kind_of(op_type: str) -> str:
    """The kind of work of an operator type (everything not linear, layout or pooling counts as
    element-wise: arithmetic, comparisons, casts, activations, normalisations)."""
    if op_type in LINEAR:
        return KINDS[0]
    if op_type in LAYOUT:
        return KINDS[2]
    if op_type in POOLING:
        return KINDS[3]
    return KINDS[1]


@dataclass(frozen=True)
class OpTimes:
    """Kernel seconds and calls per operator type, per run (averaged over the profiled runs)."""

    seconds: Mapping[str, float]
    calls: Mapping[str, float]

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    def by_kind(self) -> dict[str, float]:
        """Seconds per run of each kind of work (KINDS order)."""
        kinds = dict.fromkeys(KINDS, 0.0)
        for op, s in self.seconds.items():
            kinds[kind_of(op)] += s
        return kinds


def op_times(
    model: str | bytes,
    feed: Mapping[str, np.ndarray],
    runs: int = 5,
    threads: int | None = None,
    providers: list[str] | None = None,
) -> OpTimes:
    """Run `model` once to warm up, then `runs` times with onnxruntime's profiler on, and sum its
    kernel times per operator type (seconds per run)."""
    if runs < 1:
        raise ValueError("profile runs must be at least 1")
    options = runtime.session_options(threads, spinning=False)
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as folder:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(folder, "profile")
        session = ort.InferenceSession(model, options, providers=providers or ["CPUExecutionProvider"])
        session.run(None, dict(feed))
        for _ in range(runs):
            session.run(None, dict(feed))
        with open(session.end_profiling()) as f:
            events = json.load(f)
    # the warm-up run (first allocations) is in the profile too: count from the second run on
    starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    after_warmup = starts[1] if len(starts) > 1 else 0
    seconds: dict[str, float] = {}
    calls: dict[str, float] = {}
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        if event["ts"] < after_warmup:
            continue
        op = event.get("args", {}).get("op_name", "?")
        seconds[op] = seconds.get(op, 0.0) + event["dur"] * 1e-6  # microseconds
        calls[op] = calls.get(op, 0.0) + 1
    return OpTimes(
        seconds={op: s / runs for op, s in seconds.items()},
        calls={op: c / runs for op, c in calls.items()},
    )


@dataclass(frozen=True)
class Profile:
    """The forward pass's and the relevance graph's kernel times, side by side."""

    forward: OpTimes
    relevance: OpTimes

    @property
    def ratio(self) -> float:
        """Relevance / forward, kernel time (the profiler's own overhead left out)."""
        return self.relevance.total / self.forward.total

    @property
    def linear_ratio(self) -> float:
        """The relevance graph's linear maps in units of the forward's (floor: 2 for epsilon and
        LRP-0, 3 for the two-weight rules)."""
        return self.relevance.by_kind()[KINDS[0]] / max(self.forward.by_kind()[KINDS[0]], 1e-12)

    def shares(self) -> dict[str, float]:
        """Each kind of the relevance graph's work in units of the forward's whole run: they sum to
        `ratio`."""
        return {kind: s / self.forward.total for kind, s in self.relevance.by_kind().items()}

    def costliest(self, top: int) -> list[tuple[str, float, float]]:
        """The relevance graph's `top` costliest operator types: (type, seconds in units of the
        forward's run, calls per run)."""
        fwd = self.forward.total
        ranked = sorted(self.relevance.seconds.items(), key=lambda item: -item[1])[:top]
        return [(op, s / fwd, self.relevance.calls[op]) for op, s in ranked]

    def summary(self, top: int = 12) -> dict:
        """The numbers as plain data (JSON): ratio, linear_ratio as "linear", shares, costliest."""
        return {
            "ratio": self.ratio,
            "linear": self.linear_ratio,
            "shares": self.shares(),
            "top": [list(entry) for entry in self.costliest(top)],
        }

    def report(self, top: int = 8) -> str:
        """A few lines for a terminal: the ratio as a sum of kinds of work, then the costliest ops."""
        shares = " + ".join(f"{kind} {share:.2f}" for kind, share in self.shares().items())
        lines = [
            f"profile    relevance / forward {self.ratio:.2f} (kernel time) = {shares}",
            f"           linear maps {self.linear_ratio:.2f}x the forward's (floor: 2 for epsilon, "
            "3 for two-weight rules)",
        ]
        fwd = self.forward.total
        for op, share, calls in self.costliest(top):
            lines.append(
                f"           {op:<16} {share:5.2f}  ({100 * share * fwd / self.relevance.total:4.1f}%, "
                f"{calls:.0f} calls)"
            )
        return "\n".join(lines)


def profile_sessions(
    forward_model: str | bytes,
    relevance_model: str | bytes,
    feed: Mapping[str, np.ndarray],
    relevance_feed: Mapping[str, np.ndarray],
    runs: int = 5,
    threads: int | None = None,
    providers: list[str] | None = None,
) -> Profile:
    """Profile the forward model and its relevance graph on the same input."""
    return Profile(
        forward=op_times(forward_model, feed, runs, threads, providers),
        relevance=op_times(relevance_model, relevance_feed, runs, threads, providers),
    )
