"""`onnxlrp evaluate`: region-perturbation (pixel-flipping) curves and AOPC of heatmap methods."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from onnxlrp.cli.options import add_model_argument
from onnxlrp.errors import OnnxLrpError
from onnxlrp.methods import DEFAULT_METHODS, parse_method

HELP = """\
methods (repeatable --method SPEC; --rule/--composite are shorthands), as every command spells them:
  epsilon[:E] (eps)  lrp0  zplus  wsquare  flat  zbox  gamma[:G]  alphabeta:A,B  composite:NAME[:E]
  baselines added unless --baselines says otherwise: gradxinput (gradient x input, computed exactly
  as LRP-0 relevance; equal to it for piecewise-linear nets) and random (seeded).
  Without any method: epsilon:0.01 epsilon:0.1 epsilon:1 alphabeta:2,1 alphabeta:3,2
  composite:epsilon-plus composite:epsilon-gamma-box lrp0.
AOPC = mean over images of 1/(L+1) * sum_{k=0..L} f(x^0) - f(x^k), target = predicted class.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="AOPC of heatmaps by region perturbation (Samek et al. 2017)",
        description="Perturb inputs region by region in order of relevance and report AOPC per method.",
        epilog=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_argument(p)
    p.add_argument("data", help='"mnist" or "cifar10" (test split, zoo preprocessing) or a .npy [N,C,H,W]')
    p.add_argument("--method", "-m", action="append", default=[], metavar="SPEC", help="a method spec")
    p.add_argument("--rule", action="append", default=[], help="an LRP rule (epsilon: one per --epsilon)")
    p.add_argument("--composite", action="append", default=[], help="a composite name")
    p.add_argument("--epsilon", type=float, nargs="+", default=None, help="eps values for --rule epsilon")
    p.add_argument("--baselines", default="gradxinput,random", help='comma list, or "none"')
    p.add_argument("--n", type=int, default=1000, help="number of images (default 1000)")
    p.add_argument("--region", type=int, default=4, help="region size k (k x k pixels, default 4)")
    p.add_argument("--steps", type=int, default=None, help="perturbation steps L (default: all regions)")
    p.add_argument("--perturbation", choices=["uniform", "blur"], default="uniform")
    p.add_argument("--blur-sigma", type=float, default=None, help="Gaussian sigma (default region/2)")
    p.add_argument("--order", choices=["morf", "lerf"], default="morf")
    p.add_argument("--batch-size", type=int, default=1024, help="forward batch size (default 1024)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--datasets", default=None, help="folder of mnist.npz / cifar10_jpeg.npz")
    p.add_argument("--out", default=None, help="output folder (default: out/evaluate/<model>-<data>)")
    p.add_argument("--force", action="store_true", help="replace the results of an earlier evaluation")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--relevance-dir",
        default=None,
        help="keep each method's relevance there (resumable scan shards; a rerun reuses them)",
    )
    p.add_argument("--ray", action="store_true", help="compute the relevance on Ray (needs --relevance-dir)")
    p.set_defaults(func=run)


def method_specs(args: argparse.Namespace) -> list[str]:
    """The method specs of --method, --rule, --composite, --epsilon and --baselines, in that order."""
    specs = list(args.method)
    for rule in args.rule:
        if args.epsilon and _is_plain_epsilon(rule):
            specs += [f"epsilon:{e:g}" for e in args.epsilon]
        else:
            specs.append(rule)
    specs += [f"composite:{c}" for c in args.composite]
    if not specs:
        specs = list(DEFAULT_METHODS)
        if args.epsilon:
            specs = [s for s in specs if not s.startswith("epsilon:")]
            specs = [f"epsilon:{e:g}" for e in args.epsilon] + specs
    if args.baselines and args.baselines.lower() != "none":
        specs += [b.strip() for b in args.baselines.split(",") if b.strip()]
    return specs


def _is_plain_epsilon(spec: str) -> bool:
    """Whether ``spec`` is the epsilon rule without a value (then --epsilon gives the values)."""
    try:
        return parse_method(spec).kwargs == {"rule": "epsilon"}
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    from onnxlrp import evaluation as ev
    from onnxlrp.loading import claim_outputs, output_folder

    try:
        methods = [parse_method(s) for s in method_specs(args)]
    except ValueError as error:
        raise OnnxLrpError(str(error)) from error
    if args.ray and not args.relevance_dir:
        raise OnnxLrpError("--ray computes the relevance into scan shards: give --relevance-dir DIR too")
    model_name = Path(args.model).stem if args.model.endswith(".onnx") else args.model
    data_name = Path(args.data).stem if args.data.endswith(".npy") else args.data
    out = Path(args.out) if args.out else Path("out") / "evaluate" / f"{model_name}-{data_name}"
    claim_outputs(ev.result_files(output_folder(out)).values(), args.force, [args.data])  # before the work
    path, x, labels = ev.load_data(args.model, args.data, n=args.n, datasets_dir=args.datasets)
    try:
        setup = ev.PerturbationSetup(
            region=args.region,
            steps=args.steps,
            perturbation=args.perturbation,
            order=args.order,
            seed=args.seed,
            blur_sigma=args.blur_sigma,
        )
        result = ev.evaluate(
            path,
            x,
            methods,
            setup,
            batch_size=args.batch_size,
            labels=labels,
            progress=not args.no_progress,
            store=args.relevance_dir,
            backend="ray" if args.ray else "local",
            model_name=model_name,
            data_name=data_name,
        )
    except ValueError as error:
        raise OnnxLrpError(str(error)) from error
    paths = ev.write_results(result, out, force=args.force)
    s = result.settings
    print(
        f"{model_name} on {data_name}: n={s['n']}, {s['region']}x{s['region']} regions, L={s['steps']}, "
        f"{s['perturbation']}, {s['order'].upper()}"
        + (f", accuracy {result.accuracy:.4f}" if result.accuracy is not None else "")
    )
    print(f"{'method':<32} {'AOPC':>10} {'SE':>8} {'-random':>10} {'SE':>8}")
    for row in result.table():
        vs = f"{row['vs_random']:>+10.4f} {row['vs_random_stderr']:>8.4f}" if "vs_random" in row else ""
        print(f"{row['method']:<32} {row['aopc']:>10.4f} {row['stderr']:>8.4f} {vs}")
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    print(json.dumps({k: str(v) for k, v in paths.items()}))
    return 0
