"""Asking for views: through the helper's socket, or in-process when devbox already runs as root.

Either way the same :class:`~devbox.idmapd.server.Helper` rules apply, with the
caller being the user devbox acts for.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from devbox.core.views import View
from devbox.errors import HostError
from devbox.faults import point
from devbox.idmapd.server import SOCKET, Helper, Peer

RUN_DEFAULT = "/run/devbox-idmapd"
FIX_INSTALL = "sudo devbox idmap --install"
TIMEOUT = 30.0


def run_dir() -> Path:
    return Path(os.environ.get("DEVBOX_IDMAP_RUN") or RUN_DEFAULT)


class NoHelper(HostError):
    """The helper does not answer (not installed, or stopped)."""


def socket_call(run: Path, req: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One request through the helper's socket, whoever we are (root included): the helper's own answer."""
    path = run / SOCKET
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise NoHelper(f"the idmap helper does not answer at {path} ({exc.strerror})", hint=FIX_INSTALL) from None
        except PermissionError:
            raise NoHelper(f"no permission to reach the idmap helper at {path}", hint=f"ls -l {path}") from None
        s.sendall(json.dumps(req).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    try:
        reply: dict[str, Any] = json.loads(data or b"null")
    except ValueError:
        reply = {}
    if not isinstance(reply, dict) or "ok" not in reply:
        raise HostError(f"the idmap helper at {path} sent no answer", hint=f"see {run}/idmapd.log")
    return reply


def ask(req: dict[str, Any], *, owner: tuple[int, int] | None = None, run: Path | None = None,
         timeout: float = TIMEOUT) -> dict[str, Any]:
    """One request.  As root, in-process for ``owner``; otherwise through the socket (the kernel tells the
    helper who we are)."""
    run = run or run_dir()
    if os.geteuid() == 0:
        uid, gid = owner if owner is not None else (0, 0)
        return Helper(run, quiet=True).handle(Peer(os.getpid(), uid, gid), req)
    return socket_call(run, req, timeout)


def checked(reply: dict[str, Any], what: str) -> dict[str, Any]:
    if not reply.get("ok"):
        hint = ("the helper refused: see the rules in `devbox idmap --help`" if reply.get("refused")
                else f"see {run_dir()}/idmapd.log")
        raise HostError(f"{what}: {reply.get('error', 'failed')}", hint=hint)
    return reply


def helper_status(run: Path | None = None, *, root_will_do: bool = True) -> str | None:
    """``None`` when views can be made (the helper answers, or we are root and ``root_will_do``); else why not.
    Doctor asks with ``root_will_do=False``: will ``up`` run as the user get views?"""
    if os.geteuid() == 0 and root_will_do:
        return None
    try:
        socket_call(run or run_dir(), {"op": "ping"}, 5.0)
    except HostError as exc:
        return exc.message
    return None


def make_views(views: Iterable[View], run: Path | None = None) -> list[dict[str, Any]]:
    """Make (or adopt) every view; the helper's replies in order."""
    out = []
    for v in views:
        out.append(checked(ask({"op": "mount", "name": v.name, "source": os.path.realpath(v.source), "writer": list(v.writer)},
                               owner=v.owner, run=run), f"view of {v.source} for {v.service}"))
        point("idmap-view")
    return out


def listed(owner: tuple[int, int], run: Path | None = None) -> list[dict[str, Any]]:
    views: list[dict[str, Any]] = checked(ask({"op": "list"}, owner=owner, run=run), "listing views")["views"]
    return views


def release_views(project: str, owner: tuple[int, int], keep: Iterable[str] = (), run: Path | None = None) -> list[str]:
    """Unmount the project's views not in ``keep``; their names."""
    keep = set(keep)
    gone = []
    for v in listed(owner, run):
        name = str(v["name"])
        if re.fullmatch(re.escape(project) + r"-[0-9a-f]{16}", name) and name not in keep:
            checked(ask({"op": "unmount", "name": name}, owner=owner, run=run), f"releasing view {name}")
            gone.append(name)
    return gone
