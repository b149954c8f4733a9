"""`onnxlrp reproduce`: regenerate the seed paper's figures from the zoo models into a folder.

    onnxlrp reproduce [--out DIR] [--quick] [--seed S]

Writes fig2a ... fig9 PNGs (MNIST figures with mnist-lenet5 / mnist-lenet5-weak, Figs. 7-9 with
cifar10-paper and cifar10-resnet), the neuron criterion (criterion_<model>.json/.csv), Figs. 7-9 again
from each CIFAR model's concept atlas (concepts/<model>/), the zoo ViT's pixel and patch-token
heatmaps, and an index.html with a one-line caption per figure. Deterministic for a given --seed.
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "reproduce",
        help="regenerate the seed paper's figures (index.html + PNGs)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="paper-figures", help="output folder (default paper-figures)")
    p.add_argument("--quick", action="store_true", help="fewer images (for tests; under a minute)")
    p.add_argument("--seed", type=int, default=0, help="seed of the image choice (default 0)")
    p.add_argument("--force", action="store_true", help="write into a folder that holds files already")
    p.set_defaults(func=run)


def run(args) -> int:
    from onnxlrp.reproduce import reproduce

    reproduce(args.out, quick=args.quick, seed=args.seed, force=args.force)
    return 0
