"""Regenerate the seed paper's figures from the zoo models.

Sakai, Kameya, Sota, Arie: "Visualizing the Behavior of the Inner Layers of Convolutional Neural
Networks by Layer-wise Relevance Propagation". ``reproduce(out)`` writes every figure as a PNG,
the neuron-selection criterion as JSON/CSV, and an ``index.html`` with a one-line caption per
figure (what it shows, with which model and rule).

Images come from the MNIST / CIFAR-10 test splits (``$ONNXLRP_DATASETS`` or ../shared/datasets)
when present, else from the zoo's labelled samples. Every choice is a stated rule (first
correctly classified test image of a class, ...) or a seeded permutation, so runs are
deterministic.

Neuron selection (Figs. 7-9), computed per CIFAR model:
1. candidates: the ``candidates`` units of the last pooling layer with the largest mean
   relevance (epsilon rule, target = predicted class) over the criterion images;
2. for each candidate unit u and image n, the input relevance R of "relevance 1 at u, 0
   elsewhere" (explain --neuron), summed over colour channels; inside share =
   sum |R| in the central 16x16 box / sum |R| over the 32x32 image (uniform relevance: 0.25);
3. "object" neurons: the highest mean inside share; "background" neuron: the lowest.

Beside the CNNs, the zoo's vision transformer on the same horse and car images: pixel heatmaps and
the relevance per patch token under the attnlrp and cp-lrp composites.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from onnxlrp.errors import OutputExistsError
from onnxlrp.explaining import load_model
from onnxlrp.loading import output_folder
from onnxlrp.reproduce.cifar import cifar_figures, pick_images
from onnxlrp.reproduce.common import (
    CIFAR_MODELS,
    CIFAR_VIT,
    MNIST_STRONG,
    MNIST_WEAK,
    CifarSource,
    Figure,
    Relevance,
    Settings,
    inside_share,
    mnist_test,
)
from onnxlrp.reproduce.crp import crp_figures
from onnxlrp.reproduce.mnist import ambiguous_35, mnist_figures
from onnxlrp.reproduce.page import write_index
from onnxlrp.reproduce.vit import vit_figures

__all__ = ["Figure", "Settings", "ambiguous_35", "inside_share", "reproduce"]


def reproduce(
    out: str | Path = "paper-figures",
    quick: bool = False,
    seed: int = 0,
    log: Callable[[str], object] = print,
    force: bool = False,
) -> list[Figure]:
    """Write every figure and ``index.html`` into ``out``; returns the figures. A folder that holds
    files already is refused unless ``force`` (its files are then replaced)."""
    start = time.time()
    out = output_folder(out)
    if not force and any(out.iterdir()):
        raise OutputExistsError(
            f"{out}: the folder is not empty; pass --force (force=True) to replace its figures"
        )
    st = Settings.make(quick, seed, log)
    rel = Relevance(st.batch_size)
    mnist = load_model(MNIST_STRONG), load_model(MNIST_WEAK)
    mnist_figures(out, st, rel, *mnist, mnist_test(st.mnist_pool))
    source = CifarSource()
    criteria, atlases = [], []
    handles = [load_model(model) for model in CIFAR_MODELS]
    chosen = pick_images(handles, source, st)
    for handle in handles:
        t = time.time()
        model = handle.name
        criteria.append(cifar_figures(out, st, rel, source, handle, chosen))
        atlases.append(crp_figures(out, st, source, handle))
        log(f"{model} figures done in {time.time() - t:.1f} s ({source.name})")
    t = time.time()
    vit_figures(out, st, rel, source, load_model(CIFAR_VIT), chosen)
    log(f"{CIFAR_VIT} figures done in {time.time() - t:.1f} s ({source.name})")
    index = write_index(out, st, criteria, atlases)
    log(f"wrote {len(st.figures)} figures and {index} in {time.time() - start:.1f} s")
    return st.figures
