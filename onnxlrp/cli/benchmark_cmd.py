"""`onnxlrp benchmark`: what explaining a model costs next to running it."""

from __future__ import annotations

import argparse

from onnxlrp.benchmarking import benchmark, steps
from onnxlrp.cli.options import add_model_argument, add_rule_arguments, compile_options
from onnxlrp.zoo import resolve_model

COMPILE_REPEATS = 3
PROFILE_RUNS = 5


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "benchmark", help="time MODEL's relevance graph against its forward pass (ratio, memory, compile)"
    )
    add_model_argument(parser)
    add_rule_arguments(parser)
    parser.add_argument("--batch", type=int, default=1, help="batch size of the random input (default 1)")
    parser.add_argument("--rounds", type=int, default=20, help="interleaved timing rounds (default 20)")
    parser.add_argument(
        "--providers",
        nargs="+",
        default=["CPUExecutionProvider"],
        metavar="PROVIDER",
        help="onnxruntime execution providers, in order (default CPUExecutionProvider)",
    )
    parser.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default: onnxruntime's)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument(
        "--profile",
        type=int,
        nargs="?",
        const=PROFILE_RUNS,
        default=0,
        metavar="RUNS",
        help=f"also profile both with onnxruntime's profiler over RUNS runs (default {PROFILE_RUNS}): "
        "where the relevance graph's time goes, per kind of work and per operator",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    total = steps(args.rounds, not args.no_memory, COMPILE_REPEATS, profile=args.profile > 0)
    with tqdm(total=total, desc="benchmark", unit="step", leave=False, disable=args.quiet) as bar:

        def progress(stage: str) -> None:
            bar.set_postfix_str(stage, refresh=False)
            bar.update()

        result = benchmark(
            resolve_model(args.model),
            batch=args.batch,
            rounds=args.rounds,
            providers=args.providers,
            threads=args.threads,
            memory=not args.no_memory,
            compile_repeats=COMPILE_REPEATS,
            progress=progress,
            profile_runs=args.profile,
            **compile_options(args),
        )
    print(result.report())
    return 0
