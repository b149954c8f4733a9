"""Small random-init HuggingFace transformers (ViT, BERT, GPT-2) and their ONNX exports, for tests.

Every model uses eager attention (explicit MatMul/Softmax in the graph) and weights drawn so that
activations stay of order one (std 1/sqrt(fan_in) for linear layers, non-trivial biases and
LayerNorm affine parameters): the default 0.02-std init makes attention almost uniform and every
GELU almost linear, which would test little. ``bias=False`` zeroes every bias, LayerNorm shift and
constant embedding (class token, position and token-type tables) for conservation checks.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

VOCAB = 100
HIDDEN = 32
HEADS = 4
LAYERS = 2
IMAGE = 16
PATCH = 4
N_LABELS = 3


class _Logits(torch.nn.Module):
    """Returns a HuggingFace model's logits tensor (the exporters need tensors, not ModelOutputs)."""

    def __init__(self, model: torch.nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.names = names


class ViTLogits(_Logits):
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values).logits


class BertLogits(_Logits):
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, attention_mask=attention_mask).logits


class GPT2Logits(_Logits):
    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids).logits


def _reinit(model: torch.nn.Module, seed: int, bias: bool) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if "LayerNorm" in name or "layernorm" in name or ".ln_" in name or "ln_f" in name:
                if leaf == "weight":
                    p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
                else:
                    p.copy_(0.1 * torch.randn(p.shape, generator=gen) if bias else torch.zeros(p.shape))
            elif leaf == "bias":
                p.copy_(0.1 * torch.randn(p.shape, generator=gen) if bias else torch.zeros(p.shape))
            elif "embeddings" in name or name.endswith(("wte.weight", "wpe.weight", "cls_token")):
                constant = "word_embeddings" not in name and "wte" not in name and "patch" not in name
                if constant and not bias:
                    p.zero_()
                else:
                    p.copy_(torch.randn(p.shape, generator=gen))
            else:  # linear and conv weights; GPT-2's Conv1D stores [in, out]
                fan_in = p.shape[0] if ".c_" in name else int(np.prod(p.shape[1:]))
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in**0.5)


def hide_unloadable_torchvision() -> None:
    """PyPI's torchvision (installed with --no-deps for the model-zoo tests) cannot load beside the
    CPU torch, and transformers imports it whenever it is installed: tell transformers it is absent."""
    try:
        import torchvision  # noqa: F401
    except Exception:
        import transformers.utils.import_utils as hf_imports

        hf_imports._torchvision_available = False


def build(kind: str, seed: int = 0, bias: bool = True) -> _Logits:
    """A small random-init ``vit``, ``bert`` or ``gpt2`` wrapped to return its logits, in eval mode."""
    warnings.filterwarnings("ignore", module="transformers")
    hide_unloadable_torchvision()
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        GPT2Config,
        GPT2LMHeadModel,
        ViTConfig,
        ViTForImageClassification,
    )

    common = dict(attn_implementation="eager")
    if kind == "vit":
        model = ViTForImageClassification(
            ViTConfig(
                image_size=IMAGE,
                patch_size=PATCH,
                hidden_size=HIDDEN,
                num_hidden_layers=LAYERS,
                num_attention_heads=HEADS,
                intermediate_size=2 * HIDDEN,
                num_labels=N_LABELS,
                **common,
            )
        )
        wrapped: _Logits = ViTLogits(model, ("pixel_values",))
    elif kind == "bert":
        model = BertForSequenceClassification(
            BertConfig(
                vocab_size=VOCAB,
                hidden_size=HIDDEN,
                num_hidden_layers=LAYERS,
                num_attention_heads=HEADS,
                intermediate_size=2 * HIDDEN,
                max_position_embeddings=64,
                num_labels=N_LABELS,
                **common,
            )
        )
        wrapped = BertLogits(model, ("input_ids", "attention_mask"))
    elif kind == "gpt2":
        model = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_positions=64, **common
            )
        )
        wrapped = GPT2Logits(model, ("input_ids",))
    else:
        raise ValueError(f"unknown model kind {kind!r}")
    _reinit(model, seed, bias)
    return wrapped.eval()


def example_inputs(kind: str, batch: int = 2, seq: int = 7, seed: int = 1) -> dict[str, np.ndarray]:
    """Random inputs: pixels in [-1, 1] for ViT, token ids (and an all-ones mask for BERT)."""
    rng = np.random.default_rng(seed)
    if kind == "vit":
        return {"pixel_values": rng.uniform(-1, 1, (batch, 3, IMAGE, IMAGE)).astype(np.float32)}
    ids = rng.integers(0, VOCAB, (batch, seq)).astype(np.int64)
    if kind == "bert":
        return {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    return {"input_ids": ids}


def export(model: _Logits, path: str | os.PathLike, dynamo: bool = False, opset: int | None = None) -> Path:
    """Export with the TorchScript (opset 17) or dynamo (opset 18) exporter; batch and sequence dynamic.
    TorchScript at opset 16 writes LayerNorm decomposed (ReduceMean, Sub, Pow, Sqrt, Div, Mul, Add)."""
    path = Path(path)
    names = model.names
    kind = "vit" if names == ("pixel_values",) else "text"
    args = tuple(
        torch.from_numpy(v)
        for v in example_inputs("vit" if kind == "vit" else "bert", batch=2, seq=5).values()
    )
    args = args[: len(names)]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if dynamo:
            batch = torch.export.Dim("batch", min=1, max=1024)
            seq = torch.export.Dim("seq", min=2, max=64)
            dims = {0: batch} if kind == "vit" else {0: batch, 1: seq}
            torch.onnx.export(
                model,
                args,
                str(path),
                dynamo=True,
                input_names=list(names),
                output_names=["logits"],
                dynamic_shapes={n: dims for n in names},
                opset_version=opset or 18,
                verbose=False,
            )
        else:
            dims = {0: "batch"} if kind == "vit" else {0: "batch", 1: "seq"}
            out_dims = {0: "batch"} if not isinstance(model, GPT2Logits) else {0: "batch", 1: "seq"}
            torch.onnx.export(
                model,
                args,
                str(path),
                dynamo=False,
                input_names=list(names),
                output_names=["logits"],
                dynamic_axes={**{n: dims for n in names}, "logits": out_dims},
                opset_version=opset or 17,
            )
    m = onnx.load(str(path))
    m.ir_version = 10
    onnx.save(m, str(path))
    return path


def weights(model: _Logits) -> dict[str, np.ndarray]:
    """The model's parameters as float64 numpy arrays, by HuggingFace name."""
    return {k: v.detach().double().numpy() for k, v in model.model.state_dict().items()}
