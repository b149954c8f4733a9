"""Importers from other frameworks into ONNX, installed as ``onnxlrp.converters``.

``pytorch`` (needs torch), ``lrp_toolbox`` and ``sklearn_mlp`` (numpy and onnx only).
"""

IR_VERSION = 10  # the IR version every converter writes: onnxruntime >= 1.20 reads it
OPSET = 17  # the opset the converters that build graphs themselves write
