"""Importers from other frameworks into ONNX, installed as ``onnxlrp.converters``.

``pytorch`` (needs torch), ``lrp_toolbox`` and ``sklearn_mlp`` (numpy and onnx only).
"""
