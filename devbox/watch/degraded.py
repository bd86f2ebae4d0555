"""When the watcher's next full scan is due, and whether it runs degraded: pure timing, no I/O.

Two things make live events untrustworthy, and both switch the watcher to a
full rescan every ``fallback_interval`` seconds instead of every
``reconcile_interval``:

* an event-queue **overflow** (events were lost): one rescan once the burst
  has been quiet for ``settle`` seconds, then the fallback period until no
  overflow came for ``hold`` seconds;
* **partial coverage** (the inotify watch budget is short): for as long as it lasts.

Time comes from the injected ``clock``; tests drive it with a fake one.
"""

from __future__ import annotations

from collections.abc import Callable

Clock = Callable[[], float]


class Degraded:
    def __init__(
        self,
        clock: Clock,
        *,
        reconcile_interval: float = 300.0,
        fallback_interval: float = 10.0,
        hold: float = 60.0,
        settle: float = 0.5,
    ) -> None:
        self.clock = clock
        self.reconcile_interval = reconcile_interval
        self.fallback_interval = fallback_interval
        self.hold = hold
        self.settle = settle
        self.next_reconcile = clock()  # the first scan is due at once
        self.rescan_at: float | None = None  # the settled rescan after an overflow
        self.overflow_until: float | None = None  # fallback period after the last overflow
        self.partial = False  # watch budget short: fallback period while it lasts

    @property
    def degraded(self) -> bool:
        return self.partial or self.overflow_until is not None

    @property
    def interval(self) -> float:
        return self.fallback_interval if self.degraded else self.reconcile_interval

    def scanned(self) -> None:
        """A full scan has just finished: the next one is an interval away."""
        self.rescan_at = None
        self.next_reconcile = self.clock() + self.interval

    def overflowed(self) -> bool:
        """Events were lost.  ``True`` for the first overflow of an episode: the one to tell."""
        now = self.clock()
        first = self.overflow_until is None
        self.overflow_until = now + self.hold
        if self.rescan_at is None:
            self.rescan_at = now + self.settle
        return first

    def coverage(self, partial: bool) -> str | None:
        """The watch budget as last counted: ``"partial"`` or ``"full"`` when that changed, else ``None``."""
        changed = partial != self.partial
        self.partial = partial
        if not changed:
            return None
        return "partial" if partial else "full"

    def quiet(self) -> bool:
        """``True`` once, when no overflow came for ``hold`` seconds: back to live events."""
        if self.overflow_until is not None and self.clock() >= self.overflow_until:
            self.overflow_until = None
            return True
        return False

    def scan_due(self) -> bool:
        now = self.clock()
        return now >= self.next_reconcile or (self.rescan_at is not None and now >= self.rescan_at)

    def deadline(self) -> float:
        """The next moment something here changes (the watcher waits for events until then at most)."""
        return min(d for d in (self.next_reconcile, self.rescan_at, self.overflow_until) if d is not None)
