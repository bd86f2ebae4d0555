"""The live ownership watcher: a full scan, then inotify events, then periodic reconcile scans.

* :class:`Tracker` — de-duplicates: a path is reported once until its owner
  changes or it is fixed or gone.
* :class:`Reporter` — one line per leak, a summary per area under bursts.  Time
  comes in as arguments, so tests drive it with a fake clock.
* :class:`Watcher` — wires the inotify event source to the above.  Events only
  say "look at this path": every decision is made from an ``lstat``.
  Event-queue overflows and a short inotify watch budget switch it to periodic
  full rescans, and it says so.

Nothing here prints: lines go to the ``sink``/``notice`` callables the caller
passes (:mod:`devbox.watch.commands` uses :mod:`devbox.console`).  watchdog is
imported only when a live watcher starts.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import stat as _stat
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from devbox.watch.leaks import Attribution, Leak, RecordLog, State, latest_records
from devbox.watch.scan import Clock, Found, Ignore, ScanResult, _Tally, _walk, outermost, scan

Sink = Callable[[str], None]

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
        for path in outermost(rescan):
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


class _Handler:
    """A watchdog event handler that only forwards paths (duck-typed: dispatch is all watchdog calls)."""

    def __init__(self, watcher: Watcher) -> None:
        self._watcher = watcher

    def dispatch(self, event: Any) -> None:
        src = os.fsdecode(event.src_path)
        dest = os.fsdecode(event.dest_path) if event.dest_path else ""
        self._watcher._event(event.event_type, src, dest, bool(event.is_directory))
