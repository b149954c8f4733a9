"""Transformer timings: onnxlrp's attnlrp relevance graph vs LXT's efficient AttnLRP and the
onnxruntime forward, on a BERT classifier (random init), one thread each, interleaved rounds.

    python benchmarks/transformer_bench.py [--layers 4] [--hidden 256] [--seq 128] [--batches 1 32]

Prints a markdown table (median seconds per call). LXT is timed in a subprocess (its patches change
torch's and HuggingFace's classes for the whole process); it is skipped when not installed
(pip install --no-deps lxt; see tests/lxt_relevance.py for the torchvision stand-in it needs here).
"""

from __future__ import annotations

import argparse
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
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import onnxlrp
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


def median_time(fn, rounds: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="also print where the time goes per batch")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = build(args.layers, args.hidden)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory() as folder:
        from transformer_models import export

        path = export(model, Path(folder) / "bert.onnx")
        start = time.perf_counter()
        graph = onnxlrp.compile(str(path), composite="attnlrp")
        compile_s = time.perf_counter() - start
        forward_bytes = Path(path).read_bytes()
        forward = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        relevance = ort.InferenceSession(
            graph.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
    print(f"BERT {args.layers} layers, hidden {args.hidden}, sequence {args.seq}; compile {compile_s:.2f} s")
    print(
        "| batch | onnxruntime forward | onnxlrp relevance | LXT efficient "
        "| relevance / forward | LXT / onnxlrp |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    rng = np.random.default_rng(0)
    for batch in args.batches:
        ids = rng.integers(0, 30522, (batch, args.seq)).astype(np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        t_forward = median_time(lambda feed=feed: forward.run(None, feed), args.rounds)
        relevance_feed = {**feed, "target": np.full(batch, -1, np.int64)}  # -1: the predicted class
        t_relevance = median_time(lambda f=relevance_feed: relevance.run(["relevance"], f), args.rounds)
        t_lxt = lxt_time(args.layers, args.hidden, ids, args.rounds)
        lxt_cells = ("-", "-") if t_lxt is None else (f"{t_lxt:.4f}", f"{t_lxt / t_relevance:.1f}x")
        print(
            f"| {batch} | {t_forward:.4f} | {t_relevance:.4f} | {lxt_cells[0]} | "
            f"{t_relevance / t_forward:.2f} | {lxt_cells[1]} |"
        )
        if args.profile:
            prof = profile_sessions(forward_bytes, graph.SerializeToString(), feed, relevance_feed, threads=1)
            print(f"batch {batch}:\n{prof.report(top=12)}")


if __name__ == "__main__":
    main()
