"""Command-line options shared by the subcommands that compile relevance graphs."""

from __future__ import annotations

import argparse
from typing import Any

from onnxlrp.composites import COMPOSITES
from onnxlrp.errors import InvalidOptionError, OnnxLrpError
from onnxlrp.methods import parse_method
from onnxlrp.options import CompileOptions
from onnxlrp.rules import RULES, Rule, parse_rule


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="an .onnx file, or the name of a zoo model (see `onnxlrp zoo`)")


def add_rule_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("LRP rules")
    group.add_argument(
        "--rule",
        help=f"one rule for every layer: {', '.join(sorted(set(RULES)))}; "
        "parameters inline work too (epsilon:0.25, alphabeta:3,2); or composite:NAME",
    )
    group.add_argument("--composite", choices=COMPOSITES, help="a rule per layer kind (default: epsilon)")
    group.add_argument("--epsilon", type=float, help="epsilon of the epsilon rule")
    group.add_argument("--alpha", type=float, help="alpha of the alpha-beta rule (alpha - beta = 1)")
    group.add_argument("--beta", type=float, help="beta of the alpha-beta rule")
    group.add_argument("--gamma", type=float, help="gamma of the gamma rule")
    group.add_argument("--first-rule", help="rule of the first layer(s), e.g. zb (box), flat, wsquare")
    group.add_argument("--low", type=float, help="lowest input value (box rule)")
    group.add_argument("--high", type=float, help="highest input value (box rule)")
    group.add_argument(
        "--position",
        type=int,
        help="the explained position of an output with a sequence axis, e.g. a language model's "
        "[N, seq, vocab] logits (default -1, the last)",
    )
    group.add_argument(
        "--layer-rule",
        action="append",
        default=[],
        metavar="NODE_OR_OP=RULE",
        help="rule of one node (by name) or of an op type, e.g. Conv=zplus; repeatable",
    )
    group.add_argument(
        "--input", metavar="NAME", help="the model input to explain, for models with several float inputs"
    )


def compile_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments for onnxlrp.compile from the parsed rule options."""
    keys = ("composite", "epsilon", "alpha", "beta", "gamma", "low", "high", "input")
    options = {k: getattr(args, k) for k in keys}
    if args.rule:
        options.update(rule_options(args.rule))
    if args.first_rule:
        options["first_rule"] = args.first_rule
    if args.position is not None:
        options["position"] = args.position
    by_type: dict[str, Rule] = {}
    by_name: dict[str, Rule] = {}
    for item in args.layer_rule:
        key, sep, spec = item.partition("=")
        if not sep:
            raise InvalidOptionError(f"--layer-rule needs NODE_OR_OP=RULE, got '{item}'")
        (by_type if key[:1].isupper() and key.isalnum() else by_name)[key] = parse_rule(spec)
    if by_type:
        options["rules_by_type"] = by_type
    if by_name:
        options["rules_by_name"] = by_name
    CompileOptions(**{k: v for k, v in options.items() if v is not None})  # every check, before any work
    return options


def rule_options(spec: str) -> dict[str, Any]:
    """Compile keyword arguments of one --rule spec (``methods.parse_method``), LRP methods only."""
    try:
        method = parse_method(spec)
    except ValueError as error:
        raise OnnxLrpError(f"--rule {spec}: {error}") from None
    if method.kind != "lrp":
        raise OnnxLrpError(f"--rule {spec}: {method.label} is an evaluation baseline, not an LRP rule")
    return dict(method.kwargs)
