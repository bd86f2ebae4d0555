"""devbox's journal of host changes: what it did (for ``--revert``) and what it is doing (for crash recovery).

One JSON file (``Paths.remap_journal``), written atomically:

* ``applies`` — every finished ``remap --apply``, with each file's before and
  after hashes, the backup of its old bytes and the lines or key devbox added,
  so that ``--revert`` can undo exactly that (:func:`plan_revert`);
* ``pending`` — the change in progress, written *before* the first file
  changes and advanced as it goes (``writing`` -> ``restarting`` -> gone).  A
  devbox killed at any point leaves it behind; the next run finds it
  (:func:`pending`) and :func:`devbox.host.change.recover` puts every file
  back the way it was before that change, restarting dockerd when the change
  had got as far as restarting it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from devbox.core.hashing import sha256_hex
from devbox.errors import HostError
from devbox.faults import point
from devbox.host import files
from devbox.host.observe import read_text
from devbox.paths import Paths

VERSION = 2


@dataclasses.dataclass(frozen=True)
class FileChange:
    """A host file's whole new content (or its removal), with the reasons and what --revert needs."""

    path: Path
    old: str
    new: str
    existed: bool
    reasons: tuple[str, ...]
    added: tuple[str, ...] = ()  # lines devbox adds (subid files), for --revert
    removed: tuple[str, ...] = ()
    json_key: str | None = None  # daemon.json: the key devbox sets
    json_before: Any = None  # ... and its previous value (None: absent)
    delete: bool = False  # remove the file (one devbox created)

    @property
    def changed(self) -> bool:
        return self.delete or self.old != self.new or not self.existed

    def diff(self) -> str:
        import difflib

        return "".join(difflib.unified_diff(
            self.old.splitlines(keepends=True), [] if self.delete else self.new.splitlines(keepends=True),
            fromfile=f"{self.path} (now)", tofile=f"{self.path} (devbox)" if not self.delete else "/dev/null",
        ))


def json_indent(text: str) -> int:
    """The indent a JSON file already uses (2 when it has none), so a rewrite keeps its look."""
    for line in text.splitlines()[1:]:
        stripped = line.lstrip(" ")
        if stripped and len(line) != len(stripped):
            return len(line) - len(stripped)
    return 2


def backup_path(paths: Paths, stamp: str, path: Path) -> Path:
    return paths.remap_backups / stamp / str(path).strip("/").replace("/", "_")


def file_record(paths: Paths, stamp: str, c: FileChange) -> dict[str, Any]:
    """What the journal keeps of one file change: enough to undo it, byte-exact or line by line."""
    return {
        "path": str(c.path),
        "existed": c.existed,
        "before_sha256": sha256_hex(c.old.encode()) if c.existed else None,
        "after_sha256": None if c.delete else sha256_hex(c.new.encode()),
        "backup": str(backup_path(paths, stamp, c.path)) if c.existed else None,
        "added": list(c.added),
        "removed": list(c.removed),
        "json_key": c.json_key,
        "json_before": c.json_before,
        "deleted": c.delete,
    }


@dataclasses.dataclass
class Journal:
    path: Path
    applies: list[dict[str, Any]]
    pending: dict[str, Any] | None = None

    @classmethod
    def load(cls, path: Path) -> Journal:
        try:
            data = json.loads(path.read_text())
            return cls(path, list(data.get("applies", [])), data.get("pending"))
        except FileNotFoundError:
            return cls(path, [])
        except (ValueError, OSError, AttributeError) as exc:
            raise HostError(f"cannot read devbox's remap journal: {exc}", where=str(path),
                            hint="restore files by hand from the backups beside it") from None

    def save(self) -> None:
        data: dict[str, Any] = {"version": VERSION, "applies": self.applies}
        if self.pending is not None:
            data["pending"] = self.pending
        files.write_atomic(self.path, (json.dumps(data, indent=2) + "\n").encode(), mode=0o600)


# --- the change in progress ---------------------------------------------------------------


def begin(paths: Paths, op: str, user: str, stamp: str, changes: Iterable[FileChange]) -> None:
    """Record the change about to be made, before the first file changes (``op``: apply or revert)."""
    journal = Journal.load(paths.remap_journal)
    journal.pending = {"op": op, "user": user, "stamp": stamp, "state": "writing",
                       "files": [file_record(paths, stamp, c) for c in changes]}
    journal.save()
    point("journal-begun")


def advance(paths: Paths, state: str) -> None:
    journal = Journal.load(paths.remap_journal)
    if journal.pending is not None:
        journal.pending["state"] = state
        journal.save()
    point(f"journal-{state}")


def pending(paths: Paths) -> dict[str, Any] | None:
    return Journal.load(paths.remap_journal).pending


def describe_pending(entry: dict[str, Any]) -> str:
    what = {"writing": "while writing the files", "restarting": "while restarting dockerd",
            "rolling-back": "while rolling back"}.get(str(entry.get("state")), f"at {entry.get('state')}")
    return f"an earlier `devbox remap --{entry.get('op', 'apply')}` (backup {entry.get('stamp')}) was interrupted {what}"


def pending_if_readable(paths: Paths) -> dict[str, Any] | None:
    """For read-only checks run by anyone: the journal is root's (0600), so an ordinary user sees nothing."""
    try:
        return pending(paths)
    except HostError:
        return None


def finish(paths: Paths) -> None:
    """The change in progress is done: an apply joins ``applies``; a revert retires the journal."""
    journal = Journal.load(paths.remap_journal)
    entry, journal.pending = journal.pending, None
    if entry is None:
        return
    if entry["op"] == "apply":
        if entry["files"]:
            journal.applies.append({"stamp": entry["stamp"], "user": entry["user"], "files": entry["files"]})
        journal.save()
        point("journal-finished")
        return
    # a revert undid every recorded apply: keep the journal beside it for the record
    journal.save()
    retired = journal.path.with_name(f"journal.reverted-{files.timestamp()}.json")
    journal.path.rename(retired)
    point("journal-finished")


def abandon(paths: Paths) -> None:
    """The change in progress was rolled back: forget it (``applies`` stay as they were)."""
    journal = Journal.load(paths.remap_journal)
    if journal.pending is not None:
        journal.pending = None
        journal.save()
    point("journal-abandoned")


# --- undoing a recorded edit ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Undone:
    text: str | None  # the file's new content; None: no file
    reason: str
    exact: bool  # the exact earlier bytes (False: only devbox's own edit taken back, others' kept)


def undo(f: dict[str, Any], text: str | None) -> Undone:
    """One recorded edit undone on a file's current ``text`` (``None``: absent).

    Untouched since devbox wrote it: the exact earlier bytes (the backup), or
    no file when devbox created it.  Changed since by someone else: only
    devbox's own edit is taken back (its lines, its key), theirs are kept.
    """
    after = None if text is None else sha256_hex(text.encode(errors="surrogateescape"))
    backup: str | None = f.get("backup")
    if after == f.get("after_sha256"):
        if backup is not None:
            return Undone(Path(backup).read_text(errors="surrogateescape"), "restored the copy saved before devbox changed it", True)
        return Undone(None, "removed the file devbox created", True)
    if text is None:
        if f.get("existed") and backup is not None and f.get("deleted"):
            return Undone(Path(backup).read_text(errors="surrogateescape"), "restored the file devbox had removed", True)
        return Undone(None, "the file is gone; nothing to take back", False)
    if f.get("json_key"):
        data = json.loads(text) if text.strip() else {}
        if f["json_before"] is None:
            data.pop(f["json_key"], None)
        else:
            data[f["json_key"]] = f["json_before"]
        return Undone(json.dumps(data, indent=json_indent(text)) + "\n",
                      f"put \"{f['json_key']}\" back as it was (the file changed since devbox wrote it)", False)
    lines = text.splitlines()
    for line in f.get("added", []):
        if line in lines:
            lines.remove(line)
    lines += [line for line in f.get("removed", []) if line not in lines]
    return Undone("\n".join(lines) + ("\n" if lines else ""),
                  "removed the lines devbox added, put back the ones it removed (the file changed since devbox wrote it)",
                  False)


def plan_revert(paths: Paths) -> tuple[FileChange, ...]:
    """The inverse of every recorded apply, newest first, against the files as they are now."""
    journal = Journal.load(paths.remap_journal)
    now: dict[Path, str | None] = {}
    current: dict[Path, str | None] = {}
    reasons: dict[Path, list[str]] = {}
    for entry in reversed(journal.applies):
        for f in entry["files"]:
            path = Path(f["path"])
            if path not in now:
                now[path] = current[path] = read_text(path)
            undone = undo(f, current[path])
            current[path] = undone.text
            reasons.setdefault(path, []).append(undone.reason)
    changes = []
    for path, text in current.items():
        before = now[path]
        if before == text:
            continue
        changes.append(FileChange(path, before or "", text or "", before is not None, tuple(reasons[path]),
                                  delete=text is None))
    return tuple(changes)
