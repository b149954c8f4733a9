#!/usr/bin/env python3
"""Train the MNIST zoo models on the CPU and build the zoo (ONNX files, manifest, sample images).

    python zoo/training/train_zoo.py mnist       [--data DIR] [--out out/mnist]   # mnist-lenet5
    python zoo/training/train_zoo.py mnist-weak  [--data DIR] [--out out/mnist]   # mnist-lenet5-weak
    python zoo/training/train_zoo.py build       [--data DIR] [--weights out] [--zoo zoo]

The CIFAR-10 models are trained on a GPU by ``zoo/training/gpu_train_cifar.py`` (weights under
``out/cifar``); ``build`` exports all four models to ONNX, measures their test accuracy with
onnxruntime on the full test sets, writes the sample PNGs and ``zoo/manifest.json``.

``--data`` defaults to ``../shared/datasets`` next to the repository.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # the repository root: zoo.training is a folder
from zoo.training.zoo_models import (  # noqa: E402
    CIFAR10_CLASSES,
    MNIST_CLASSES,
    build,
    cifar_preprocess,
    mnist_preprocess,
)

DEFAULT_DATA = REPO.parent / "shared" / "datasets"
SEED = 0


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else platform's description."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def log(*args) -> None:
    print(time.strftime("%H:%M:%S"), *args, flush=True)


def dataset_file(data_dir: str | Path, name: str) -> Path:
    path = Path(data_dir) / name
    if not path.is_file():
        sys.exit(
            f"error: {name} not found in {Path(data_dir).resolve()}; pass --data DIR "
            f"(the folder holding mnist.npz and cifar10_jpeg.npz, normally ../shared/datasets)"
        )
    return path


def load_mnist(data_dir) -> dict[str, np.ndarray]:
    with np.load(dataset_file(data_dir, "mnist.npz")) as d:
        return {k: d[k] for k in d.files}


def decode_cifar(data_dir, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """A CIFAR-10 split ("train" or "test") as uint8 [N, 32, 32, 3] RGB and labels."""
    from onnxlrp.datasets import decode_jpeg

    with np.load(dataset_file(data_dir, "cifar10_jpeg.npz")) as d:
        jpeg, offsets, labels = d[f"{split}_jpeg"], d[f"{split}_offsets"], d[f"{split}_labels"]
    images = np.stack([decode_jpeg(jpeg[offsets[i] : offsets[i + 1]].tobytes()) for i in range(len(labels))])
    return images, labels.astype(np.int64)


# --------------------------------------------------------------------------- MNIST training
def shift_batch(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Random translations by up to ``max_shift`` pixels; uncovered pixels get the background -1."""
    n, _, h, w = x.shape
    xp = F.pad(x, (max_shift,) * 4, value=-1.0)
    oy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    ox = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    rows = (oy[:, None] + torch.arange(h)[None])[:, :, None]
    cols = (ox[:, None] + torch.arange(w)[None])[:, None, :]
    return xp[torch.arange(n)[:, None, None], 0, rows, cols][:, None]


@torch.no_grad()
def accuracy(model, x: torch.Tensor, y: torch.Tensor, batch: int = 5000) -> float:
    model.eval()
    correct = sum(
        int((model(x[k : k + batch]).argmax(1) == y[k : k + batch]).sum()) for k in range(0, len(y), batch)
    )
    model.train()
    return correct / len(y)


def train_mnist(args) -> int:
    """mnist-lenet5: Adam, cosine learning rate, random shifts of up to 2 pixels, all 60,000 images."""
    torch.manual_seed(SEED)
    torch.set_num_threads(args.threads)
    d = load_mnist(args.data)
    x = torch.from_numpy(mnist_preprocess(d["x_train"]))
    y = torch.from_numpy(d["y_train"].astype(np.int64))
    xt = torch.from_numpy(mnist_preprocess(d["x_test"]))
    yt = torch.from_numpy(d["y_test"].astype(np.int64))
    model = build("mnist-lenet5")
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    steps_per_epoch = len(y) // args.batch
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch, pct_start=0.15
    )
    gen = torch.Generator().manual_seed(SEED)
    start = time.time()
    history = []
    for epoch in range(1, args.epochs + 1):
        perm = torch.randperm(len(y), generator=gen)
        for k in range(steps_per_epoch):
            b = perm[k * args.batch : (k + 1) * args.batch]
            xb = shift_batch(x[b], args.shift, gen) if args.shift else x[b]
            loss = F.cross_entropy(model(xb), y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        test = accuracy(model, xt, yt)
        history.append({"epoch": epoch, "loss": loss.item(), "test": test})
        log(
            f"mnist-lenet5 epoch {epoch}: loss {loss.item():.4f} test {test:.4f} ({time.time() - start:.0f}s)"
        )
    wall = time.time() - start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "mnist-lenet5.pt")
    info = {
        "command": "python zoo/training/train_zoo.py mnist " + " ".join(sys.argv[2:]),
        "seed": SEED,
        "epochs": args.epochs,
        "wall_s": wall,
        "machine": f"CPU ({cpu_name()}, {args.threads} torch thread(s), shared with other jobs)",
        "training": (
            f"Adam, one-cycle learning rate (peak {args.lr}, 15% warm-up, cosine decay), batch {args.batch}, "
            f"{args.epochs} epochs on all 60,000 training images, random shifts of up to {args.shift} "
            f"pixels (background -1); fixed epoch count, no early stopping"
        ),
        "torch_test_accuracy": history[-1]["test"],
        "history": history,
    }
    (out / "mnist-lenet5.json").write_text(json.dumps(info, indent=1))
    log(f"saved {out / 'mnist-lenet5.pt'}; test {history[-1]['test']:.4f}, wall {wall:.0f}s")
    return 0


def train_mnist_weak(args) -> int:
    """mnist-lenet5-weak: a small learning rate, stopped the first time validation accuracy reaches 42%."""
    torch.manual_seed(SEED)
    torch.set_num_threads(args.threads)
    d = load_mnist(args.data)
    x_all = torch.from_numpy(mnist_preprocess(d["x_train"]))
    y_all = torch.from_numpy(d["y_train"].astype(np.int64))
    perm = torch.from_numpy(np.random.RandomState(SEED).permutation(len(y_all)))
    val_index, train_index = perm[: args.val_size], perm[args.val_size :]
    xv, yv = x_all[val_index], y_all[val_index]
    x, y = x_all[train_index], y_all[train_index]
    xt = torch.from_numpy(mnist_preprocess(d["x_test"]))
    yt = torch.from_numpy(d["y_test"].astype(np.int64))
    model = build("mnist-lenet5-weak")
    if args.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(SEED)
    start = time.time()
    step = 0
    history = []
    val = 0.0
    order = torch.randperm(len(y), generator=gen)
    while step < args.max_steps:
        b = order[(step * args.batch) % len(y) :][: args.batch]
        loss = F.cross_entropy(model(x[b]), y[b])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % args.eval_every == 0:
            val = accuracy(model, xv, yv)
            history.append({"step": step, "loss": loss.item(), "val": val})
            if val >= args.target:
                break
    wall = time.time() - start
    test = accuracy(model, xt, yt)
    log(f"mnist-lenet5-weak: stopped at step {step}, val {val:.4f}, test {test:.4f}, wall {wall:.1f}s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "mnist-lenet5-weak.pt")
    info = {
        "command": "python zoo/training/train_zoo.py mnist-weak " + " ".join(sys.argv[2:]),
        "seed": SEED,
        "epochs": step * args.batch / len(y),
        "steps": step,
        "wall_s": wall,
        "machine": f"CPU ({cpu_name()}, {args.threads} torch thread(s), shared with other jobs)",
        "training": (
            f"{'Adam' if args.optimizer == 'adam' else 'plain SGD'}, learning rate {args.lr}, "
            f"batch {args.batch}, no augmentation, on 55,000 training "
            f"images; a seeded random slice of {args.val_size} training images is held out for validation"
        ),
        "stopping_rule": (
            f"validation accuracy is measured every {args.eval_every} training step(s); training stops "
            f"the first time it reaches {args.target:.0%} "
            f"(it stopped at step {step}, validation accuracy {val:.4f})"
        ),
        "val_accuracy": val,
        "torch_test_accuracy": test,
        "history": history,
    }
    (out / "mnist-lenet5-weak.json").write_text(json.dumps(info, indent=1))
    return 0


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --------------------------------------------------------------------------- build the zoo
ZOO_MODELS = ["mnist-lenet5", "mnist-lenet5-weak", "cifar10-paper", "cifar10-resnet"]
DATASET = {
    "mnist-lenet5": "mnist",
    "mnist-lenet5-weak": "mnist",
    "cifar10-paper": "cifar10",
    "cifar10-resnet": "cifar10",
}
ARCHITECTURE = {
    "mnist-lenet5": "LRP toolbox LeNet-5: conv5x5x10-relu-avgpool2, conv5x5x25-relu-avgpool2, "
    "conv4x4x100-relu-avgpool2, conv1x1x10, flatten; no padding (32-28-14-10-5-2-1)",
    "mnist-lenet5-weak": "the same LeNet-5 as mnist-lenet5, stopped early (the seed paper's weak model)",
    "cifar10-paper": "the seed paper's CIFAR-10 net: conv3x3x300 pad1-relu-maxpool2, conv2x2x300-relu-"
    "dropout0.1-maxpool2, conv3x3x300 pad1-relu-dropout0.2-maxpool2, conv2x2x300-relu-maxpool2, "
    "flatten, dense300-relu, dense100-relu, dense10 (dropout vanishes in the exported eval graph)",
    "cifar10-resnet": "ResNet-9 after David Page's DAWNBench net, widths 64-128-256-384: conv-bn-relu "
    "blocks, 3 max pools, two identity residual blocks (Add), global max pool (a 4x4 MaxPool), "
    "linear 10; BatchNorm folded into the convolutions and the 0.125 output scale folded into the "
    "linear layer at export",
}
PREPROCESSING = {
    "mnist": {
        "source": "MNIST test image, uint8 grayscale 28x28, white digit on black (0..255)",
        "color": "L",
        "channel_order": "grayscale (1 channel)",
        "image_size": [28, 28],
        "scale": 1 / 127.5,
        "offset": -1.0,
        "formula": "x / 127.5 - 1",
        "pad": 2,
        "pad_value": -1.0,
        "layout": "NCHW",
        "input_shape": [1, 1, 32, 32],
        "low": -1.0,
        "high": 1.0,
    },
    "cifar10": {
        "source": "CIFAR-10 test image (the JPEG copy), uint8 RGB 32x32 decoded with Pillow",
        "color": "RGB",
        "channel_order": "RGB",
        "image_size": [32, 32],
        "scale": 1 / 127.5,
        "offset": -1.0,
        "formula": "x / 127.5 - 1",
        "pad": 0,
        "pad_value": None,
        "layout": "NCHW",
        "input_shape": [1, 3, 32, 32],
        "low": -1.0,
        "high": 1.0,
    },
}
CIFAR_SUBSET_PER_CLASS = 30


def load_weights(name: str, weights: Path) -> dict:
    if name.startswith("mnist"):
        path = weights / "mnist" / f"{name}.pt"
        if not path.is_file():
            sys.exit(f"error: {path} missing: train it with `python zoo/training/train_zoo.py {name[6:]}`")
        return torch.load(path, map_location="cpu")
    folder = weights / "cifar"
    whole = folder / f"{name}.pt"
    parts = sorted(folder.glob(f"{name}.part*.pt"), key=lambda p: int(p.suffixes[-2][5:]))
    if whole.is_file():
        return torch.load(whole, map_location="cpu")
    if not parts:
        sys.exit(f"error: no weights for {name} in {folder}: run zoo/training/gpu_train_cifar.py")
    state = {}
    for part in parts:
        state.update(torch.load(part, map_location="cpu"))
    return state


def training_info(name: str, weights: Path) -> dict:
    """What the manifest says about how ``name`` was trained (from the training scripts' logs)."""
    if name.startswith("mnist"):
        info = json.loads((weights / "mnist" / f"{name}.json").read_text())
        out = {k: info[k] for k in ("command", "seed", "epochs", "wall_s", "machine", "training")}
        for key in ("steps", "stopping_rule", "val_accuracy"):
            if key in info:
                out[key] = info[key]
        out["script"] = "zoo/training/train_zoo.py"
        return out
    log_data = json.loads((weights / "cifar" / "cifar_train_log.json").read_text())
    info = log_data["models"][name]
    hyper = info["hyper"]
    command = (
        "PYTHONUNBUFFERED=1 python3 zoo/training/gpu_train_cifar.py --data .gpudata/cifar10_jpeg.npz "
        "--out $OUT --workers 16 --paper-seconds 100 --resnet-seconds 200  (both CIFAR models, one process)"
    )
    out = {
        "command": command,
        "script": "zoo/training/gpu_train_cifar.py",
        "seed": log_data["seed"],
        "epochs": round(info["epochs_fractional"], 3),
        "steps": info["steps"],
        "wall_s": round(info["wall_s"], 1),
        "machine": f"GPU: {log_data['gpu']} (torch {log_data['torch']}, bf16 autocast)",
        "hyperparameters": hyper,
    }
    if name == "cifar10-paper":
        out["training"] = (
            f"Adam lr {hyper['lr']} ({hyper['warmup_steps']}-step warm-up), batch {hyper['batch']}, "
            f"on 45,000 training images ({hyper['augmentation']}); a seeded slice of "
            f"{hyper['val_size']} training images is held out for validation"
        )
        out["stopping_rule"] = (
            f"validation accuracy measured every {hyper['eval_every_steps']} steps; stop the first time it "
            f"reaches {hyper['target_val_accuracy']:.0%} ({info['stop_reason']})"
        )
        out["val_accuracy"] = info["val_accuracy"]
    else:
        out["training"] = (
            f"{hyper['optimizer']}, peak lr {hyper['peak_lr']} ({hyper['schedule']}), weight decay "
            f"{hyper['weight_decay']}, batch {hyper['batch']}, label smoothing {hyper['label_smoothing']}, "
            f"{hyper['epochs_planned']} epochs on all 50,000 training images ({hyper['augmentation']})"
        )
        out["stopping_rule"] = f"fixed schedule ({info['stop_reason']})"
    return out


def ort_logits(path: Path, x: np.ndarray, cache: Path, batch: int = 500) -> np.ndarray:
    """onnxruntime logits of ``x``, cached under ``cache`` by the model file's sha256."""
    import onnxruntime as ort

    key = cache / f"{path.stem}-{sha256(path)[:16]}-{len(x)}.npy"
    if key.is_file():
        return np.load(key)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    out = np.concatenate(
        [session.run(["logits"], {"input": x[k : k + batch]})[0] for k in range(0, len(x), batch)]
    )
    cache.mkdir(parents=True, exist_ok=True)
    np.save(key, out)
    return out


def cifar_subset(labels: np.ndarray, per_class: int = CIFAR_SUBSET_PER_CLASS) -> np.ndarray:
    """Indices of the first ``per_class`` test images of each class (sorted)."""
    return np.sort(np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)]))


def build_zoo(args) -> int:
    """Export every model to ONNX, measure it with onnxruntime, write samples and the manifest."""
    from PIL import Image

    from onnxlrp.converters.pytorch import export_module

    zoo = Path(args.zoo)
    weights = Path(args.weights)
    cache = weights / "logits"
    (zoo / "samples").mkdir(parents=True, exist_ok=True)
    import onnxruntime as ort

    d = load_mnist(args.data)
    data = {"mnist": (d["x_test"], d["y_test"].astype(np.int64))}
    log("decoding the CIFAR-10 test split")
    data["cifar10"] = decode_cifar(args.data, "test")
    inputs = {"mnist": mnist_preprocess(data["mnist"][0]), "cifar10": cifar_preprocess(data["cifar10"][0])}
    classes = {"mnist": MNIST_CLASSES, "cifar10": CIFAR10_CLASSES}

    manifest_models = {}
    logits_of = {}
    for name in ZOO_MODELS:
        ds = DATASET[name]
        module = build(name)
        module.load_state_dict(load_weights(name, weights))
        module.eval()
        if hasattr(module, "fold_scale"):
            module.fold_scale()
        path = zoo / f"{name}.onnx"
        channels = 1 if ds == "mnist" else 3
        check = export_module(module, torch.zeros(1, channels, 32, 32), path)
        log(f"{name}: onnxruntime on the full {ds} test split ({len(inputs[ds])} images)")
        logits = ort_logits(path, inputs[ds], cache)
        logits_of[name] = logits
        labels = data[ds][1]
        correct = int((logits.argmax(1) == labels).sum())
        entry = {
            "file": path.name,
            "sha256": sha256(path),
            "bytes": path.stat().st_size,
            "dataset": ds,
            "classes": classes[ds],
            "architecture": ARCHITECTURE[name],
            "parameters": int(sum(p.numel() for p in module.parameters())),
            "input": {
                "name": "input",
                "shape": ["N", channels, 32, 32],
                "dtype": "float32",
                "layout": "NCHW",
            },
            "output": {"name": "logits", "shape": ["N", 10], "dtype": "float32"},
            "preprocessing": PREPROCESSING[ds],
            "low": -1.0,
            "high": 1.0,
            "accuracy": {
                "test_accuracy": correct / len(labels),
                "test_correct": correct,
                "test_total": len(labels),
                "measured_with": f"onnxruntime {ort.__version__} CPU, float32, full test split",
            },
            "export": {
                "exporter": f"torch {torch.__version__.split('+')[0]} torch.onnx.export(dynamo=False)",
                "opset": 17,
                "ir_version": 10,
                "ops": check["ops"],
                "max_abs_diff_vs_torch": check["max_abs"],
            },
            "training": training_info(name, weights),
        }
        if ds == "cifar10":
            subset = cifar_subset(labels)
            entry["accuracy"]["subset_check"] = {
                "rule": f"the first {CIFAR_SUBSET_PER_CLASS} test images of each class",
                "per_class": CIFAR_SUBSET_PER_CLASS,
                "correct": int((logits[subset].argmax(1) == labels[subset]).sum()),
                "total": len(subset),
            }
        log(f"{name}: test accuracy {correct / len(labels):.4f} ({correct}/{len(labels)})")
        manifest_models[name] = entry

    # samples, each chosen by a stated rule
    samples = {"mnist": [], "cifar10": []}
    _, my = data["mnist"]
    for digit in range(10):
        i = int(np.flatnonzero(my == digit)[0])
        samples["mnist"].append((i, f"the first test image of class {digit}"))
    strong = logits_of["mnist-lenet5"]
    top2 = np.argsort(-strong, axis=1)[:, :2]
    candidates = np.flatnonzero(np.isin(my, [3, 5]) & np.all(np.isin(top2, [3, 5]), axis=1))
    if len(candidates) == 0:  # only for a badly trained "strong" model
        candidates = np.flatnonzero(np.isin(my, [3, 5]))
    gap = np.abs(strong[candidates, 3] - strong[candidates, 5])
    ambiguous = int(candidates[np.argmin(gap)])
    samples["mnist"].append(
        (
            ambiguous,
            "ambiguous 3/5: among test images labelled 3 or 5 whose top-2 classes under mnist-lenet5 are "
            "3 and 5, the one with the smallest |logit3 - logit5|",
        )
    )
    _, cy = data["cifar10"]
    for c, cname in enumerate(CIFAR10_CLASSES):
        count = 3 if cname in ("horse", "automobile", "cat") else 1
        for i in np.flatnonzero(cy == c)[:count]:
            rule = (
                f"the first {count} test images of class {cname}"
                if count > 1
                else f"the first test image of class {cname}"
            )
            samples["cifar10"].append((int(i), rule))

    for old in (zoo / "samples").glob("*.png"):
        old.unlink()
    manifest_samples = {}
    for ds, chosen in samples.items():
        images, labels = data[ds]
        entries = []
        for i, rule in chosen:
            label = int(labels[i])
            file = f"samples/{ds}_test{i:05d}_{classes[ds][label]}.png"
            if any(e["file"] == file for e in entries):
                entries[[e["file"] for e in entries].index(file)]["rule"] += "; and " + rule
                continue
            Image.fromarray(images[i], mode="L" if ds == "mnist" else "RGB").save(zoo / file, optimize=True)
            predictions = {}
            for name in ZOO_MODELS:
                if DATASET[name] == ds:
                    z = logits_of[name][i]
                    predictions[name] = {
                        "predicted": int(z.argmax()),
                        "logits": [round(float(v), 4) for v in z],
                    }
            entries.append(
                {
                    "file": file,
                    "sha256": sha256(zoo / file),
                    "dataset": ds,
                    "split": "test",
                    "index": i,
                    "label": label,
                    "class": classes[ds][label],
                    "rule": rule,
                    "predictions": predictions,
                }
            )
        manifest_samples[ds] = entries

    manifest = {
        "format": 1,
        "description": (
            "onnxlrp model zoo: ONNX classifiers for LRP experiments. Every model takes float32 NCHW "
            "images in [-1, 1] (input 'input', dynamic batch) and returns logits (output 'logits'). "
            "Weights trained by zoo/training/train_zoo.py (MNIST, CPU) and zoo/training/gpu_train_cifar.py "
            "(CIFAR-10, GPU); ONNX files, accuracies and samples written by "
            "`python zoo/training/train_zoo.py build`."
        ),
        "datasets": {
            "mnist": "mnist.npz (the project's ../shared/datasets copy; test split = original t10k files)",
            "cifar10": "cifar10_jpeg.npz (the project's JPEG copy of CIFAR-10, quality 75; "
            "test split grouped by class)",
        },
        "models": manifest_models,
        "samples": manifest_samples,
    }
    (zoo / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(f.stat().st_size for f in zoo.rglob("*") if f.is_file())
    log(f"wrote {zoo / 'manifest.json'}; zoo size {total / 1e6:.2f} MB")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("mnist", help="train mnist-lenet5")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--shift", type=int, default=2)
    p.set_defaults(func=train_mnist)
    p = sub.add_parser("mnist-weak", help="train mnist-lenet5-weak")
    p.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--val-size", type=int, default=5000)
    p.add_argument("--eval-every", type=int, default=1)
    p.add_argument("--target", type=float, default=0.42)
    p.add_argument("--max-steps", type=int, default=20000)
    p.set_defaults(func=train_mnist_weak)
    p = sub.add_parser("build", help="export the zoo to ONNX, measure it, write samples and the manifest")
    p.add_argument("--weights", default=str(REPO / "out"), help="folder with mnist/ and cifar/ weights")
    p.add_argument("--zoo", default=str(REPO / "zoo"))
    p.set_defaults(func=build_zoo)
    for p in sub.choices.values():
        p.add_argument("--data", default=str(DEFAULT_DATA), help="folder with mnist.npz / cifar10_jpeg.npz")
        p.add_argument("--out", default=str(REPO / "out" / "mnist"))
        p.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
