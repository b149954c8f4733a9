"""Running relevance graphs with onnxruntime."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from onnxlrp import loading
from onnxlrp.assembly import RELEVANCE_SEED, TARGET
from onnxlrp.compiler import compile
from onnxlrp.conditioning import MASK
from onnxlrp.errors import OnnxLrpError
from onnxlrp.loading import ModelLike, load_model


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
        self.input_name = next(
            i.name
            for i in self.session.get_inputs()
            if i.name not in (TARGET, RELEVANCE_SEED) and not i.name.startswith(f"{MASK}:")
        )
        # graphs compiled before `target` became a plain input had it as an overridable initializer
        overridable = {i.name for i in self.session.get_overridable_initializers()}
        self.takes_target = TARGET in names | overridable
        self.takes_seed = RELEVANCE_SEED in names
        self.masks = {  # name -> channels; masks not given are fed ones (every channel)
            i.name: i.shape[1] for i in self.session.get_inputs() if i.name.startswith(f"{MASK}:")
        }
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(
        self,
        x: np.ndarray,
        target=None,
        relevance_seed: np.ndarray | None = None,
        masks: dict[str, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """Run on ``x``; ``masks``: per conditioned tensor T, ``{"mask:<T>": [N, C] array}``."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        feed = {self.input_name: x}
        if target is not None and not self.takes_target:
            raise OnnxLrpError("this relevance graph was compiled with start=...; it takes no target")
        if self.takes_target:  # -1: the predicted class
            target = -1 if target is None else target
            feed[TARGET] = np.broadcast_to(np.asarray(target, np.int64).reshape(-1), (x.shape[0],)).copy()
        if self.takes_seed:
            if relevance_seed is None:
                raise OnnxLrpError("this relevance graph starts at an inner tensor: pass relevance_seed")
            feed[RELEVANCE_SEED] = np.ascontiguousarray(relevance_seed, dtype=np.float32)
        for name, mask in (masks or {}).items():
            if name not in self.masks:
                known = ", ".join(self.masks) or "none; compile with condition=[tensor]"
                raise OnnxLrpError(f"this relevance graph has no mask input {name!r} (masks: {known})")
            feed[name] = np.ascontiguousarray(mask, dtype=np.float32)
        for name, channels in self.masks.items():
            feed.setdefault(name, np.ones((x.shape[0], channels), np.float32))
        values = self.session.run(self.output_names, feed)
        return dict(zip(self.output_names, values, strict=True))


def explain(model: ModelLike, x: np.ndarray, target=None, providers=None, **compile_options) -> np.ndarray:
    """Compile `model` and return the input relevance for `x` in one call."""
    session = RelevanceSession(compile(model, **compile_options), providers=providers)
    return session.run(x, target=target)["relevance"]
