"""`onnxlrp inspect`: one row per node with its shapes, its rule and whether it is supported."""

from __future__ import annotations

import argparse

from onnxlrp.cli.options import add_model_argument, add_rule_arguments, compile_options
from onnxlrp.inspection import inspect_model
from onnxlrp.zoo import resolve_model


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("inspect", help="list the nodes of MODEL with shapes and LRP rules")
    add_model_argument(parser)
    add_rule_arguments(parser)
    parser.add_argument("--start", help="tensor where relevance would enter")
    parser.set_defaults(func=run)


def _shapes(shapes: list) -> str:
    return " ".join("x".join(str(d) for d in s) if s is not None else "?" for s in shapes)


def run(args: argparse.Namespace) -> int:
    reports = inspect_model(resolve_model(args.model), start=args.start, **compile_options(args))
    rows = [("node", "op", "inputs", "outputs (tensor names)", "rule", "supported")]
    for r in reports:
        outputs = f"{_shapes(r.output_shapes)} ({', '.join(r.outputs)})"
        supported = "yes" if r.supported else "NO"
        if not r.on_path:
            supported += " (off the relevance path)"
        rows.append((r.name, r.op_type, _shapes(r.input_shapes), outputs, r.rule, supported))
    widths = [min(max(len(row[i]) for row in rows), 60) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    missing = [r for r in reports if not r.supported]
    print(f"\n{len(reports)} nodes, {len(missing)} unsupported; batch dimension shown as 1")
    return 1 if missing else 0
