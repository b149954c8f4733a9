"""`onnxlrp explain`: heatmaps of input relevance, inner feature maps and single neurons.

    onnxlrp explain MODEL IMAGE... [--rule R | --composite C] [--epsilon E] [--alpha A --beta B]
                    [--target K] [--out DIR] [--layer TENSOR] [--neuron TENSOR:INDEX]...
                    [--augment flip,hue] [--percentile P] [--batch-size N]

MODEL is an .onnx path or a zoo name; IMAGE files (PNG/JPEG, preprocessed as the zoo model says,
or for a plain .onnx file: resized to the model's input size and scaled to [0, 1]) or one .npy
batch ([N, C, H, W] or [C, H, W], already preprocessed).

Per input ``<name>`` the folder gets:
- ``<name>.png``: input and heatmap side by side (red +, blue -, white 0, symmetric scale),
  the predicted class, the target and its logit in the title; ``<name>.npy``: the relevance
  [C, H, W] exactly as the relevance graph returned it (float32);
- with ``--layer T``: ``<name>.layer-<T>.png``, a grid with one tile per channel of T (shared
  colour scale), and ``<name>.layer-<T>.npy``, the relevance arriving at T ([C, h, w]);
- with ``--neuron T:I``: ``<name>.neuron-<T>-<I>.png/.npy``, the input relevance when the
  relevance entering at T is 1 at the chosen unit(s) and 0 elsewhere (compiled with start=T).
  INDEX ``c`` is a channel: the seed is 1 at *every* position of channel c (for a layer whose
  maps are 1x1, e.g. after global pooling, that is one unit); INDEX ``c,h,w`` (or any full
  per-sample index, comma separated) is one single unit. The seed does not depend on the target.
- ``explain.json``: per input the prediction, target, logit, relevance sum and files.
With ``--augment flip,hue`` each image input also gets ``<name>_flip`` (mirrored) and
``<name>_hue`` (hue rotated by 0.3 of the colour circle in HSV, on the uint8 image before
preprocessing) copies, as in the seed paper's Figure 7.

Rules: the options of `onnxlrp compile` (--rule epsilon|alphabeta:3,2|..., --composite, --epsilon,
--alpha/--beta, --first-rule, --layer-rule ...); default --rule epsilon (eps = 1, the seed paper's).
The relevance graph runs once for the whole batch (in chunks of --batch-size for memory).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onnxlrp import augment as aug
from onnxlrp import heatmap
from onnxlrp.cli.options import add_model_argument, add_rule_arguments
from onnxlrp.errors import ModelLoadError, OnnxLrpError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


# ----------------------------------------------------------------------------- model handling
@dataclass
class ModelHandle:
    """A model to explain: the ONNX proto plus what the zoo knows about it."""

    model: object  # onnx.ModelProto
    name: str
    zoo: object | None = None  # onnxlrp.zoo.ZooModel or None
    output: str = ""
    input_shape: tuple = ()
    classes: list[str] = field(default_factory=list)
    low: object = None
    high: object = None

    def class_name(self, k: int) -> str:
        k = int(k)
        if 0 <= k < len(self.classes):
            return f"{k} ({self.classes[k]})" if str(self.classes[k]) != str(k) else str(k)
        return str(k)


def _zoo_module():
    try:
        from onnxlrp import zoo
    except ImportError:
        return None
    return zoo


def load_model(spec: str | Path) -> ModelHandle:
    """A zoo name or an .onnx path -> ModelHandle."""
    import onnx

    zoo = _zoo_module()
    zoo_model = None
    spec_str = str(spec)
    if zoo is not None and not Path(spec_str).exists():
        try:
            names = [m["name"] if isinstance(m, dict) else str(m) for m in zoo.list_models()]
        except Exception:  # the zoo is optional here (no manifest yet)
            names = []
        if spec_str in names:
            zoo_model = zoo.load(spec_str)
    if zoo_model is not None:
        model = getattr(zoo_model, "model", None)
        if model is None:
            model = onnx.load(str(zoo_model.path))
        name = spec_str
    else:
        path = Path(spec_str)
        if not path.exists():
            raise ModelLoadError(f"{spec_str}: no such file, and not a zoo model name")
        try:
            model = onnx.load(str(path))
        except Exception as error:
            raise ModelLoadError(f"{path}: cannot load as ONNX: {error}") from error
        name = path.stem
    graph_inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if not graph_inputs:
        raise ModelLoadError(f"{spec_str}: the model has no input")
    dims = tuple(
        d.dim_value if d.HasField("dim_value") else -1 for d in graph_inputs[0].type.tensor_type.shape.dim
    )
    handle = ModelHandle(
        model=model, name=name, zoo=zoo_model, output=model.graph.output[0].name, input_shape=dims
    )
    if zoo_model is not None:
        handle.classes = [str(c) for c in (getattr(zoo_model, "classes", None) or [])]
        handle.low = getattr(zoo_model, "low", None)
        handle.high = getattr(zoo_model, "high", None)
    return handle


def compile_kwargs_from_args(args) -> dict:
    """onnxlrp.compile keyword arguments from the shared rule options (default: epsilon, eps=1)."""
    from onnxlrp.cli.options import compile_options

    kwargs = {k: v for k, v in compile_options(args).items() if v is not None}
    if kwargs.get("rule") == "alphabeta" and "alpha" in kwargs and "beta" not in kwargs:
        kwargs["beta"] = kwargs["alpha"] - 1.0
    if kwargs.get("rule") is None and kwargs.get("composite") is None:
        kwargs["rule"] = "epsilon"
    return kwargs


def describe_rule(kwargs: dict) -> str:
    if kwargs.get("composite"):
        text = f"composite {kwargs['composite']}"
        if kwargs.get("epsilon") is not None:
            text += f" (eps={kwargs['epsilon']:g})"
        return text
    rule = kwargs.get("rule", "epsilon")
    if not isinstance(rule, str):  # a Rule object, e.g. from --rule alphabeta:3,2
        return str(rule)
    if rule == "epsilon":
        return f"epsilon (eps={kwargs.get('epsilon', 1.0):g})"
    if rule == "alphabeta":
        alpha = kwargs.get("alpha", 2.0)
        beta = kwargs.get("beta", alpha - 1.0)
        return f"alpha-beta ({alpha:g}/{beta:g})"
    return str(rule)


def compile_session(handle: ModelHandle, compile_kwargs: dict, start=None, expose=()):
    import onnxlrp

    kwargs = dict(compile_kwargs)
    if start is not None:
        kwargs["start"] = start
    if expose:
        kwargs["expose"] = list(expose)
    relevance_model = onnxlrp.compile(handle.model, **kwargs)
    return onnxlrp.RelevanceSession(relevance_model)


def run_batched(session, x: np.ndarray, target=None, relevance_seed=None, batch_size: int = 256) -> dict:
    """session.run over chunks of the batch (for memory), results concatenated on axis 0."""
    n = x.shape[0]
    if n <= batch_size:
        return session.run(x, target=target, relevance_seed=relevance_seed)
    parts: dict[str, list] = {}
    for lo in range(0, n, batch_size):
        hi = min(n, lo + batch_size)
        result = session.run(
            x[lo:hi],
            target=None if target is None else target[lo:hi],
            relevance_seed=None if relevance_seed is None else relevance_seed[lo:hi],
        )
        for key, value in result.items():
            parts.setdefault(key, []).append(value)
    return {key: np.concatenate(values, axis=0) for key, values in parts.items()}


def tensor_shapes(handle: ModelHandle, x: np.ndarray, names) -> dict[str, tuple]:
    """Per-sample shapes of intermediate tensors, by running the forward model with them as outputs."""
    import onnx
    import onnxruntime as ort

    model = onnx.ModelProto()
    model.CopyFrom(handle.model)
    produced = {o for node in model.graph.node for o in node.output}
    existing = {o.name for o in model.graph.output}
    for name in names:
        if name not in produced and name not in {i.name for i in model.graph.input}:
            raise OnnxLrpError(f"tensor {name!r} is not in the model (see `onnxlrp inspect`)")
        if name not in existing:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    model.ir_version = min(model.ir_version or 10, 10)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x[:1].astype(np.float32)}
    values = session.run(list(names), feed)
    return {name: tuple(v.shape[1:]) for name, v in zip(names, values, strict=True)}


# ----------------------------------------------------------------------------- inputs
@dataclass
class Inputs:
    x: np.ndarray  # [N, C, H, W] float32, preprocessed
    names: list[str]
    raw: list[np.ndarray | None]  # uint8 images before preprocessing (None for .npy inputs)


def read_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        if im.mode in ("1", "L", "LA", "I", "I;16", "F"):
            return np.asarray(im.convert("L"))
        return np.asarray(im.convert("RGB"))


def preprocess(handle: ModelHandle, image: np.ndarray) -> np.ndarray:
    """uint8 image -> [1, C, H, W] float32: the zoo's preprocessing, or resize + scale to [0, 1]."""
    from PIL import Image

    _, c, h, w = (list(handle.input_shape) + [-1] * 4)[:4]
    image = np.asarray(image)
    if c == 1 and image.ndim == 3:  # an RGB file for a grey model
        image = np.asarray(Image.fromarray(image[..., :3]).convert("L"))
    elif c == 3 and image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if handle.zoo is not None:
        out = np.asarray(handle.zoo.preprocess(image), dtype=np.float32)
        return out.reshape((1, *out.shape[-3:])) if out.ndim != 4 else out
    pil = Image.fromarray(image)
    pil = pil.convert("L" if c == 1 else "RGB")
    if h > 0 and w > 0 and pil.size != (w, h):
        pil = pil.resize((w, h), Image.BILINEAR)
    arr = np.asarray(pil, dtype=np.float32) / 255.0
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return arr[None]


def load_inputs(handle: ModelHandle, paths, augmentations=(), hue: float = aug.DEFAULT_HUE_SHIFT) -> Inputs:
    paths = [Path(p) for p in paths]
    npys = [p for p in paths if p.suffix.lower() == ".npy"]
    if npys:
        if len(paths) != 1:
            raise OnnxLrpError("give either image files or one .npy batch, not both")
        x = np.load(paths[0]).astype(np.float32)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4:
            raise OnnxLrpError(f"{paths[0]}: expected [N,C,H,W] or [C,H,W], got shape {x.shape}")
        names = [f"{paths[0].stem}_{i:04d}" for i in range(x.shape[0])]
        if "hue" in augmentations:
            raise OnnxLrpError("--augment hue needs image files (it works on the uint8 image), not .npy")
        out_x, out_names = [x], list(names)
        if "flip" in augmentations:
            out_x.append(x[..., ::-1])
            out_names += [f"{n}_flip" for n in names]
        x = np.ascontiguousarray(np.concatenate(out_x, axis=0))
        return Inputs(x=x, names=out_names, raw=[None] * len(out_names))
    xs, names, raws = [], [], []
    for path in paths:
        if not path.exists():
            raise OnnxLrpError(f"{path}: no such file")
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise OnnxLrpError(f"{path}: not an image (PNG/JPEG) or .npy file")
        image = read_image(path)
        for tag, variant in aug.augment(image, list(augmentations), hue):
            xs.append(preprocess(handle, variant))
            names.append(path.stem if tag == "orig" else f"{path.stem}_{tag}")
            raws.append(variant)
    dup = {n for n in names if names.count(n) > 1}
    if dup:  # same stem in two folders
        names = [f"{n}_{i}" if n in dup else n for i, n in enumerate(names)]
    return Inputs(x=np.concatenate(xs, axis=0).astype(np.float32), names=names, raw=raws)


# ----------------------------------------------------------------------------- neurons
def parse_neuron(spec: str) -> tuple[str, tuple[int, ...]]:
    """ "TENSOR:INDEX" -> (tensor, (c,)) or (tensor, (c, h, w)); TENSOR may itself contain ':'."""
    if ":" not in spec:
        raise OnnxLrpError(f"--neuron {spec!r}: expected TENSOR:INDEX (INDEX a channel, or c,h,w)")
    tensor, index = spec.rsplit(":", 1)
    try:
        idx = tuple(int(v) for v in index.split(","))
    except ValueError as error:
        raise OnnxLrpError(f"--neuron {spec!r}: INDEX must be integers, e.g. 5 or 5,0,0") from error
    if not tensor:
        raise OnnxLrpError(f"--neuron {spec!r}: empty tensor name")
    return tensor, idx


def neuron_seed(shape: tuple, index: tuple[int, ...]) -> np.ndarray:
    """Per-sample seed: 1 at channel index[0] (every position) or at the full index; 0 elsewhere."""
    seed = np.zeros(shape, dtype=np.float32)
    if len(index) == 1:
        if not 0 <= index[0] < shape[0]:
            raise OnnxLrpError(f"channel {index[0]} out of range: the tensor has {shape[0]} channels")
        seed[index[0]] = 1.0
    elif len(index) == len(shape):
        if any(not 0 <= i < s for i, s in zip(index, shape, strict=True)):
            raise OnnxLrpError(f"unit {index} out of range for per-sample shape {shape}")
        seed[index] = 1.0
    else:
        raise OnnxLrpError(f"index {index} must be a channel or a full index of shape {shape}")
    return seed


def neuron_relevance(
    handle: ModelHandle, x: np.ndarray, tensor: str, units, compile_kwargs: dict, batch_size: int = 256
) -> np.ndarray:
    """Input relevance of each unit in ``units`` (indices as in parse_neuron) for each input:
    [N, K, C, H, W]. One relevance-graph run over the N*K batch (chunked)."""
    shape = tensor_shapes(handle, x, [tensor])[tensor]
    seeds = np.stack([neuron_seed(shape, tuple(u)) for u in units])  # [K, ...]
    n, k = x.shape[0], len(units)
    session = compile_session(handle, compile_kwargs, start=tensor)
    xb = np.repeat(x, k, axis=0)
    sb = np.tile(seeds, (n,) + (1,) * len(shape))
    result = run_batched(session, xb, relevance_seed=sb, batch_size=batch_size)
    return result["relevance"].reshape((n, k, *x.shape[1:]))


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "t"


# ----------------------------------------------------------------------------- the command
def register(subparsers) -> None:
    p = subparsers.add_parser(
        "explain",
        help="write relevance heatmaps (PNG + .npy) for images",
        description=__doc__.split("\n\n", 2)[-1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_argument(p)
    p.add_argument("images", nargs="+", help="image files (PNG/JPEG) or one .npy batch")
    add_rule_arguments(p)
    p.add_argument("--target", type=int, help="class to explain (default: each input's predicted class)")
    p.add_argument("--out", default="explain-out", help="output folder (default explain-out)")
    p.add_argument(
        "--layer",
        action="append",
        default=[],
        metavar="TENSOR",
        help="also draw the relevance of every channel of TENSOR as a grid (repeatable)",
    )
    p.add_argument(
        "--neuron",
        action="append",
        default=[],
        metavar="TENSOR:INDEX",
        help="input relevance of one unit: INDEX a channel (1 at all its positions) or c,h,w",
    )
    p.add_argument("--augment", help="comma list of flip,hue: add mirrored / hue-shifted copies")
    p.add_argument(
        "--hue-shift",
        type=float,
        default=aug.DEFAULT_HUE_SHIFT,
        help="hue rotation for --augment hue, fraction of the circle (default 0.3)",
    )
    p.add_argument(
        "--percentile", type=float, help="colour scale bound = this percentile of |R| (default: max |R|)"
    )
    p.add_argument("--batch-size", type=int, default=256, help="chunk size of one run (memory only)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from tqdm import tqdm

    try:
        augmentations = aug.parse_augmentations(args.augment)
    except ValueError as error:
        raise OnnxLrpError(str(error)) from error
    handle = load_model(args.model)
    inputs = load_inputs(handle, args.images, augmentations, args.hue_shift)
    ckw = compile_kwargs_from_args(args)
    rule_text = describe_rule(ckw)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n = inputs.x.shape[0]
    target = None if args.target is None else np.full(n, args.target, dtype=np.int64)

    session = compile_session(handle, ckw, expose=args.layer)
    result = run_batched(session, inputs.x, target=target, batch_size=args.batch_size)
    logits = np.asarray(result[handle.output]).reshape(n, -1)
    relevance = result["relevance"]
    predicted = logits.argmax(axis=1)
    targets = predicted if target is None else target

    neuron_results = {}
    for spec in args.neuron:
        tensor, index = parse_neuron(spec)
        neuron_results[spec] = (tensor, index)
    by_tensor: dict[str, list] = {}
    for spec, (tensor, index) in neuron_results.items():
        by_tensor.setdefault(tensor, []).append((spec, index))
    neuron_maps = {}
    for tensor, items in by_tensor.items():
        maps = neuron_relevance(handle, inputs.x, tensor, [i for _, i in items], ckw, args.batch_size)
        for k, (spec, _) in enumerate(items):
            neuron_maps[spec] = maps[:, k]

    summary = {"model": handle.name, "rule": rule_text, "inputs": []}
    progress = tqdm(total=n, desc="explain", unit="input", disable=args.quiet or n < 4, file=sys.stderr)
    for i, name in enumerate(inputs.names):
        files = []
        t = int(targets[i])
        title = (
            f"{handle.name}: {name} — predicted {handle.class_name(predicted[i])}, "
            f"target {handle.class_name(t)} (logit {logits[i, t]:.3g})\nrule: {rule_text}"
        )
        display = heatmap.display_image(inputs.x[i], handle.low, handle.high)
        np.save(out / f"{name}.npy", relevance[i])
        heatmap.render_explanation(
            out / f"{name}.png", display, heatmap.channel_sum(relevance[i]), title, percentile=args.percentile
        )
        files += [f"{name}.png", f"{name}.npy"]
        for tensor in args.layer:
            layer_rel = result[f"relevance:{tensor}"][i]
            stem = f"{name}.layer-{safe_name(tensor)}"
            np.save(out / f"{stem}.npy", layer_rel)
            maps = layer_rel if layer_rel.ndim == 3 else layer_rel.reshape(layer_rel.shape[0], 1, -1)
            heatmap.render_grid(
                out / f"{stem}.png",
                list(maps),
                f"{handle.name}: {name}, relevance at {tensor} per channel (target "
                f"{handle.class_name(t)}, {rule_text})",
                labels=[f"ch {c}: {maps[c].sum():.2g}" for c in range(maps.shape[0])],
                percentile=args.percentile,
            )
            files += [f"{stem}.png", f"{stem}.npy"]
        for spec, maps in neuron_maps.items():
            tensor, index = neuron_results[spec]
            index_text = ",".join(map(str, index))
            stem = f"{name}.neuron-{safe_name(tensor)}-{index_text.replace(',', '_')}"
            np.save(out / f"{stem}.npy", maps[i])
            which = f"channel {index[0]} (all positions)" if len(index) == 1 else f"unit [{index_text}]"
            heatmap.render_explanation(
                out / f"{stem}.png",
                display,
                heatmap.channel_sum(maps[i]),
                f"{handle.name}: {name} — relevance 1 at {tensor} {which}, propagated to the input\n"
                f"predicted {handle.class_name(predicted[i])}; rule: {rule_text}",
                percentile=args.percentile,
            )
            files += [f"{stem}.png", f"{stem}.npy"]
        summary["inputs"].append(
            {
                "name": name,
                "predicted": int(predicted[i]),
                "target": t,
                "logit": float(logits[i, t]),
                "relevance_sum": float(relevance[i].sum()),
                "files": files,
            }
        )
        progress.update(1)
    progress.close()
    (out / "explain.json").write_text(json.dumps(summary, indent=1))
    print(f"wrote {n} explanation(s) to {out}/")
    return 0
