"""Explaining a model: load it by path or zoo name, compile and run its relevance graph in batches,
read its logits, and seed relevance at single neurons.

    handle = load_model("mnist-lenet5")
    session = compile_session(handle, {"rule": "epsilon"}, expose=["conv1"])
    result = run_batched(session.run, x, target=None, batch_size=256)   # relevance, logits, ...
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxlrp.canonical import float32_copy
from onnxlrp.errors import ModelLoadError, OnnxLrpError
from onnxlrp.graph import INTEGER_TYPES, check_size, data_input, fixed_dims
from onnxlrp.loading import ModelLike
from onnxlrp.loading import load_model as load_proto
from onnxlrp.runtime import RelevanceSession
from onnxlrp.zoo import ZooModel, locate

__all__ = [
    "LogitSession",
    "ModelHandle",
    "compile_session",
    "describe_rule",
    "explain_options",
    "has_attention",
    "load_model",
    "logit_model",
    "neuron_relevance",
    "neuron_seed",
    "parse_neuron",
    "patch_embedding",
    "run_batched",
    "tensor_shapes",
    "token_feeds",
    "token_input",
]


# ----------------------------------------------------------------------------- models
@dataclass
class ModelHandle:
    """A model to explain: the ONNX proto plus what the zoo knows about it."""

    model: onnx.ModelProto
    name: str
    zoo: ZooModel | None = None
    output: str = ""
    input_shape: tuple[int, ...] = ()  # the explained input's (-1: free)
    classes: list[str] = field(default_factory=list)
    low: Any = None
    high: Any = None
    _logits: dict[str | None, LogitSession] = field(default_factory=dict, repr=False, compare=False)
    input_name: str = ""  # the explained input
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # every model input's

    def class_name(self, k: int) -> str:
        """``k``, with its class name when the zoo knows one that differs from the number."""
        k = int(k)
        if 0 <= k < len(self.classes):
            return f"{k} ({self.classes[k]})" if str(self.classes[k]) != str(k) else str(k)
        return str(k)

    def logits(self, x: np.ndarray, batch_size: int = 512, output: str | None = None) -> np.ndarray:
        """The logits [N, classes] that LRP explains: those of ``output`` (default: the tensor the
        compiler explains, e.g. the scores behind a Softmax even where the first output is a label).
        One onnxruntime session per output, kept on the handle."""
        if output not in self._logits:
            self._logits[output] = LogitSession(self.model, output)
        return self._logits[output].run(x, batch_size)


def load_model(spec: str | os.PathLike, input_name: str | None = None) -> ModelHandle:
    """A zoo name or an .onnx path -> ModelHandle (the zoo's entry also for a zoo model's own file);
    ``input_name``: the input to explain (default: the first)."""
    path, zoo_model = locate(spec)
    model = zoo_model.model if zoo_model is not None else load_proto(path)
    name = os.fspath(spec) if zoo_model is not None and not Path(spec).exists() else path.stem
    initializers = {t.name for t in model.graph.initializer}
    shapes = {i.name: tuple(fixed_dims(i)) for i in model.graph.input if i.name not in initializers}
    if not shapes:
        raise ModelLoadError(f"{spec}: the model has no input")
    explained = input_name or next(iter(shapes))
    if explained not in shapes:
        raise ModelLoadError(f"{spec}: the model has no input '{explained}'; its inputs: {', '.join(shapes)}")
    dims = shapes[explained]
    check_size(f"{spec}: input '{explained}'", [max(d, 1) for d in dims], 4)  # before preprocessing
    handle = ModelHandle(
        model=model,
        name=name,
        zoo=zoo_model,
        output=model.graph.output[0].name,
        input_shape=dims,
        input_name=explained,
        input_shapes=shapes,
    )
    if zoo_model is not None:
        handle.classes = [str(c) for c in zoo_model.classes]
        handle.low, handle.high = zoo_model.low, zoo_model.high
    return handle


def token_input(handle: ModelHandle) -> str | None:
    """The name of the model's explained input when it is integer token ids, else None."""
    explained = data_input(handle.model)
    return explained.name if explained.type.tensor_type.elem_type in INTEGER_TYPES else None


def token_feeds(handle: ModelHandle, ids: np.ndarray) -> dict[str, np.ndarray]:
    """Every model input for one token sequence [seq]: the ids as [1, seq], inputs named like a mask
    all ones (no padding), token types all zeros."""
    ids_name = token_input(handle)
    if ids_name is None:
        raise OnnxLrpError(f"{handle.name}: the model's explained input is not token ids")
    ids = np.asarray(ids, dtype=np.int64).reshape(1, -1)
    initializers = {t.name for t in handle.model.graph.initializer}
    feeds = {ids_name: ids}
    for graph_input in handle.model.graph.input:
        name = graph_input.name
        if name in initializers or name == ids_name:
            continue
        if "mask" in name.lower():
            feeds[name] = np.ones_like(ids)
        elif "type" in name.lower():
            feeds[name] = np.zeros_like(ids)
        else:
            raise OnnxLrpError(
                f"{handle.name}: input {name!r}: do not know what to feed it "
                "(known: attention masks, token types)"
            )
    return feeds


def logit_model(model: ModelLike, output: str | None = None) -> onnx.ModelProto:
    """A copy of ``model`` whose single output is the tensor LRP explains: the logits, a trailing
    Softmax/LogSoftmax cut off (``compiler.explained_tensor``)."""
    from onnx import helper

    from onnxlrp.analysis import explained_tensor
    from onnxlrp.graph import analyse

    proto = float32_copy(load_proto(model))
    graph = proto.graph
    names = [o.name for o in graph.output]
    if output is not None and output not in names:
        raise OnnxLrpError(f"model has no output {output!r} (outputs: {names})")
    name = explained_tensor(analyse(proto), output)
    keep = [o for o in graph.output if o.name == name]
    del graph.output[:]
    if keep:
        graph.output.extend(keep)
    else:
        graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return proto


class LogitSession:
    """An onnxruntime session of a model's logits (``logit_model``); calling it maps x -> logits.

    If the model's batch dimension is fixed, batches are split into pieces of that size.
    """

    def __init__(
        self,
        model: ModelLike,
        output: str | None = None,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(
            logit_model(model, output).SerializeToString(),
            options,
            providers=list(providers or ["CPUExecutionProvider"]),
        )
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.fixed = inp.shape[0] if inp.shape and isinstance(inp.shape[0], int) else None
        self.output_name = self.session.get_outputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.fixed and len(x) != self.fixed:
            return self.run(x, self.fixed)
        return self.session.run([self.output_name], {self.input_name: x})[0]

    def run(self, x: np.ndarray, batch_size: int) -> np.ndarray:
        """Logits [N, classes] computed in chunks of ``batch_size``."""
        result = run_batched(lambda xb: {"logits": self(xb)}, x, batch_size=batch_size)
        return result["logits"].reshape(len(x), -1)


# ----------------------------------------------------------------------------- relevance graphs
def explain_options(options: Mapping[str, Any], handle: ModelHandle | None = None) -> dict[str, Any]:
    """Compile keyword arguments for explaining: unset options dropped, beta = alpha - 1 when only
    alpha is given, and by default the epsilon rule, or the attnlrp composite for a transformer."""
    kwargs = {k: v for k, v in options.items() if v is not None}
    if kwargs.get("rule") == "alphabeta" and "alpha" in kwargs and "beta" not in kwargs:
        kwargs["beta"] = kwargs["alpha"] - 1.0
    if kwargs.get("rule") is None and kwargs.get("composite") is None:
        if handle is not None and has_attention(handle.model):
            kwargs["composite"] = "attnlrp"
        else:
            kwargs["rule"] = "epsilon"
    return kwargs


def patch_embedding(handle: ModelHandle) -> str | None:
    """A ViT's patch-token tensor [N, C, h, w]: the zoo entry's ``patch_tokens``, else, in a model
    with attention, the output of the first Conv whose strides equal its kernel (one token per
    non-overlapping patch); None for other models."""
    if handle.zoo is not None and "patch_tokens" in handle.zoo.info:
        return str(handle.zoo.info["patch_tokens"]["tensor"])
    if not has_attention(handle.model):
        return None
    for node in handle.model.graph.node:
        if node.op_type == "Conv":
            attrs = {a.name: list(a.ints) for a in node.attribute}
            if attrs.get("strides") and attrs.get("strides") == attrs.get("kernel_shape"):
                return node.output[0]
    return None


def has_attention(model: onnx.ModelProto) -> bool:
    """Whether the graph has attention: a Softmax whose output (through Cast, Dropout or Identity)
    is multiplied (MatMul) by values."""
    weights = {n.output[0] for n in model.graph.node if n.op_type == "Softmax"}
    for _ in range(3):  # the pass-through ops exporters put between the two
        weights |= {
            n.output[0]
            for n in model.graph.node
            if n.op_type in ("Cast", "Dropout", "Identity") and weights.intersection(n.input[:1])
        }
    return any(n.op_type == "MatMul" and weights.intersection(n.input) for n in model.graph.node)


def describe_rule(kwargs: Mapping[str, Any]) -> str:
    """A one-line description of compile keyword arguments, e.g. "epsilon (eps=1)"."""
    if kwargs.get("composite"):
        text = f"composite {kwargs['composite']}"
        if kwargs.get("epsilon") is not None:
            text += f" (eps={kwargs['epsilon']:g})"
        return text
    rule = kwargs.get("rule", "epsilon")
    if not isinstance(rule, str):  # a Rule object, e.g. from --rule alphabeta:3,2
        return str(rule)
    if rule == "epsilon":
        return f"epsilon (eps={kwargs.get('epsilon', 1.0):g})"
    if rule == "alphabeta":
        alpha = kwargs.get("alpha", 2.0)
        beta = kwargs.get("beta", alpha - 1.0)
        return f"alpha-beta ({alpha:g}/{beta:g})"
    return str(rule)


def compile_session(
    handle: ModelHandle,
    compile_kwargs: Mapping[str, Any],
    start: str | None = None,
    expose: Iterable[str] = (),
) -> RelevanceSession:
    """The relevance graph of ``handle``'s model under ``compile_kwargs``, ready to run."""
    import onnxlrp

    kwargs = dict(compile_kwargs)
    if start is not None:
        kwargs["start"] = start
    expose = list(expose)
    if expose:
        kwargs["expose"] = expose
    return RelevanceSession(onnxlrp.compile(handle.model, **kwargs))


def run_batched(
    run: Callable[..., Mapping[str, np.ndarray]],
    x: np.ndarray,
    batch_size: int = 256,
    desc: str | None = None,
    **per_sample: np.ndarray | None,
) -> dict[str, np.ndarray]:
    """``run(x, **per_sample)`` over chunks of axis 0 (for memory), results concatenated on axis 0.

    ``per_sample`` arrays (target, relevance_seed, ...) are cut like ``x``; None is passed as is.
    ``desc``: show a progress bar with that title.
    """
    n = len(x)
    if n <= batch_size and desc is None:
        return dict(run(x, **per_sample))
    chunks: Iterable[int] = range(0, n, batch_size)
    if desc is not None:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc=desc, leave=False)
    parts: dict[str, list[np.ndarray]] = {}
    for lo in chunks:
        hi = min(n, lo + batch_size)
        result = run(x[lo:hi], **{k: None if v is None else v[lo:hi] for k, v in per_sample.items()})
        for key, value in result.items():
            parts.setdefault(key, []).append(value)
    return {key: np.concatenate(values, axis=0) for key, values in parts.items()}


def tensor_shapes(handle: ModelHandle, x: np.ndarray, names: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """Per-sample shapes of intermediate tensors, by running the forward model with them as outputs."""
    import onnxruntime as ort

    model = float32_copy(handle.model)
    produced = {o for node in model.graph.node for o in node.output}
    existing = {o.name for o in model.graph.output}
    for name in names:
        if name not in produced and name not in {i.name for i in model.graph.input}:
            raise OnnxLrpError(f"tensor {name!r} is not in the model (see `onnxlrp inspect`)")
        if name not in existing:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    model.ir_version = min(model.ir_version or 10, 10)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x[:1].astype(np.float32)}
    values = session.run(list(names), feed)
    return {name: tuple(v.shape[1:]) for name, v in zip(names, values, strict=True)}


# ----------------------------------------------------------------------------- neurons
def parse_neuron(spec: str) -> tuple[str, tuple[int, ...]]:
    """ "TENSOR:INDEX" -> (tensor, (c,)) or (tensor, (c, h, w)); TENSOR may itself contain ':'."""
    if ":" not in spec:
        raise OnnxLrpError(f"--neuron {spec!r}: expected TENSOR:INDEX (INDEX a channel, or c,h,w)")
    tensor, index = spec.rsplit(":", 1)
    try:
        idx = tuple(int(v) for v in index.split(","))
    except ValueError as error:
        raise OnnxLrpError(f"--neuron {spec!r}: INDEX must be integers, e.g. 5 or 5,0,0") from error
    if not tensor:
        raise OnnxLrpError(f"--neuron {spec!r}: empty tensor name")
    return tensor, idx


def neuron_seed(shape: tuple[int, ...], index: tuple[int, ...]) -> np.ndarray:
    """Per-sample seed: 1 at channel index[0] (every position) or at the full index; 0 elsewhere."""
    seed = np.zeros(shape, dtype=np.float32)
    if len(index) == 1:
        if not 0 <= index[0] < shape[0]:
            raise OnnxLrpError(f"channel {index[0]} out of range: the tensor has {shape[0]} channels")
        seed[index[0]] = 1.0
    elif len(index) == len(shape):
        if any(not 0 <= i < s for i, s in zip(index, shape, strict=True)):
            raise OnnxLrpError(f"unit {index} out of range for per-sample shape {shape}")
        seed[index] = 1.0
    else:
        raise OnnxLrpError(f"index {index} must be a channel or a full index of shape {shape}")
    return seed


def neuron_relevance(
    session: RelevanceSession,
    x: np.ndarray,
    shape: tuple[int, ...],
    units: Sequence[tuple[int, ...]],
    batch_size: int = 256,
) -> np.ndarray:
    """Input relevance [N, K, C, H, W] of each unit in ``units`` (indices as in ``parse_neuron``) for
    each input; ``session`` compiled with start = the units' tensor, of per-sample shape ``shape``.
    One relevance-graph run over the N*K batch (chunked)."""
    seeds = np.stack([neuron_seed(shape, tuple(u)) for u in units])  # [K, ...]
    n, k = x.shape[0], len(units)
    xb = np.repeat(x, k, axis=0)
    sb = np.tile(seeds, (n,) + (1,) * len(shape))
    result = run_batched(session.run, xb, batch_size=batch_size, target=None, relevance_seed=sb)
    return result["relevance"].reshape((n, k, *x.shape[1:]))
