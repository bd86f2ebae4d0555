"""The scanner: every path under the work dirs that is not the user's, fast.

The walk is ``os.scandir`` over a directory fd (so each ``DirEntry.stat`` is an
``fstatat`` relative to it), an explicit stack and plain strings; big trees are
split across a few worker *processes* (a thread per subtree loses to the GIL:
measured slower than one thread).  :class:`Ignore` prunes what the project
ignores.  Nothing here imports watchdog or rich: workers must start fast.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import re
import stat as _stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from devbox.watch.leaks import Attribution, HostUser, Leak

Clock = Callable[[], float]


# --- ignore patterns ----------------------------------------------------------


class Ignore:
    """Glob patterns: with a ``/`` they match the path relative to a root (``.git/objects``),
    without one they match any single name (``__pycache__``).  A matched directory is pruned."""

    def __init__(self, roots: Sequence[str], patterns: Sequence[str]) -> None:
        self.roots = tuple(roots)
        self.patterns = tuple(p.strip("/") for p in patterns if p.strip("/"))
        names = [fnmatch.translate(p) for p in self.patterns if "/" not in p]
        paths = [
            re.escape(root.rstrip("/")) + "/" + fnmatch.translate(p)
            for p in self.patterns
            if "/" in p
            for root in self.roots
        ]
        self._name = re.compile("|".join(names)).match if names else None
        self._path = re.compile("|".join(paths)).match if paths else None

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def entry(self, path: str, name: str) -> bool:
        """Is this entry (not its parents) ignored?"""
        if self._name is not None and self._name(name):
            return True
        return self._path is not None and self._path(path) is not None

    def path(self, path: str) -> bool:
        """Is this path or any of its parents below a root ignored?"""
        if not self.patterns:
            return False
        for root in self.roots:
            prefix = root.rstrip("/") + "/"
            if path.startswith(prefix):
                current = root.rstrip("/")
                for part in path[len(prefix) :].split("/"):
                    current = current + "/" + part
                    if self.entry(current, part):
                        return True
                return False
        return False


# --- the scanner ----------------------------------------------------------------

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)

# (path, uid, gid, is_dir) of an entry not owned by the user
Found = tuple[str, int, int, bool]


@dataclasses.dataclass
class _Tally:
    dirs: int = 0
    entries: int = 0


def _walk(
    stack: list[str],
    uid: int,
    gids: frozenset[int],
    ignore: Ignore | None,
    found: list[Found],
    unreadable: list[str],
    tally: _Tally,
    budget: int | None = None,
) -> None:
    """Depth-first walk of ``stack`` (consumed).  With ``budget`` it stops after that many
    directories and leaves the rest on the stack, breadth-first, for workers to share."""
    add = found.append
    push = stack.append
    def pop_front() -> str:
        return stack.pop(0)

    pop: Callable[[], str] = stack.pop if budget is None else pop_front
    S_ISDIR = _stat.S_ISDIR
    scandir = os.scandir
    opendir = os.open
    close = os.close
    check_ignore = ignore.entry if ignore else None
    dirs = entries = 0
    while stack:
        if budget is not None:
            if budget <= 0:
                break
            budget -= 1
        d = pop()
        try:
            fd = opendir(d, _DIR_FLAGS)
        except (FileNotFoundError, NotADirectoryError):
            continue  # removed (or replaced) since we saw it
        except OSError:
            unreadable.append(d)
            continue
        prefix = d if d.endswith("/") else d + "/"
        try:
            with scandir(fd) as it:
                for e in it:
                    try:
                        st = e.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    entries += 1
                    is_dir = S_ISDIR(st.st_mode)
                    if check_ignore is not None and check_ignore(prefix + e.name, e.name):
                        continue
                    if st.st_uid != uid or st.st_gid not in gids:
                        add((prefix + e.name, st.st_uid, st.st_gid, is_dir))
                    if is_dir:
                        dirs += 1
                        push(prefix + e.name)
        except OSError:
            unreadable.append(d)
        finally:
            close(fd)
    tally.dirs += dirs
    tally.entries += entries


@dataclasses.dataclass(frozen=True)
class ScanResult:
    found: tuple[Found, ...]  # every entry not owned by the user
    dirs: int  # directories seen, the roots included
    entries: int  # entries seen below the roots
    unreadable: tuple[str, ...]  # directories that could not be listed (their contents are unknown)
    seconds: float
    workers: int  # processes used (1: in-process only)


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def scan(
    roots: Sequence[str | Path],
    user: HostUser,
    *,
    ignore: Sequence[str] = (),
    workers: int | None = None,
    clock: Clock = time.perf_counter,
) -> ScanResult:
    """Every path at or under ``roots`` not owned by ``user``.

    ``workers=None`` picks up to 4 processes when the tree is wide enough to pay
    for them (~10 ms each); ``workers=1`` stays in-process.
    """
    start = clock()
    root_list = [os.path.abspath(os.fspath(r)) for r in roots]
    ign = Ignore(root_list, ignore) if ignore else None
    gids = user.gids
    found: list[Found] = []
    unreadable: list[str] = []
    tally = _Tally()
    stack: list[str] = []
    for root in root_list:
        try:
            st = os.lstat(root)
        except FileNotFoundError:
            continue
        if st.st_uid != user.uid or st.st_gid not in gids:
            found.append((root, st.st_uid, st.st_gid, _stat.S_ISDIR(st.st_mode)))
        if _stat.S_ISDIR(st.st_mode):
            tally.dirs += 1
            stack.append(root)
    n = workers if workers is not None else min(4, _cpu_count())
    used = 1
    if n > 1:
        # Breadth-first until there is a frontier to share; small trees finish here.
        _walk(stack, user.uid, gids, ign, found, unreadable, tally, budget=64)
        if len(stack) >= 8 * n:
            used = n
            _parallel(stack, user, ign, found, unreadable, tally, n)
            stack = []
    _walk(stack, user.uid, gids, ign, found, unreadable, tally)
    return ScanResult(tuple(found), tally.dirs, tally.entries, tuple(unreadable), clock() - start, used)


def _parallel(
    frontier: list[str],
    user: HostUser,
    ign: Ignore | None,
    found: list[Found],
    unreadable: list[str],
    tally: _Tally,
    n: int,
) -> None:
    """Walk the frontier in ``n`` worker processes (fresh interpreters: safe beside threads)."""
    chunks = [frontier[i::n] for i in range(n)]
    package_parent = str(Path(__file__).resolve().parent.parent)
    code = "import sys; sys.path.insert(0, sys.argv[1]); from devbox.watch.scan import _worker_main; _worker_main()"
    procs: list[tuple[list[str], subprocess.Popen[bytes] | None]] = []
    for chunk in chunks:
        job = json.dumps(
            {
                "dirs": chunk,
                "uid": user.uid,
                "gids": sorted(user.gids),
                "roots": list(ign.roots) if ign else [],
                "ignore": list(ign.patterns) if ign else [],
            }
        ).encode()
        proc: subprocess.Popen[bytes] | None = None
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", code, package_parent],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            if proc.stdin is not None:
                proc.stdin.write(job)
                proc.stdin.close()
        except OSError:
            if proc is not None:
                proc.kill()
                proc.wait()
            proc = None
        procs.append((chunk, proc))
    for chunk, p in procs:
        if p is not None:
            out = p.stdout.read() if p.stdout is not None else b""
            if p.stdout is not None:
                p.stdout.close()
            if p.wait() == 0 and out.endswith(b"\0"):
                _parse_worker_output(out, found, unreadable, tally)
                continue
        # A worker that could not start or died: walk its share here instead.
        _walk(list(chunk), user.uid, user.gids, ign, found, unreadable, tally)


def _parse_worker_output(out: bytes, found: list[Found], unreadable: list[str], tally: _Tally) -> None:
    for rec in out.split(b"\0")[:-1]:
        tag = rec[:1]
        if tag == b"F":
            uid, gid, is_dir, path = rec[1:].split(b" ", 3)
            found.append((os.fsdecode(path), int(uid), int(gid), is_dir == b"1"))
        elif tag == b"U":
            unreadable.append(os.fsdecode(rec[1:]))
        elif tag == b"T":
            dirs, entries = rec[1:].split(b" ")
            tally.dirs += int(dirs)
            tally.entries += int(entries)


def _worker_main() -> None:
    """Entry point of a scan worker: job as JSON on stdin, NUL-separated records on stdout."""
    job = json.loads(sys.stdin.buffer.read())
    ign = Ignore(job["roots"], job["ignore"]) if job["ignore"] else None
    found: list[Found] = []
    unreadable: list[str] = []
    tally = _Tally()
    _walk(list(job["dirs"]), job["uid"], frozenset(job["gids"]), ign, found, unreadable, tally)
    out = [b"F%d %d %d %s" % (u, g, d, os.fsencode(p)) for p, u, g, d in found]
    out += [b"U" + os.fsencode(p) for p in unreadable]
    out.append(b"T%d %d" % (tally.dirs, tally.entries))
    sys.stdout.buffer.write(b"\0".join(out) + b"\0")
    sys.stdout.buffer.flush()


def scan_leaks(
    roots: Sequence[str | Path],
    attribution: Attribution,
    *,
    ignore: Sequence[str] = (),
    workers: int | None = None,
    now: float | None = None,
) -> list[Leak]:
    """:func:`scan` + classification: the leaks under ``roots`` right now, sorted by path."""
    result = scan(roots, attribution.user, ignore=ignore, workers=workers)
    ts = time.time() if now is None else now
    return sorted(
        (attribution.classify(p, u, g, is_dir=d, now=ts) for p, u, g, d in result.found), key=lambda leak: leak.path
    )


def outermost(dirs: Iterable[str]) -> list[str]:
    """Drop directories nested in another one of the set: their parent's rescan covers them."""
    out: list[str] = []
    for d in sorted(dirs):
        if out and (d == out[-1] or d.startswith(out[-1].rstrip("/") + "/")):
            continue
        out.append(d)
    return out
