"""`onnxlrp convert`: import models from other LRP tools into ONNX.

    onnxlrp convert lrp-toolbox MODEL.txt|MODEL.mat -o MODEL.onnx [--input-shape H W D] [--force]

Formats: ``lrp-toolbox`` (the LRP toolbox's plain-text model format and its MATLAB half's .mat files,
see onnxlrp.converters.lrp_toolbox; its Python pickles, .nn, are refused unread). The output is written
atomically (temporary file + rename) and never overwrites an existing file unless ``--force`` is given.
numpy and onnx only (scipy for .mat files): no torch.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from types import ModuleType

from onnxlrp.errors import InvalidOptionError

FORMATS = {"lrp-toolbox": "lrp_toolbox"}


def _converter(module: str) -> ModuleType:
    """Import onnxlrp.converters.<module> (imported on demand: a converter may need extra packages)."""
    return importlib.import_module(f"onnxlrp.converters.{module}")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a model from another LRP tool's format to ONNX",
        description="Convert a model from another LRP tool's format to ONNX. "
        "lrp-toolbox: the LRP toolbox's plain-text (.txt) or MATLAB (.mat) model files (NHWC inputs; its "
        ".nn pickles are refused, never unpickled); the ONNX model takes input "
        "'input' [N,H,W,D] (or [N,m] for an MLP) and outputs 'logits' (and 'probabilities' when the "
        "file ends in SoftMax).",
    )
    parser.add_argument("format", choices=sorted(FORMATS), help="the input model's format")
    parser.add_argument("model", help="the model file to convert")
    parser.add_argument("-o", "--output", help="the ONNX file to write (default: MODEL with suffix .onnx)")
    parser.add_argument(
        "--input-shape",
        nargs="+",
        type=int,
        metavar="DIM",
        help="input shape without the batch: H W D (NHWC) or m; inferred when the model pins it",
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    converter = _converter(FORMATS[args.format])
    output = Path(args.output) if args.output else Path(args.model).with_suffix(".onnx")
    shape = tuple(args.input_shape) if args.input_shape else None
    if shape is not None and (len(shape) not in (1, 3) or min(shape) < 1):
        raise InvalidOptionError(f"--input-shape takes H W D or m, all >= 1; got {' '.join(map(str, shape))}")
    model = converter.convert_file(args.model, output, input_shape=shape, force=args.force)
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    outs = ", ".join(o.name for o in model.graph.output)
    print(f"wrote {output}: input 'input' {dims}, outputs {outs}, {len(model.graph.node)} nodes")
    return 0
