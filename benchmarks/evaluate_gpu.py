"""AOPC evaluation with the perturbation forwards on a GPU (issue 7), in three steps.

The relevance is computed by onnxlrp with onnxruntime on this machine; only the many forward
passes of perturbed images (N * (L+1) per method) run elsewhere, through a small torch
interpreter of the ONNX graph (Conv, Gemm, pooling, Relu, Add, ...), because the GPU machine's
onnxruntime is CPU-only. The library itself never imports torch: only ``curves`` here does.

    # 1. here: targets and region scores of every method (onnxruntime, CPU)
    python benchmarks/evaluate_gpu.py prepare cifar10-paper cifar10 --n 1000 --dir out/gpu_in
    # 2. on the GPU machine: the perturbation curves (torch, CUDA), checked against onnxruntime logits
    python benchmarks/evaluate_gpu.py curves --dir out/gpu_in --out $OUT
    # 3. here: AOPC table, JSON/CSV and PNG, as `onnxlrp evaluate` writes them
    python benchmarks/evaluate_gpu.py finish cifar10-paper --dir out/gpu_in --curves DIR --out out/evaluate/X
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from onnxlrp import evaluation as ev
from onnxlrp import zoo


def prepare(args) -> None:
    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    path, zoo_model = zoo.locate(args.model)
    name = Path(args.model).stem if args.model.endswith(".onnx") else args.model
    data_name = Path(args.data).stem if args.data.endswith(".npy") else args.data
    x, labels, idx = ev.load_dataset(args.data, zoo_model, n=args.n)
    xfile = out / f"x_{data_name}_{len(x)}.npy"
    if not xfile.exists():
        np.save(xfile, x)
    forward = ev.onnx_forward(path)
    logits = np.concatenate([forward(x[i : i + 256]) for i in range(0, len(x), 256)])
    targets = logits.argmax(axis=1)
    value_range = ev.data_range(x)
    low, high = float(np.min(value_range[0])), float(np.max(value_range[1]))
    methods = list(ev.DEFAULT_METHODS + ev.BASELINES) if not args.method else args.method
    t0 = time.time()
    scores, notes = ev.method_region_scores(
        path,
        x,
        targets,
        methods,
        region=args.region,
        batch_size=64,
        seed=args.seed,
        low=low,
        high=high,
        progress=True,
    )
    uniq: dict[int, str] = {}
    arrays, alias = {}, {}
    for label, sc in scores.items():
        if id(sc) in uniq:
            alias[label] = uniq[id(sc)]
        else:
            uniq[id(sc)] = label
            arrays[f"scores::{label}"] = sc
    meta = {
        "model": name,
        "model_path": str(path),
        "data": data_name,
        "x_file": xfile.name,
        "region": args.region,
        "steps": args.steps,
        "seed": args.seed,
        "perturbation": args.perturbation,
        "order": args.order,
        "value_range": [v.tolist() for v in value_range],
        "labels_used": list(scores),
        "alias": alias,
        "notes": notes,
        "relevance_seconds": time.time() - t0,
    }
    np.savez(
        out / f"{name}.npz",
        targets=targets,
        logits=logits,
        labels=labels if labels is not None else np.zeros(0),
        indices=idx,
        meta=json.dumps(meta),
        **arrays,
    )
    print(f"{name}: relevance of {len(scores)} methods for {len(x)} images in {time.time() - t0:.0f}s")


def inputs(args) -> None:
    """Preprocessed test inputs and labels of a zoo model's data set, for the device run."""
    _, zoo_model = zoo.locate(args.model)
    x, labels, idx = ev.load_dataset(args.data, zoo_model, n=args.n)
    Path(args.file).parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.file, x=x, labels=labels if labels is not None else np.zeros(0), indices=idx)
    print(args.file, x.shape)


def torch_forward(model_path: str, device: str, dtype=None):
    """numpy [B, C, H, W] -> logits, by interpreting the ONNX graph with torch ops."""
    import torch
    import torch.nn.functional as F
    from onnx import helper, numpy_helper

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    proto = ev.logit_model(model_path)
    graph = proto.graph
    dtype = dtype or torch.float32
    inits = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()).to(device) for i in graph.initializer}
    inits = {k: v.to(dtype) if v.is_floating_point() else v for k, v in inits.items()}
    in_name = next(i.name for i in graph.input if i.name not in inits)
    out_name = graph.output[0].name
    nodes = [
        (
            n.op_type,
            list(n.input),
            list(n.output),
            {a.name: helper.get_attribute_value(a) for a in n.attribute},
        )
        for n in graph.node
    ]

    def sym(p):
        half = len(p) // 2
        if list(p[:half]) != list(p[half:]):
            raise NotImplementedError(f"asymmetric pads {p}")
        return list(p[:half])

    def run(x):
        env = dict(inits)
        env[in_name] = x
        for op, ins, outs, a in nodes:
            v = [env[i] if i else None for i in ins]
            if op == "Conv":
                y = F.conv2d(
                    v[0],
                    v[1],
                    v[2] if len(v) > 2 else None,
                    stride=a.get("strides", 1),
                    padding=sym(a.get("pads", [0, 0, 0, 0])),
                    dilation=a.get("dilations", 1),
                    groups=a.get("group", 1),
                )
            elif op == "Relu":
                y = F.relu(v[0])
            elif op == "MaxPool":
                y = F.max_pool2d(
                    v[0],
                    a["kernel_shape"],
                    a.get("strides", 1),
                    sym(a.get("pads", [0, 0, 0, 0])),
                    a.get("dilations", 1),
                    bool(a.get("ceil_mode", 0)),
                )
            elif op == "AveragePool":
                y = F.avg_pool2d(
                    v[0],
                    a["kernel_shape"],
                    a.get("strides", 1),
                    sym(a.get("pads", [0, 0, 0, 0])),
                    bool(a.get("ceil_mode", 0)),
                    bool(a.get("count_include_pad", 0)),
                )
            elif op == "GlobalAveragePool":
                y = v[0].mean(dim=(2, 3), keepdim=True)
            elif op == "GlobalMaxPool":
                y = v[0].amax(dim=(2, 3), keepdim=True)
            elif op == "Flatten":
                axis = a.get("axis", 1)
                y = v[0].reshape(int(np.prod(v[0].shape[:axis])), -1)
            elif op == "Gemm":
                A = v[0].T if a.get("transA", 0) else v[0]
                B = v[1].T if a.get("transB", 0) else v[1]
                y = a.get("alpha", 1.0) * (A @ B)
                if len(v) > 2 and v[2] is not None:
                    y = y + a.get("beta", 1.0) * v[2]
            elif op == "MatMul":
                y = v[0] @ v[1]
            elif op == "Add":
                y = v[0] + v[1]
            elif op == "Mul":
                y = v[0] * v[1]
            elif op in ("Identity", "Dropout"):
                y = v[0]
            elif op == "BatchNormalization":
                y = F.batch_norm(v[0], v[3], v[4], v[1], v[2], False, 0.0, a.get("epsilon", 1e-5))
            elif op == "Reshape":
                shape = [int(s) for s in v[1].tolist()]
                shape = [v[0].shape[i] if s == 0 else s for i, s in enumerate(shape)]
                y = v[0].reshape(shape)
            else:
                raise NotImplementedError(f"op {op} in {model_path}")
            env[outs[0]] = y
        return env[out_name]

    def forward(batch: np.ndarray) -> np.ndarray:
        xt = torch.from_numpy(np.ascontiguousarray(batch)).to(device=device, dtype=dtype)
        with torch.inference_mode():
            return run(xt).double().cpu().numpy()

    forward.run = run  # differentiable: used by gradient_check
    return forward


def gradient_check(args) -> None:
    """LRP-0 relevance (onnxlrp) against x * autograd gradient in float64 (torch), per zoo model."""
    import torch

    for name in args.models:
        path, entry = zoo.locate(name)
        data = "cifar10" if name.startswith("cifar") else "mnist"
        x, _, _ = ev.load_dataset(data, entry, n=args.n)
        targets = ev.onnx_forward(path)(x).argmax(1)
        rel = ev.compute_relevance(path, x, targets, ev.parse_method("gradxinput"))
        run = torch_forward(str(path), "cpu", torch.float64).run
        xt = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
        logits = run(xt)
        logits[torch.arange(len(x)), torch.from_numpy(targets)].sum().backward()
        gxi = (xt.grad * xt).detach().numpy()
        err = np.abs(rel - gxi).reshape(len(x), -1).max(1) / np.abs(gxi).reshape(len(x), -1).max(1)
        print(f"{name}: max |LRP-0 - x*grad| / max |x*grad| over {len(x)} images: {err.max():.2e}")


def curves(args) -> None:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    src = Path(args.dir)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu"}
    for f in sorted(src.glob("*.npz")):
        t0 = time.time()
        d = np.load(f)
        meta = json.loads(str(d["meta"]))
        x = np.load(src / meta["x_file"])
        model_path = Path(meta["model_path"])
        if not model_path.exists():
            model_path = src / model_path.name
        fwd = torch_forward(str(model_path), device)
        clean = np.concatenate([fwd(x[i : i + 4096]) for i in range(0, len(x), 4096)])
        diff = float(np.abs(clean - d["logits"]).max())
        agree = float((clean.argmax(1) == d["targets"]).mean())
        res = {}
        for key in d.files:
            if not key.startswith("scores::"):
                continue
            res[key.replace("scores::", "curves::")] = ev.perturbation_curve(
                fwd,
                x,
                d[key],
                d["targets"],
                region=meta["region"],
                steps=meta["steps"],
                perturbation=meta["perturbation"],
                order=meta["order"],
                batch_size=args.batch_size,
                seed=meta["seed"],
                value_range=meta["value_range"],
            )
        np.savez(out / f"curves_{f.stem}.npz", **res)
        log[f.stem] = {
            "max_abs_logit_diff_vs_onnxruntime": diff,
            "argmax_agreement": agree,
            "seconds": time.time() - t0,
            "methods": len(res),
        }
        print(f.stem, log[f.stem], flush=True)
    (out / "curves_log.json").write_text(json.dumps(log, indent=1))


def device(args) -> None:
    """On the GPU machine: relevance (onnxruntime, its CPUs) and curves (torch, CUDA) per model.

    Relevance runs in chunks of ``--chunk`` images, every model and method per chunk, until all
    ``--n`` images are done or ``--deadline`` seconds have passed (then every method has the same
    first N images). Curves (MoRF with uniform noise; also LeRF and MoRF with blur) then run on the
    GPU. Writes ``<model>.npz`` (targets, logits, labels, meta, scores::<m>, curves[_lerf|_blur]::<m>).
    """
    import torch

    import onnxlrp

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    log = {"device": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu", "models": {}}
    specs = args.method or list(ev.DEFAULT_METHODS + ev.BASELINES)
    state = {}
    for model_path in args.models:
        name = Path(model_path).stem
        inputs = np.load(Path(args.inputs_dir) / args.inputs[name])
        x = np.ascontiguousarray(inputs["x"][: args.n], dtype=np.float32)
        ort_fwd = ev.onnx_forward(model_path)
        logits = np.concatenate([ort_fwd(x[i : i + 256]) for i in range(0, len(x), 256)])
        value_range = ev.data_range(x)
        low, high = float(np.min(value_range[0])), float(np.max(value_range[1]))
        methods, order, alias, sessions = [], [], {}, {}
        for spec in specs:
            m = ev.parse_method(spec)
            order.append(m.label)
            key = "lrp0" if m.kind == "gradxinput" else m.label
            if key in [k for k, _ in methods]:
                alias[m.label] = dict(methods)[key].label
                continue
            methods.append((key, m))
            if m.kind != "random":
                kw = dict(m.kwargs)
                if kw.get("rule") == "zbox" or kw.get("composite") == "epsilon-gamma-box":
                    kw.update(low=low, high=high)
                sessions[m.label] = onnxlrp.RelevanceSession(onnxlrp.compile(model_path, **kw))
        state[name] = {
            "path": model_path, "x": x, "labels": inputs["labels"][: args.n], "logits": logits,
            "targets": logits.argmax(axis=1), "value_range": value_range, "methods": [m for _, m in methods],
            "order": order, "alias": alias, "sessions": sessions,
            "scores": {m.label: [] for _, m in methods}, "seconds": {m.label: 0.0 for _, m in methods},
        }  # fmt: skip
    print(f"setup {time.time() - t_start:.0f}s", flush=True)
    done = 0
    n_total = min(len(st["x"]) for st in state.values())
    while done < n_total and time.time() - t_start < args.deadline:
        sl = slice(done, min(done + args.chunk, n_total))
        for st in state.values():
            for m in st["methods"]:
                t0 = time.time()
                if m.kind == "random":
                    rel = ev.random_relevance(st["x"][sl].shape, args.seed, index_offset=sl.start)
                else:
                    rel = st["sessions"][m.label].run(st["x"][sl], target=st["targets"][sl])["relevance"]
                rel = np.nan_to_num(np.asarray(rel, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
                st["scores"][m.label].append(ev.region_relevance(rel, args.region))
                st["seconds"][m.label] += time.time() - t0
        done = sl.stop
        print(f"relevance: {done} images, {time.time() - t_start:.0f}s", flush=True)
    variants = [("", "morf", "uniform"), ("_lerf", "lerf", "uniform"), ("_blur", "morf", "blur")]
    for st in state.values():
        st["fwd"] = torch_forward(st["path"], dev)
        st["arrays"], st["timings"] = {}, {}
        for m in st["methods"]:
            st["arrays"][f"scores::{m.label}"] = np.concatenate(st["scores"][m.label])
            st["timings"][m.label] = {
                "relevance_s_per_image": round(st["seconds"][m.label] / max(done, 1), 4)
            }
    for tag, order, pert in variants:
        if tag and time.time() - t_start > args.extras_deadline:
            print(f"skipping variant {tag}: {time.time() - t_start:.0f}s", flush=True)
            continue
        for name, st in state.items():
            fwd, x, targets = st["fwd"], st["x"][:done], st["targets"][:done]
            arrays, timings = st["arrays"], st["timings"]
            for m in st["methods"]:
                t0 = time.time()
                arrays[f"curves{tag}::{m.label}"] = ev.perturbation_curve(
                    fwd, x, arrays[f"scores::{m.label}"], targets, region=args.region, steps=args.steps,
                    perturbation=pert, order=order, batch_size=args.batch_size, seed=args.seed,
                    value_range=st["value_range"],
                )  # fmt: skip
                timings[m.label][f"curves{tag or '_morf'}_s"] = round(time.time() - t0, 2)
                print(name, tag or "morf", m.label, timings[m.label],
                      f"aopc={ev.aopc(arrays[f'curves{tag}::' + m.label])[0]:.4f}", flush=True)  # fmt: skip
            _save_device_result(args, out, log, name, st, done, t_start)


def _save_device_result(args, out, log, name, st, done, t_start) -> None:
    x, targets, arrays, timings = st["x"][:done], st["targets"][:done], st["arrays"], st["timings"]
    if "clean" not in st:
        st["clean"] = np.concatenate([st["fwd"](x[i : i + 4096]) for i in range(0, len(x), 4096)])
    clean = st["clean"]
    meta = {
        "model": name,
        "model_path": str(st["path"]),
        "data": "cifar10"
        if "cifar" in args.inputs[name]
        else "mnist"
        if "mnist" in args.inputs[name]
        else "npz",
        "region": args.region,
        "steps": args.steps,
        "seed": args.seed,
        "perturbation": "uniform",
        "order": "morf",
        "value_range": [v.tolist() for v in st["value_range"]],
        "labels_used": st["order"],
        "alias": st["alias"],
        "notes": [],
        "timings": timings,
        "n_done": done,
        "forward_check": {
            "max_abs_logit_diff_torch_vs_onnxruntime": float(np.abs(clean - st["logits"][:done]).max()),
            "argmax_agreement": float((clean.argmax(1) == targets).mean()),
        },
    }
    small = {k: v.astype(np.float32) for k, v in arrays.items()}  # the logits are float32 anyway
    np.savez_compressed(out / f"{name}.npz", targets=targets, logits=st["logits"][:done],
                        labels=st["labels"][:done], meta=json.dumps(meta), **small)  # fmt: skip
    log["models"][name] = {k: meta[k] for k in ("n_done", "timings", "forward_check")}
    (out / "device_log.json").write_text(json.dumps(log, indent=1))
    print(name, "done", meta["forward_check"], f"{time.time() - t_start:.0f}s", flush=True)


def finish(args) -> None:
    combined = Path(args.curves) / f"{args.model}.npz"
    if combined.exists():  # written by `device`: scores, curves and meta in one file
        d = c = np.load(combined)
    else:
        d = np.load(Path(args.dir) / f"{args.model}.npz")
        c = np.load(Path(args.curves) / f"curves_{args.model}.npz")
    meta = json.loads(str(d["meta"]))
    curves_by = {}
    for label in meta["labels_used"]:
        base = meta["alias"].get(label, label)
        curves_by[label] = c[f"curves{args.variant}::{base}"]
    labels = d["labels"] if d["labels"].size else None
    s = {
        "region": meta["region"],
        "timings": meta.get("timings"),
        "skipped": meta.get("skipped"),
        "steps": int(next(iter(curves_by.values())).shape[1] - 1),
        "perturbation": "blur" if args.variant == "_blur" else meta["perturbation"],
        "order": "lerf" if args.variant == "_lerf" else meta["order"],
        "seed": meta["seed"],
        "n": len(d["targets"]),
        "value_range": meta["value_range"],
        "blur_sigma": meta["region"] / 2 if args.variant == "_blur" else None,
        "target": "predicted class of the clean image",
        "forward": "perturbed forwards by a torch interpreter of the ONNX graph on the GPU machine",
        "relevance_seconds": meta.get("relevance_seconds"),
    }
    log_path = Path(args.curves) / "curves_log.json"
    if "forward_check" in meta:
        s["forward_check"] = meta["forward_check"]
    elif log_path.exists():
        s["forward_check"] = json.loads(log_path.read_text()).get(args.model)
    accuracy = float((d["targets"] == labels).mean()) if labels is not None else None
    result = ev.EvaluationResult(args.model, meta["data"], curves_by, s, accuracy, meta["notes"])
    paths = ev.write_results(result, args.out, stem="aopc" + args.variant)
    for row in result.table():
        vs = f"{row['vs_random']:>+10.4f} {row['vs_random_stderr']:>8.4f}" if "vs_random" in row else ""
        print(f"{row['method']:<32} {row['aopc']:>10.4f} {row['stderr']:>8.4f} {vs}")
    print(json.dumps({k: str(v) for k, v in paths.items()}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("prepare")
    a.add_argument("model")
    a.add_argument("data")
    a.add_argument("--n", type=int, default=1000)
    a.add_argument("--dir", default="out/gpu_in")
    a.add_argument("--method", action="append", default=[])
    a.add_argument("--region", type=int, default=4)
    a.add_argument("--steps", type=int, default=None)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--perturbation", default="uniform")
    a.add_argument("--order", default="morf")
    a.set_defaults(func=prepare)
    b = sub.add_parser("curves")
    b.add_argument("--dir", default="out/gpu_in")
    b.add_argument("--out", required=True)
    b.add_argument("--batch-size", type=int, default=8192)
    b.set_defaults(func=curves)
    i = sub.add_parser("inputs")
    i.add_argument("model")
    i.add_argument("data")
    i.add_argument("file")
    i.add_argument("--n", type=int, default=1000)
    i.set_defaults(func=inputs)
    e = sub.add_parser("device")
    e.add_argument("models", nargs="+", help=".onnx paths")
    e.add_argument("--inputs-dir", default="out/gpu_in")
    e.add_argument("--inputs", required=True, help='JSON {"model": "x file (npz with x, labels)"}')
    e.add_argument("--out", required=True)
    e.add_argument("--n", type=int, default=1000)
    e.add_argument("--method", action="append", default=[])
    e.add_argument("--region", type=int, default=4)
    e.add_argument("--steps", type=int, default=None)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--perturbation", default="uniform")
    e.add_argument("--order", default="morf")
    e.add_argument("--batch-size", type=int, default=8192)
    e.add_argument("--rel-batch", type=int, default=100)
    e.add_argument("--deadline", type=float, default=420.0, help="no relevance chunk starts after this")
    e.add_argument("--chunk", type=int, default=100)
    e.add_argument("--extras-deadline", type=float, default=480.0, help="no LeRF/blur variant after this")
    e.set_defaults(func=device)
    g = sub.add_parser("gradient-check")
    g.add_argument("models", nargs="+")
    g.add_argument("--n", type=int, default=16)
    g.set_defaults(func=gradient_check)
    c = sub.add_parser("finish")
    c.add_argument("model")
    c.add_argument("--dir", default="out/gpu_in")
    c.add_argument("--curves", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--variant", default="", choices=["", "_lerf", "_blur"])
    c.set_defaults(func=finish)
    args = p.parse_args()
    if getattr(args, "inputs", None) and isinstance(args.inputs, str):
        args.inputs = json.loads(args.inputs)
    args.func(args)


if __name__ == "__main__":
    main()
