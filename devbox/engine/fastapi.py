"""The Engine API over a unix socket, with the standard library: what devbox asks often.

``devbox remap``'s probe and a warm ``devbox up`` make a few dozen plain calls:
ping, info, list and inspect, create (libpod's too), start, stop, remove, an
archive, a log tail.  Importing the Docker SDK (requests, urllib3, ssl, …) costs
more than all of them on a local socket (0.15-0.3 s a process), so they go
straight to the socket here, a keep-alive connection per thread (the executor
starts services from threads).  What streams or upgrades the connection (build,
pull, attach, exec, events, followed logs) goes through the SDK, made on first
use by :class:`devbox.engine.client.Engine`.

Errors come back as :class:`~devbox.errors.EngineError` with a ``kind`` from
the HTTP status or the socket's errno (:mod:`devbox.engine.errors`).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import urllib.parse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devbox.errors import EngineError


def _json_or_none(line: bytes) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return None


def _error(status: int, raw: bytes) -> EngineError:
    """An error answer as a typed EngineError: the engine's JSON ``message``, else its text."""
    from devbox.engine.errors import from_status

    try:
        message = json.loads(raw).get("message", raw.decode(errors="replace"))
    except (ValueError, AttributeError):
        message = raw.decode(errors="replace").strip()
    return from_status(status, str(message))


def demux(raw: bytes) -> bytes:
    """A log answer's bytes: a container without a TTY gets a multiplexed stream (an 8-byte header,
    stream 0-2 and a size, before each chunk), one with a TTY the raw bytes."""
    out, i = [], 0
    while i + 8 <= len(raw) and raw[i] in (0, 1, 2) and raw[i + 1 : i + 4] == b"\0\0\0":
        size = int.from_bytes(raw[i + 4 : i + 8], "big")
        out.append(raw[i + 8 : i + 8 + size])
        i += 8 + size
    return b"".join(out) if i == len(raw) else raw


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _filters(given: dict[str, Any]) -> str:
    """The ``filters`` query parameter: ``{"label": "a=b"}`` -> ``{"label": ["a=b"]}`` as JSON (the SDK's rule)."""
    return json.dumps({k: list(v) if isinstance(v, (list, tuple)) else [str(v)] for k, v in given.items()})


class Api:
    """Keep-alive connections to an engine's unix socket, one per thread."""

    def __init__(self, socket_path: str, timeout: float = 60, host: str | None = None) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self.host = host or f"unix://{socket_path}"
        self._local = threading.local()
        self._headers: dict[str, str] = {}

    @property
    def _conn(self) -> _UnixConnection:
        conn: _UnixConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = _UnixConnection(self.socket_path, self.timeout)
        return conn

    @property
    def last_headers(self) -> dict[str, str]:
        """The headers of the last response (any thread's), names lowercased."""
        return self._headers

    def close(self) -> None:
        """Close this thread's connection (a later call opens another)."""
        self._conn.close()

    def request(
        self, method: str, path: str, *, query: dict[str, str] | None = None, body: Any = None,
        data: bytes | None = None, content_type: str = "application/json",
    ) -> tuple[int, bytes]:
        url = path + ("?" + urllib.parse.urlencode(query) if query else "")
        headers = {}
        payload = data
        if body is not None:
            payload = json.dumps(body).encode()
        if payload is not None:
            headers["Content-Type"] = content_type
        from devbox.engine.errors import from_os_error

        for attempt in (1, 2):
            try:
                self._conn.request(method, url, body=payload, headers=headers)
                resp = self._conn.getresponse()
                self._headers = {k.lower(): v for k, v in resp.getheaders()}
                return resp.status, resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                # a kept-alive connection the daemon closed: reconnect once
                self._conn.close()
                if attempt == 2:
                    raise from_os_error(exc, self.host, f"{method} {path}", self.timeout) from None
            except (OSError, http.client.HTTPException) as exc:
                self._conn.close()
                raise from_os_error(exc, self.host, f"{method} {path}", self.timeout) from None
        raise AssertionError("unreachable")

    def call(self, method: str, path: str, **kw: Any) -> Any:
        status, raw = self.request(method, path, **kw)
        if status >= 400:
            raise _error(status, raw)
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode(errors="replace")

    # --- the calls devbox's fast path makes ----------------------------------

    def ping(self) -> None:
        """Raise unless the engine answers ``/_ping`` (a typed error says why)."""
        self.call("GET", "/_ping")

    def ping_headers(self) -> dict[str, str]:
        """``/_ping``'s response headers (names lowercased): ``Api-Version``, and Podman's ``Libpod-Api-Version``."""
        self.call("GET", "/_ping")
        return dict(self.last_headers)

    def info(self) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", "/info")
        return result

    def version(self) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", "/version")
        return result

    def image_exists(self, ref: str) -> bool:
        status, _ = self.request("GET", f"/images/{urllib.parse.quote(ref, safe='')}/json")
        return status == 200

    def is_podman(self) -> bool:
        """Podman names itself in every response's headers (``Libpod-Api-Version``); one ping when
        nothing was asked yet."""
        from devbox.engine.libpod import names_podman

        if not self.last_headers:
            self.ping()
        return names_podman(self.last_headers)

    def _import_url(self, repository: str, tag: str) -> str:
        """Where a tarball is imported.  On Podman, libpod's own import: the compatible one
        (``/images/create?fromSrc=-``) leaves its copy of every tarball behind in /var/tmp
        (``api_load.tar*``, Podman 4 and 5), libpod's removes it."""
        if self.is_podman():
            from devbox.engine.libpod import API

            return API + "/images/import?" + urllib.parse.urlencode({"reference": f"{repository}:{tag}"})
        return "/images/create?" + urllib.parse.urlencode({"fromSrc": "-", "repo": repository, "tag": tag})

    def import_image(self, data: bytes, repository: str, tag: str) -> None:
        """Import a root filesystem tarball as ``repository:tag``."""
        # Docker's import streams JSON progress; an error arrives as {"error": ...} with status 200
        status, raw = self.request("POST", self._import_url(repository, tag), data=data, content_type="application/x-tar")
        self._after_import(status, raw, repository, tag)

    def _after_import(self, status: int, raw: bytes, repository: str, tag: str) -> None:
        from devbox.engine.errors import from_status

        if status >= 400:
            raise from_status(status, raw.decode(errors="replace").strip()[-300:])
        for message in map(_json_or_none, raw.splitlines()):
            if isinstance(message, dict) and message.get("error"):
                raise from_status(500, str(message["error"])[-300:], "image import failed")
        # Podman 4's compatible import ignored ``tag`` (the image became ``repository:latest``): tag by id
        ids = [str(m.get("status")) for m in map(_json_or_none, raw.splitlines())
               if isinstance(m, dict) and str(m.get("status", "")).startswith("sha256:")]
        if ids and not self.image_exists(f"{repository}:{tag}"):
            self.call("POST", f"/images/{ids[-1]}/tag", query={"repo": repository, "tag": tag})

    def import_file(self, fh: Any, size: int, repository: str, tag: str,
                    progress: Any = None) -> None:
        """Import a root filesystem tarball streamed from ``fh`` (``size`` bytes) as ``repository:tag``;
        ``progress(bytes_sent)`` is called as it goes."""
        sent = told = 0

        class _Reader:
            def read(self, n: int = 1 << 16) -> bytes:
                nonlocal sent, told
                chunk: bytes = fh.read(max(n, 1 << 16))
                sent += len(chunk)
                if progress is not None and (sent - told >= 1 << 22 or not chunk):  # every 4 MiB
                    told = sent
                    progress(sent)
                return chunk

        from devbox.engine.errors import from_os_error

        url = self._import_url(repository, tag)
        try:
            self._conn.request("POST", url, body=_Reader(),
                               headers={"Content-Type": "application/x-tar", "Content-Length": str(size)})
            resp = self._conn.getresponse()
            status, raw = resp.status, resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self._conn.close()
            raise from_os_error(exc, self.host, "POST " + url.split("?", 1)[0], self.timeout) from None
        self._after_import(status, raw, repository, tag)

    def tag(self, ref: str, repository: str, tag: str) -> None:
        self.call("POST", f"/images/{urllib.parse.quote(ref, safe='')}/tag", query={"repo": repository, "tag": tag})

    def create_container(self, spec: dict[str, Any], name: str | None = None) -> str:
        result = self.call("POST", "/containers/create", body=spec, query={"name": name} if name else None)
        return str(result["Id"])

    def start(self, container_id: str) -> None:
        self.call("POST", f"/containers/{container_id}/start")

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", f"/containers/{container_id}/json")
        return result

    def logs(self, container_id: str, tail: int = 5) -> str:
        _, raw = self.request("GET", f"/containers/{container_id}/logs",
                              query={"stdout": "1", "stderr": "1", "tail": str(tail)})
        return demux(raw).decode(errors="replace")

    def remove_container(self, container_id: str, force: bool = True, volumes: bool = True) -> None:
        """Remove a container (``volumes``: with its anonymous volumes)."""
        self.call("DELETE", f"/containers/{container_id}",
                  query={"force": "1" if force else "0", "v": "1" if volumes else "0"})

    # --- the calls a warm ``devbox up`` makes (list, inspect, run, remove) ------------

    def containers(self, *, all: bool = False, filters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        query = {"all": "1" if all else "0", **({"filters": _filters(filters)} if filters else {})}
        result: list[dict[str, Any]] = self.call("GET", "/containers/json", query=query) or []
        return result

    def networks(self, *, filters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.call("GET", "/networks", query={"filters": _filters(filters)} if filters else None) or []
        return result

    def volumes(self, *, filters: dict[str, Any] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", "/volumes", query={"filters": _filters(filters)} if filters else None) or {}
        return result

    def inspect_image(self, ref: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", f"/images/{urllib.parse.quote(ref, safe='')}/json")
        return result

    def stop(self, container_id: str, timeout: int = 10) -> None:
        self.call("POST", f"/containers/{container_id}/stop", query={"t": str(timeout)})

    def create_network(self, name: str, *, driver: str = "bridge", labels: dict[str, str] | None = None) -> None:
        self.call("POST", "/networks/create", body={"Name": name, "Driver": driver, "CheckDuplicate": True,
                                                    "Labels": labels or {}})

    def remove_network(self, name: str) -> None:
        self.call("DELETE", f"/networks/{urllib.parse.quote(name, safe='')}")

    def create_volume(self, name: str, *, labels: dict[str, str] | None = None) -> None:
        self.call("POST", "/volumes/create", body={"Name": name, "Labels": labels or {}})

    def remove_volume(self, name: str, *, force: bool = False) -> None:
        self.call("DELETE", f"/volumes/{urllib.parse.quote(name, safe='')}", query={"force": "1" if force else "0"})

    def get_archive(self, container_id: str, path: str) -> bytes:
        """A tar of ``path`` in the container (NOT_FOUND when it is not there)."""
        status, raw = self.request("GET", f"/containers/{container_id}/archive", query={"path": path})
        if status >= 400:
            raise _error(status, raw)
        return raw

    def libpod(self, method: str, path: str, *, body: Any = None, query: dict[str, str] | None = None) -> Any:
        """``METHOD /libpod/PATH`` on Podman: the decoded JSON answer (``None`` when empty)."""
        from devbox.engine.libpod import API

        return self.call(method, API + path, body=body, query=query)

    def events(self, *, since: str, until: str, filters: dict[str, Any]) -> Events:
        """The engine's events from ``since`` until ``until`` (Unix seconds, fractions allowed): the
        engine ends the stream at ``until``.  On a connection of its own, so this thread's other calls
        go on while it is open."""
        conn = _UnixConnection(self.socket_path, None)  # no read timeout: the engine says when it ends
        url = "/events?" + urllib.parse.urlencode({"since": since, "until": until, "filters": _filters(filters)})
        from devbox.engine.errors import from_os_error

        try:
            conn.request("GET", url)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise from_os_error(exc, self.host, "GET /events", self.timeout) from None
        if resp.status >= 400:
            raw = resp.read()
            conn.close()
            raise _error(resp.status, raw)
        return Events(conn, resp, self.host)


class Events:
    """An open event stream: :meth:`next` gives the next event, ``None`` once the engine ended it."""

    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse, host: str) -> None:
        self._conn = conn
        self._resp = resp
        self._host = host

    def next(self) -> dict[str, Any] | None:
        from devbox.engine.errors import from_os_error

        while True:
            try:
                line = self._resp.readline()
            except (OSError, http.client.HTTPException) as exc:
                raise from_os_error(exc, self._host, "GET /events") from None
            if not line:
                return None
            event = _json_or_none(line)
            if isinstance(event, dict):
                return event

    def close(self) -> None:
        self._conn.close()
