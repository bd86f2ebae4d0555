"""Pure id maths: /etc/subuid parsing, the map dockerd builds, translation, overlaps.

No I/O here: callers pass file text and account lists in.  What dockerd does
with the files (moby ``pkg/idtools``) is modelled exactly because every trap
users hit lives in the details:

* dockerd takes the target user's lines (matched by *name*, plus ``ALL``) in
  **file order** and stacks them: container id 0 maps to the first range's
  start, the next range continues where the previous one ended.  So the
  user's own ``NAME:UID:1`` line must come first for container root to be
  the user.
* Lines keyed by the numeric uid are ignored by dockerd 20.10 and preferred by
  dockerd 23+; devbox writes name lines and warns about numeric ones.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

ID_LIMIT = 2**32 - 1  # (uid_t)-1 is "no id"; the last valid id is 2**32 - 2
MIN_SUBORDINATE = 65536  # ids a container needs for a normal Debian userland
DEFAULT_SUB_MIN = 100000
DEFAULT_SUB_MAX = 600100000
DEFAULT_SUB_COUNT = 65536
KERNEL_MAP_LINES = 340  # linux >= 4.15; older kernels take 5


@dataclasses.dataclass(frozen=True)
class SubidEntry:
    """One ``OWNER:START:COUNT`` line."""

    owner: str
    start: int
    count: int
    line: int  # 1-based line number in its file

    @property
    def end(self) -> int:
        """One past the last id."""
        return self.start + self.count

    def overlaps(self, start: int, end: int) -> bool:
        return self.start < end and start < self.end

    def text(self) -> str:
        return f"{self.owner}:{self.start}:{self.count}"


@dataclasses.dataclass(frozen=True)
class Problem:
    """A line that dockerd or shadow-utils would reject or misread."""

    line: int
    message: str


@dataclasses.dataclass(frozen=True)
class SubidFile:
    path: str
    lines: tuple[str, ...]  # every line, without newline, exactly as read
    entries: tuple[SubidEntry, ...]
    problems: tuple[Problem, ...]
    trailing_newline: bool = True

    def render(self) -> str:
        text = "\n".join(self.lines)
        if self.lines and self.trailing_newline:
            text += "\n"
        return text

    def owned_by(self, name: str) -> tuple[SubidEntry, ...]:
        """The lines dockerd uses for ``name``: its name lines and ``ALL``, in file order."""
        return tuple(e for e in self.entries if e.owner in (name, "ALL"))

    def numeric_lines(self, uid: int) -> tuple[SubidEntry, ...]:
        return tuple(e for e in self.entries if e.owner == str(uid))

    def where(self, line: int) -> str:
        return f"{self.path}:{line}"


def _parse_id(field: str, what: str) -> tuple[int | None, str | None]:
    if not field.isdigit() or not field.isascii():
        return None, f"{what} {field!r} is not a non-negative integer"
    return int(field), None


def parse_subid(text: str, path: str = "/etc/subuid") -> SubidFile:
    """Parse subuid/subgid text; malformed lines become :class:`Problem`s, never exceptions."""
    trailing = text.endswith("\n") or text == ""
    lines = tuple(text.split("\n")[:-1] if trailing and text else text.split("\n")) if text else ()
    entries: list[SubidEntry] = []
    problems: list[Problem] = []
    seen: dict[tuple[str, int, int], int] = {}
    for number, raw in enumerate(lines, start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = stripped.split(":")
        if len(fields) != 3:
            problems.append(Problem(number, f"expected NAME:START:COUNT, found {len(fields)} field(s) in {stripped!r}"))
            continue
        owner, start_s, count_s = fields
        if not owner:
            problems.append(Problem(number, "empty user name"))
            continue
        start, err = _parse_id(start_s, "START")
        if err is None:
            count, err = _parse_id(count_s, "COUNT")
        if err is not None or start is None or count is None:
            problems.append(Problem(number, err or "unreadable line"))
            continue
        if count == 0:
            problems.append(Problem(number, f"COUNT is 0 in {stripped!r}: the line maps no ids"))
            continue
        if start + count > ID_LIMIT:
            problems.append(
                Problem(number, f"range {start}..{start + count - 1} goes past the last valid id {ID_LIMIT - 1}")
            )
            continue
        key = (owner, start, count)
        if key in seen:
            problems.append(Problem(number, f"duplicate of line {seen[key]} ({stripped!r})"))
            continue
        seen[key] = number
        entries.append(SubidEntry(owner, start, count, number))
    return SubidFile(path, lines, tuple(entries), tuple(problems), trailing)


# --- the map dockerd builds ------------------------------------------------


@dataclasses.dataclass(frozen=True)
class IdRange:
    """``count`` container ids from ``container`` map to host ids from ``host``."""

    container: int
    host: int
    count: int

    def host_of(self, container_id: int) -> int | None:
        if self.container <= container_id < self.container + self.count:
            return self.host + (container_id - self.container)
        return None

    def container_of(self, host_id: int) -> int | None:
        if self.host <= host_id < self.host + self.count:
            return self.container + (host_id - self.host)
        return None


IdMap = tuple[IdRange, ...]


def predict_map(entries: Iterable[SubidEntry]) -> IdMap:
    """The map dockerd writes to ``/proc/PID/uid_map``: ranges stacked in file order."""
    ranges: list[IdRange] = []
    next_container = 0
    for entry in entries:
        ranges.append(IdRange(next_container, entry.start, entry.count))
        next_container += entry.count
    return tuple(ranges)


def to_host(idmap: IdMap, container_id: int) -> int | None:
    for r in idmap:
        host = r.host_of(container_id)
        if host is not None:
            return host
    return None


def to_container(idmap: IdMap, host_id: int) -> int | None:
    for r in idmap:
        cid = r.container_of(host_id)
        if cid is not None:
            return cid
    return None


def parse_proc_map(text: str) -> IdMap:
    """Parse ``/proc/PID/uid_map`` (``container host count`` per line)."""
    ranges = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 3:
            continue
        ranges.append(IdRange(int(fields[0]), int(fields[1]), int(fields[2])))
    return tuple(ranges)


def format_map(idmap: IdMap) -> str:
    return "\n".join(f"{r.container} {r.host} {r.count}" for r in idmap)


def map_rows(idmap: IdMap) -> list[tuple[str, str, str]]:
    """Human rows: single ids spelt out, ranges as ``a–b``."""
    rows = []
    for r in idmap:
        if r.count == 1:
            rows.append((str(r.container), str(r.host), "1"))
        else:
            rows.append(
                (f"{r.container}–{r.container + r.count - 1}", f"{r.host}–{r.host + r.count - 1}", str(r.count))
            )
    return rows


# --- overlaps and allocation -----------------------------------------------


@dataclasses.dataclass(frozen=True)
class Account:
    """A real account from the passwd (or group) database."""

    name: str
    id: int


@dataclasses.dataclass(frozen=True)
class Overlap:
    entry: SubidEntry
    with_what: str  # "account alice (uid 1001)" or "bob's range on /etc/subuid:4"

    def message(self, path: str) -> str:
        return f"{path}:{self.entry.line} {self.entry.text()} overlaps {self.with_what}"


def account_overlaps(
    entries: Sequence[SubidEntry], accounts: Iterable[Account], own_id: int, kind: str = "uid"
) -> list[Overlap]:
    """Ranges that cover a real account's id (the user's own id, alone, is fine)."""
    found = []
    accounts = sorted(accounts, key=lambda a: a.id)
    for entry in entries:
        for acc in accounts:
            if acc.id == own_id and entry.start == own_id and entry.count == 1:
                continue  # the user's own NAME:UID:1 line
            if entry.start <= acc.id < entry.end:
                found.append(Overlap(entry, f"account {acc.name} ({kind} {acc.id})"))
                break
    return found


def seed_style(entries: Sequence[SubidEntry], own_id: int) -> list[SubidEntry]:
    """Ranges of more than one id that start at or cover the user's own id.

    ``NAME:1000:65536`` maps container uids 1.. onto host uids 1001.., the ids
    of other (present or future) real users.
    """
    return [e for e in entries if e.count > 1 and e.start <= own_id < e.end]


def range_overlaps(mine: Sequence[SubidEntry], others: Sequence[SubidEntry], path: str) -> list[Overlap]:
    """The user's ranges that share ids with other owners' ranges."""
    found = []
    for entry in mine:
        for other in others:
            if other.owner == entry.owner or other.owner == "ALL":
                continue
            if entry.overlaps(other.start, other.end):
                found.append(Overlap(entry, f"{other.owner}'s range {other.text()} at {path}:{other.line}"))
                break
    return found


def allocate(
    taken: Iterable[tuple[int, int]],
    count: int = DEFAULT_SUB_COUNT,
    lo: int = DEFAULT_SUB_MIN,
    hi: int = DEFAULT_SUB_MAX,
) -> int | None:
    """Lowest start in ``[lo, hi]`` with ``count`` free ids, given taken ``(start, end)`` spans.

    Like shadow-utils' ``find_free_range``: ``hi`` bounds the *last* id of the
    range.  Returns ``None`` when nothing fits.
    """
    spans = sorted((s, e) for s, e in taken if e > s)
    candidate = lo
    for start, end in spans:
        if end <= candidate:
            continue
        if start >= candidate + count:
            break
        candidate = end
    if candidate + count - 1 > hi:
        return None
    return candidate


def parse_login_defs(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = stripped.split(None, 1)
        if len(fields) == 2:
            values[fields[0]] = fields[1].strip()
    return values


def sub_bounds(login_defs: dict[str, str], prefix: str = "SUB_UID") -> tuple[int, int, int]:
    """``(min, max, count)`` from login.defs, shadow-utils' defaults where unset or garbled."""

    def num(key: str, default: int) -> int:
        value = login_defs.get(f"{prefix}_{key}", "")
        return int(value) if value.isdigit() else default

    return num("MIN", DEFAULT_SUB_MIN), num("MAX", DEFAULT_SUB_MAX), num("COUNT", DEFAULT_SUB_COUNT)
