"""Carrying out changes to host configuration files safely, and undoing them.

:func:`apply_changes` writes a set of :class:`FileChange`\\ s the way shadow-utils
would (locked, atomic, with a timestamped backup), restarts dockerd, waits for
it, runs a caller-supplied verification, and — when any step fails — restores
every file byte-for-byte and restarts dockerd on the old configuration.
:func:`record` keeps a journal of what devbox changed; :func:`plan_revert`
computes the inverse against the files as they are now.  What to change is
decided elsewhere (:func:`devbox.remap.plan.plan_remap`): nothing here makes decisions.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import shlex
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devbox.core.hashing import sha256_hex
from devbox.errors import DevboxError, HostError, RollbackError
from devbox.host import files
from devbox.host.observe import read_text
from devbox.paths import Paths


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


# --- restarting and validating dockerd ------------------------------------------------


def restart_argv(paths: Paths, restart_cmd: str | None) -> list[list[str]]:
    """``--restart-cmd`` split as a shell would, else systemd (with reset-failed), else the init script."""
    if restart_cmd:
        try:
            return [shlex.split(restart_cmd)]
        except ValueError as exc:
            raise DevboxError(f"cannot parse --restart-cmd {restart_cmd!r}: {exc}") from None
    if paths.systemd_running.is_dir():
        # StartLimitBurst: after failed starts, a rollback restart needs reset-failed first
        return [["systemctl", "reset-failed", "docker"], ["systemctl", "restart", "docker"]]
    return [["service", "docker", "restart"]]


def run_restart(commands: list[list[str]], timeout: float = 120) -> str | None:
    """Run the restart command(s); the error text, or ``None`` on success."""
    for i, argv in enumerate(commands):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{shlex.join(argv)}: {exc}"
        # reset-failed (systemd) may fail harmlessly when the unit never failed
        if r.returncode != 0 and i == len(commands) - 1:
            tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
            return f"{shlex.join(argv)} exited {r.returncode}: {' / '.join(tail)}"
    return None


def validate_available() -> bool:
    """Does this dockerd have ``--validate`` (Docker 23+)?"""
    try:
        return "--validate" in subprocess.run(["dockerd", "--help"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return False


def validate_config(text: str) -> str | None:
    """``dockerd --validate`` on a would-be daemon.json; its complaint, or ``None`` (valid or no --validate)."""
    if not validate_available():
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".json") as tmp:
        tmp.write(text)
        tmp.flush()
        r = subprocess.run(["dockerd", "--validate", f"--config-file={tmp.name}"], capture_output=True, text=True)
    return None if r.returncode == 0 else (r.stderr or r.stdout).strip()


# --- executing ---------------------------------------------------------------------


def _write(change: FileChange) -> None:
    with files.locked(change.path):
        if change.delete:
            files.remove(change.path)
        else:
            files.write_atomic(change.path, change.new.encode())


def _come_back(restart_commands: list[list[str]], verify: Callable[[], str | None] | None, timeout: float) -> str | None:
    """Restart, wait for the engine, verify.  The failure, or ``None``."""
    from devbox.engine.client import wait_until_up

    failure = run_restart(restart_commands)
    if failure is None and not wait_until_up(timeout):
        failure = f"dockerd did not come back within {timeout:.0f}s"
    if failure is None and verify is not None:
        failure = verify()
    return failure


def apply_changes(
    paths: Paths,
    changes: tuple[FileChange, ...],
    restart_commands: list[list[str]],
    *,
    verify: Callable[[], str | None] | None,
    timeout: float = 60,
    progress: Callable[[str], None] = lambda _: None,
) -> str:
    """Write ``changes`` (locked, atomic, backed up), restart dockerd, ``verify()``; roll back on failure.

    Returns the backup stamp.  Raises :class:`HostError` after a successful
    rollback, :class:`RollbackError` when even the rollback failed.
    """
    stamp = files.timestamp()
    snapshots = [files.Snapshot.take(c.path) for c in changes]
    for snap, change in zip(snapshots, changes, strict=True):
        if (snap.data or b"").decode(errors="replace") != change.old:
            raise HostError(f"{change.path} changed while devbox was planning", hint="re-run the command")
    for snap in snapshots:
        files.backup(snap, paths.remap_backups, stamp)
    written: list[files.Snapshot] = []
    try:
        for snap, change in zip(snapshots, changes, strict=True):
            _write(change)
            written.append(snap)
            progress(f"{'removed' if change.delete else 'wrote'} {change.path} (backup in {paths.remap_backups / stamp})")
    except DevboxError:
        for snap in written:
            snap.restore()
        raise
    progress("restarting dockerd: " + " && ".join(shlex.join(a) for a in restart_commands))
    failure = _come_back(restart_commands, verify, timeout)
    if failure is None:
        return stamp
    progress(f"failed: {failure}; rolling back")
    for snap in snapshots:
        with files.locked(snap.path):
            snap.restore()
    second = _come_back(restart_commands, None, timeout)
    if second is not None:
        raise RollbackError(
            f"{failure}; the files were restored byte-for-byte, but dockerd did not come back on the old "
            f"configuration either: {second}",
            hint="check `journalctl -u docker` / the daemon log; backups are in " + str(paths.remap_backups / stamp),
        )
    raise HostError(f"{failure}; rolled back: every file is byte-identical to before and dockerd runs on the old configuration",
                    hint="see `devbox remap` for the details")


# --- the journal and --revert ---------------------------------------------------------


@dataclasses.dataclass
class Journal:
    """What devbox did to the host, so --revert can undo exactly that."""

    path: Path
    applies: list[dict[str, Any]]

    @classmethod
    def load(cls, path: Path) -> Journal:
        try:
            data = json.loads(path.read_text())
            return cls(path, list(data.get("applies", [])))
        except FileNotFoundError:
            return cls(path, [])
        except (ValueError, OSError) as exc:
            raise HostError(f"cannot read devbox's remap journal: {exc}", where=str(path),
                            hint="restore files by hand from the backups beside it") from None

    def save(self) -> None:
        files.write_atomic(self.path, (json.dumps({"version": 1, "applies": self.applies}, indent=2) + "\n").encode(),
                              mode=0o600)


def record(paths: Paths, user: str, stamp: str, changes: tuple[FileChange, ...]) -> None:
    journal = Journal.load(paths.remap_journal)
    journal.applies.append({
        "stamp": stamp,
        "user": user,
        "files": [
            {
                "path": str(c.path),
                "existed": c.existed,
                "before_sha256": sha256_hex(c.old.encode()) if c.existed else None,
                "after_sha256": sha256_hex(c.new.encode()),
                "backup": str(paths.remap_backups / stamp / str(c.path).strip("/").replace("/", "_")) if c.existed else None,
                "added": list(c.added),
                "removed": list(c.removed),
                "json_key": c.json_key,
                "json_before": c.json_before,
            }
            for c in changes
        ],
    })
    journal.save()


def _inverse(f: dict[str, Any], text: str) -> tuple[str, bool, str]:
    """One recorded edit undone on ``text``: (new text, file exists, reason)."""
    backup: str | None = f.get("backup")
    if sha256_hex(text.encode()) == f["after_sha256"] and (backup or not f["existed"]):
        # untouched since devbox wrote it: the backup is the exact earlier state
        if backup is not None:
            return Path(backup).read_text(), True, "restored the copy saved before devbox changed it"
        return "", False, "removed the file devbox created"
    if f.get("json_key"):
        data = json.loads(text) if text.strip() else {}
        if f["json_before"] is None:
            data.pop(f["json_key"], None)
        else:
            data[f["json_key"]] = f["json_before"]
        return (json.dumps(data, indent=json_indent(text)) + "\n", True,
                f"put \"{f['json_key']}\" back as it was (the file changed since devbox wrote it)")
    lines = text.splitlines()
    for line in f["added"]:
        if line in lines:
            lines.remove(line)
    lines += [line for line in f["removed"] if line not in lines]
    return ("\n".join(lines) + ("\n" if lines else ""), True,
            "removed the lines devbox added, put back the ones it removed (the file changed since devbox wrote it)")


def plan_revert(paths: Paths) -> tuple[FileChange, ...]:
    """The inverse of every recorded apply, newest first, against the files as they are now."""
    journal = Journal.load(paths.remap_journal)
    now: dict[Path, str | None] = {}
    current: dict[Path, tuple[str, bool]] = {}
    reasons: dict[Path, list[str]] = {}
    for entry in reversed(journal.applies):
        for f in entry["files"]:
            path = Path(f["path"])
            if path not in current:
                now[path] = read_text(path)
                current[path] = (now[path] or "", now[path] is not None)
            text, exists, reason = _inverse(f, current[path][0])
            current[path] = (text, exists)
            reasons.setdefault(path, []).append(reason)
    changes = []
    for path, (text, exists) in current.items():
        before = now[path]
        if (before is not None) == exists and (before or "") == text:
            continue
        changes.append(FileChange(path, before or "", text, before is not None, tuple(reasons[path]),
                                  delete=not exists))
    return tuple(changes)


def finish_revert(paths: Paths) -> None:
    """Retire the journal: what it recorded is undone (kept beside it for the record)."""
    journal = paths.remap_journal
    if journal.exists():
        journal.rename(journal.with_name(f"journal.reverted-{files.timestamp()}.json"))
