"""Running relevance graphs with onnxruntime.

`RelevanceSession.run` checks what it is given before onnxruntime sees it: every model input fed,
with its declared rank, sizes and a batch of at least one, finite numbers only, and a target that
is a class of the model (or -1, the predicted class). The relevance graph itself does not check:
given to onnxruntime directly, a target >= the number of classes gives all-zero relevance and any
negative target means the predicted class.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from onnxlrp import loading
from onnxlrp.assembly import CLASSES_PROPERTY, INPUT_PROPERTY, RELEVANCE_SEED, TARGET
from onnxlrp.compiler import compile
from onnxlrp.conditioning import MASK
from onnxlrp.errors import InvalidOptionError, OnnxLrpError
from onnxlrp.loading import ModelLike, load_model

NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def session_options(threads: int | None = None, spinning: bool = True) -> ort.SessionOptions:
    """onnxruntime options: ``threads`` intra-op threads (None: all cores), warnings not logged;
    ``spinning=False``: idle workers sleep instead of spinning (sessions that alternate in one
    process)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # only used by the parallel execution mode, which is off
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _declared(shape: list) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, int) else str(d or "?") for d in shape) + "]"


def checked_array(value: Any, arg: ort.NodeArg, what: str) -> np.ndarray:
    """``value`` as the array an onnxruntime input takes: numbers (finite, for floats), the declared
    rank and sizes, at least one sample; else an error naming ``what``."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as error:
        raise InvalidOptionError(f"{what}: not an array of numbers ({error})") from None
    if array.dtype.kind not in "biuf":
        raise InvalidOptionError(f"{what}: expected numbers, got an array of dtype {array.dtype}")
    shape = list(arg.shape)
    sizes_match = all(
        not isinstance(want, int) or want == have
        for want, have in zip(shape[1:], array.shape[1:], strict=False)
    )
    if array.ndim != len(shape) or not sizes_match:
        raise InvalidOptionError(
            f"{what}: shape {list(array.shape)} does not match the model's {_declared(shape)}"
        )
    if array.ndim and array.shape[0] == 0:
        raise InvalidOptionError(f"{what}: the batch is empty (shape {list(array.shape)})")
    with np.errstate(over="ignore", invalid="ignore"):
        fed: np.ndarray = np.ascontiguousarray(array, dtype=NUMPY_TYPES.get(arg.type, np.float32))
    if fed.dtype.kind == "f" and not np.isfinite(fed).all():
        raise InvalidOptionError(
            f"{what}: holds NaN or infinite values (or values beyond {fed.dtype}'s range)"
        )
    return fed


def checked_target(target: Any, n: int, classes: int | None) -> np.ndarray:
    """``target`` (one class for the batch or one per input; -1: the predicted class) as int64 [n];
    an error for anything that is not a class of the model."""
    array = np.asarray(target)
    if array.dtype.kind not in "iu" or array.ndim > 1 or (array.ndim == 1 and array.shape[0] not in (1, n)):
        raise InvalidOptionError(
            f"target must be an integer class (or -1: the predicted class), one for the batch or one per "
            f"input ({n}); got {target!r}"
        )
    bad = array[(array < -1) | (array >= (classes if classes is not None else np.iinfo(np.int64).max))]
    if bad.size:
        known = f"the model has {classes} classes (0..{classes - 1})" if classes else "classes are >= 0"
        raise InvalidOptionError(
            f"target {bad.flat[0]} is not a class: {known}; -1 means the predicted class"
        )
    return np.broadcast_to(array.astype(np.int64).reshape(-1), (n,)).copy()


class RelevanceSession:
    """An onnxruntime session over a compiled relevance graph.

    `run(x, target=None, relevance_seed=None, masks=None)` returns a dict of every output by name:
    "relevance", the model's own outputs, "relevance:<tensor>" for exposed tensors and
    "channel_relevance:<tensor>" for conditioned ones (target: a class per sample or one for all;
    None or -1: the predicted class).
    """

    def __init__(
        self, model: ModelLike, providers: list[str] | None = None, options: ort.SessionOptions | None = None
    ) -> None:
        options = options or ort.SessionOptions()
        providers = providers or ["CPUExecutionProvider"]
        if isinstance(model, onnx.ModelProto) and model.ByteSize() >= loading.PROTOBUF_LIMIT:
            # too large to pass as bytes: onnxruntime reads it from a file with external weight data
            with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as folder:
                path = loading.save_model(model, Path(folder) / "relevance.onnx")
                self.session = ort.InferenceSession(str(path), options, providers=providers)
        elif isinstance(model, onnx.ModelProto | bytes):
            data = model if isinstance(model, bytes) else model.SerializeToString()
            self.session = ort.InferenceSession(data, options, providers=providers)
        else:  # a path goes straight to onnxruntime: no extra copies of the weights stay in memory
            load_model(
                model, external_data=False
            )  # a clear error for a bad file; onnxruntime reads the weights
            self.session = ort.InferenceSession(str(model), options, providers=providers)
        names = {i.name for i in self.session.get_inputs()}
        self.inputs = {
            i.name: i
            for i in self.session.get_inputs()
            if i.name not in (TARGET, RELEVANCE_SEED) and not i.name.startswith(f"{MASK}:")
        }
        properties = self.session.get_modelmeta().custom_metadata_map
        self.input_name = properties.get(INPUT_PROPERTY) or next(iter(self.inputs))
        self.classes = int(properties[CLASSES_PROPERTY]) if CLASSES_PROPERTY in properties else None
        # graphs compiled before `target` became a plain input had it as an overridable initializer
        overridable = {i.name for i in self.session.get_overridable_initializers()}
        self.takes_target = TARGET in names | overridable
        self.seed_arg = next((i for i in self.session.get_inputs() if i.name == RELEVANCE_SEED), None)
        self.masks = {  # name -> channels; masks not given are fed ones (every channel)
            i.name: i.shape[1] for i in self.session.get_inputs() if i.name.startswith(f"{MASK}:")
        }
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(
        self,
        x: np.ndarray | Mapping[str, np.ndarray],
        target=None,
        relevance_seed: np.ndarray | None = None,
        masks: dict[str, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """Every output by name for the batch ``x``: an array (the explained input), or a dict of
        arrays by input name when the model has several inputs (each one must be fed); ``masks``:
        per conditioned tensor T, ``{"mask:<T>": [N, C] array}``."""
        given = dict(x) if isinstance(x, Mapping) else {self.input_name: x}
        unknown = sorted(set(given) - set(self.inputs))
        missing = sorted(set(self.inputs) - set(given))
        if unknown or missing:
            raise InvalidOptionError(
                f"the relevance graph's inputs are {', '.join(repr(n) for n in self.inputs)} (explained: "
                f"'{self.input_name}'); "
                + (f"missing: {', '.join(repr(n) for n in missing)}" if missing else "")
                + ("; " if unknown and missing else "")
                + (f"unknown: {', '.join(repr(n) for n in unknown)}" if unknown else "")
                + (" (pass a dict of arrays by input name)" if missing else "")
            )
        feed = {
            name: checked_array(value, self.inputs[name], f"input '{name}'") for name, value in given.items()
        }
        n = feed[self.input_name].shape[0]
        if target is not None and not self.takes_target:
            raise OnnxLrpError("this relevance graph was compiled with start=...; it takes no target")
        if self.takes_target:  # -1: the predicted class
            feed[TARGET] = checked_target(-1 if target is None else target, n, self.classes)
        if self.seed_arg is not None:
            if relevance_seed is None:
                raise OnnxLrpError("this relevance graph starts at an inner tensor: pass relevance_seed")
            feed[RELEVANCE_SEED] = checked_array(relevance_seed, self.seed_arg, "relevance_seed")
        for name, mask in (masks or {}).items():
            if name not in self.masks:
                known = ", ".join(self.masks) or "none; compile with condition=[tensor]"
                raise OnnxLrpError(f"this relevance graph has no mask input {name!r} (masks: {known})")
            feed[name] = np.ascontiguousarray(mask, dtype=np.float32)
        for name, channels in self.masks.items():
            feed.setdefault(name, np.ones((n, channels), np.float32))
        values = self.session.run(self.output_names, feed)
        return dict(zip(self.output_names, values, strict=True))


def explain(
    model: ModelLike, x: np.ndarray | Mapping[str, np.ndarray], target=None, providers=None, **compile_options
) -> np.ndarray:
    """Compile `model` and return the input relevance for `x` in one call (see `RelevanceSession.run`)."""
    session = RelevanceSession(compile(model, **compile_options), providers=providers)
    return session.run(x, target=target)["relevance"]
