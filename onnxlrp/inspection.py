"""What the compiler would do with each node of a model: shapes, rule, supported or not."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from onnxlrp.loading import ModelLike
from onnxlrp.ops import SUM_KIND, spec_for
from onnxlrp.options import CompileOptions
from onnxlrp.plan import make_plan


@dataclass
class NodeReport:
    name: str
    op_type: str
    input_shapes: list[tuple[int, ...] | None]
    output_shapes: list[tuple[int, ...] | None]
    outputs: list[str]
    rule: str
    supported: bool
    on_path: bool


def inspect_model(
    model: ModelLike,
    start: str | None = None,
    output: str | None = None,
    *,
    options: CompileOptions | None = None,
    **settings: Any,
) -> list[NodeReport]:
    """One report per node of the compile plan's canonical model, in graph order. Nodes off the
    relevance path need no support. Settings as for `onnxlrp.compile`."""
    given = {"start": start, "output": output}
    settings.update({key: value for key, value in given.items() if value is not None})
    options = dataclasses.replace(options or CompileOptions(), **settings)
    plan = make_plan(model, options, allow_unsupported=True)
    info, rules, on_path = plan.info, plan.rules, plan.on_path()
    reports = []
    for node in info.nodes:
        spec = spec_for(node.op_type)
        if node.name in rules:
            rule = repr(rules[node.name])
        elif node.name not in on_path:
            rule = "-"
        elif spec is None:
            rule = "?"
        else:
            kind = spec.node_kind(node, info)
            if kind == "merge" and all(name in info.relevant for name in node.input[:2]):
                kind = "signal"  # x * gate or x * f(x): x takes all
            rule = {
                "maxpool": "winner-take-all",
                "signal": "signal takes all",
                SUM_KIND: "split by contribution",
            }.get(kind, "pass-through")
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
