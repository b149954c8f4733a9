"""compile(): ONNX model in, relevance graph out.

The pipeline, one module per stage: load (loading) -> canonicalise (canonical) -> analyse (graph,
analysis) -> plan rules (plan, composites) -> emit each node's relevance through the op registry and
assemble the relevance graph (assembly).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import onnx

from onnxlrp.assembly import emit, exposed_name
from onnxlrp.loading import ModelLike
from onnxlrp.options import CompileOptions
from onnxlrp.plan import make_plan

__all__ = ["CompileOptions", "compile", "exposed_name"]


def compile(model: ModelLike, *, options: CompileOptions | None = None, **settings: Any) -> onnx.ModelProto:
    """Compile an ONNX model into its LRP relevance graph (see the README for the contract).

    Settings are CompileOptions' fields as keywords (rule=, composite=, epsilon=, ..., start=,
    expose=, seed=, output=), or an ``options`` object (keywords given as well override its fields).
    """
    options = CompileOptions(**settings) if options is None else dataclasses.replace(options, **settings)
    return emit(make_plan(model, options))
