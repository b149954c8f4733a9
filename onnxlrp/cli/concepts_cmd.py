"""`onnxlrp concepts`: the concept atlas of one layer over a data set."""

from __future__ import annotations

import argparse
from pathlib import Path

from onnxlrp.cli.options import add_model_argument, add_rule_arguments, compile_options

HELP = """\
One resumable scan over the data keeps, per channel of the layer, the images where it receives the
most relevance for the image's class (its label; the predicted class for a .npy) and where it is most
active; then atlas.html shows per channel those reference images cropped to its receptive field with
the conditional heatmap (relevance through that channel only) overlaid, and its share of relevance
per class. An interrupted run continues where it stopped when run again with the same arguments.
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "concepts",
        help="concept atlas of a layer: reference images per channel (CRP relevance maximisation)",
        description="Scan a data set and write an HTML atlas of what each channel of a layer detects.",
        epilog=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_argument(p)
    p.add_argument(
        "data",
        help='"mnist" or "cifar10" (test split, zoo preprocessing), a .npy [N,C,H,W] or a folder of images',
    )
    p.add_argument("--layer", required=True, help="tensor or node name (see `onnxlrp inspect`)")
    p.add_argument("--top", type=int, default=8, help="reference images per channel (default 8)")
    p.add_argument("--channels", type=int, default=None, help="only the N most relevant channels")
    p.add_argument("--n", type=int, default=None, help="number of images (default: all)")
    p.add_argument("--datasets", default=None, help="folder of mnist.npz / cifar10_jpeg.npz")
    p.add_argument("--out", default=None, help="output folder (default: out/concepts/<model>-<data>)")
    p.add_argument("--batch-size", type=int, default=64, help="images per onnxruntime run (default 64)")
    p.add_argument("--shard-size", type=int, default=1024, help="images per stored shard (default 1024)")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: all cores)")
    p.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="scan on Ray: a local cluster, or the cluster at ADDRESS (pip install 'onnxlrp[scale]')",
    )
    p.add_argument("--workers", type=int, default=2, help="Ray actors (default 2)")
    p.add_argument("--force", action="store_true", help="overwrite an existing atlas / other scan")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--figures",
        action="store_true",
        help="also the seed paper's Figs. 7-9 (object / background channels) under OUT/figures; "
        "labelled data (cifar10) and an atlas of all channels",
    )
    add_rule_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from onnxlrp.atlas import AtlasData, build_atlas
    from onnxlrp.concepts import concept_graph
    from onnxlrp.explaining import describe_rule, load_model
    from onnxlrp.inputs import data_set_inputs

    handle = load_model(args.model)
    options = compile_options(args)
    given = {key: value for key, value in options.items() if value is not None}
    graph = concept_graph(handle.model, args.layer, **options)  # a bad layer fails before the data loads
    x, labels, indices = data_set_inputs(handle, args.data, n=args.n, datasets_dir=args.datasets)
    data = AtlasData(
        x,
        labels,
        indices,
        list(handle.classes) or [str(k) for k in range(graph.classes)],
        handle.low,
        handle.high,
        {
            "model": handle.name,
            "data": f"{Path(args.data).name} ({len(x)} images)",
            "rule": describe_rule(given),
        },
    )
    model_name = handle.name
    data_name = Path(args.data).stem
    out = Path(args.out) if args.out else Path("out") / "concepts" / f"{model_name}-{data_name}"
    page = build_atlas(
        graph,
        data,
        out,
        top=args.top,
        channels=args.channels,
        force=args.force,
        batch_size=args.batch_size,
        threads=args.threads,
        shard_size=args.shard_size,
        backend="ray" if args.ray is not None else "local",
        address=args.ray or None,
        workers=args.workers,
        progress=not args.no_progress,
    )
    print(page)
    if args.figures:
        from onnxlrp.concept_figures import concept_figures

        for path in concept_figures(graph, data, out, out / "figures"):
            print(path)
    return 0
