"""Command-line options shared by the subcommands that compile relevance graphs."""

from __future__ import annotations

import argparse
from pathlib import Path

from onnxlrp.composites import COMPOSITES
from onnxlrp.errors import ModelLoadError
from onnxlrp.rules import RULES, parse_rule


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="an .onnx file, or the name of a zoo model (see `onnxlrp zoo`)")


def resolve_model(name: str) -> Path:
    """A model file path from a path or a zoo name."""
    path = Path(name)
    if path.exists() or name.endswith(".onnx"):
        return path
    try:
        from onnxlrp import zoo
    except ImportError:  # the zoo module is optional while it is being built
        raise ModelLoadError(f"{name}: no such file") from None
    return zoo.resolve_model(name)


def add_rule_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("LRP rules")
    group.add_argument(
        "--rule",
        help=f"one rule for every layer: {', '.join(sorted(set(RULES)))}; "
        "parameters inline work too (epsilon:0.25, alphabeta:3,2)",
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
        "--layer-rule",
        action="append",
        default=[],
        metavar="NODE_OR_OP=RULE",
        help="rule of one node (by name) or of an op type, e.g. Conv=zplus; repeatable",
    )


def compile_options(args: argparse.Namespace) -> dict:
    """Keyword arguments for onnxlrp.compile from the parsed rule options."""
    options = {k: getattr(args, k) for k in ("composite", "epsilon", "alpha", "beta", "gamma", "low", "high")}
    if args.rule:
        rule_name = args.rule.partition(":")[0]
        options["rule"] = parse_rule(args.rule) if ":" in args.rule else rule_name
    if args.first_rule:
        options["first_rule"] = args.first_rule
    by_type, by_name = {}, {}
    for item in args.layer_rule:
        key, sep, spec = item.partition("=")
        if not sep:
            raise SystemExit(f"--layer-rule needs NODE_OR_OP=RULE, got '{item}'")
        (by_type if key[:1].isupper() and key.isalnum() else by_name)[key] = parse_rule(spec)
    if by_type:
        options["rules_by_type"] = by_type
    if by_name:
        options["rules_by_name"] = by_name
    return options
