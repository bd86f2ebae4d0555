"""Trees too busy for one look per event: ``node_modules``, ``.venv``, ``.git``, ``__pycache__``.

They are exactly where containers leave files you cannot delete without sudo
(root-owned ``node_modules`` and ``__pycache__``; a foreign-owned ``.git`` gives
git's "dubious ownership"), so they are watched like everything else — but an
``npm install`` writes a hundred thousand files into one.  So an event deeper
than such a tree's own entries only marks the *unit* it falls in (the tree's
child: one package of ``node_modules``); once that unit has been quiet for
``settle`` seconds (or every ``max_delay`` seconds while it stays busy) the
watcher rescans it with the fast scanner, and the reporter summarises what it
finds (one line per owner and area).  Units keep each rescan small, so the
events of the rest of the work dir are not held up behind a scan of the
whole tree (measured: benchmarks/bench_busy.py).  Pure timing, the clock
injected.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

DEFAULT_BUSY = ("node_modules", ".venv", ".git", "__pycache__")


class BusyTrees:
    def __init__(self, roots: Sequence[str], names: Sequence[str], clock: Callable[[], float], *,
                 settle: float = 1.0, max_delay: float = 5.0) -> None:
        self.prefixes = tuple(r.rstrip("/") + "/" for r in roots)
        self.names = frozenset(n.strip("/") for n in names if n.strip("/"))
        self.clock = clock
        self.settle = settle
        self.max_delay = max_delay
        self._first: dict[str, float] = {}  # tree -> when its first unhandled event came
        self._last: dict[str, float] = {}  # tree -> when its latest event came

    def top(self, path: str) -> str | None:
        """The unit of the outermost busy tree that ``path`` lies strictly below (the tree's child:
        ``node_modules/PKG``), or ``None``: outside busy trees, and the tree's own entries, are ordinary."""
        if not self.names:
            return None
        for prefix in self.prefixes:
            if path.startswith(prefix):
                parts = path[len(prefix):].split("/")
                for i, part in enumerate(parts[:-1]):
                    if part in self.names:
                        return prefix + "/".join(parts[: i + 2]) if i + 2 < len(parts) else None
                return None
        return None

    def touch(self, tree: str) -> None:
        now = self.clock()
        self._first.setdefault(tree, now)
        self._last[tree] = now

    def _due_at(self, tree: str) -> float:
        return min(self._last[tree] + self.settle, self._first[tree] + self.max_delay)

    def due(self) -> float | None:
        """When the next tree is due for its rescan."""
        return min((self._due_at(t) for t in self._first), default=None)

    def take_due(self) -> list[str]:
        """The trees whose rescan is due now (forgotten until their next event)."""
        now = self.clock()
        ready = sorted(t for t in self._first if self._due_at(t) <= now)
        for t in ready:
            del self._first[t], self._last[t]
        return ready
