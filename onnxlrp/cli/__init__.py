"""The `onnxlrp` command line: one module per subcommand, each with `register(subparsers)`.

A subcommand module defines ``register(subparsers)`` which adds its parser and sets
``func=run`` on it; ``run(args) -> int`` does the work. Add a module name to COMMANDS to enable it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from onnxlrp.errors import OnnxLrpError

COMMANDS = [
    "compile",
    "inspect",
    "evaluate",
    "convert",
    "explain",
    "reproduce",
    "zoo",
    "concepts",
    "benchmark",
    "web",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onnxlrp", description="Layer-wise Relevance Propagation for ONNX models."
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"onnxlrp.cli.{name}_cmd").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `onnxlrp` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except OnnxLrpError as error:
        print(f"onnxlrp {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
