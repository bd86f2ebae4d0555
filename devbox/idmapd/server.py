"""The idmap helper: the only part of devbox that runs as root on every ``up``.

It listens on ``<run>/idmapd.sock`` (mode 0666: any local user may *ask*),
reads who asks from the kernel (``SO_PEERCRED``), applies
:mod:`devbox.idmapd.rules` and makes, adopts or removes that caller's views
under ``<run>/mounts/<uid>/`` (root-owned, 0700).  One request per
connection, one JSON line each way, handled one at a time with a 5 s read
timeout.  Every grant and every refusal is logged (stderr and
``<run>/idmapd.log``).

Requests (``op``): ``ping``; ``mount`` (``name``, ``source``, ``writer``:
``[uid, gid]``); ``unmount`` (``name``); ``list``.  The reply is
``{"ok": true, ...}`` or ``{"ok": false, "error": "...", "refused": bool}``.

State survives a crash of the helper or of ``up``: each view has a record
(``<name>.json``) beside its mount point; a request for a view that is mounted
with the same source and map adopts it, anything else there is detached
first, so a view is never mounted twice.  ``<run>`` lives on ``/run`` (tmpfs):
a reboot leaves nothing behind.

Imports: the standard library, :mod:`devbox.host.idmount` (syscalls),
:mod:`devbox.idmapd.rules` and :mod:`devbox.core.idmap` (``/etc/subuid``
parsing) only, so what runs as root is small enough to read in one sitting.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import grp
import json
import os
import pwd
import signal
import socket
import stat
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from devbox.core.idmap import parse_subid
from devbox.host import idmount
from devbox.idmapd.rules import Refused, check_count, check_name, check_owner, check_path_text, check_writer

SOCKET = "idmapd.sock"
PIDFILE = "idmapd.pid"
LOG = "idmapd.log"
MAX_REQUEST = 65536
READ_TIMEOUT = 5.0
VERSION = 1


@dataclasses.dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int


class Helper:
    def __init__(self, run: Path, subuid: Path = Path("/etc/subuid"), subgid: Path = Path("/etc/subgid"),
                 quiet: bool = False) -> None:
        self.run = run
        self.subuid = subuid
        self.subgid = subgid
        self.quiet = quiet

    # --- layout ------------------------------------------------------------------------------

    @property
    def mounts_root(self) -> Path:
        return self.run / "mounts"

    def prepare(self) -> None:
        """``<run>`` (0755) and ``<run>/mounts`` (0700), root-owned real directories, never symlinks."""
        for d, mode in ((self.run, 0o755), (self.mounts_root, 0o700)):
            with contextlib.suppress(FileExistsError):
                os.mkdir(d, mode)
            st = os.lstat(d)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0:
                raise RuntimeError(f"{d} is not a root-owned directory: refusing to use it")
            os.chmod(d, mode)

    def _user_dir(self, uid: int) -> Path:
        d = self.mounts_root / str(uid)
        with contextlib.suppress(FileExistsError):
            os.mkdir(d, 0o700)
        return d

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.mounts_root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # --- requests ----------------------------------------------------------------------------

    def handle(self, peer: Peer, req: Any) -> dict[str, Any]:
        op = req.get("op") if isinstance(req, dict) else None
        try:
            if op == "ping":
                return {"ok": True, "version": VERSION, "run": str(self.run)}
            self.prepare()
            if op == "mount":
                reply = self._mount(peer, req)
            elif op == "unmount":
                reply = self._unmount(peer, req)
            elif op == "list":
                return {"ok": True, "views": self._list(peer)}
            else:
                raise Refused(f"unknown op {op!r}")
        except Refused as exc:
            self.log(f"REFUSED uid={peer.uid} pid={peer.pid} op={op}: {exc}")
            return {"ok": False, "refused": True, "error": str(exc)}
        except OSError as exc:
            self.log(f"FAILED uid={peer.uid} pid={peer.pid} op={op}: {exc}")
            return {"ok": False, "refused": False, "error": str(exc), "errno": exc.errno}
        self.log(f"ok uid={peer.uid} pid={peer.pid} op={op} {json.dumps(reply, sort_keys=True)}")
        return reply

    def _mount(self, peer: Peer, req: dict[str, Any]) -> dict[str, Any]:
        name = check_name(req.get("name"))
        source = check_path_text(req.get("source"))
        try:
            fd = idmount.open_dir_strict(source)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise Refused(f"{source}: a component is a symlink (send the resolved path)") from None
            if exc.errno == errno.ENOTDIR:
                raise Refused(f"{source} is not a directory") from None
            raise
        try:
            st = os.fstat(fd)
            check_owner(source, st.st_uid, peer.uid)
            writer = check_writer((peer.uid, peer.gid), req.get("writer"), *self._subids(peer.uid, peer.gid))
            uid_line, gid_line = (peer.uid, writer[0], 1), (peer.gid, writer[1], 1)
            record = {"source": source, "dev": st.st_dev, "ino": st.st_ino, "uid": list(uid_line), "gid": list(gid_line)}
            with self._locked():
                udir = self._user_dir(peer.uid)
                target = udir / name
                if self._read_record(udir, name) == record and self._mounted_once(target, st):
                    return {"ok": True, "path": str(target), "adopted": True}
                self._detach_all(target)
                check_count(sum(1 for p in udir.glob("*.json") if p.name != f"{name}.json"))
                with contextlib.suppress(FileExistsError):
                    os.mkdir(target, 0o700)
                ns = idmount.userns_fd([uid_line], [gid_line])
                try:
                    idmount.attach_view(fd, str(target), ns)
                finally:
                    os.close(ns)
                tmp = udir / f".{name}.json.tmp"
                tmp.write_text(json.dumps(record) + "\n")
                os.replace(tmp, udir / f"{name}.json")
                return {"ok": True, "path": str(target), "adopted": False}
        finally:
            os.close(fd)

    def _unmount(self, peer: Peer, req: dict[str, Any]) -> dict[str, Any]:
        name = check_name(req.get("name"))
        with self._locked():
            udir = self._user_dir(peer.uid)
            target = udir / name
            was = self._detach_all(target)
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(target)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(udir / f"{name}.json")
        return {"ok": True, "unmounted": was}

    def _list(self, peer: Peer) -> list[dict[str, Any]]:
        udir = self.mounts_root / str(peer.uid)
        mounted = {m.target for m in idmount.mounts()}
        out = []
        for rec in sorted(udir.glob("*.json")) if udir.is_dir() else []:
            try:
                data = json.loads(rec.read_text())
            except (OSError, ValueError):
                continue
            name = rec.name[: -len(".json")]
            out.append({"name": name, "path": str(udir / name), "source": data.get("source"),
                        "uid": data.get("uid"), "gid": data.get("gid"), "mounted": str(udir / name) in mounted})
        return out

    # --- helpers -------------------------------------------------------------------------------

    def _subids(self, uid: int, gid: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """The caller's subordinate ranges: /etc/subuid lines of its name or uid; /etc/subgid lines of its
        name, uid, or primary group's name (dockerd keys a remap's subgid lines by the group)."""
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            return [], []
        try:
            group = grp.getgrgid(gid).gr_name
        except KeyError:
            group = name
        out: list[list[tuple[int, int]]] = []
        for path, keys in ((self.subuid, (name, str(uid))), (self.subgid, (name, str(uid), group))):
            try:
                text = path.read_text()
            except OSError:
                text = ""
            parsed = parse_subid(text, str(path))
            entries = {e for key in dict.fromkeys(keys) for e in parsed.owned_by(key)}
            out.append(sorted((e.start, e.count) for e in entries))
        return out[0], out[1]

    @staticmethod
    def _read_record(udir: Path, name: str) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads((udir / f"{name}.json").read_text())
            return data
        except (OSError, ValueError):
            return None

    @staticmethod
    def _mounted_once(target: Path, st: os.stat_result) -> bool:
        here = [m for m in idmount.mounts() if m.target == str(target)]
        if len(here) != 1 or not here[0].idmapped:
            return False
        try:
            now = os.stat(target)
        except OSError:
            return False
        return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)

    @staticmethod
    def _detach_all(target: Path) -> int:
        """Detach every mount stacked at ``target``; how many there were."""
        n = 0
        while n < 64 and any(m.target == str(target) for m in idmount.mounts()):
            idmount.detach_view(str(target))
            n += 1
        return n

    def log(self, line: str) -> None:
        stamped = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} devbox-idmapd[{os.getpid()}] {line}"
        if not self.quiet:
            print(stamped, file=sys.stderr, flush=True)
        with contextlib.suppress(OSError):
            fd = os.open(self.run / LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, (stamped + "\n").encode())
            finally:
                os.close(fd)


# --- the socket ------------------------------------------------------------------------------


def peer_of(conn: socket.socket) -> Peer:
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return Peer(pid, uid, gid)


def read_request(conn: socket.socket) -> Any:
    data = b""
    while b"\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST:
            raise ValueError("request too large")
    return json.loads(data.split(b"\n", 1)[0] or b"null")


def serve(helper: Helper) -> None:
    """Serve until SIGTERM/SIGINT.  Views stay mounted when the helper stops: containers use them."""
    if os.geteuid() != 0:
        raise SystemExit("devbox idmap serve: must run as root")
    helper.prepare()
    path = helper.run / SOCKET
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.bind(str(path))
    os.chmod(path, 0o666)
    sock.listen(64)
    (helper.run / PIDFILE).write_text(f"{os.getpid()}\n")
    stop = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True
        sock.close()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    helper.log(f"listening on {path}")
    while not stop:
        try:
            conn, _ = sock.accept()
        except OSError:
            break
        with conn:
            try:
                conn.settimeout(READ_TIMEOUT)
                peer = peer_of(conn)
                try:
                    req = read_request(conn)
                except (ValueError, OSError) as exc:
                    helper.log(f"REFUSED uid={peer.uid} pid={peer.pid}: unreadable request ({exc})")
                    conn.sendall(json.dumps({"ok": False, "refused": True, "error": "unreadable request"}).encode() + b"\n")
                    continue
                conn.sendall(json.dumps(helper.handle(peer, req)).encode() + b"\n")
            except OSError:
                continue  # the caller went away
    helper.log("stopped")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(helper.run / PIDFILE)
