"""The watcher's event source: inotify through watchdog, turned into "look at this path" work items.

An :class:`EventSource` is started with the roots and a ``put`` callable and
from then on calls ``put`` from its own thread with items
``(op, path, is_dir)``: :data:`CHECK` (lstat this path), :data:`RESCAN` (walk
this new directory), :data:`GONE` (this path went away, re-check it and what
was tracked under it) and :data:`OVERFLOW` (events were lost).  Items only say
where to look: the watcher decides everything from an ``lstat``.

:class:`InotifySource` is the live one.  It needs IN_ATTRIB (a ``chown``
reaches inotify as nothing else) without IN_MODIFY (one event per
``write()``), and an overflow signal, and watchdog has public API for neither:

* with an ``event_filter``, watchdog 7.1 asks the kernel for IN_ATTRIB only
  when ``FileModifiedEvent``/``DirModifiedEvent`` is in the filter, which
  brings IN_MODIFY along;
* on IN_Q_OVERFLOW it logs a warning and calls ``on_queue_overflow`` on each
  watch group (``InotifyWatchGroup``); handlers get nothing.

DECISION (option a): pin ``watchdog>=7.1,<7.2`` (pyproject; checked by
:func:`check_watchdog` when a source starts, and by tests) and use its inotify
internals — an emitter that adds IN_ATTRIB to the mask, and a watch group
whose ``on_queue_overflow`` queues :data:`OVERFLOW` (a method, not watchdog's
log text).  Option (b), the public API (``FileModifiedEvent`` in the filter),
brings IN_MODIFY: one event per ``write()`` whenever the watcher keeps up.

Measured with ``benchmarks/bench_watch.py --only writes`` (2 cores, tmpfs, a
5,000-directory watched tree, a chown every 5 ms meanwhile; both options and
the no-watcher baseline interleaved in one run, 3 runs each, medians; latency
nearest-rank over all runs)::

    workload                          events/run  watcher CPU  writer CPU  overflows  chown->flagged p50 / p99
    200 MB in 4 KiB writes  (a)             34       0.02 s      0.23 s        0         0.43 / 4.2 ms
                            (b)            402       0.22 s      0.26 s        0         0.95 / 9.9 ms
                            none             -          -        0.20 s        -
    pip-like burst, 24,000  (a)         28,290       1.28 s      0.78 s        0          300 / 988 ms
    files in 4 KiB writes   (b)         28,327       1.98 s      0.73 s        0          466 / 1110 ms
                            none             -          -        0.70 s        -
    10 s of 4 KiB writes    (a)          1,915       0.80 s      0.91 s        0         0.45 / 2.1 ms
    at 2,000/s (a database) (b)         21,931       3.56 s      1.18 s        0         0.34 / 1.8 ms
                            none             -          -        0.89 s        -

A flat-out writer outruns the reader, and the kernel merges repeated
IN_MODIFY events (51,200 writes gave (b) ~450 events); a steady one, like a
database in a container writing its bind-mounted data dir, does not: every
write is an event, and (b) costs ~0.28 s of CPU per second of it (4.4x (a)),
plus 30 % more kernel time in the writer.  Under the pip burst both options
fall behind by up to ~1 s (watchdog's per-event Python, ~45 us, at 20,000
events/s): (b) more so.

The watch group's overflow handling also differs from 7.1's: 7.1 removes and
re-adds every watch, and each removal queues an IN_IGNORED event, so on a tree
with more directories than ``fs.inotify.max_queued_events`` the rebuild
overflows the queue again, for ever (``--only bigoverflow``, 20,588 dirs: 18
overflows in 20 s, 4,273 watches left, a new leak found only by a rescan).
Here existing watches are kept, those of vanished directories dropped and new
directories' watches added (1 overflow, 20,591 watches, the new leak flagged
by its event at once).  And the group's ``repr`` is short: watchdog formats it
into a warning for every watch it re-adds, and the dataclass one listed every
watch of the group (O(watches) per re-add; minutes on 30,000 directories).

Nothing here imports watchdog at module level: scan workers and ``devbox
leaks`` import the watch package and must start fast.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import logging
import os
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from devbox.errors import DevboxError

# --- the watchdog versions this module supports ---------------------------------------

WATCHDOG_PIN = "watchdog>=7.1,<7.2"  # the line in pyproject.toml's dependencies (a test keeps them equal)
_SUPPORTED = ((7, 1), (7, 2))  # [lowest, first unsupported) as (major, minor)


def watchdog_version() -> str:
    from watchdog.version import VERSION_STRING

    return str(VERSION_STRING)


def check_watchdog(version: str | None = None) -> None:
    """Refuse, in one line, a watchdog whose inotify internals this module was not written against."""
    found = watchdog_version() if version is None else version
    m = re.match(r"(\d+)\.(\d+)", found)
    low, high = _SUPPORTED
    if m is None or not low <= (int(m.group(1)), int(m.group(2))) < high:
        need = WATCHDOG_PIN.removeprefix("watchdog")
        raise DevboxError(
            f"watchdog {found} is installed, but the ownership watcher needs watchdog {need} (it relies on that version's inotify internals)",
            hint=f"pip install '{WATCHDOG_PIN}'",
        )


# --- work items --------------------------------------------------------------------------

CHECK, RESCAN, GONE, OVERFLOW = "check", "rescan", "gone", "overflow"
Item = tuple[str, str, bool]  # (op, path, is_dir)
Put = Callable[[Item], None]


def items_for(event_type: str, src: str, dest: str, is_dir: bool) -> list[Item]:
    """What a watchdog event asks the watcher to look at (nothing for modified/opened/closed)."""
    if event_type == "moved":
        out = [(GONE, src, is_dir), (CHECK, dest, is_dir)]
        return [*out, (RESCAN, dest, True)] if is_dir else out
    if event_type == "deleted":
        return [(GONE, src, is_dir)]
    if event_type == "created":
        # watchdog adds a new directory's watch before it queues the event,
        # so a rescan now sees anything that beat the watch.
        return [(CHECK, src, is_dir), (RESCAN, src, True)] if is_dir else [(CHECK, src, is_dir)]
    if event_type == "attrib":
        return [(CHECK, src, is_dir)]
    return []


class EventSource(Protocol):
    """Where the watcher's events come from.  ``put`` is called from the source's own thread."""

    def start(self, roots: Sequence[str], put: Put) -> None: ...

    def close(self) -> None: ...

    def watch_count(self) -> int:
        """Directories that have a watch now (for :class:`Coverage`)."""
        ...


# --- inotify coverage ------------------------------------------------------------------------


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


# --- the live source ----------------------------------------------------------------------------


def event_filter() -> list[Any]:
    """What the observer emits.  Not opened/closed: on idle trees they overflow the queue (ENVIRONMENT.md);
    not modified: IN_MODIFY is one event per ``write()``."""
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

    return [FileCreatedEvent, DirCreatedEvent, FileMovedEvent, DirMovedEvent,
            FileAttribEvent, DirAttribEvent, FileDeletedEvent, DirDeletedEvent]


@functools.cache
def _observer_class() -> Any:
    """watchdog 7.1's inotify observer with IN_ATTRIB in the mask and overflows hooked (see the module doc)."""
    from watchdog.observers.api import DEFAULT_OBSERVER_TIMEOUT, BaseObserver
    from watchdog.observers.inotify import InotifyEmitter, InotifyWatchGroup
    from watchdog.observers.inotify_c import InotifyConstants, InotifyFD, Mask

    @dataclasses.dataclass(repr=False)
    class Group(InotifyWatchGroup):
        on_overflow: Callable[[], None] = lambda: None

        def __repr__(self) -> str:
            # watchdog formats a warning with this repr (inside a Watch's) for every watch it re-adds: the
            # dataclass one lists every watch of the group, which made each re-add O(watches).
            return f"<devbox inotify group {self.path!r}>"

        def on_queue_overflow(self) -> None:
            self.on_overflow()
            with self._lock:
                if not self.is_active:
                    return
                self._move_event_grouper.discard_pending_events()
                if not self.is_recursive:
                    return
                # Keep the watches that still hold (no IN_IGNORED flood), drop those of directories
                # gone meanwhile, add those of directories created while events were lost.
                gone = [wd for wd, path in self._active_callbacks_by_watch.items() if not os.path.isdir(path)]
                self._remove_callbacks(gone)
                with contextlib.suppress(OSError):
                    self._add_all_callbacks(self.path)

    class Emitter(InotifyEmitter):
        def __init__(self, *args: Any, on_overflow: Callable[[], None], **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._devbox_on_overflow = on_overflow

        def get_event_mask_from_filter(self) -> Mask:
            # Only ever scheduled with event_filter(), whose attrib events 7.1 would not ask for.
            return Mask(super().get_event_mask_from_filter() | InotifyConstants.IN_ATTRIB)

        def on_thread_start(self) -> None:  # InotifyEmitter's, with our Group
            self._inotify = Group(
                self._inotify_fd,
                os.fsencode(self.watch.path),
                is_recursive=self.watch.is_recursive,
                event_mask=self.get_event_mask_from_filter(),
                follow_symlink=self.watch.follow_symlink,
                on_overflow=self._devbox_on_overflow,
            )

    class Observer(BaseObserver):
        def __init__(self, on_overflow: Callable[[], None]) -> None:
            self._inotify_fd = InotifyFD()
            self._inotify_fd.start()
            super().__init__(Emitter, timeout=DEFAULT_OBSERVER_TIMEOUT, inotify_fd=self._inotify_fd, on_overflow=on_overflow)

        def on_thread_stop(self) -> None:
            super().on_thread_stop()
            self._inotify_fd.stop()
            self._inotify_fd.join()

    return Observer


class _Handler:
    """A watchdog event handler that only forwards paths (duck-typed: dispatch is all watchdog calls)."""

    def __init__(self, put: Put, delivered: collections.Counter[str]) -> None:
        self._put = put
        self._delivered = delivered

    def dispatch(self, event: Any) -> None:
        kind = event.event_type
        self._delivered[kind] += 1
        dest = os.fsdecode(event.dest_path) if event.dest_path else ""
        for item in items_for(kind, os.fsdecode(event.src_path), dest, bool(event.is_directory)):
            self._put(item)


class InotifySource:
    """The live event source: watchdog's inotify observer, one recursive watch group per root.

    ``delivered`` counts the events watchdog handed over, by type (``attrib``,
    ``created``...).  :meth:`paused` holds the inotify reader (tests and the
    benchmark pile events up in the kernel queue with it).
    """

    def __init__(self) -> None:
        self.delivered: collections.Counter[str] = collections.Counter()
        self._observer: Any = None

    def start(self, roots: Sequence[str], put: Put) -> None:
        check_watchdog()
        # watchdog re-adds watches it already holds when a new directory's subtree is walked
        # (and when we rebuild after an overflow), and warns each time: harmless, a flood under bursts.
        warnings.filterwarnings("ignore", message="Callback with id", category=RuntimeWarning)
        # watchdog logs each overflow as a WARNING; the watcher says it (once) in its own words.
        logging.getLogger("watchdog").addHandler(_NULL)
        observer = _observer_class()(on_overflow=lambda: put((OVERFLOW, "", False)))
        handler = _Handler(put, self.delivered)
        flt = event_filter()
        for root in roots:
            observer.schedule(handler, root, recursive=True, event_filter=flt)
        observer.start()  # the watches are in place when this returns
        self._observer = observer

    def close(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=10)
            self._observer = None

    def watch_count(self) -> int:
        return inotify_watch_count()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Hold watchdog's reader (it takes this lock between reads): events wait in the kernel's queue."""
        with self._observer._inotify_fd._lock:
            yield


_NULL = logging.NullHandler()
