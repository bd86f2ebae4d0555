"""Pure id maths: /etc/subuid parsing, the map dockerd builds, translation, overlaps.

No I/O here: callers pass file text and account lists in.  What dockerd does
with the files (moby ``pkg/idtools``) is modelled exactly because every trap
users hit lives in the details:

* dockerd takes the target user's lines (matched by *name*) in
  **file order** and stacks them: container id 0 maps to the first range's
  start, the next range continues where the previous one ended.  So the
  user's own ``NAME:UID:1`` line must come first for container root to be
  the user.
* Only lines whose owner *is* the name count: ``ALL`` in moby's parser is a
  query keyword ("every line of the file", used to find free ranges), not a
  line owner that applies to everybody; shadow-utils has no wildcard either.
* Lines keyed by the numeric uid are ignored by dockerd 20.10 (and preferred
  by dockerd 23+); devbox reads and writes name lines only.
* dockerd 20.10 refuses the *whole* file when any line lacks three fields,
  and shadow-utils reads numbers with ``strtoul(..., 0)``: ``0100000`` is
  octal to it but decimal to dockerd.  Both are reported as problems.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

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
    """A parsed subuid/subgid file that renders back to exactly the text it came from.

    ``entries`` holds every line that reads unambiguously as ``OWNER:START:COUNT``,
    in file order, including duplicates and same-owner overlaps (dockerd would
    use them too; they are also listed in ``problems``).  Lines that cannot be
    read that way appear only in ``problems``.
    """

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
        """The lines dockerd 20.10 uses for ``name``: exactly its name lines, in file order.

        A line owned by ``ALL`` is *not* included: see the module docstring.
        """
        return tuple(e for e in self.entries if e.owner == name)

    def where(self, line: int) -> str:
        """``path:line``, the way every message points at a line."""
        return f"{self.path}:{line}"


_MAX_ID_DIGITS = len(str(ID_LIMIT))


def _parse_id(field: str, what: str) -> tuple[int | None, str | None]:
    """An ASCII decimal id that dockerd (decimal) and shadow-utils (base 0) read alike."""
    if not field.isascii() or not field.isdigit():
        return None, f"{what} {field!r} is not a non-negative integer"
    if len(field) > 1 and field.startswith("0"):
        return None, f"{what} {field!r} has a leading zero: shadow-utils reads it as octal, dockerd as decimal"
    if len(field) > _MAX_ID_DIGITS:
        # also keeps int() away from Python's limit on huge digit strings
        return None, f"{what} {field!r} is larger than the last valid id {ID_LIMIT - 1}"
    return int(field), None


def parse_subid(text: str, path: str = "/etc/subuid") -> SubidFile:
    """Parse subuid/subgid text; malformed lines become :class:`Problem`s, never exceptions.

    Blank lines and lines starting with ``#`` (after surrounding whitespace)
    are kept for :meth:`SubidFile.render` and otherwise ignored, as dockerd
    does.  Ids must satisfy ``START + COUNT - 1 <= 2**32 - 2``.
    """
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
        if owner != owner.strip():
            problems.append(
                Problem(number, f"user name {owner!r} has surrounding whitespace: dockerd compares names exactly")
            )
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
        entry = SubidEntry(owner, start, count, number)
        key = (owner, start, count)
        if key in seen:
            problems.append(Problem(number, f"duplicate of line {seen[key]} ({stripped!r})"))
        else:
            seen[key] = number
            for earlier in entries:
                if earlier.owner == owner and earlier.overlaps(start, entry.end):
                    problems.append(
                        Problem(
                            number,
                            f"{stripped!r} overlaps line {earlier.line} ({earlier.text()!r}) of the same owner:"
                            " the kernel refuses a map whose host ranges overlap",
                        )
                    )
                    break
        entries.append(entry)
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
    """The host id behind ``container_id``, or ``None`` when the map leaves it unmapped."""
    for r in idmap:
        host = r.host_of(container_id)
        if host is not None:
            return host
    return None


def to_container(idmap: IdMap, host_id: int) -> int | None:
    """The container id that ``host_id`` shows up as, or ``None`` (``nobody`` inside)."""
    for r in idmap:
        cid = r.container_of(host_id)
        if cid is not None:
            return cid
    return None


def parse_proc_map(text: str) -> IdMap:
    """Parse ``/proc/PID/uid_map`` (``container host count`` per line, space padded).

    Blank lines are skipped.  Anything else that is not three ASCII decimal
    numbers raises :class:`ValueError`: the kernel never writes it, so the
    text did not come from where the caller thinks.
    """
    ranges: list[IdRange] = []
    for number, line in enumerate(text.split("\n"), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 3 or not all(f.isascii() and f.isdigit() for f in fields):
            raise ValueError(f"id map line {number}: expected 'CONTAINER HOST COUNT', found {line!r}")
        ranges.append(IdRange(int(fields[0]), int(fields[1]), int(fields[2])))
    return tuple(ranges)


def format_map(idmap: IdMap, sep: str = "\n") -> str:
    """``container host count`` lines joined by ``sep`` (no padding, no final newline)."""
    return sep.join(f"{r.container} {r.host} {r.count}" for r in idmap)


def map_rows(idmap: IdMap) -> list[tuple[str, str, str]]:
    """Human rows: single ids spelt out, ranges as ``a–b``."""
    rows: list[tuple[str, str, str]] = []
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
    with_what: str  # "account alice (uid 1001)" or "bob's range bob:100000:65536 at /etc/subuid:4"

    def message(self, path: str) -> str:
        return f"{path}:{self.entry.line} {self.entry.text()} overlaps {self.with_what}"


def account_overlaps(
    entries: Sequence[SubidEntry], accounts: Iterable[Account], own_id: int, kind: str = "uid"
) -> list[Overlap]:
    """Ranges that cover a real account's id: at most one :class:`Overlap` per entry.

    The user's own ``NAME:UID:1`` line is fine.  A wider range that covers
    ``own_id`` is reported; it names the lowest *other* account it covers
    when there is one (that is whose files leak), else the user's own.
    """
    found: list[Overlap] = []
    ordered = sorted(accounts, key=lambda a: (a.id, a.name))
    for entry in entries:
        covered = [acc for acc in ordered if entry.start <= acc.id < entry.end]
        others = [acc for acc in covered if acc.id != own_id]
        if entry.start == own_id and entry.count == 1:
            covered = others
        if covered:
            hit = (others or covered)[0]
            found.append(Overlap(entry, f"account {hit.name} ({kind} {hit.id})"))
    return found


def seed_style(entries: Sequence[SubidEntry], own_id: int) -> list[SubidEntry]:
    """Ranges of more than one id that start at or cover the user's own id.

    ``NAME:1000:65536`` maps container uids 1.. onto host uids 1001.., the ids
    of other (present or future) real users.
    """
    return [e for e in entries if e.count > 1 and e.start <= own_id < e.end]


def range_overlaps(mine: Sequence[SubidEntry], others: Sequence[SubidEntry], path: str) -> list[Overlap]:
    """The user's ranges that share ids with other owners' ranges: at most one per entry.

    ``others`` may be the whole file: lines with the entry's own owner are
    skipped.  ``ALL`` is an owner like any other (see the module docstring).
    """
    found: list[Overlap] = []
    for entry in mine:
        for other in others:
            if other.owner == entry.owner:
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
    range (and is itself capped at the last valid id, ``2**32 - 2``).  Spans
    may be unsorted, overlapping or empty (``end <= start``, ignored).
    Returns ``None`` when nothing fits, or when ``count < 1`` or ``lo > hi``.
    """
    hi = min(hi, ID_LIMIT - 1)
    if count < 1 or lo > hi:
        return None
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
    """``KEY VALUE`` pairs from login.defs, read the way shadow-utils' ``getdef.c`` does.

    Whitespace and double quotes before the value are skipped and the value
    stops at the next double quote; a key without a value is ignored; the
    last occurrence of a key wins.
    """
    values: dict[str, str] = {}
    for line in text.split("\n"):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = stripped.split(None, 1)
        if len(fields) == 2:
            values[fields[0]] = fields[1].lstrip(' \t"').split('"', 1)[0]
    return values


_ULONG_MAX = 2**64 - 1


def _shadow_ulong(value: str) -> int | None:
    """``getulong()``: ``strtoul(value, &end, 0)`` with nothing left over; ``None`` if garbled.

    Decimal, ``0x`` hex and leading-zero octal, as shadow-utils accepts them.
    Signs and whitespace count as garbage here (``strtoul`` would wrap ``-1``).
    """
    if not value.isascii() or not value.isalnum():
        return None
    try:
        if value[:2].lower() == "0x":
            number = int(value[2:], 16)
        elif value.startswith("0"):
            number = int(value, 8)
        else:
            number = int(value, 10)
    except ValueError:
        return None
    return number if number <= _ULONG_MAX else None


def sub_bounds(login_defs: dict[str, str], prefix: str = "SUB_UID") -> tuple[int, int, int]:
    """``(min, max, count)`` from login.defs, shadow-utils' defaults where unset or garbled.

    Numbers are read like shadow-utils reads them: ``0x186a0`` is hex and
    ``0100000`` octal.
    """

    def num(key: str, default: int) -> int:
        value = _shadow_ulong(login_defs.get(f"{prefix}_{key}", ""))
        return default if value is None else value

    return num("MIN", DEFAULT_SUB_MIN), num("MAX", DEFAULT_SUB_MAX), num("COUNT", DEFAULT_SUB_COUNT)
