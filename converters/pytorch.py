"""Export a PyTorch module to ONNX for onnxlrp, and check the export against torch with onnxruntime.

Usage::

    from onnxlrp.converters.pytorch import export_module
    diff = export_module(model, torch.zeros(1, 3, 32, 32), "model.onnx")

The module is put in eval mode (Dropout disappears, BatchNorm is folded into the preceding Conv by
the exporter), the batch dimension is dynamic, the input is named ``input`` and the output ``logits``,
and ``ir_version`` is set to 10 so that onnxruntime >= 1.20 reads the file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch

from onnxlrp.loading import save_model

from . import IR_VERSION


def strip_identity(model: onnx.ModelProto) -> onnx.ModelProto:
    """Remove Identity nodes (the exporter emits them to share equal folded constants).

    An Identity whose output is a graph output is kept; any other Identity's consumers read its input.
    """
    graph = model.graph
    outputs = {o.name for o in graph.output}
    rename: dict[str, str] = {}
    keep = []
    for node in graph.node:
        if node.op_type == "Identity" and node.output[0] not in outputs:
            rename[node.output[0]] = rename.get(node.input[0], node.input[0])
        else:
            keep.append(node)
    for node in keep:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    del graph.node[:]
    graph.node.extend(keep)
    return model


def export_module(
    module: torch.nn.Module,
    example_input: torch.Tensor,
    path: str | os.PathLike,
    opset: int = 17,
    input_name: str = "input",
    output_name: str = "logits",
    check_batch: int = 8,
    seed: int = 0,
    verbose: bool = True,
) -> dict:
    """Export ``module`` to ``path`` and compare onnxruntime with torch on random inputs.

    Uses the TorchScript exporter (``dynamo=False``), constant folding and a dynamic batch axis.
    The check draws ``check_batch`` inputs uniformly from [-1, 1] shaped like ``example_input``
    (batch dimension replaced) and returns ``{"max_abs": ..., "max_rel": ..., "ops": [...]}``:
    the largest absolute difference, the largest difference relative to the largest |torch logit|,
    and the sorted ONNX op types of the exported graph.
    """
    import onnxruntime as ort

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    example_input = example_input.detach().to(torch.float32).cpu()
    with tempfile.TemporaryDirectory() as folder, torch.no_grad():
        exported = Path(folder) / "model.onnx"  # the final file is written atomically below
        torch.onnx.export(
            module,
            (example_input,),
            str(exported),
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
            training=torch.onnx.TrainingMode.EVAL,
            dynamo=False,
        )
        model = strip_identity(onnx.load(str(exported)))
    model.ir_version = IR_VERSION
    model.producer_name = "onnxlrp-zoo (torch " + torch.__version__.split("+")[0] + ")"
    onnx.checker.check_model(model)
    save_model(model, path, force=True)  # atomically: a failed export never leaves half a file

    generator = torch.Generator().manual_seed(seed)
    shape = (check_batch, *example_input.shape[1:])
    x = torch.rand(shape, generator=generator) * 2 - 1
    with torch.no_grad():
        expected = module(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run([output_name], {input_name: x.numpy()})[0]
    max_abs = float(np.max(np.abs(got - expected)))
    max_rel = max_abs / max(float(np.max(np.abs(expected))), 1e-12)
    ops = sorted({node.op_type for node in model.graph.node})
    result = {"max_abs": max_abs, "max_rel": max_rel, "ops": ops}
    if verbose:
        print(f"exported {path} ({path.stat().st_size / 1e6:.2f} MB): ops {ops}")
        print(f"  ort vs torch, {check_batch} random inputs: max abs {max_abs:.3g}, rel {max_rel:.3g}")
    return result
