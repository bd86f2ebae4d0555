"""A stand-in for dockerd's socket that answers ``/_ping`` (and fixed JSON for a few paths).

For unit tests of code that only needs "the engine came back" — the host-change
transaction's restart wait — or a fixed HTTP answer to type.  Anything about
what the engine *does* is tested against a real dockerd (tests/integration).
"""

from __future__ import annotations

import http.server
import socket
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, bytes]] = {}

    def do_GET(self) -> None:
        status, body = self.server.routes.get(self.path, (404, b'{"message": "page not found"}'))  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    routes: dict[str, tuple[int, bytes]]

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        sock, _ = super().get_request()
        return sock, ("local", 0)  # BaseHTTPRequestHandler wants a (host, port) client address


@contextmanager
def stub_engine(path: Path, routes: dict[str, tuple[int, bytes]] | None = None) -> Iterator[Path]:
    srv = _UnixServer(str(path), _Handler)
    srv.routes = {"/_ping": (200, b"OK"), **(routes or {})}
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        srv.shutdown()
        srv.server_close()
