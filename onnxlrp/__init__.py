"""onnxlrp: compile ONNX models into Layer-wise Relevance Propagation (LRP) relevance graphs."""

from onnxlrp import composites, rules
from onnxlrp.compiler import CompileOptions, compile, exposed_name
from onnxlrp.errors import ModelLoadError, OnnxLrpError, OutputExistsError, UnsupportedModelError
from onnxlrp.runtime import RelevanceSession, explain

__all__ = [
    "CompileOptions",
    "ModelLoadError",
    "OnnxLrpError",
    "OutputExistsError",
    "RelevanceSession",
    "UnsupportedModelError",
    "compile",
    "composites",
    "explain",
    "exposed_name",
    "rules",
]
__version__ = "0.1.0"
