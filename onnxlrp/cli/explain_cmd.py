"""`onnxlrp explain`: heatmaps of input relevance, inner feature maps and single neurons.

    onnxlrp explain MODEL IMAGE... [--rule R | --composite C] [--epsilon E] [--alpha A --beta B]
                    [--target K] [--out DIR] [--layer TENSOR] [--neuron TENSOR:INDEX]...
                    [--augment flip,hue] [--percentile P] [--batch-size N] [--max-channels K]
                    [--force] [--input NAME]

MODEL is an .onnx path or a zoo name; IMAGE files (PNG/JPEG, preprocessed as the zoo model says,
or for a plain .onnx file: resized to the model's input size and scaled to [0, 1]) or .npy
batches ([N, C, H, W] or [C, H, W], already preprocessed), or for a model with several inputs one
.npz holding a batch per input name (--input names the one explained; the others are fed).

Per input ``<name>`` the folder gets:
- ``<name>.png``: input and heatmap side by side (red +, blue -, white 0, symmetric scale),
  the predicted class, the target and its logit in the title; ``<name>.npy``: the relevance
  [C, H, W] exactly as the relevance graph returned it (float32);
- with ``--layer T``: ``<name>.layer-<T>.png``, a grid with one tile per channel of T (shared
  colour scale; at most --max-channels tiles, the channels with the largest total |relevance|),
  and ``<name>.layer-<T>.npy``, the relevance arriving at T ([C, h, w], every channel);
- with ``--neuron T:I``: ``<name>.neuron-<T>-<I>.png/.npy``, the input relevance when the
  relevance entering at T is 1 at the chosen unit(s) and 0 elsewhere (compiled with start=T).
  INDEX ``c`` is a channel: the seed is 1 at *every* position of channel c (for a layer whose
  maps are 1x1, e.g. after global pooling, that is one unit); INDEX ``c,h,w`` (or any full
  per-sample index, comma separated) is one single unit. The seed does not depend on the target.
- with ``--concepts T``: ``<name>.concepts-<T>.png/.npy/.json``, the channels of T that receive the
  most relevance for the target, each with its conditional heatmap (the relevance flowing through
  that channel only) and, with ``--atlas DIR`` (an `onnxlrp concepts` folder of T), its reference
  images: what the channel detects elsewhere in the data set;
- ``explain.json``: per input the prediction, target, logit, relevance sum and files.
No file that exists is replaced without ``--force``, and never an input file (``--out`` holding
``digit.png`` cannot take the heatmap of ``digit.png``).
With ``--augment flip,hue`` each image input also gets ``<name>_flip`` (mirrored) and
``<name>_hue`` (hue rotated by 0.3 of the colour circle in HSV, on the uint8 image before
preprocessing) copies, as in the seed paper's Figure 7.

Rules: the options of `onnxlrp compile` (--rule epsilon|alphabeta:3,2|..., --composite, --epsilon,
--alpha/--beta, --first-rule, --layer-rule ...); default --rule epsilon (eps = 1, the seed paper's).
The relevance graph runs once for the whole batch (in chunks of --batch-size for memory).

Token models (integer token ids in, e.g. a BERT or GPT-2 exported to ONNX): the inputs are .npy
files of ids ([T] or [N, T]) or texts with ``--tokenizer tokenizer.json`` (a local file for the
`tokenizers` package); per sequence ``<name>.npy`` (relevance per token) and ``<name>.html`` (the
tokens coloured by relevance), default --composite attnlrp; a language model is explained at
--position (default the last).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from onnxlrp import augment as aug
from onnxlrp.cli.options import add_model_argument, add_rule_arguments, compile_options
from onnxlrp.errors import OnnxLrpError
from onnxlrp.explaining import explain_options, load_model
from onnxlrp.explanations import FolderOptions, write_explanations
from onnxlrp.inputs import load_inputs
from onnxlrp.tokens import is_token_model, load_token_inputs, write_token_explanations


# ----------------------------------------------------------------------------- the command
def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "explain",
        help="write relevance heatmaps (PNG + .npy) for images",
        description=__doc__.split("\n\n", 2)[-1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_argument(p)
    p.add_argument(
        "images", nargs="+", help="image files (PNG/JPEG) or one .npy batch; for a token model, ids or texts"
    )
    p.add_argument("--tokenizer", help="tokenizer.json to read text inputs of a token model")
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
    p.add_argument(
        "--concepts",
        metavar="TENSOR",
        help="also show the most relevant channels of TENSOR with their conditional heatmaps",
    )
    p.add_argument("--concepts-top", type=int, default=6, help="how many channels (default 6)")
    p.add_argument("--atlas", help="an `onnxlrp concepts` folder of that layer: add its reference images")
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
    p.add_argument(
        "--max-channels",
        type=int,
        default=64,
        help="a --layer grid shows at most this many channels, the most relevant ones (default 64)",
    )
    p.add_argument("--force", action="store_true", help="replace the files of an earlier explanation")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        augmentations = aug.parse_augmentations(args.augment)
    except ValueError as error:
        raise OnnxLrpError(str(error)) from error
    options = FolderOptions(
        layers=args.layer,
        neurons=args.neuron,
        target=args.target,
        percentile=args.percentile,
        batch_size=args.batch_size,
        progress=not args.quiet,
        concepts=args.concepts,
        concept_top=args.concepts_top,
        atlas=args.atlas,
        max_channels=args.max_channels,
        force=args.force,
    )
    kwargs = explain_options(compile_options(args))
    handle = load_model(args.model, args.input)
    if is_token_model(handle.model):
        settings = compile_options(args)
        if not settings.get("rule") and not settings.get("composite"):
            settings["composite"] = "attnlrp"
        sequences = load_token_inputs(args.images, args.tokenizer)
        records = write_token_explanations(
            handle.model, sequences, explain_options(settings), args.out, args.target, args.force
        )
        print(f"wrote {len(records)} token explanation(s) to {Path(args.out)}/")
        return 0
    inputs = load_inputs(handle, args.images, augmentations, args.hue_shift)
    write_explanations(handle, inputs, kwargs, args.out, options)
    print(f"wrote {inputs.x.shape[0]} explanation(s) to {Path(args.out)}/")
    return 0
