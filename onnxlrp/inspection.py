"""What the compiler would do with each node of a model: shapes, rule, supported or not."""

from __future__ import annotations

from dataclasses import dataclass

from onnxlrp.compiler import canonicalize, explained_tensor, first_layers, relevance_path, rule_takers
from onnxlrp.composites import assign_rules
from onnxlrp.graph import analyse
from onnxlrp.loading import ModelLike, load_model
from onnxlrp.ops import spec_for


@dataclass
class NodeReport:
    name: str
    op_type: str
    input_shapes: list[tuple]
    output_shapes: list[tuple]
    outputs: list[str]
    rule: str
    supported: bool
    on_path: bool


def inspect_model(
    model: ModelLike, start: str | None = None, output: str | None = None, **rule_options
) -> list[NodeReport]:
    """One report per node, in graph order. Nodes off the relevance path need no support."""
    info = analyse(canonicalize(load_model(model)))
    path, _ = relevance_path(info, start or explained_tensor(info, output))
    on_path = {node.name for node in path}
    layers = rule_takers(info, path)
    rules = assign_rules(layers, first_layers(info), **rule_options)
    reports = []
    for node in info.nodes:
        spec = spec_for(node.op_type)
        if node.name in rules:
            rule = repr(rules[node.name])
        elif node.name not in on_path:
            rule = "-"
        else:
            rule = {"maxpool": "winner-take-all", "merge": "split by contribution"}.get(
                spec.kind if spec else "", "pass-through" if spec else "?"
            )
        reports.append(
            NodeReport(
                name=node.name,
                op_type=node.op_type,
                input_shapes=[info.shapes.get(n) for n in node.input if n],
                output_shapes=[info.shapes.get(n) for n in node.output if n],
                outputs=list(node.output),
                rule=rule,
                supported=spec is not None or node.name not in on_path,
                on_path=node.name in on_path,
            )
        )
    return reports
