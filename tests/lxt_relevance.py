"""LXT's efficient AttnLRP / CP-LRP relevance of the test transformers, in float64, in its own process.

LXT patches HuggingFace's and torch's classes (LayerNorm, Dropout) for the whole process, so the
tests run it here: ``python lxt_relevance.py KIND COMPOSITE INPUTS.npz OUT.npy``. Exit code 3 means
LXT is not installed.

LXT 2.1 imports torchvision's ViT module at import time only to name its classes; PyPI's torchvision
does not load beside the CPU torch, so a stand-in module is used when the real one cannot be imported
(nothing of torchvision runs here).
"""

from __future__ import annotations

import sys
import types
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import transformer_models as tm


def _import_lxt():
    try:
        import torchvision  # noqa: F401
    except Exception:
        vt = types.ModuleType("torchvision.models.vision_transformer")
        vt.nn = torch.nn  # type: ignore[attr-defined]
        tvm = types.ModuleType("torchvision.models")
        tvm.vision_transformer = vt  # type: ignore[attr-defined]
        tv = types.ModuleType("torchvision")
        tv.models = tvm  # type: ignore[attr-defined]
        for name, module in (("torchvision", tv), ("torchvision.models", tvm), (vt.__name__, vt)):
            sys.modules[name] = module
    import lxt.efficient
    import lxt.efficient.models.bert as lxt_bert
    import lxt.efficient.models.gpt2 as lxt_gpt2

    return lxt.efficient.monkey_patch, lxt_bert, lxt_gpt2


def relevance(kind: str, composite: str, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """Token relevance [N, seq] of the predicted class (BERT) or next token (GPT-2), seeded with 1."""
    tm.hide_unloadable_torchvision()  # before _import_lxt's stand-in makes `import torchvision` succeed
    import transformers.models.bert.modeling_bert as modeling_bert
    import transformers.models.gpt2.modeling_gpt2 as modeling_gpt2

    monkey_patch, lxt_bert, lxt_gpt2 = _import_lxt()
    if kind == "bert":
        monkey_patch(modeling_bert, lxt_bert.attnLRP)
    else:
        monkey_patch(modeling_gpt2, lxt_gpt2.cp_LRP if composite == "cp-lrp" else lxt_gpt2.attnLRP)
    model = tm.build(kind).double()  # same seed, same (float32-drawn) weights, patched classes
    ids = torch.from_numpy(inputs["input_ids"])
    if kind == "bert":
        embeddings = model.model.bert.embeddings.word_embeddings(ids).detach().requires_grad_(True)
        mask = torch.from_numpy(inputs["attention_mask"])
        logits = model.model(inputs_embeds=embeddings, attention_mask=mask).logits
    else:
        embeddings = model.model.transformer.wte(ids).detach().requires_grad_(True)
        logits = model.model(inputs_embeds=embeddings).logits[:, -1]
    # seeded with the logit itself, LXT's relevance would be logit * (ours): seed 1 gives R_out = logit
    logits[torch.arange(len(logits)), logits.argmax(-1)].sum().backward()
    return (embeddings * embeddings.grad).sum(-1).detach().numpy()


if __name__ == "__main__":
    try:
        import lxt  # noqa: F401
    except ImportError:
        sys.exit(3)
    warnings.simplefilter("ignore")
    kind, composite, inputs_path, out_path = sys.argv[1:5]
    np.save(out_path, relevance(kind, composite, dict(np.load(inputs_path))))
