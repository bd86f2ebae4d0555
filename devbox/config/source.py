"""One TOML file and the places in it: key paths, their lines, did-you-mean.

tomllib reports syntax errors with "(at line N, column M)" but gives no line
numbers for keys.  :func:`find_line` finds them by scanning the text: the
table header that covers the key path (``[[name]]`` headers counted for an
index), then each remaining key (as ``key =``, a dotted ``key.``, or inside an
inline table) and each index (the N-th item of an array).  Only
:func:`read_toml` does I/O.
"""

from __future__ import annotations

import bisect
import dataclasses
import difflib
import json
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from devbox.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

KeyPath = tuple["str | int", ...]


@dataclasses.dataclass(frozen=True)
class Source:
    """One TOML file: its path (as shown to the user), its text and its parsed table."""

    path: Path
    text: str
    data: dict[str, Any]

    def error(self, keypath: Sequence[str | int], message: str, hint: str | None = None) -> ConfigError:
        line = find_line(self.text, keypath) if keypath else None
        return ConfigError(message, where=self.where(line), hint=hint)

    def where(self, line: int | None) -> str:
        return f"{self.path}:{line}" if line else str(self.path)


def read_toml(path: Path) -> Source:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", where=str(path)) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        where = f"{path}:{m.group(1)}" if m else str(path)
        raise ConfigError(f"invalid TOML: {exc}", where=where) from None
    return Source(path=path, text=text, data=data)


def format_path(path: Sequence[str | int]) -> str:
    """``services.db.volumes[0]``; a key that is not a bare TOML key is quoted."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else json.dumps(part)
            out += f".{text}" if out else text
    return out


def suggest(name: str, choices: Iterable[str]) -> str:
    """The hint for an unknown name: the closest choice, else all of them."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    return "known: " + ", ".join(choices) if choices else "none are defined"


# --- finding the line of a key path ----------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Header:
    line: int  # 0-based
    keys: tuple[str, ...]
    index: int | None  # for ``[[keys]]``: which item of the array it opens


def find_line(text: str, path: Sequence[str | int]) -> int | None:
    """The 1-based line defining ``path`` in TOML ``text``, best effort (``None``: not found)."""
    lines = text.split("\n")  # tomllib counts lines by "\n" too
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line) + 1)
    headers = _headers(lines)
    table, consumed = None, 0
    for h in headers:
        n = _covers(h, path)
        if n > consumed:
            table, consumed = h, n
    if table is None:
        found: int | None = None
        lo, end_line = 0, headers[0].line if headers else len(lines)
    else:
        found = table.line
        lo, end_line = starts[table.line + 1], next((h.line for h in headers if h.line > table.line), len(lines))
    lo, hi = min(lo, len(text)), min(starts[end_line], len(text))
    for part in path[consumed:]:
        if isinstance(part, int):
            item = _nth_item(text, lo, part)
            if item is None or item[0] >= hi:
                break
            lo, hi = item
            found = _line_of(starts, lo)
            continue
        hit = _find_key(text, part, lo, hi)
        if hit is None:
            # ``services`` when the file only has ``[services.runtime]``: the first table below it.
            keys = tuple(p for p in path if isinstance(p, str))
            below = next((h.line for h in headers if len(h.keys) > len(keys) and h.keys[: len(keys)] == keys), None)
            return below + 1 if below is not None else (None if found is None else found + 1)
        found, lo = _line_of(starts, hit[0]), hit[1]
    return None if found is None else found + 1


def _headers(lines: Sequence[str]) -> list[_Header]:
    out: list[_Header] = []
    seen: dict[tuple[str, ...], int] = {}
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped.startswith("["):
            continue
        inner = stripped.lstrip("[").split("]", 1)[0]
        found = re.findall(r'"((?:[^"\\]|\\.)*)"|\'([^\']*)\'|([A-Za-z0-9_-]+)', inner)
        keys = tuple(a or b or c for a, b, c in found)
        index = None
        if stripped.startswith("[["):
            index = seen.get(keys, 0)
            seen[keys] = index + 1
        out.append(_Header(i, keys, index))
    return out


def _covers(header: _Header, path: Sequence[str | int]) -> int:
    """How many parts of ``path`` the header's table stands for (0: not a table on the path)."""
    n = len(header.keys)
    if tuple(path[:n]) != header.keys:
        return 0
    if header.index is None:
        return n
    return n + 1 if len(path) > n and path[n] == header.index else 0


def _line_of(starts: Sequence[int], offset: int) -> int:
    return bisect.bisect_right(starts, offset) - 1


def _strip_comment(line: str) -> str:
    # Good enough for locating keys: a '#' inside a string only hides text after it.
    return line.split("#", 1)[0] if '"' not in line and "'" not in line else line


def _find_key(text: str, key: str, lo: int, hi: int) -> tuple[int, int] | None:
    """Where ``key =`` (or ``key.``) first appears in ``text[lo:hi]``: its start and the offset after the ``=``."""
    pattern = re.compile(r'(?:^|[\s{,.])(?:"' + re.escape(key) + r'"|\'' + re.escape(key) + r"'|" + re.escape(key) + r")\s*[=.]")
    line_start = text.rfind("\n", 0, lo) + 1
    while line_start < hi:
        line_end = text.find("\n", line_start)
        line_end = len(text) if line_end < 0 else line_end
        line = _strip_comment(text[line_start:line_end])
        m = pattern.search(line, max(lo - line_start, 0))
        if m and line_start + m.start() < hi:
            return line_start + m.start(), line_start + m.end()
        line_start = line_end + 1
    return None


def _nth_item(text: str, offset: int, n: int) -> tuple[int, int] | None:
    """Start and end offsets of item ``n`` of the array value that starts at ``offset`` (after blanks)."""
    i = offset
    while i < len(text) and text[i] in " \t":
        i += 1
    if i >= len(text) or text[i] != "[":
        return None
    depth, index, start = 0, -1, -1
    while i < len(text):
        c = text[i]
        if depth == 1 and start < 0 and c not in " \t\r\n,]#":
            index, start = index + 1, i
        if c in "\"'":
            i = _skip_string(text, i)
            continue
        if c == "#":
            i = text.find("\n", i)
            if i < 0:
                break
            continue
        if c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
            if depth == 0:
                return (start, i) if start >= 0 and index == n else None
        elif c == "," and depth == 1:
            if index == n:
                return start, i
            start = -1
        i += 1
    return None


def _skip_string(text: str, i: int) -> int:
    """The offset just after the TOML string starting at ``i``."""
    quote = text[i]
    if text.startswith(quote * 3, i):
        j = i + 3
        while True:
            k = text.find(quote * 3, j)
            if k < 0:
                return len(text)
            if quote == '"' and _escaped(text, k):
                j = k + 1
                continue
            k += 3
            while k < len(text) and text[k] == quote:  # up to two quotes may close the content
                k += 1
            return k
    j = i + 1
    while j < len(text) and text[j] != "\n":
        if quote == '"' and text[j] == "\\":
            j += 2
            continue
        if text[j] == quote:
            return j + 1
        j += 1
    return j


def _escaped(text: str, k: int) -> bool:
    backslashes = 0
    while k - backslashes - 1 >= 0 and text[k - backslashes - 1] == "\\":
        backslashes += 1
    return backslashes % 2 == 1
