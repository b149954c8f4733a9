"""Plan: the front half of the pipeline in one object, what `compile` emits from and
`inspect_model` prints.

load -> canonicalise -> analyse -> find the relevance path (unsupported nodes listed at once) ->
assign each rule-taking node its rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from onnxlrp.analysis import explained_tensor, first_layers, refuse_unsupported, relevance_path, rule_takers
from onnxlrp.canonical import canonicalize, drop_ceil_mode
from onnxlrp.composites import AnyRule, assign_rules
from onnxlrp.conditioning import check_conditions, resolve_tensor
from onnxlrp.errors import UnsupportedModelError
from onnxlrp.graph import GraphInfo, analyse
from onnxlrp.loading import ModelLike, load_model
from onnxlrp.options import CompileOptions


@dataclass
class Plan:
    """What the compiler will do with a model."""

    model: onnx.ModelProto  # canonical: the relevance graph is built into it
    info: GraphInfo
    options: CompileOptions
    explained: str  # the tensor relevance starts at
    path: list[onnx.NodeProto]  # the nodes relevance flows through, last first
    unsupported: list[onnx.NodeProto]  # those among them with no emitter, in graph order
    takers: dict[str, tuple[str, str]]  # rule-taking node -> (op type, kind)
    first_layers: set[str]
    rules: dict[str, AnyRule]  # the rule of every rule-taking node
    conditioned: list[str]  # tensors whose relevance gets a mask input (conditioning)

    def on_path(self) -> set[str]:
        return {node.name for node in self.path}


def make_plan(model: ModelLike, options: CompileOptions, *, allow_unsupported: bool = False) -> Plan:
    """The plan of compiling ``model`` with ``options``. Unsupported nodes on the relevance path are
    refused (one error listing them all) unless ``allow_unsupported``."""
    # a model loaded here is ours to change; a ModelProto passed in is the caller's
    canonical = canonicalize(
        load_model(model), in_place=not isinstance(model, onnx.ModelProto), input_name=options.input
    )
    info = analyse(canonical, options.input)
    drop_ceil_mode(info)
    start = options.start
    explained = start or explained_tensor(info, options.output)
    if start is not None and start not in info.shapes:
        raise UnsupportedModelError(f"start tensor '{start}' is not a tensor of the model")
    path, unsupported = relevance_path(info, explained)
    if not allow_unsupported:
        refuse_unsupported(unsupported)
    conditioned = [resolve_tensor(info, name) for name in options.condition]
    check_conditions(info, path, explained, conditioned)
    takers = rule_takers(info, path)
    first = first_layers(info)
    rules = assign_rules(takers, first, options)
    return Plan(canonical, info, options, explained, path, unsupported, takers, first, rules, conditioned)
