"""A static file server with the headers the web app needs."""

from __future__ import annotations

import functools
import os
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

TYPES = {".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm"}


class _IsolatedHandler(SimpleHTTPRequestHandler):
    """Serves files with COOP/COEP (cross-origin isolation: SharedArrayBuffer, WASM threads)."""

    def guess_type(self, path: str | os.PathLike) -> str:
        return TYPES.get(os.path.splitext(path)[1], super().guess_type(path))

    def end_headers(self) -> None:
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # quiet: the CLI prints the address
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """A browser closing a connection early is normal; anything else is reported."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def make_server(
    directory: str | os.PathLike, port: int = 8000, host: str = "127.0.0.1"
) -> ThreadingHTTPServer:
    """An HTTP server for `directory` on host:port (port 0: any free port; see `server_address`)."""
    handler = functools.partial(_IsolatedHandler, directory=os.fspath(directory))
    return _Server((host, port), handler)
