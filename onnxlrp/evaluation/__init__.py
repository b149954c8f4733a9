"""Quantitative heatmap evaluation: region perturbation curves and AOPC.

The method follows Samek et al. (2017), "Evaluating the visualization of what a deep neural network
has learned" (IEEE TNNLS 28(11)): the input is split into non-overlapping k x k regions; a region's
relevance is the sum of the heatmap over its pixels and over all channels; regions are perturbed one
per step in order of relevance, most relevant first (MoRF, or least relevant first: LeRF), each
perturbed region taking, on all channels, values drawn from a uniform distribution over the input's
value range (or a blurred copy of the image). After each of L steps the target's logit is recomputed.
The target is the predicted class of the clean image. The area over the perturbation curve is

    AOPC = < 1/(L+1) * sum_{k=0..L} f(x^(0)) - f(x^(k)) >_images

reported with its standard error over images. With MoRF a larger AOPC means the heatmap found the
evidence the model uses; with LeRF a smaller one does.

- ``metrics``: regions, ``perturbation_curve`` (any batched ``forward_fn(x) -> logits``, testable with
  plain numpy), ``aopc``; the settings of one perturbation in ``PerturbationSetup``;
- ``heatmaps``: the relevance of each method (``onnxlrp.methods`` specs) and the random baseline;
- ``runner``: ``evaluate``, every method on one model and data set -> ``EvaluationResult``;
- ``plots``: ``write_results`` (JSON, CSV, curves, PNG) and ``plot_curves`` / ``plot_json``.
Data sets come from ``onnxlrp.datasets``, the logits session from ``onnxlrp.explaining``.

The random baseline's relevance depends only on (seed, image index), like the perturbations.
This package does not import torch.
"""

from onnxlrp.datasets import DatasetError, default_datasets_dir, load_dataset, select_indices
from onnxlrp.evaluation.heatmaps import (
    compute_relevance,
    finite_difference_check,
    gradient_x_input_ok,
    method_region_scores,
    random_relevance,
)
from onnxlrp.evaluation.metrics import (
    ForwardFn,
    PerturbationSetup,
    aopc,
    aopc_per_image,
    data_range,
    gaussian_blur,
    paired_difference,
    perturbation_curve,
    region_map,
    region_order,
    region_relevance,
)
from onnxlrp.evaluation.plots import plot_curves, plot_json, result_files, write_results
from onnxlrp.evaluation.runner import EvaluationResult, evaluate, load_data
from onnxlrp.explaining import LogitSession as onnx_forward
from onnxlrp.explaining import logit_model
from onnxlrp.methods import BASELINES, DEFAULT_METHODS, Method, parse_method

__all__ = [
    "BASELINES",
    "DEFAULT_METHODS",
    "DatasetError",
    "EvaluationResult",
    "ForwardFn",
    "Method",
    "PerturbationSetup",
    "aopc",
    "aopc_per_image",
    "compute_relevance",
    "data_range",
    "default_datasets_dir",
    "evaluate",
    "finite_difference_check",
    "gaussian_blur",
    "gradient_x_input_ok",
    "load_data",
    "load_dataset",
    "logit_model",
    "method_region_scores",
    "onnx_forward",
    "paired_difference",
    "parse_method",
    "perturbation_curve",
    "plot_curves",
    "plot_json",
    "random_relevance",
    "region_map",
    "region_order",
    "region_relevance",
    "result_files",
    "select_indices",
    "write_results",
]
