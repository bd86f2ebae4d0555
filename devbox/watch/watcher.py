"""The live ownership watcher: a full scan, then events, then periodic reconcile scans.

* :class:`Tracker` — de-duplicates: a path is reported once until its owner
  changes or it is fixed or gone.
* :class:`Reporter` — one line per leak, a summary per area under bursts.  Time
  comes in as arguments, so tests drive it with a fake clock.
* :class:`Watcher` — the processing: work items from an event source
  (:mod:`devbox.watch.source`; inotify by default, none or a test's own
  otherwise) -> ``lstat``/rescan -> tracker -> records and lines.  Items only
  say "look at this path": every decision is made from an ``lstat``.  When the
  next full scan is due, and whether events can be trusted (overflows, a short
  watch budget), is :class:`~devbox.watch.degraded.Degraded`'s business.

Nothing here prints: lines go to the ``sink``/``notice`` callables the caller
passes (:mod:`devbox.watch.commands` uses :mod:`devbox.console`).  watchdog is
imported only when an inotify source starts.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import stat as _stat
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from devbox.errors import DevboxError
from devbox.watch.busy import BusyTrees
from devbox.watch.contain import Escape, lstat_beneath, root_of
from devbox.watch.degraded import Degraded
from devbox.watch.leaks import Attribution, Leak, RecordLog, State, latest_records, unreadable_line
from devbox.watch.scan import Clock, Found, Ignore, ScanResult, _Tally, _walk, outermost, scan
from devbox.watch.source import CHECK, GONE, OVERFLOW, Coverage, EventSource, InotifySource, Item, max_user_watches

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


# --- the watcher --------------------------------------------------------------------

# Between full scans, the records file is compacted once this many lines were appended to it.
COMPACT_BETWEEN_SCANS = 10_000


@dataclasses.dataclass
class WatchStats:
    events: int = 0
    lstats: int = 0
    rescans: int = 0  # directory rescans after a create / move-in
    busy_rescans: int = 0  # whole busy trees (node_modules ...) rescanned once they settled
    full_scans: int = 0
    overflows: int = 0
    leaks_found: int = 0
    resolved: int = 0
    compactions: int = 0  # of the records file
    coverage: Coverage | None = None
    initial_scan_seconds: float = 0.0


class Watcher:
    """A live watcher over ``roots``.  ``start()``, then ``step()`` in a loop (or ``run()``), then ``close()``.

    ``source`` is where events come from: ``"inotify"`` (the default, an
    :class:`~devbox.watch.source.InotifySource`), any other
    :class:`~devbox.watch.source.EventSource`, or ``None``: no events, full
    scans every ``reconcile_interval`` only.  Leaks go to the :class:`Tracker`,
    the records file, ``on_change`` and, as lines, to ``sink``; ``notice`` gets
    diagnostics (overflows, partial coverage, unreadable directories).
    ``clock`` drives the timers and debouncing, ``wall`` stamps records.
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
        source: EventSource | Literal["inotify"] | None = "inotify",
        busy: Sequence[str] = (),
        busy_settle: float = 1.0,
        busy_max_delay: float = 5.0,
        clock: Clock = time.monotonic,
        wall: Clock = time.time,
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
        self.workers = workers
        self.source: EventSource | None = InotifySource() if source == "inotify" else source
        self.clock = clock
        self.wall = wall
        self.timers = Degraded(clock, reconcile_interval=reconcile_interval, fallback_interval=fallback_interval,
                               hold=degraded_hold, settle=settle)
        self._watch_limit = watch_limit
        self.busy = BusyTrees(self.roots, busy, clock, settle=busy_settle, max_delay=busy_max_delay)
        self.stats = WatchStats()
        self.tracker = Tracker(attribution, self._known_from_records())
        self.queue: queue.SimpleQueue[Item] = queue.SimpleQueue()
        self.unreadable: set[str] = set()  # directories whose contents could not be listed
        self._unreadable_published: set[str] | None = None
        self._compact_failed = False

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
        if self.records is not None:
            self._compact()  # what earlier runs left: their history, not only current leaks
        if self.source is not None:
            self.source.start(self.roots, self.queue.put)
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
        if self.source is not None:
            self.source.close()
        if self.records is not None:
            self.records.close()

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, stop: threading.Event, tick: float = 0.2) -> None:
        while not stop.is_set():
            self.step(tick)

    # -- processing (the caller's thread)

    @property
    def degraded(self) -> bool:
        return self.timers.degraded

    def step(self, timeout: float = 0.2) -> int:
        """Process what is queued (waiting up to ``timeout`` for it) and anything due; returns items handled."""
        now = self.clock()
        deadlines = [self.timers.deadline(), *(d for d in (self.reporter.due(), self.busy.due()) if d is not None)]
        wait = max(0.0, min([timeout, *(d - now for d in deadlines)]))
        items: list[Item] = []
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

    def _handle(self, items: list[Item]) -> None:
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
            tree = self.busy.top(path)
            if tree is not None:
                self.busy.touch(tree)  # rescanned as a whole once it settles
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
        """Look at ``path`` as it is now, beneath its root: through a link a container planted since, it is gone."""
        self.stats.lstats += 1
        root = root_of(path, self.roots) if path not in self.roots else None
        try:
            st = os.lstat(path) if root is None else lstat_beneath(root, path)
        except Escape as exc:
            if path in self.tracker.leaks:
                self.notice(f"{path}: no longer inside the work dir ({exc.reason}): not followed, not fixed")
            self._emit(self.tracker.missing(path))
            return
        except (FileNotFoundError, NotADirectoryError):
            self._emit(self.tracker.missing(path))
            return
        except OSError:
            return
        is_dir = _stat.S_ISDIR(st.st_mode)
        self._emit(self.tracker.seen(path, st.st_uid, st.st_gid, is_dir, self.wall()))
        if is_dir:
            self._check_readable(path)

    def _check_readable(self, directory: str) -> None:
        """A directory's owner or mode changed: it may have become unreadable, or readable again (then
        what it holds was never seen: rescan it)."""
        readable = os.access(directory, os.R_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids)
        if not readable and directory not in self.unreadable:
            self._saw_unreadable(self.unreadable | {directory})
        elif readable and directory in self.unreadable:
            self._saw_unreadable(self.unreadable - {directory})
            self._rescan(directory)

    def _rescan(self, directory: str) -> None:
        self.stats.rescans += 1
        found: list[Found] = []
        unreadable: list[str] = []
        tally = _Tally()
        _walk([directory], self.attribution.user.uid, self.attribution.user.gids, self.ignore or None, found, unreadable, tally)
        now = self.wall()
        for p, u, g, d in found:
            self._emit(self.tracker.seen(p, u, g, d, now))
        if unreadable:
            self._saw_unreadable(self.unreadable | set(unreadable))

    def _rescan_tree(self, tree: str) -> None:
        """A busy tree settled: scan it whole; what was tracked in it and is no longer found is looked at again."""
        self.stats.busy_rescans += 1
        tracked = set(self.tracker.under(tree))
        found: list[Found] = []
        unreadable: list[str] = []
        _walk([tree], self.attribution.user.uid, self.attribution.user.gids, self.ignore or None, found, unreadable,
              _Tally())
        now = self.wall()
        for p, u, g, d in found:
            tracked.discard(p)
            self._emit(self.tracker.seen(p, u, g, d, now))
        for p in sorted(tracked):
            self._lstat(p)
        if unreadable:
            self._saw_unreadable(self.unreadable | set(unreadable))

    def full_scan(self) -> ScanResult:
        """Scan every root; anything tracked but not found is re-checked (fixed or gone)."""
        self.stats.full_scans += 1
        result = scan(self.roots, self.attribution.user, ignore=self.ignore_patterns, workers=self.workers)
        now = self.wall()
        seen = set()
        for p, u, g, d in result.found:
            seen.add(p)
            self._emit(self.tracker.seen(p, u, g, d, now))
        for p in [p for p in self.tracker.leaks if p not in seen]:
            self._lstat(p)
        if self.source is not None:
            self._check_coverage(result.dirs)
        self._saw_unreadable(set(result.unreadable))
        self.timers.scanned()
        if self.records is not None and self.records.compaction_due():
            self._compact()
        return result

    def _check_coverage(self, dirs: int) -> None:
        assert self.source is not None
        cov = Coverage(dirs, self.source.watch_count(), self._watch_limit())
        self.stats.coverage = cov
        change = self.timers.coverage(cov.partial)
        if change == "partial":
            self.notice(f"{cov.message()} — {cov.hint()}")
        elif change == "full":
            self.notice("every directory has an inotify watch again: back to live events")

    def _saw_unreadable(self, now_unreadable: set[str]) -> None:
        """The directories that cannot be listed now: say the new ones, publish the set beside the records."""
        new = now_unreadable - self.unreadable
        self.unreadable = now_unreadable
        if new:
            self.notice(unreadable_line(sorted(new), self.reporter.shown))
        if self.records is not None and self._unreadable_published != self.unreadable:
            try:
                self.records.write_unreadable(self.unreadable, self.wall())
                self._unreadable_published = set(self.unreadable)
            except DevboxError:
                pass  # devbox leaks then says nothing about them; the notice above did

    def _compact(self) -> None:
        assert self.records is not None
        try:
            self.records.compact()
        except (DevboxError, OSError) as exc:
            if not self._compact_failed:
                why = exc.one_line() if isinstance(exc, DevboxError) else (exc.strerror or str(exc))
                self.notice(f"cannot compact the leak records {self.records.path}: {why} (retried after each full scan)")
            self._compact_failed = True
            return
        self._compact_failed = False
        self.stats.compactions += 1

    def _on_overflow(self) -> None:
        self.stats.overflows += 1
        if self.timers.overflowed():
            self.notice(
                "inotify event queue overflowed: events were lost; rescanning now and every "
                f"{self.timers.fallback_interval:g} s until it stays quiet"
            )

    def _due(self) -> None:
        for tree in self.busy.take_due():
            self._rescan_tree(tree)
        for line in self.reporter.tick(self.clock()):
            self.sink(line)
        if self.timers.quiet():
            self.notice("no queue overflow for a while: back to live events")
        if self.timers.scan_due():
            self.full_scan()
        elif (self.records is not None and not self._compact_failed
              and self.records.compaction_due(COMPACT_BETWEEN_SCANS)):
            self._compact()

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
