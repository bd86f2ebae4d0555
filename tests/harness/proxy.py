"""A small HTTP proxy (CONNECT tunnels and absolute-URI GETs) on a daemon's bridge, recording what went through.

Containers reach it at the bridge's gateway address, as they would reach a corporate proxy.
It accepts (and ignores) ``Proxy-Authorization``, so a URL with credentials works.
"""

from __future__ import annotations

import socket
import socketserver
import subprocess
import threading
from typing import Any

from .daemon import PrivateDaemon


def bridge_address(d: PrivateDaemon) -> str:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", d.bridge], capture_output=True, text=True).stdout
    return out.split(" inet ")[1].split("/")[0]


def _pipe(a: socket.socket, b: socket.socket) -> None:
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(socketserver.StreamRequestHandler):
    server: Any

    def handle(self) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.request.recv(4096)
            if not chunk:
                return
            head += chunk
        first = head.split(b"\r\n", 1)[0].decode(errors="replace")
        method, target, _ = (first.split(" ", 2) + ["", ""])[:3]
        self.server.seen.append(f"{method} {target}")
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            try:
                upstream = socket.create_connection((host, int(port)), timeout=20)
            except OSError:
                self.request.sendall(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
                return
            self.request.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            rest = head.split(b"\r\n\r\n", 1)[1]
            if rest:
                upstream.sendall(rest)
            t = threading.Thread(target=_pipe, args=(upstream, self.request), daemon=True)
            t.start()
            _pipe(self.request, upstream)
            t.join(30)
        else:
            self.request.sendall(b"HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\n\r\n")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class Proxy:
    def __init__(self, host: str) -> None:
        self.server = _Server((host, 0), _Handler)
        self.server.seen = []  # type: ignore[attr-defined]
        self.address = f"{host}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def seen(self) -> list[str]:
        return list(self.server.seen)  # type: ignore[attr-defined]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
