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
from pathlib import Path

import numpy as np

from onnxlrp import augment as aug
from onnxlrp import heatmap
from onnxlrp.cli.options import add_model_argument, add_rule_arguments, compile_options
from onnxlrp.errors import OnnxLrpError
from onnxlrp.explaining import (
    ModelHandle,
    compile_session,
    describe_rule,
    explain_options,
    load_model,
    neuron_relevance,
    parse_neuron,
    run_batched,
    tensor_shapes,
)
from onnxlrp.inputs import load_inputs


def safe_name(text: str) -> str:
    """``text`` as a file-name part: runs of other characters than [A-Za-z0-9._-] become '_'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "t"


# ----------------------------------------------------------------------------- the command
def register(subparsers: argparse._SubParsersAction) -> None:
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


def neuron_maps(
    handle: ModelHandle, x: np.ndarray, specs: list[str], ckw: dict, batch_size: int
) -> dict[str, tuple[str, tuple[int, ...], np.ndarray]]:
    """Per --neuron spec: (tensor, index, input relevance [N, C, H, W]); one compile per tensor."""
    by_tensor: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
    for spec in specs:
        tensor, index = parse_neuron(spec)
        by_tensor.setdefault(tensor, []).append((spec, index))
    found = {}
    for tensor, items in by_tensor.items():
        shape = tensor_shapes(handle, x, [tensor])[tensor]
        session = compile_session(handle, ckw, start=tensor)
        maps = neuron_relevance(session, x, shape, [i for _, i in items], batch_size)
        for k, (spec, index) in enumerate(items):
            found[spec] = (tensor, index, maps[:, k])
    return found


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    try:
        augmentations = aug.parse_augmentations(args.augment)
    except ValueError as error:
        raise OnnxLrpError(str(error)) from error
    handle = load_model(args.model)
    inputs = load_inputs(handle, args.images, augmentations, args.hue_shift)
    ckw = explain_options(compile_options(args))
    rule_text = describe_rule(ckw)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n = inputs.x.shape[0]
    target = None if args.target is None else np.full(n, args.target, dtype=np.int64)

    session = compile_session(handle, ckw, expose=args.layer)
    result = run_batched(session.run, inputs.x, batch_size=args.batch_size, target=target)
    logits = np.asarray(result[handle.output]).reshape(n, -1)
    relevance = result["relevance"]
    predicted = logits.argmax(axis=1)
    targets = predicted if target is None else target

    neurons = neuron_maps(handle, inputs.x, args.neuron, ckw, args.batch_size)
    summary: dict = {"model": handle.name, "rule": rule_text, "inputs": []}
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
        for tensor, index, maps in neurons.values():
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
