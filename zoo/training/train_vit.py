#!/usr/bin/env python3
"""Train the zoo's CIFAR-10 vision transformer on the CPU and add it to the zoo.

    python zoo/training/train_vit.py train [--data DIR] [--out out/vit] [--minutes 35] [--threads 1]
    python zoo/training/train_vit.py build [--data DIR] [--weights out/vit] [--zoo zoo]

``train`` trains ``CifarViT`` (zoo/training/zoo_models.py) for a wall-clock budget: AdamW with a
learning rate that warms up and then follows a cosine over the budget (so the schedule ends when the
time does), random crop + horizontal flip, label smoothing; 5,000 training images are held out and
the weights of the best validation accuracy are kept. ``build`` exports the kept weights to
``zoo/cifar10-vit.onnx`` (TorchScript exporter, opset 17, dynamic batch), measures the full test split
with onnxruntime and writes the model's entry into ``zoo/manifest.json`` (other entries unchanged).
``--data`` defaults to ``../shared/datasets`` next to the repository.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # the repository root: zoo.training is a folder
from zoo.training.train_zoo import (  # noqa: E402
    CIFAR_SUBSET_PER_CLASS,
    DEFAULT_DATA,
    PREPROCESSING,
    accuracy,
    cifar_subset,
    cpu_name,
    decode_cifar,
    log,
    ort_logits,
    sha256,
)
from zoo.training.zoo_models import CIFAR10_CLASSES, CifarViT, build, cifar_preprocess  # noqa: E402

NAME = "cifar10-vit"
SEED = 0
VAL_SIZE = 5000


def augment(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop of the original size from a reflect-padded copy, and a random horizontal flip."""
    n, _, h, w = x.shape
    xp = F.pad(x, (pad,) * 4, mode="reflect")
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (oy[:, None] + torch.arange(h)[None])[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w)[None])[:, None, None, :]
    out = xp[torch.arange(n)[:, None, None, None], torch.arange(3)[None, :, None, None], rows, cols]
    flip = torch.rand(n, generator=generator) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def learning_rate(progress: float, peak: float, warmup: float) -> float:
    """Linear warm-up over the first ``warmup`` of the budget, then a cosine down to 0 at its end."""
    if progress < warmup:
        return peak * progress / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - warmup) / (1 - warmup))))


def train(args) -> int:
    """Train cifar10-vit for ``--minutes`` of wall-clock time and keep the best validation epoch."""
    torch.manual_seed(SEED)
    torch.set_num_threads(args.threads)
    log("decoding the CIFAR-10 training split")
    images, labels = decode_cifar(args.data, "train")
    x_all = torch.from_numpy(cifar_preprocess(images))
    y_all = torch.from_numpy(labels)
    perm = torch.from_numpy(np.random.RandomState(SEED).permutation(len(y_all)))
    xv, yv = x_all[perm[:VAL_SIZE]], y_all[perm[:VAL_SIZE]]
    x, y = x_all[perm[VAL_SIZE:]], y_all[perm[VAL_SIZE:]]
    model = build(NAME)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "embed" in n]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
    )
    gen = torch.Generator().manual_seed(SEED)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    budget = args.minutes * 60.0
    steps_per_epoch = len(y) // args.batch
    start = time.time()
    step, epoch, best, history = 0, 0, -1.0, []
    done = False
    while not done:
        epoch += 1
        order = torch.randperm(len(y), generator=gen)
        for k in range(steps_per_epoch):
            progress = (time.time() - start) / budget
            if progress >= 1.0:
                done = True
                break
            for group in opt.param_groups:
                group["lr"] = learning_rate(progress, args.lr, args.warmup)
            b = order[k * args.batch : (k + 1) * args.batch]
            loss = F.cross_entropy(model(augment(x[b], gen)), y[b], label_smoothing=args.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step % args.eval_every == 0:
                val = accuracy(model, xv, yv, batch=500)
                entry = {
                    "step": step,
                    "epoch": round(step / steps_per_epoch, 3),
                    "loss": loss.item(),
                    "val": val,
                }
                history.append(entry)
                log(
                    f"{NAME} step {step} (epoch {entry['epoch']}): loss {loss.item():.4f} val {val:.4f} "
                    f"({time.time() - start:.0f}s)"
                )
                if val > best:
                    best = val
                    torch.save(model.state_dict(), out / f"{NAME}.pt")
    val = accuracy(model, xv, yv, batch=500)
    history.append({"step": step, "epoch": round(step / steps_per_epoch, 3), "loss": loss.item(), "val": val})
    if val > best:
        best = val
        torch.save(model.state_dict(), out / f"{NAME}.pt")
    kept = max(history, key=lambda e: e["val"])
    wall = time.time() - start
    log(
        f"{NAME}: {step} steps ({step / steps_per_epoch:.2f} epochs), best val {best:.4f} at step "
        f"{kept['step']}, wall {wall:.0f}s"
    )
    model_args = {k: v.default for k, v in inspect.signature(CifarViT).parameters.items()}
    info = {
        "command": "python zoo/training/train_vit.py train " + " ".join(sys.argv[2:]),
        "script": "zoo/training/train_vit.py",
        "seed": SEED,
        "epochs": round(step / steps_per_epoch, 3),
        "steps": step,
        "wall_s": round(wall, 1),
        "machine": f"CPU ({cpu_name()}, {args.threads} torch thread(s), shared with other jobs)",
        "model": model_args,
        "hyperparameters": {
            "optimizer": "AdamW",
            "peak_lr": args.lr,
            "warmup_fraction": args.warmup,
            "schedule": "linear warm-up, then cosine to 0 at the end of the wall-clock budget",
            "budget_minutes": args.minutes,
            "weight_decay": args.weight_decay,
            "batch": args.batch,
            "label_smoothing": args.label_smoothing,
            "val_size": VAL_SIZE,
            "eval_every_steps": args.eval_every,
            "augmentation": "random crop 32 from reflect-padded 40x40, random horizontal flip",
        },
        "training": (
            f"AdamW, peak lr {args.lr} (warm-up over {args.warmup:.0%} of the budget, then cosine to 0 at "
            f"its end), weight decay {args.weight_decay}, batch {args.batch}, label smoothing "
            f"{args.label_smoothing}, a {args.minutes}-minute wall-clock budget on 45,000 training images "
            f"(random crop 32 from reflect-padded 40x40, random horizontal flip); a seeded slice of "
            f"{VAL_SIZE} training images is held out for validation"
        ),
        "stopping_rule": (
            f"the wall-clock budget; validation accuracy measured every {args.eval_every} steps and at "
            f"the end, the weights of the best one kept (step {kept['step']}, validation accuracy "
            f"{kept['val']:.4f})"
        ),
        "val_accuracy": kept["val"],
        "kept_step": kept["step"],
        "history": history,
    }
    (out / f"{NAME}.json").write_text(json.dumps(info, indent=1))
    return 0


ARCHITECTURE = (
    "ViT: patch embedding conv4x4 stride 4 (64 patch tokens of width 64), learned class token (Concat), "
    "learned position embeddings (Add), 4 pre-norm blocks (LayerNorm, 4-head self-attention written as "
    "q/k/v Linear - MatMul - Softmax - MatMul - Linear, LayerNorm, MLP 64-128-64 with GELU, residual Adds), "
    "final LayerNorm, linear head on the class token"
)


def build_entry(args) -> int:
    """Export the kept weights, measure the test split with onnxruntime, update the manifest."""
    import onnx
    import onnxruntime as ort

    from onnxlrp.converters.pytorch import export_module

    zoo, weights = Path(args.zoo), Path(args.weights)
    module = build(NAME)
    module.load_state_dict(torch.load(weights / f"{NAME}.pt", map_location="cpu"))
    module.eval()
    path = zoo / f"{NAME}.onnx"
    check = export_module(module, torch.zeros(1, 3, 32, 32), path)
    patch_conv = next(n for n in onnx.load(str(path)).graph.node if n.op_type == "Conv")
    log("decoding the CIFAR-10 test split")
    images, labels = decode_cifar(args.data, "test")
    logits = ort_logits(path, cifar_preprocess(images), weights / "logits")
    correct = int((logits.argmax(1) == labels).sum())
    subset = cifar_subset(labels)
    info = json.loads((weights / f"{NAME}.json").read_text())
    training = {k: v for k, v in info.items() if k not in ("history", "kept_step", "model")}
    entry = {
        "file": path.name,
        "sha256": sha256(path),
        "bytes": path.stat().st_size,
        "dataset": "cifar10",
        "classes": CIFAR10_CLASSES,
        "architecture": ARCHITECTURE,
        "parameters": int(sum(p.numel() for p in module.parameters())),
        "input": {"name": "input", "shape": ["N", 3, 32, 32], "dtype": "float32", "layout": "NCHW"},
        "output": {"name": "logits", "shape": ["N", 10], "dtype": "float32"},
        "preprocessing": PREPROCESSING["cifar10"],
        "low": -1.0,
        "high": 1.0,
        "accuracy": {
            "test_accuracy": correct / len(labels),
            "test_correct": correct,
            "test_total": len(labels),
            "measured_with": f"onnxruntime {ort.__version__} CPU, float32, full test split",
            "subset_check": {
                "rule": f"the first {CIFAR_SUBSET_PER_CLASS} test images of each class",
                "per_class": CIFAR_SUBSET_PER_CLASS,
                "correct": int((logits[subset].argmax(1) == labels[subset]).sum()),
                "total": len(subset),
            },
        },
        "export": {
            "exporter": f"torch {torch.__version__.split('+')[0]} torch.onnx.export(dynamo=False)",
            "opset": 17,
            "ir_version": 10,
            "ops": check["ops"],
            "max_abs_diff_vs_torch": check["max_abs"],
        },
        "patch_tokens": {
            "tensor": patch_conv.output[0],
            "description": "the patch embedding Conv's output [N, dim, 8, 8]: one token per 4x4 patch",
            "patch": info["model"]["patch"],
            "grid": [32 // info["model"]["patch"]] * 2,
        },
        "training": training,
    }
    log(f"{NAME}: test accuracy {correct / len(labels):.4f} ({correct}/{len(labels)})")
    manifest_path = zoo / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["models"][NAME] = entry
    addition = (
        " cifar10-vit trained on the CPU and added by `python zoo/training/train_vit.py train` / `build`."
    )
    if addition not in manifest["description"]:
        manifest["description"] += addition
    for sample in manifest["samples"]["cifar10"]:
        z = logits[sample["index"]]
        sample["predictions"][NAME] = {
            "predicted": int(z.argmax()),
            "logits": [round(float(v), 4) for v in z],
        }
    tmp = manifest_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    tmp.replace(manifest_path)
    logs = zoo / "training" / "logs"
    shutil.copyfile(weights / f"{NAME}.json", logs / f"{NAME}.json")
    if (weights / f"{NAME}_stdout.txt").is_file():
        shutil.copyfile(weights / f"{NAME}_stdout.txt", logs / f"{NAME}_stdout.txt")
    log(f"wrote {path} ({path.stat().st_size} bytes) and its entry in {manifest_path}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train cifar10-vit for a wall-clock budget")
    p.add_argument("--minutes", type=float, default=35.0)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=float, default=0.05)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--out", default=str(REPO / "out" / "vit"))
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=train)
    p = sub.add_parser("build", help="export cifar10-vit, measure it and add it to zoo/manifest.json")
    p.add_argument("--weights", default=str(REPO / "out" / "vit"))
    p.add_argument("--zoo", default=str(REPO / "zoo"))
    p.set_defaults(func=build_entry)
    for p in sub.choices.values():
        p.add_argument("--data", default=str(DEFAULT_DATA), help="folder with cifar10_jpeg.npz")
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
