"""Transformer timings: onnxlrp's attnlrp relevance graph vs LXT's efficient AttnLRP and the
onnxruntime forward, on a BERT classifier (random init), one thread each, interleaved rounds.

    python benchmarks/transformer_bench.py [--layers 4] [--hidden 256] [--seq 128] [--batches 1 32]

Prints a markdown table (median seconds per call; forward and relevance interleaved); run.py puts
the same table in BENCHMARKS.md. LXT is timed in a subprocess (its patches change
torch's and HuggingFace's classes for the whole process); it is skipped when not installed
(pip install --no-deps lxt; see tests/lxt_relevance.py for the torchvision stand-in it needs here).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import onnx
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import onnxlrp
from onnxlrp import benchmarking
from onnxlrp.profiling import profile_sessions


def build(layers: int, hidden: int):
    from transformer_models import BertLogits, hide_unloadable_torchvision

    hide_unloadable_torchvision()
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        num_hidden_layers=layers,
        hidden_size=hidden,
        num_attention_heads=max(1, hidden // 64),
        intermediate_size=4 * hidden,
        max_position_embeddings=512,
        num_labels=2,
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    return BertLogits(BertForSequenceClassification(config), ("input_ids", "attention_mask")).eval()


def lxt_time(layers: int, hidden: int, ids: np.ndarray, rounds: int) -> float | None:
    """LXT's efficient AttnLRP (forward + backward), in a fresh process."""
    code = f"""
import sys, time, statistics, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
sys.path.insert(0, {str(Path(__file__).resolve().parent.parent / "tests")!r})
import numpy as np, torch
torch.set_num_threads(1)
from lxt_relevance import _import_lxt
from transformer_models import hide_unloadable_torchvision
hide_unloadable_torchvision()
import transformers.models.bert.modeling_bert as mb
monkey_patch, lxt_bert, _ = _import_lxt()
monkey_patch(mb, lxt_bert.attnLRP)
from transformer_bench import build
model = build({layers}, {hidden}).model
ids = torch.from_numpy(np.load(sys.argv[1]))
def run():
    emb = model.bert.embeddings.word_embeddings(ids).detach().requires_grad_(True)
    logits = model(inputs_embeds=emb, attention_mask=torch.ones_like(ids)).logits
    logits.max(-1).values.sum().backward()
    return (emb * emb.grad).sum(-1)
run()
times = []
for _ in range({rounds}):
    t = time.perf_counter(); run(); times.append(time.perf_counter() - t)
print(statistics.median(times))
"""
    try:
        import lxt  # noqa: F401
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as folder:
        np.save(Path(folder) / "ids.npy", ids)
        done = subprocess.run(
            [sys.executable, "-c", code, str(Path(folder) / "ids.npy")], capture_output=True, text=True
        )
    if done.returncode != 0:
        print(done.stderr[-2000:], file=sys.stderr)
        return None
    return float(done.stdout.strip().splitlines()[-1])


def export_and_compile(layers: int, hidden: int, repeats: int = 3) -> tuple[bytes, onnx.ModelProto, float]:
    """The exported BERT (bytes), its attnlrp relevance graph and the median compile time (s)."""
    from transformer_models import export

    torch.set_num_threads(1)
    model = build(layers, hidden)
    with tempfile.TemporaryDirectory() as folder:
        path = export(model, Path(folder) / "bert.onnx")
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            graph = onnxlrp.compile(str(path), composite="attnlrp")
            times.append(time.perf_counter() - start)
        return Path(path).read_bytes(), graph, statistics.median(times)


def measure(
    layers: int, hidden: int, seq: int, batches: list[int], rounds: int, profile: bool = False
) -> dict:
    """Compile time, and per batch the forward, relevance graph and LXT times (medians; forward and
    relevance interleaved, their ratio the median of per-round ratios), one thread each."""

    forward_bytes, graph, compile_s = export_and_compile(layers, hidden)
    options = benchmarking.session_options(1)
    graph_bytes = graph.SerializeToString()
    forward = ort.InferenceSession(forward_bytes, options, providers=["CPUExecutionProvider"])
    relevance = ort.InferenceSession(graph_bytes, options, providers=["CPUExecutionProvider"])
    result = {
        "layers": layers,
        "hidden": hidden,
        "seq": seq,
        "compile_s": compile_s,
        "rows": [],
    }
    rng = np.random.default_rng(0)
    for batch in batches:
        ids = rng.integers(0, 30522, (batch, seq)).astype(np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        relevance_feed = {**feed, "target": np.full(batch, -1, np.int64)}  # -1: the predicted class
        times = benchmarking.interleaved(
            {
                "forward": lambda f=feed: forward.run(None, f),
                "relevance": lambda f=relevance_feed: relevance.run(["relevance"], f),
            },
            rounds,
        )
        row = {
            "batch": batch,
            "forward": statistics.median(times["forward"]),
            "relevance": statistics.median(times["relevance"]),
            "ratio": benchmarking.paired_ratio(times["relevance"], times["forward"]),
            "lxt": lxt_time(layers, hidden, ids, rounds),
        }
        if profile:
            prof = profile_sessions(forward_bytes, graph_bytes, feed, relevance_feed, threads=1)
            row["profile"] = prof.summary()
            row["profile_report"] = prof.report(top=12)
        result["rows"].append(row)
    return result


def table(result: dict) -> list[str]:
    """The markdown table of `measure`'s result."""
    lines = [
        "| batch | onnxruntime forward (s) | onnxlrp relevance (s) | LXT efficient (s) "
        "| relevance / forward | LXT / onnxlrp |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["rows"]:
        lxt = row["lxt"]
        cells = ("-", "-") if lxt is None else (f"{lxt:.4f}", f"{lxt / row['relevance']:.1f}x")
        lines.append(
            f"| {row['batch']} | {row['forward']:.4f} | {row['relevance']:.4f} | {cells[0]} | "
            f"{row['ratio']:.2f} | {cells[1]} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="also print where the time goes per batch")
    parser.add_argument("--json", type=Path, help="also write the results here (run.py reads them)")
    args = parser.parse_args()
    result = measure(args.layers, args.hidden, args.seq, args.batches, args.rounds, args.profile)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(
        f"BERT {args.layers} layers, hidden {args.hidden}, sequence {args.seq}; "
        f"compile {result['compile_s']:.2f} s"
    )
    print("\n".join(table(result)))
    for row in result["rows"]:
        if "profile_report" in row:
            print(f"batch {row['batch']}:\n{row['profile_report']}")


if __name__ == "__main__":
    main()
