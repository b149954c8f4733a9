"""Conditional relevance (CRP): masks on the relevance passing chosen tensors.

For a conditioned tensor T of shape [N, C, ...] the relevance graph takes an input ``mask:<T>``
([N, C], one factor per sample and channel; a plain input, which `RelevanceSession` fills with ones
when none is given) and multiplies it into the relevance
arriving at T before that relevance flows on towards the input; it also returns
``channel_relevance:<T>`` ([N, C]), the relevance arriving at each channel of T (before the mask,
summed over the other axes). With a one-hot mask on channel c the input relevance is the
conditional heatmap of concept c. Every rule is linear in the relevance given the activations, so
the heatmaps of all channels of T sum to the unconditional one, provided all relevance passes T:
T must cut the graph (every path from the explained output to the input goes through it), which
is checked.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper

from onnxlrp.builder import GraphBuilder
from onnxlrp.errors import UnsupportedModelError
from onnxlrp.graph import GraphInfo
from onnxlrp.ops import carried_inputs, spec_for

MASK = "mask"
CHANNEL_RELEVANCE = "channel_relevance"


def mask_name(tensor: str) -> str:
    """The graph input holding the [N, C] mask of ``tensor``."""
    return f"{MASK}:{tensor}"


def channel_relevance_name(tensor: str) -> str:
    """The graph output holding the [N, C] relevance arriving at each channel of ``tensor``."""
    return f"{CHANNEL_RELEVANCE}:{tensor}"


def resolve_tensor(info: GraphInfo, name: str) -> str:
    """A tensor name, or a node name standing for the node's first output."""
    if name in info.shapes:
        return name
    for node in info.nodes:
        if node.name == name:
            return node.output[0]
    raise UnsupportedModelError(
        f"condition: {name!r} is neither a tensor nor a node of the model (`onnxlrp inspect` lists them)"
    )


def check_conditions(
    info: GraphInfo, path: Sequence[onnx.NodeProto], explained: str, tensors: Sequence[str]
) -> None:
    """Refuse tensors that cannot be conditioned: off the relevance path, the input itself, without
    a channel axis, or with relevance reaching the input around them (a residual branch)."""
    produced = {out for node in path for out in node.output}
    for tensor in tensors:
        if tensor == info.input_name:
            raise UnsupportedModelError(f"condition: '{tensor}' is the model input; choose an inner tensor")
        if tensor not in produced and tensor != explained:
            raise UnsupportedModelError(
                f"condition: no relevance reaches tensor '{tensor}' (it is not between the input and "
                f"the explained output '{explained}')"
            )
        if len(info.shape(tensor)) < 2:
            raise UnsupportedModelError(
                f"condition: tensor '{tensor}' has shape {info.shape(tensor)}; "
                "it needs [batch, channels, ...]"
            )
        bypass = _bypass(info, path, explained, tensor)
        if bypass is not None:
            raise UnsupportedModelError(
                f"condition: relevance also reaches the input around tensor '{tensor}' (through node "
                f"'{bypass}', e.g. a residual branch), so its channels do not carry all of it; "
                "choose a tensor every path passes through, such as a block's output"
            )


def _bypass(info: GraphInfo, path: Sequence[onnx.NodeProto], explained: str, tensor: str) -> str | None:
    """The node where relevance flowing around ``tensor`` joins it (e.g. a residual Add), or None
    when ``tensor`` cuts the graph."""
    if tensor == explained:
        return None
    around, after = {info.input_name}, {tensor}  # reached from the input avoiding tensor; below tensor
    joins = []
    for node in reversed(path):  # path is last node first
        inputs = [node.input[i] for i in carried_inputs(spec_for(node.op_type), node, info)]
        if any(name in after for name in inputs):
            after.update(node.output)
            if any(name in around for name in inputs):
                joins.append(node.name)
        elif any(name in around for name in inputs):
            around.update(out for out in node.output if out != tensor)
    return joins[0] if joins else None


def apply_mask(b: GraphBuilder, info: GraphInfo, tensor: str, relevance: str) -> tuple[str, str]:
    """(the relevance times the mask, the per-channel relevance output's source) for ``tensor``."""
    rank = len(info.shape(tensor))
    if rank > 2:
        channels = b.op(
            "ReduceSum", [relevance, b.const(np.arange(2, rank, dtype=np.int64), "axes")], keepdims=0
        )
        shaped = b.op("Unsqueeze", [mask_name(tensor), b.const(np.arange(2, rank, dtype=np.int64), "axes")])
    else:
        channels, shaped = relevance, mask_name(tensor)
    return b.op("Mul", [relevance, shaped], hint="masked"), channels


def declare(graph: onnx.GraphProto, info: GraphInfo, sources: dict[str, str]) -> None:
    """Add the mask inputs (plain inputs, so every runtime lists them) and the channel relevance
    outputs for ``sources`` (conditioned tensor -> its channel relevance tensor) to the graph."""
    for tensor, source in sources.items():
        channels = info.shape(tensor)[1]
        graph.input.append(
            helper.make_tensor_value_info(mask_name(tensor), onnx.TensorProto.FLOAT, ["N", channels])
        )
        out = channel_relevance_name(tensor)
        graph.node.append(helper.make_node("Identity", [source], [out], name=out))
        graph.output.append(helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, ["N", channels]))


def one_hot_masks(channels: int, chosen: Sequence[int] | np.ndarray) -> np.ndarray:
    """[len(chosen), channels] masks selecting one channel each."""
    chosen = np.asarray(chosen, dtype=np.int64)
    bad = chosen[(chosen < 0) | (chosen >= channels)]
    if bad.size:
        raise UnsupportedModelError(
            f"channel {int(bad[0])} is out of range: the tensor has {channels} channels"
        )
    return np.eye(channels, dtype=np.float32)[chosen]
