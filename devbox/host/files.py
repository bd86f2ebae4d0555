"""Editing system files the way shadow-utils does: locked, atomic, backed up.

* Lock: write our PID to ``FILE.<pid>``, fsync, hard-link it to ``FILE.lock``
  (shadow-utils' ``commonio_lock``), so devbox and ``usermod``/``useradd``
  never interleave.  A lock whose PID is dead is stale and removed; an empty
  lock file is not stale.  Retries 15 × 1 s like shadow-utils.
* Write: a temp file in the same directory, same mode and owner, fsync,
  ``rename`` over the original, fsync the directory.
* Backup: the exact previous bytes, timestamped, in devbox's state directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from devbox.errors import HostError

if TYPE_CHECKING:
    from devbox.host.user import User

LOCK_TRIES = 15


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def locked(path: Path, tries: int = LOCK_TRIES, delay: float = 1.0) -> Iterator[None]:
    """Hold shadow-utils' lock on ``path`` (``path.lock``)."""
    lock = path.with_name(path.name + ".lock")
    mine = path.with_name(f"{path.name}.{os.getpid()}")
    try:
        fd = os.open(mine, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise HostError(f"cannot create lock file {mine}: {exc.strerror}", hint="run with sudo") from None
    try:
        os.write(fd, f"{os.getpid()}\0".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        for attempt in range(tries):
            try:
                os.link(mine, lock)
                break
            except FileExistsError:
                if _stale(lock):
                    with contextlib.suppress(FileNotFoundError):
                        lock.unlink()
                    continue
                if attempt + 1 < tries:
                    time.sleep(delay)
        else:
            holder = lock.read_text(errors="replace").strip("\0\n ") if lock.exists() else "?"
            raise HostError(
                f"{path} is locked by process {holder or '(empty lock file)'}",
                where=str(lock),
                hint="wait for usermod/useradd to finish, or remove the lock if no such process runs",
            )
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
    finally:
        with contextlib.suppress(FileNotFoundError):
            mine.unlink()


def _stale(lock: Path) -> bool:
    try:
        text = lock.read_text(errors="replace").strip("\0\n ")
    except FileNotFoundError:
        return True
    if not text.isdigit():
        return False  # shadow-utils treats an empty or garbled lock as held
    return not _pid_alive(int(text))


def makedirs_owned(directory: Path, owner: User | None) -> None:
    """``mkdir -p``; with ``owner`` (root acting for a user), each directory it creates becomes theirs."""
    missing = []
    d = directory
    while not d.exists():
        missing.append(d)
        d = d.parent
    directory.mkdir(parents=True, exist_ok=True)
    if owner is not None:
        for d in missing:
            os.chown(d, owner.uid, owner.gid)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data``: temp file, fsync, keep mode and owner, rename, fsync dir."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        st = path.stat()
        mode, owner = st.st_mode & 0o7777, (st.st_uid, st.st_gid)
    except FileNotFoundError:
        owner = None
    tmp = path.with_name(f".{path.name}.devbox-{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)
        if owner is not None and os.geteuid() == 0:
            os.chown(tmp, *owner)
        os.rename(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise HostError(f"cannot write {path}: {exc.strerror}", hint=f"check who may write to {path.parent} (ls -ld)") from None
    dirfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """A file's exact bytes (``None``: it did not exist) — what a rollback restores."""

    path: Path
    data: bytes | None

    @classmethod
    def take(cls, path: Path) -> Snapshot:
        try:
            return cls(path, path.read_bytes())
        except FileNotFoundError:
            return cls(path, None)

    def restore(self) -> None:
        if self.data is None:
            remove(self.path)
        else:
            write_atomic(self.path, self.data)


def backup(snapshot: Snapshot, directory: Path, stamp: str) -> Path | None:
    """Save the previous bytes as ``directory/STAMP/<path with / as _>``."""
    if snapshot.data is None:
        return None
    target = directory / stamp / str(snapshot.path).strip("/").replace("/", "_")
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(target, snapshot.data, mode=0o600)
    return target


def timestamp() -> str:
    return time.strftime("%Y%m%dT%H%M%S") + f".{time.time_ns() % 1_000_000_000:09d}"[:4]
