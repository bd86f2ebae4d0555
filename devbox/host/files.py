"""Editing system files the way shadow-utils does: locked, atomic, backed up.

* Lock: write our PID to ``FILE.<pid>``, fsync, hard-link it to ``FILE.lock``
  (shadow-utils' ``commonio_lock``), so devbox and ``usermod``/``useradd``
  never interleave.  Retries 15 × 1 s like shadow-utils.  A lock whose PID is
  dead is stale; an empty or garbled lock file is held.  Stale locks are
  removed under an ``flock`` of the lock's directory (two devbox processes
  cannot both judge and remove the same stale lock) and only when the path
  still names the inode whose PID was read (not a lock taken meanwhile).
* Write: a temp file made with ``O_EXCL`` under an unpredictable name in the
  same directory, same mode and owner, fsync, ``rename`` over the original,
  fsync the directory.
* Backup: the exact previous bytes, timestamped, in devbox's state directory.

Every step that changes the disk passes a :func:`devbox.faults.point`,
where the crash suite kills devbox to prove that nothing is ever torn.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from devbox.errors import HostError
from devbox.faults import point

if TYPE_CHECKING:
    from devbox.host.user import User

LOCK_TRIES = 15


def why_not_writable(exc: OSError, directory: Path) -> str:
    """What to do when a write in ``directory`` failed, by its errno."""
    if exc.errno == errno.EROFS:
        return f"{directory} is on a read-only filesystem: remount it read-write, or change the image it comes from"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"the filesystem holding {directory} is full: free some space (df -h {directory})"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "run with sudo" if os.geteuid() != 0 else f"check who may write to {directory} (ls -ld {directory})"
    return f"check {directory} (ls -ld {directory}; df -h {directory})"


def pid_alive(pid: int) -> bool:
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
        fd = os.open(mine, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, f"{os.getpid()}\0".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(mine)
        raise HostError(f"cannot create lock file {mine}: {exc.strerror}", hint=why_not_writable(exc, path.parent)) from None
    try:
        for attempt in range(tries):
            try:
                os.link(mine, lock)
                break
            except FileExistsError:
                if _remove_if_stale(lock):
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
        point("locked")
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
    finally:
        with contextlib.suppress(FileNotFoundError):
            mine.unlink()


@contextlib.contextmanager
def locked_in_order(paths: list[Path], tries: int = LOCK_TRIES, delay: float = 1.0) -> Iterator[None]:
    """Hold the locks of ``paths`` in the order given (shadow-utils' order for its files), released in reverse."""
    with contextlib.ExitStack() as stack:
        for path in paths:
            stack.enter_context(locked(path, tries, delay))
        yield


def _stale_pid(text: str) -> bool:
    """A lock naming a PID that is not running.  An empty or garbled lock is held (shadow-utils' rule)."""
    text = text.strip("\0\n ")
    return text.isdigit() and not pid_alive(int(text))


def _remove_if_stale(lock: Path) -> bool:
    """Remove ``lock`` if it is stale; ``True`` when it is gone (removed here, or by its holder)."""
    try:
        dirfd = os.open(lock.parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        # one devbox at a time judges and removes stale locks in this directory
        fcntl.flock(dirfd, fcntl.LOCK_EX)
        try:
            fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return True
        try:
            if not _stale_pid(os.read(fd, 64).decode(errors="replace")):
                return False
            judged = os.fstat(fd)
            point("judged-stale")
            try:
                now = os.lstat(lock)
            except FileNotFoundError:
                return True
            if (now.st_dev, now.st_ino) != (judged.st_dev, judged.st_ino):
                return False  # a new lock took its place since we read it
            os.unlink(lock)
            return True
        finally:
            os.close(fd)
    finally:
        os.close(dirfd)  # closing releases the flock


def private_dir(directory: Path, owner: User | None = None) -> Path:
    """``mkdir -p`` for per-user state: each directory it creates is 0700 (and, with ``owner`` — root
    acting for a user — theirs).  ``directory`` itself is devbox's own: one left more open by an
    earlier version is closed to 0700.  Parents that exist (``~/.local``) are left as they are."""
    missing = []
    d = directory
    while not d.exists():
        missing.append(d)
        d = d.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(d, 0o700)
        os.chmod(d, 0o700)  # whatever the umask
        if owner is not None:
            os.chown(d, owner.uid, owner.gid)
    st = os.stat(directory)
    if st.st_mode & 0o077 and st.st_uid == (owner.uid if owner is not None else os.geteuid()):
        os.chmod(directory, 0o700)
    return directory


def open_private(path: Path, flags: int = os.O_WRONLY | os.O_APPEND | os.O_CREAT) -> int:
    """A per-user state file opened (created 0600, in 0700 directories): its fd."""
    private_dir(path.parent)
    return os.open(path, flags | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data``: temp file (``O_EXCL``, unpredictable name), fsync, keep mode
    and owner, rename, fsync dir.  A crash at any point leaves the old bytes or the new, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        st = path.stat()
        mode, owner = st.st_mode & 0o7777, (st.st_uid, st.st_gid)
    except FileNotFoundError:
        owner = None
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".devbox-tmp", dir=path.parent)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            point("written-temp")
            os.fsync(fd)
            os.fchmod(fd, mode)
            if owner is not None and os.geteuid() == 0:
                os.fchown(fd, *owner)
        finally:
            os.close(fd)
        point("synced-temp")
        os.rename(tmp, path)
        tmp = None
        point("renamed")
    except OSError as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise HostError(f"cannot write {path}: {exc.strerror}", hint=why_not_writable(exc, path.parent)) from None
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
