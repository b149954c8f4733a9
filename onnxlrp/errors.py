"""Errors onnxlrp raises: every one names the node, op, tensor or file at fault."""


class OnnxLrpError(Exception):
    """Base class of all errors onnxlrp raises for bad input."""


class ModelLoadError(OnnxLrpError):
    """The file is missing, truncated, not ONNX, or the model is unusable (e.g. no float input)."""


class UnsupportedModelError(OnnxLrpError):
    """The graph has operators or patterns the compiler cannot propagate relevance through."""


class OutputExistsError(OnnxLrpError):
    """An output file exists and overwriting was not asked for."""
