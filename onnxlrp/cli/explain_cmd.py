"""`onnxlrp explain`: heatmaps of input relevance, inner feature maps and single neurons.

    onnxlrp explain MODEL IMAGE... [--rule R | --composite C] [--epsilon E] [--alpha A --beta B]
                    [--target K] [--out DIR] [--layer TENSOR] [--neuron TENSOR:INDEX]...
                    [--augment flip,hue] [--percentile P] [--batch-size N] [--max-channels K]
                    [--patch-tokens TENSOR] [--force] [--input NAME]
    onnxlrp explain TOKEN_MODEL (IDS.npy | TEXT | --text TEXT)... [--tokenizer tokenizer.json] [--position P]

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
- for a ViT (its patch embedding found as the zoo says, or as the first Conv with strides equal
  to its kernel in a model with attention, or named by ``--patch-tokens`` [N, C, h, w]):
  ``<name>.tokens.png`` (input, pixel heatmap, relevance per patch token summed over its channels)
  and ``<name>.tokens.npy`` ([h, w]).

A token model (its explained input is integer token ids, e.g. a BERT or GPT-2 exported to ONNX;
inputs named like a mask are fed ones, token types zeros) takes .npy files of token ids ([seq] or
[N, seq]) or texts (positional or ``--text``) with a local ``--tokenizer tokenizer.json``:
per input ``<name>.html`` and ``<name>.png`` show the tokens coloured by relevance (red +, blue -,
symmetric scale), ``<name>.npy`` the relevance per token. A classifier is explained for its
predicted class (or --target); a language model ([N, seq, vocab] logits) for the predicted next
token at --position (default the last; --target a vocabulary id).
No file that exists is replaced without ``--force``, and never an input file (``--out`` holding
``digit.png`` cannot take the heatmap of ``digit.png``).
With ``--augment flip,hue`` each image input also gets ``<name>_flip`` (mirrored) and
``<name>_hue`` (hue rotated by 0.3 of the colour circle in HSV, on the uint8 image before
preprocessing) copies, as in the seed paper's Figure 7.

Rules: the options of `onnxlrp compile` (--rule epsilon|alphabeta:3,2|..., --composite, --epsilon,
--alpha/--beta, --first-rule, --layer-rule ...); default --rule epsilon (eps = 1, the seed paper's),
or --composite attnlrp for a model with attention (a Softmax feeding a MatMul).
The relevance graph runs once for the whole batch (in chunks of --batch-size for memory).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from onnxlrp import augment as aug
from onnxlrp.cli.options import add_model_argument, add_rule_arguments, compile_options
from onnxlrp.errors import OnnxLrpError
from onnxlrp.explaining import explain_options, load_model, token_input
from onnxlrp.explanations import FolderOptions, write_explanations, write_text_explanations
from onnxlrp.inputs import load_inputs, load_token_inputs


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
        "images",
        nargs="*",
        help="image files (PNG/JPEG) or one .npy batch; for a token model, ids (.npy) or texts",
    )
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
    p.add_argument(
        "--text",
        action="append",
        default=[],
        help="a text model's input, tokenised with --tokenizer (repeatable)",
    )
    p.add_argument(
        "--tokenizer", help="a local tokenizer.json (the tokenizers package) for --text and token names"
    )
    p.add_argument(
        "--patch-tokens",
        metavar="TENSOR",
        help="a ViT's patch-embedding output (default: found; a Conv with strides = kernel)",
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
        patch_tokens=args.patch_tokens,
        force=args.force,
    )
    handle = load_model(args.model, args.input)
    compile_kwargs = explain_options(compile_options(args), handle)
    if token_input(handle) is not None:
        npys = [item for item in args.images if item.lower().endswith(".npy")]
        texts = [item for item in args.images if item not in npys] + args.text
        sequences = load_token_inputs(texts, npys, args.tokenizer)
        write_text_explanations(handle, sequences, compile_kwargs, args.out, args.target, args.force)
        print(f"wrote {len(sequences.ids)} token explanation(s) (HTML, PNG, .npy) to {Path(args.out)}/")
        return 0
    if args.text:
        raise OnnxLrpError(f"--text: {args.model} has no integer (token-id) input; it is not a text model")
    inputs = load_inputs(handle, args.images, augmentations, args.hue_shift)
    write_explanations(handle, inputs, compile_kwargs, args.out, options)
    print(f"wrote {inputs.x.shape[0]} explanation(s) to {Path(args.out)}/")
    return 0
