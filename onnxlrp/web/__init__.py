"""The web app: the zoo's relevance graphs, run client-side by onnxruntime-web.

`build_site` writes a static site (HTML + JS modules, the compiled graphs, samples and onnxruntime-web's
files); `make_server` serves a folder on 127.0.0.1 with the cross-origin isolation headers that WASM
threads need.
"""

from onnxlrp.web.server import make_server
from onnxlrp.web.site import DEFAULT_RULES, build_site, find_ort_web

__all__ = ["DEFAULT_RULES", "build_site", "find_ort_web", "make_server"]
