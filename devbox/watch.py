"""The ownership watcher: a fast full scan, then inotify events, then periodic reconcile scans.

Pieces, from pure to side-effecting:

* :class:`Ignore` and :func:`scan` — find every path under the roots whose owner
  is not the user's.  The walk is ``os.scandir`` over a directory fd (so each
  ``DirEntry.stat`` is an ``fstatat`` relative to it), an explicit stack, plain
  strings; big trees are split across a few worker *processes* (a thread per
  subtree loses to the GIL: measured slower than one thread).
* :class:`Tracker` — de-duplicates: a path is reported once until its owner
  changes or it is fixed or gone.
* :class:`Reporter` — one line per leak, a summary per area under bursts.  Time
  comes in as arguments, so tests drive it with a fake clock.
* :class:`Watcher` — wires watchdog to the above.  Events only say "look at this
  path": every decision is made from an ``lstat``.  Event-queue overflows (seen
  through watchdog's log) and a short inotify watch budget switch it to periodic
  full rescans, and it says so.

Nothing here prints: lines go to the ``sink``/``notice`` callables the caller
passes (:func:`run_watch` uses :mod:`devbox.console`).  watchdog is imported
only when a live watcher starts, so scan workers start fast.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import logging
import os
import queue
import re
import stat as _stat
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from devbox.leaks import (
    Attribution,
    HostUser,
    Kind,
    Leak,
    RecordLog,
    State,
    latest_records,
)

Clock = Callable[[], float]
Sink = Callable[[str], None]

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
    code = "import sys; sys.path.insert(0, sys.argv[1]); from devbox.watch import _worker_main; _worker_main()"
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


# --- de-duplication -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Change:
    leak: Leak
    state: State


class Tracker:
    """Current leaks by path.  Feeding the same owner twice yields nothing."""

    def __init__(self, attribution: Attribution, known: Iterable[Leak] = ()) -> None:
        self.attribution = attribution
        self.leaks: dict[str, Leak] = {leak.path: leak for leak in known}

    def seen(self, path: str, uid: int, gid: int, is_dir: bool, now: float) -> Change | None:
        """An lstat result for ``path``."""
        old = self.leaks.get(path)
        if self.attribution.user.owns(uid, gid):
            if old is None:
                return None
            del self.leaks[path]
            return Change(old, State.FIXED)
        if old is not None and old.owner_key == (uid, gid):
            return None
        leak = self.attribution.classify(path, uid, gid, is_dir=is_dir, now=now)
        self.leaks[path] = leak
        return Change(leak, State.LEAK)

    def missing(self, path: str) -> Change | None:
        old = self.leaks.pop(path, None)
        return Change(old, State.GONE) if old is not None else None

    def under(self, directory: str) -> list[str]:
        prefix = directory.rstrip("/") + "/"
        return [p for p in self.leaks if p.startswith(prefix)]


# --- reporting --------------------------------------------------------------------


def _fmt_count(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


class Reporter:
    """Turns leaks into lines: each leak on its own line until a burst, then summaries.

    A burst is more than ``burst`` leaks without a ``quiet`` gap.  The first
    ``burst`` leaks print at once (an isolated leak is never delayed); the rest
    are held and summarised per area and owner when the burst goes quiet, or at
    least every ``max_delay`` seconds while it lasts.
    """

    def __init__(
        self, roots: Sequence[str], *, burst: int = 5, quiet: float = 0.5, max_delay: float = 2.0
    ) -> None:
        self.roots = tuple(r.rstrip("/") or "/" for r in roots)
        self.burst = burst
        self.quiet = quiet
        self.max_delay = max_delay
        self._printed = 0  # lines printed in the current burst window
        self._last: float | None = None  # time of the last leak
        self._pending: list[Leak] = []
        self._pending_since = 0.0
        self.reported = 0  # leaks accounted for by a line or a summary

    def shown(self, path: str) -> str:
        """Relative to its root when watching one root, absolute otherwise."""
        if len(self.roots) == 1:
            root = self.roots[0]
            if path == root:
                return "."
            prefix = root if root.endswith("/") else root + "/"
            if path.startswith(prefix):
                return path[len(prefix) :]
        return path

    def add(self, leak: Leak, now: float) -> list[str]:
        lines = self.tick(now)
        if self._last is not None and now - self._last >= self.quiet and not self._pending:
            self._printed = 0
        self._last = now
        if self._printed < self.burst and not self._pending:
            self._printed += 1
            self.reported += 1
            return [*lines, leak.describe(self.shown(leak.path))]
        if not self._pending:
            self._pending_since = now
        self._pending.append(leak)
        return lines

    def due(self) -> float | None:
        """When :meth:`tick` next has something to do."""
        if not self._pending or self._last is None:
            return None
        return min(self._last + self.quiet, self._pending_since + self.max_delay)

    def tick(self, now: float) -> list[str]:
        due = self.due()
        if due is None or now < due:
            return []
        pending, self._pending = self._pending, []
        self.reported += len(pending)
        if now - (self._last or now) >= self.quiet:
            self._printed = 0
        return self.summarise(pending)

    def flush(self) -> list[str]:
        pending, self._pending = self._pending, []
        self.reported += len(pending)
        return self.summarise(pending)

    def _area(self, path: str) -> tuple[str, str]:
        """(root, first component below it): the unit a summary groups by."""
        for root in self.roots:
            prefix = root if root.endswith("/") else root + "/"
            if path.startswith(prefix):
                rest = path[len(prefix) :]
                return root, rest.split("/", 1)[0] if "/" in rest else ""
        return os.path.dirname(path), ""

    def summarise(self, leaks: Sequence[Leak]) -> list[str]:
        if len(leaks) <= 2:
            return [leak.describe(self.shown(leak.path)) for leak in leaks]
        groups: dict[tuple[Any, ...], list[Leak]] = {}
        for leak in leaks:
            key = (*self._area(leak.path), leak.kind, leak.by_gid, leak.owner_text(host=False))
            groups.setdefault(key, []).append(leak)
        lines = []
        for (root, top, _kind, _by_gid, owner), members in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            if len(members) == 1:
                lines.append(members[0].describe(self.shown(members[0].path)))
                continue
            parents = [os.path.dirname(m.path) if not m.is_dir else m.path for m in members]
            common = os.path.commonpath(parents) if top else root
            shown = self.shown(common)
            where = "./" if shown == "." else (shown.rstrip("/") + "/")
            ndirs = sum(1 for m in members if m.is_dir)
            nfiles = len(members) - ndirs
            parts = []
            if nfiles:
                parts.append(_fmt_count(nfiles, "file", "files"))
            if ndirs:
                parts.append(_fmt_count(ndirs, "directory", "directories"))
            lines.append(f"{' and '.join(parts)} under {where} owned by {owner}")
        return lines


# --- inotify coverage -----------------------------------------------------------------


def max_user_watches(proc: Path = Path("/proc")) -> int | None:
    try:
        return int((proc / "sys/fs/inotify/max_user_watches").read_text())
    except (OSError, ValueError):
        return None


def inotify_watch_count(proc: Path = Path("/proc")) -> int:
    """Watches held by this process's inotify instances (from ``/proc/self/fdinfo``)."""
    total = 0
    fd_dir = proc / "self/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return 0
    for fd in fds:
        try:
            if os.readlink(fd_dir / fd) != "anon_inode:inotify":
                continue
            with open(proc / "self/fdinfo" / fd, "rb") as fh:
                total += sum(1 for line in fh if line.startswith(b"inotify wd:"))
        except OSError:
            continue
    return total


@dataclasses.dataclass(frozen=True)
class Coverage:
    dirs: int
    watches: int
    limit: int | None

    @property
    def partial(self) -> bool:
        # A little slack: directories come and go between the count and the scan.
        return self.dirs - self.watches > max(8, self.dirs // 200)

    def message(self) -> str:
        limit = f" (fs.inotify.max_user_watches = {self.limit:,})" if self.limit else ""
        return (
            f"only {self.watches:,} of {self.dirs:,} directories have an inotify watch{limit}: "
            "changes in the others are caught by periodic rescans only"
        )

    def hint(self) -> str:
        want = max(self.dirs * 2, (self.limit or 0) * 2, 65536)
        return f"raise the limit: sudo sysctl fs.inotify.max_user_watches={want}"


# --- watchdog glue -------------------------------------------------------------------

_WATCHDOG_LOGGERS = ("watchdog.observers.inotify_c", "watchdog.observers.inotify")


class _OverflowHook(logging.Handler):
    """watchdog gives handlers no event on IN_Q_OVERFLOW; it only logs a warning.  Catch that."""

    def __init__(self, on_overflow: Callable[[], None]) -> None:
        super().__init__(logging.WARNING)
        self._on_overflow = on_overflow

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a logging handler must never raise
            return
        if "overflow" in message.lower() and record.name.endswith("inotify_c"):
            self._on_overflow()


_observer_factory: Callable[[], Any] | None = None


def _make_observer() -> Any:
    """An inotify observer whose mask includes IN_ATTRIB when attrib events are asked for.

    watchdog 7.1 builds the inotify mask from ``event_filter`` but has no entry
    for ``FileAttribEvent``/``DirAttribEvent``: with a filter, chowns would never
    be delivered (checked here).  Adding ``FileModifiedEvent`` would bring
    IN_MODIFY, one event per ``write()``: a flood.  So the emitter adds IN_ATTRIB.
    """
    global _observer_factory
    if _observer_factory is None:
        from watchdog.events import DirAttribEvent, FileAttribEvent
        from watchdog.observers.api import BaseObserver
        from watchdog.observers.inotify import InotifyEmitter, InotifyObserver
        from watchdog.observers.inotify_c import InotifyConstants, InotifyFD, Mask

        class _Emitter(InotifyEmitter):
            def get_event_mask_from_filter(self) -> Mask:
                mask = super().get_event_mask_from_filter()
                flt = self._event_filter
                if flt is not None and (FileAttribEvent in flt or DirAttribEvent in flt):
                    mask = Mask(mask | InotifyConstants.IN_ATTRIB)
                return mask

        class _Observer(InotifyObserver):
            def __init__(self) -> None:
                self._inotify_fd = InotifyFD()
                self._inotify_fd.start()
                BaseObserver.__init__(self, _Emitter, inotify_fd=self._inotify_fd)

        _observer_factory = _Observer
    return _observer_factory()


def _event_filter() -> list[Any]:
    # Not opened/closed: on idle trees they overflow the queue (ENVIRONMENT.md).
    from watchdog.events import (
        DirAttribEvent,
        DirCreatedEvent,
        DirDeletedEvent,
        DirMovedEvent,
        FileAttribEvent,
        FileCreatedEvent,
        FileDeletedEvent,
        FileMovedEvent,
    )

    return [
        FileCreatedEvent,
        DirCreatedEvent,
        FileMovedEvent,
        DirMovedEvent,
        FileAttribEvent,
        DirAttribEvent,
        FileDeletedEvent,
        DirDeletedEvent,
    ]


# Work items from watchdog's thread to the watcher's: (op, path, is_dir)
CHECK, RESCAN, GONE, OVERFLOW = "check", "rescan", "gone", "overflow"


# --- the watcher --------------------------------------------------------------------


@dataclasses.dataclass
class WatchStats:
    events: int = 0
    lstats: int = 0
    rescans: int = 0  # directory rescans after a create / move-in
    full_scans: int = 0
    overflows: int = 0
    leaks_found: int = 0
    resolved: int = 0
    coverage: Coverage | None = None
    initial_scan_seconds: float = 0.0


class Watcher:
    """A live watcher over ``roots``.  ``start()``, then ``step()`` in a loop (or ``run()``), then ``close()``.

    Leaks go to the :class:`Tracker`, the records file, ``on_change`` and, as
    lines, to ``sink``; ``notice`` gets diagnostics (overflows, partial coverage).
    ``clock`` drives reconcile timing and debouncing, ``wall`` stamps records.
    """

    def __init__(
        self,
        roots: Sequence[str | Path],
        attribution: Attribution,
        *,
        records: RecordLog | None = None,
        ignore: Sequence[str] = (),
        sink: Sink = lambda line: None,
        notice: Sink = lambda line: None,
        on_change: Callable[[Change], None] | None = None,
        reporter: Reporter | None = None,
        reconcile_interval: float = 300.0,
        fallback_interval: float = 10.0,
        degraded_hold: float = 60.0,
        settle: float = 0.5,
        workers: int | None = None,
        use_events: bool = True,
        clock: Clock = time.monotonic,
        wall: Clock = time.time,
        watch_counter: Callable[[], int] = inotify_watch_count,
        watch_limit: Callable[[], int | None] = max_user_watches,
    ) -> None:
        self.roots = tuple(os.path.abspath(os.fspath(r)) for r in roots)
        self.attribution = attribution
        self.records = records
        self.ignore_patterns = tuple(ignore)
        self.ignore = Ignore(self.roots, ignore)
        self.sink = sink
        self.notice = notice
        self.on_change = on_change
        self.reporter = reporter or Reporter(self.roots)
        self.reconcile_interval = reconcile_interval
        self.fallback_interval = fallback_interval
        self.degraded_hold = degraded_hold
        self.settle = settle
        self.workers = workers
        self.use_events = use_events
        self.clock = clock
        self.wall = wall
        self._watch_counter = watch_counter
        self._watch_limit = watch_limit
        self.stats = WatchStats()
        self.tracker = Tracker(attribution, self._known_from_records())
        self.queue: queue.SimpleQueue[tuple[str, str, bool]] = queue.SimpleQueue()
        self.events_enabled = True  # tests turn this off to simulate a reader that fell behind
        self._observer: Any = None
        self._hook: _OverflowHook | None = None
        self._next_reconcile = 0.0
        self._full_scan_at: float | None = None
        self._degraded_until: float | None = None  # periodic fallback after overflows
        self._partial = False  # watch budget short: periodic fallback for good
        self._degraded_said = False

    # -- lifecycle

    def _known_from_records(self) -> list[Leak]:
        if self.records is None:
            return []
        prefixes = tuple(r.rstrip("/") + "/" for r in self.roots)
        known = []
        for path, rec in latest_records(self.records.path).items():
            if rec.get("state") == State.LEAK.value and (path in self.roots or path.startswith(prefixes)):
                known.append(Leak.from_record(rec))
        return known

    def start(self) -> ScanResult:
        """Put the watches in place, *then* scan: whatever changes meanwhile is seen by one or the other."""
        if self.use_events:
            # watchdog re-adds watches it already holds when a new directory's subtree is
            # walked, and warns each time: harmless, and a flood on stderr under bursts.
            warnings.filterwarnings("ignore", message="Callback with id", category=RuntimeWarning)
            self._hook = _OverflowHook(self._overflowed)
            for name in _WATCHDOG_LOGGERS:
                logging.getLogger(name).addHandler(self._hook)
            self._observer = _make_observer()
            handler = _Handler(self)
            flt = _event_filter()
            for root in self.roots:
                self._observer.schedule(handler, root, recursive=True, event_filter=flt)
            self._observer.start()
        previously = set(self.tracker.leaks)
        result = self.full_scan()
        self.stats.initial_scan_seconds = result.seconds
        still = len(previously & set(self.tracker.leaks))
        if still:
            self.notice(f"{_fmt_count(still, 'leak', 'leaks')} recorded earlier still present (devbox leaks lists them)")
        return result

    def close(self) -> None:
        for line in self.reporter.flush():
            self.sink(line)
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=10)
            self._observer = None
        if self._hook is not None:
            for name in _WATCHDOG_LOGGERS:
                logging.getLogger(name).removeHandler(self._hook)
            self._hook = None
        if self.records is not None:
            self.records.close()

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, stop: threading.Event, tick: float = 0.2) -> None:
        while not stop.is_set():
            self.step(tick)

    # -- events in (watchdog's thread)

    def _overflowed(self) -> None:
        self.queue.put((OVERFLOW, "", False))

    def _event(self, event_type: str, src: str, dest: str, is_dir: bool) -> None:
        if not self.events_enabled:
            return
        put = self.queue.put
        if event_type == "moved":
            put((GONE, src, is_dir))
            put((CHECK, dest, is_dir))
            if is_dir:
                put((RESCAN, dest, True))
        elif event_type == "deleted":
            put((GONE, src, is_dir))
        elif event_type == "created":
            put((CHECK, src, is_dir))
            if is_dir:
                # watchdog has added the new directory's watch before queueing this
                # event, so a rescan now sees anything that beat the watch.
                put((RESCAN, src, True))
        else:
            put((CHECK, src, is_dir))

    # -- processing (the caller's thread)

    @property
    def degraded(self) -> bool:
        return self._partial or self._degraded_until is not None

    def step(self, timeout: float = 0.2) -> int:
        """Process what is queued (waiting up to ``timeout`` for it) and anything due; returns items handled."""
        now = self.clock()
        deadlines = [d for d in (self.reporter.due(), self._next_reconcile, self._full_scan_at) if d is not None]
        wait = max(0.0, min([timeout, *(d - now for d in deadlines)]))
        items: list[tuple[str, str, bool]] = []
        try:
            items.append(self.queue.get(timeout=wait) if wait > 0 else self.queue.get_nowait())
            while len(items) < 20000:
                items.append(self.queue.get_nowait())
        except queue.Empty:
            pass
        if items:
            self._handle(items)
        self._due()
        return len(items)

    def drain(self, timeout: float = 10.0, idle: float = 0.3) -> None:
        """Process until nothing has arrived for ``idle`` seconds (tests and benchmarks)."""
        end = time.monotonic() + timeout
        quiet_since = time.monotonic()
        while time.monotonic() < end:
            if self.step(0.05):
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= idle:
                return

    def _handle(self, items: list[tuple[str, str, bool]]) -> None:
        check: dict[str, bool] = {}
        gone: dict[str, bool] = {}
        rescan: set[str] = set()
        for op, path, is_dir in items:
            if op == OVERFLOW:
                self._on_overflow()
                continue
            self.stats.events += 1
            if self.ignore and self.ignore.path(path):
                continue
            if op == CHECK:
                check[path] = is_dir
            elif op == GONE:
                gone[path] = is_dir
            else:
                rescan.add(path)
        for path, is_dir in gone.items():
            # A move's source, or a deletion: whatever is (or is no longer) there now decides.
            if is_dir:
                for sub in self.tracker.under(path):
                    check.setdefault(sub, False)
            check.setdefault(path, is_dir)
        for path in check:
            self._lstat(path)
        for path in _outermost(rescan):
            self._rescan(path)

    def _lstat(self, path: str) -> None:
        self.stats.lstats += 1
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            self._emit(self.tracker.missing(path))
            return
        except OSError:
            return
        self._emit(self.tracker.seen(path, st.st_uid, st.st_gid, _stat.S_ISDIR(st.st_mode), self.wall()))

    def _rescan(self, directory: str) -> None:
        self.stats.rescans += 1
        found: list[Found] = []
        tally = _Tally()
        _walk([directory], self.attribution.user.uid, self.attribution.user.gids, self.ignore or None, found, [], tally)
        now = self.wall()
        for p, u, g, d in found:
            self._emit(self.tracker.seen(p, u, g, d, now))

    def full_scan(self) -> ScanResult:
        """Scan every root; anything tracked but not found is re-checked (fixed or gone)."""
        self.stats.full_scans += 1
        self._full_scan_at = None
        result = scan(self.roots, self.attribution.user, ignore=self.ignore_patterns, workers=self.workers)
        now = self.wall()
        seen = set()
        for p, u, g, d in result.found:
            seen.add(p)
            self._emit(self.tracker.seen(p, u, g, d, now))
        for p in [p for p in self.tracker.leaks if p not in seen]:
            self._lstat(p)
        if self.use_events:
            self._check_coverage(result.dirs)
        self._next_reconcile = self.clock() + self._interval()
        return result

    def _interval(self) -> float:
        return self.fallback_interval if self.degraded else self.reconcile_interval

    def _check_coverage(self, dirs: int) -> None:
        cov = Coverage(dirs, self._watch_counter(), self._watch_limit())
        self.stats.coverage = cov
        if cov.partial and not self._partial:
            self.notice(f"{cov.message()} — {cov.hint()}")
        elif self._partial and not cov.partial:
            self.notice("every directory has an inotify watch again: back to live events")
        self._partial = cov.partial

    def _on_overflow(self) -> None:
        self.stats.overflows += 1
        now = self.clock()
        if self._degraded_until is None and not self._degraded_said:
            self.notice(
                "inotify event queue overflowed: events were lost; rescanning now and every "
                f"{self.fallback_interval:g} s until it stays quiet"
            )
            self._degraded_said = True
        self._degraded_until = now + self.degraded_hold
        if self._full_scan_at is None:
            self._full_scan_at = now + self.settle

    def _due(self) -> None:
        now = self.clock()
        for line in self.reporter.tick(now):
            self.sink(line)
        if self._degraded_until is not None and now >= self._degraded_until:
            self._degraded_until = None
            self._degraded_said = False
            self.notice("no queue overflow for a while: back to live events")
        if (self._full_scan_at is not None and now >= self._full_scan_at) or now >= self._next_reconcile:
            self.full_scan()

    def _emit(self, change: Change | None) -> None:
        if change is None:
            return
        if self.records is not None:
            self.records.write(change.leak, change.state, at=self.wall())
        if change.state is State.LEAK:
            self.stats.leaks_found += 1
            for line in self.reporter.add(change.leak, self.clock()):
                self.sink(line)
        else:
            self.stats.resolved += 1
        if self.on_change is not None:
            self.on_change(change)


def _outermost(dirs: Iterable[str]) -> list[str]:
    """Drop directories nested in another one of the set: their parent's rescan covers them."""
    out: list[str] = []
    for d in sorted(dirs):
        if out and (d == out[-1] or d.startswith(out[-1].rstrip("/") + "/")):
            continue
        out.append(d)
    return out


class _Handler:
    """A watchdog event handler that only forwards paths (duck-typed: dispatch is all watchdog calls)."""

    def __init__(self, watcher: Watcher) -> None:
        self._watcher = watcher

    def dispatch(self, event: Any) -> None:
        src = os.fsdecode(event.src_path)
        dest = os.fsdecode(event.dest_path) if event.dest_path else ""
        self._watcher._event(event.event_type, src, dest, bool(event.is_directory))


# --- the entry point the CLI calls ---------------------------------------------------


def run_watch(
    paths: Sequence[str | Path],
    user: HostUser,
    services_by_uid: Mapping[int, Sequence[str]] | None = None,
    *,
    attribution: Attribution | None = None,
    records: Path | None = None,
    ignore: Sequence[str] = (),
    reconcile_interval: float = 300.0,
    fallback_interval: float = 10.0,
    stop: threading.Event | None = None,
    subuid: Path = Path("/etc/subuid"),
    subgid: Path = Path("/etc/subgid"),
) -> WatchStats:
    """``devbox watch``: scan, then watch until ``stop`` is set (or Ctrl-C); lines via :mod:`devbox.console`."""
    from devbox import console
    from devbox.leaks import load_attribution

    attr = attribution or load_attribution(user, services_by_uid, subuid=subuid, subgid=subgid)
    stop = stop or threading.Event()
    watcher = Watcher(
        paths,
        attr,
        records=RecordLog(records) if records is not None else None,
        ignore=ignore,
        sink=console.leak,
        notice=console.warn,
        reconcile_interval=reconcile_interval,
        fallback_interval=fallback_interval,
    )
    try:
        result = watcher.start()
        console.info(
            f"watching {', '.join(watcher.roots)}: {result.dirs:,} directories, {result.entries:,} entries "
            f"scanned in {result.seconds:.2f} s, {_fmt_count(len(watcher.tracker.leaks), 'leak', 'leaks')}"
        )
        watcher.run(stop)
    except KeyboardInterrupt:
        pass
    finally:
        watcher.close()
    return watcher.stats


__all__ = [
    "Attribution",
    "Change",
    "Coverage",
    "HostUser",
    "Ignore",
    "Kind",
    "Leak",
    "Reporter",
    "ScanResult",
    "Tracker",
    "WatchStats",
    "Watcher",
    "inotify_watch_count",
    "max_user_watches",
    "run_watch",
    "scan",
    "scan_leaks",
]
