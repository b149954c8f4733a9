#!/usr/bin/env python3
"""Train the two CIFAR-10 zoo models (cifar10-paper and cifar10-resnet) in one process on one GPU.

    PYTHONUNBUFFERED=1 python3 zoo/training/gpu_train_cifar.py --data .gpudata/cifar10_jpeg.npz --out OUT

Writes state dicts (``.pt``, each part < 16 MiB) and ``cifar_train_log.json`` to ``--out``;
``zoo/training/train_zoo.py export-cifar`` turns them into ONNX files on the CPU machine.

- JPEGs are decoded with Pillow in a process pool; all images stay on the GPU as uint8 tensors;
  random crop (reflect pad 4) + horizontal flip are done on the GPU; bf16 autocast, channels_last.
- cifar10-paper (the seed paper's mediocre net): Adam 1e-3, batch 256, trained on 45,000 training
  images; a fixed, seeded slice of 5,000 training images is the validation set. Validation accuracy
  is measured every 50 steps and training stops the first time it reaches 70%.
- cifar10-resnet (ResNet-9, widths 64-128-256-384): all 50,000 training images, SGD nesterov
  momentum 0.9, weight decay 5e-4, batch 512, label smoothing 0.2, piecewise-linear learning rate
  0 -> 0.4 (first 5/24 of training) -> 0, 24 epochs. Progress is max(step fraction, time fraction of
  --resnet-seconds), so the schedule still anneals to 0 if the machine is slower than planned.
- ``--smoke`` runs on a tiny subset with one step per model (works on a CPU) to test the script.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: zoo.training is a folder
from zoo.training.zoo_models import CifarPaperNet, CifarResNet9

T0 = time.time()
PART_BYTES = 15 * 2**20


def log(*args) -> None:
    print(f"[{time.time() - T0:7.1f}s]", *args, flush=True)


# --------------------------------------------------------------------------- data
def decode_chunk(items: list[bytes]) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB"), dtype=np.uint8) for b in items])


def decode_split(data, split: str, index: np.ndarray, pool: Pool) -> tuple[np.ndarray, np.ndarray]:
    jpeg = data[f"{split}_jpeg"]
    offsets = data[f"{split}_offsets"]
    labels = data[f"{split}_labels"]
    blobs = [jpeg[offsets[i] : offsets[i + 1]].tobytes() for i in index]
    chunk = 500
    parts = pool.map(decode_chunk, [blobs[k : k + chunk] for k in range(0, len(blobs), chunk)])
    return np.concatenate(parts), labels[index].astype(np.int64)


def load_cifar(path: str, workers: int, smoke: bool):
    if not Path(path).is_file():
        sys.exit(f"error: CIFAR-10 data not found at {path} (expected cifar10_jpeg.npz)")
    data = np.load(path)
    n_train = len(data["train_labels"])
    n_test = len(data["test_labels"])
    # Images are grouped by class: a smoke subset takes evenly spaced images to keep all classes.
    train_index = np.arange(0, n_train, 100) if smoke else np.arange(n_train)
    test_index = np.arange(0, n_test, 40) if smoke else np.arange(n_test)
    with Pool(workers) as pool:
        x_train, y_train = decode_split(data, "train", train_index, pool)
        x_test, y_test = decode_split(data, "test", test_index, pool)
    return x_train, y_train, x_test, y_test


class GpuImages:
    """uint8 NHWC images on the device; batches come out as float NCHW (channels_last) in [-1, 1]."""

    def __init__(self, x: np.ndarray, y: np.ndarray, device: torch.device, pad: int = 4):
        self.pad = pad
        self.x = torch.from_numpy(np.ascontiguousarray(x)).to(device)
        padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
        self.xp = torch.from_numpy(padded).to(device)
        self.y = torch.from_numpy(y).to(device)
        self.device = device
        self.arange = torch.arange(x.shape[1], device=device)

    def __len__(self) -> int:
        return len(self.y)

    @staticmethod
    def to_float(xb: torch.Tensor) -> torch.Tensor:
        x = xb.permute(0, 3, 1, 2).float() / 127.5 - 1.0
        return x.contiguous(memory_format=torch.channels_last)

    def train_batches(self, batch_size: int, index: torch.Tensor | None = None):
        """One epoch of augmented batches (random crop from the reflect-padded image, random flip)."""
        if index is None:
            index = torch.arange(len(self), device=self.device)
        order = index[torch.randperm(len(index), device=self.device)]
        n_batches = max(1, len(order) // batch_size)
        for k in range(n_batches):
            b = order[k * batch_size : (k + 1) * batch_size]
            n = len(b)
            oy = torch.randint(0, 2 * self.pad + 1, (n,), device=self.device)
            ox = torch.randint(0, 2 * self.pad + 1, (n,), device=self.device)
            rows = oy[:, None] + self.arange[None]
            cols = ox[:, None] + self.arange[None]
            flip = torch.rand(n, device=self.device) < 0.5
            cols = torch.where(flip[:, None], cols.flip(1), cols)
            xb = self.xp[b[:, None, None], rows[:, :, None], cols[:, None, :]]
            yield self.to_float(xb), self.y[b]

    @torch.no_grad()
    def accuracy(self, model, index: torch.Tensor | None = None, batch_size: int = 2500, amp=True) -> float:
        was_training = model.training
        model.eval()
        if index is None:
            index = torch.arange(len(self), device=self.device)
        correct = 0
        for k in range(0, len(index), batch_size):
            b = index[k : k + batch_size]
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
                logits = model(self.to_float(self.x[b]))
            correct += int((logits.argmax(1) == self.y[b]).sum())
        model.train(was_training)
        return correct / max(1, len(index))


def state_to_cpu(model) -> dict:
    return {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items()}


def save_state(state: dict, out: Path, name: str) -> list[str]:
    """Save ``state`` as ``name.pt``, or as ``name.part0.pt``, ``name.part1.pt``... when over 15 MiB."""
    total = sum(v.numel() * v.element_size() for v in state.values())
    if total < PART_BYTES:
        torch.save(state, out / f"{name}.pt")
        return [f"{name}.pt"]
    parts: list[dict] = [{}]
    size = 0
    for key, value in state.items():
        nbytes = value.numel() * value.element_size()
        if size + nbytes > PART_BYTES and parts[-1]:
            parts.append({})
            size = 0
        parts[-1][key] = value
        size += nbytes
    files = []
    for i, part in enumerate(parts):
        torch.save(part, out / f"{name}.part{i}.pt")
        files.append(f"{name}.part{i}.pt")
    return files


# --------------------------------------------------------------------------- training
def train_paper(train: GpuImages, test: GpuImages, args, device, amp: bool) -> dict:
    torch.manual_seed(args.seed)
    perm = torch.from_numpy(np.random.RandomState(args.seed).permutation(len(train))).to(device)
    n_val = args.val_size
    val_index, train_index = perm[:n_val], perm[n_val:]
    model = CifarPaperNet().to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=args.paper_lr)
    start = time.time()
    step = 0
    best = (-1.0, None, 0)
    stop_reason = "max epochs"
    history = []
    epoch = 0
    stopped_at = None
    for epoch in range(1, args.paper_epochs + 1):
        model.train()
        for xb, yb in train.train_batches(args.paper_batch, train_index):
            lr = args.paper_lr * min(1.0, (step + 1) / args.paper_warmup)
            for g in opt.param_groups:
                g["lr"] = lr
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step % args.paper_eval_every == 0 or args.smoke:
                val = train.accuracy(model, val_index, amp=amp)
                history.append({"step": step, "epoch": epoch, "val": val, "loss": loss.item()})
                if val > best[0]:
                    best = (val, state_to_cpu(model), step)
                if val >= args.paper_target:
                    stop_reason = f"validation accuracy {val:.4f} >= {args.paper_target} at step {step}"
                    stopped_at = step
                    break
            if time.time() - start > args.paper_seconds:
                stop_reason = f"time cap {args.paper_seconds}s at step {step}"
                break
            if args.smoke and step >= 1:
                stop_reason = "smoke: one step"
                break
        test_acc = test.accuracy(model, amp=amp)
        last_val = history[-1]["val"] if history else -1.0
        log(f"paper epoch {epoch} step {step} loss {loss.item():.3f} val {last_val:.4f} test {test_acc:.4f}")
        if stopped_at is not None or stop_reason != "max epochs":
            break
    if stopped_at is not None:
        state = state_to_cpu(model)
    else:  # the target was never reached: keep the best validation checkpoint
        state = best[1] if best[1] is not None else state_to_cpu(model)
        model.load_state_dict(state)
        stop_reason += f"; kept best validation checkpoint (step {best[2]}, val {best[0]:.4f})"
    val = train.accuracy(model, val_index, amp=False)
    test_acc = test.accuracy(model, amp=False)
    wall = time.time() - start
    log(f"paper done: {stop_reason}; val {val:.4f} test {test_acc:.4f} (fp32) wall {wall:.1f}s")
    files = save_state(state, args.out, "cifar10-paper")
    return {
        "files": files,
        "steps": step,
        "epochs_run": epoch,
        "epochs_fractional": step * args.paper_batch / len(train_index),
        "stop_reason": stop_reason,
        "val_accuracy": val,
        "gpu_test_accuracy_fp32": test_acc,
        "wall_s": wall,
        "history": history,
        "hyper": {
            "optimizer": "Adam",
            "lr": args.paper_lr,
            "warmup_steps": args.paper_warmup,
            "batch": args.paper_batch,
            "val_size": n_val,
            "eval_every_steps": args.paper_eval_every,
            "target_val_accuracy": args.paper_target,
            "augmentation": "random crop 32 from reflect-padded 40x40, random horizontal flip",
        },
    }


def train_resnet(train: GpuImages, test: GpuImages, args, device, amp: bool) -> dict:
    torch.manual_seed(args.seed)
    model = CifarResNet9().to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(
        model.parameters(), lr=0.0, momentum=0.9, nesterov=True, weight_decay=args.resnet_wd
    )
    steps_per_epoch = max(1, len(train) // args.resnet_batch)
    total_steps = steps_per_epoch * args.resnet_epochs
    peak_at = 5 / 24

    def lr_at(p: float) -> float:
        if p < peak_at:
            return args.resnet_lr * p / peak_at
        return args.resnet_lr * max(0.0, 1 - p) / (1 - peak_at)

    start = time.time()
    step = 0
    done = False
    stop_reason = "schedule complete"
    history = []
    epoch = 0
    for epoch in range(1, args.resnet_epochs + 1):
        model.train()
        for xb, yb in train.train_batches(args.resnet_batch):
            p = max(step / total_steps, (time.time() - start) / args.resnet_seconds)
            if p >= 1.0 or (args.smoke and step >= 1):
                done = True
                if args.smoke:
                    stop_reason = "smoke: one step"
                elif step < total_steps:
                    stop_reason = f"time cap {args.resnet_seconds}s at step {step}/{total_steps}"
                break
            for g in opt.param_groups:
                g["lr"] = lr_at(p)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = F.cross_entropy(model(xb), yb, label_smoothing=args.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        test_acc = test.accuracy(model, amp=amp)
        history.append({"epoch": epoch, "step": step, "loss": loss.item(), "test": test_acc})
        log(
            f"resnet epoch {epoch} step {step}/{total_steps} lr {lr_at(p):.4f} loss {loss.item():.3f} "
            f"test {test_acc:.4f} ({time.time() - start:.1f}s)"
        )
        if done:
            break
    wall = time.time() - start
    test_acc = test.accuracy(model, amp=False)
    log(f"resnet done ({stop_reason}): test {test_acc:.4f} (fp32) wall {wall:.1f}s")
    files = save_state(state_to_cpu(model), args.out, "cifar10-resnet")
    return {
        "files": files,
        "steps": step,
        "total_steps_planned": total_steps,
        "epochs_run": epoch,
        "epochs_fractional": step / steps_per_epoch,
        "stop_reason": stop_reason,
        "gpu_test_accuracy_fp32": test_acc,
        "wall_s": wall,
        "history": history,
        "hyper": {
            "optimizer": "SGD nesterov momentum 0.9",
            "peak_lr": args.resnet_lr,
            "schedule": "linear 0 -> peak over first 5/24 of progress, then linear -> 0",
            "weight_decay": args.resnet_wd,
            "batch": args.resnet_batch,
            "label_smoothing": args.label_smoothing,
            "epochs_planned": args.resnet_epochs,
            "augmentation": "random crop 32 from reflect-padded 40x40, random horizontal flip",
        },
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_data = Path(__file__).resolve().parents[3] / "shared/datasets/cifar10_jpeg.npz"
    parser.add_argument("--data", default=str(default_data))
    parser.add_argument("--out", default="out/cifar")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    parser.add_argument("--smoke", action="store_true", help="tiny subset, one step per model")
    parser.add_argument("--only", choices=["paper", "resnet"], default=None)
    parser.add_argument("--val-size", type=int, default=5000)
    parser.add_argument("--paper-lr", type=float, default=1e-3)
    parser.add_argument("--paper-warmup", type=int, default=100)
    parser.add_argument("--paper-batch", type=int, default=256)
    parser.add_argument("--paper-epochs", type=int, default=40)
    parser.add_argument("--paper-eval-every", type=int, default=50)
    parser.add_argument("--paper-target", type=float, default=0.70)
    parser.add_argument("--paper-seconds", type=float, default=100.0)
    parser.add_argument("--resnet-lr", type=float, default=0.4)
    parser.add_argument("--resnet-wd", type=float, default=5e-4)
    parser.add_argument("--resnet-batch", type=int, default=512)
    parser.add_argument("--resnet-epochs", type=int, default=24)
    parser.add_argument("--resnet-seconds", type=float, default=200.0)
    parser.add_argument("--label-smoothing", type=float, default=0.2)
    args = parser.parse_args(argv)
    args.out = Path(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        args.val_size = 100

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp = device.type == "cuda"
    gpu = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU"
    log(f"torch {torch.__version__}, device {device} ({gpu}), workers {args.workers}, smoke {args.smoke}")
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)

    x_train, y_train, x_test, y_test = load_cifar(args.data, args.workers, args.smoke)
    log(f"decoded train {x_train.shape} test {x_test.shape}")
    train = GpuImages(x_train, y_train, device)
    test = GpuImages(x_test, y_test, device)

    summary = {"gpu": gpu, "torch": torch.__version__, "seed": args.seed, "smoke": args.smoke, "models": {}}
    log_path = args.out / "cifar_train_log.json"
    if args.only in (None, "paper"):
        summary["models"]["cifar10-paper"] = train_paper(train, test, args, device, amp)
        log_path.write_text(json.dumps(summary, indent=1))
    if args.only in (None, "resnet"):
        summary["models"]["cifar10-resnet"] = train_resnet(train, test, args, device, amp)
    summary["total_wall_s"] = time.time() - T0
    log_path.write_text(json.dumps(summary, indent=1))
    log(f"all done in {summary['total_wall_s']:.1f}s; wrote {sorted(os.listdir(args.out))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
