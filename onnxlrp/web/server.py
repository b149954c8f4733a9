"""A static file server with the headers the web app needs."""

from __future__ import annotations

import functools
import os
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar


class _IsolatedHandler(SimpleHTTPRequestHandler):
    """Serves files with COOP/COEP (cross-origin isolation: SharedArrayBuffer, WASM threads)."""

    extensions_map: ClassVar[dict[str, str]] = {
        **SimpleHTTPRequestHandler.extensions_map,
        ".mjs": "text/javascript",
        ".js": "text/javascript",
        ".wasm": "application/wasm",
        ".onnx": "application/octet-stream",
    }

    def end_headers(self) -> None:
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # quiet: the CLI prints the address
        pass


def make_server(
    directory: str | os.PathLike, port: int = 8000, host: str = "127.0.0.1"
) -> ThreadingHTTPServer:
    """An HTTP server for `directory` on host:port (port 0: any free port; see `server_address`)."""
    handler = functools.partial(_IsolatedHandler, directory=os.fspath(directory))
    return ThreadingHTTPServer((host, port), handler)
