"""`onnxlrp compile`: write the relevance graph of a model."""

from __future__ import annotations

import argparse
from pathlib import Path

from onnxlrp.cli.options import add_model_argument, add_rule_arguments, compile_options
from onnxlrp.compiler import compile
from onnxlrp.loading import ensure_writable, save_model
from onnxlrp.options import RUNTIMES
from onnxlrp.zoo import resolve_model


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("compile", help="compile MODEL.onnx into its LRP relevance graph")
    add_model_argument(parser)
    add_rule_arguments(parser)
    parser.add_argument("--start", help="tensor where relevance enters (from the input 'relevance_seed')")
    parser.add_argument(
        "--expose",
        action="append",
        default=[],
        metavar="TENSOR",
        help="add the relevance arriving at TENSOR as an output; repeatable; 'all' for every one",
    )
    parser.add_argument(
        "--seed",
        choices=("logit", "onehot"),
        default="logit",
        help="starting relevance: target logit times one-hot (default) or a unit one-hot",
    )
    parser.add_argument(
        "--output",
        "--output-name",
        dest="output_name",
        metavar="NAME",
        help="the model output to explain (default: the first float output with a class axis)",
    )
    parser.add_argument(
        "--condition",
        action="append",
        default=[],
        metavar="TENSOR",
        help="add a mask input mask:TENSOR [N, C] on the relevance passing TENSOR and the output "
        "channel_relevance:TENSOR (conditional relevance, CRP); repeatable",
    )
    parser.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="portable",
        help="portable (default): operators every runtime implements; onnxruntime: also MaxPool "
        "indices with MaxUnpool/ScatterElements (onnxruntime CPU only)",
    )
    parser.add_argument("-o", "--out", help="output file (default: MODEL.lrp.onnx beside the input)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file")
    parser.set_defaults(func=run)


def default_output(model_path: Path) -> Path:
    """MODEL.lrp.onnx beside the model file (in the current folder when there is no such file)."""
    stem = model_path.name.removesuffix(".onnx")
    folder = model_path.parent if model_path.exists() else Path.cwd()
    return folder / f"{stem}.lrp.onnx"


def run(args: argparse.Namespace) -> int:
    model_path = resolve_model(args.model)
    out = Path(args.out) if args.out else default_output(model_path)
    ensure_writable(out, args.force, inputs=[model_path])  # fail before the work, not after
    expose = ["all"] if "all" in args.expose else args.expose
    relevance_model = compile(
        model_path,
        start=args.start,
        expose=expose,
        seed=args.seed,
        output=args.output_name,
        condition=args.condition,
        runtime=args.runtime,
        **compile_options(args),
    )
    save_model(relevance_model, out, force=args.force, inputs=[model_path])
    print(f"wrote {out}")
    return 0
