"""The `onnxlrp` command line: one module per subcommand, each with `register(subparsers)`.

A subcommand module defines ``register(subparsers)`` which adds its parser and sets
``func=run`` on it; ``run(args) -> int`` does the work. Add a module name to COMMANDS to enable it.

Errors: a user error (an `OnnxLrpError`, a file the system refuses, a bad option) prints one line,
``onnxlrp <command>: error: <what and where>``, and exits with 2; ``--debug`` shows the traceback
instead. Any other exception is a bug in onnxlrp and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

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
USER_ERROR = 2


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, like every other error of the command."""

    def error(self, message: str) -> NoReturn:
        self.exit(USER_ERROR, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def one_line(message: str) -> str:
    """A message on one line: its lines joined with '; ' (list markers dropped)."""
    lines = [line.strip().removeprefix("- ").strip() for line in str(message).splitlines()]
    return "; ".join(line for line in lines if line).replace(":;", ":")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="onnxlrp", description="Layer-wise Relevance Propagation for ONNX models.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name in COMMANDS:
        importlib.import_module(f"onnxlrp.cli.{name}_cmd").register(subparsers)
    for subparser in subparsers.choices.values():
        subparser.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error"
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `onnxlrp` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (OnnxLrpError, OSError, MemoryError) as error:
        if args.debug:
            raise
        if isinstance(error, MemoryError):
            message = "out of memory (try a smaller --batch-size or fewer inputs)"
        elif isinstance(error, OSError) and not isinstance(error, OnnxLrpError):
            message = f"{error.filename + ': ' if error.filename else ''}{error.strerror or error}"
        else:
            message = str(error)
        print(f"onnxlrp {args.command}: error: {one_line(message)}", file=sys.stderr)
        return USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
