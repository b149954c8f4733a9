"""Errors onnxlrp raises: every one names the node, op, tensor, option or file at fault."""


class OnnxLrpError(Exception):
    """Base class of all errors onnxlrp raises for bad input."""


class ModelLoadError(OnnxLrpError):
    """The file is missing, truncated, not ONNX, or the model is unusable (e.g. no float input)."""


class UnsupportedModelError(OnnxLrpError):
    """The graph has operators or patterns the compiler cannot propagate relevance through."""


class OutputExistsError(OnnxLrpError):
    """An output file exists and overwriting was not asked for, or the output would be an input."""


class InvalidOptionError(OnnxLrpError, ValueError):
    """An option or parameter out of its range (a non-finite epsilon, alpha - beta != 1, a target
    that is not a class, ...)."""


class ResourceLimitError(OnnxLrpError):
    """A tensor would need more memory than the compiler allows itself."""
