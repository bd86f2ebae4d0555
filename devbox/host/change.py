"""Carrying out changes to host configuration files safely, and undoing them.

:func:`apply_changes` is the one path every host change takes (``remap
--apply``, ``--revert``, ``doctor --fix``):

1. devbox's own ``flock`` (one devbox change at a time), then shadow-utils'
   locks on /etc/subuid and /etc/subgid in shadow-utils' order, and the same
   kind of lock on daemon.json;
2. under those locks, the files are read once more and must be exactly what
   was planned (and shown, and confirmed) — else nothing is written;
3. backups, then the journal's ``pending`` record (what will change, with
   before and after hashes), *then* the writes, each atomic;
4. the locks are released (``usermod`` need not wait for dockerd), dockerd is
   restarted and the caller's verification runs;
5. on failure — or Ctrl-C or SIGTERM during the restart or verification —
   every file is rolled back under the locks again (byte-for-byte when nobody
   touched it since; otherwise only devbox's own edit is taken back, so a
   concurrent ``usermod`` is never lost) and dockerd restarted on the old
   configuration; further signals are ignored until that is done.

A devbox killed at any point leaves the journal's ``pending`` record:
:func:`recover` finds it on the next run and converges.  What to change is
decided elsewhere (:func:`devbox.remap.plan.plan_remap`): nothing here makes
decisions.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from devbox.core.hashing import sha256_hex
from devbox.errors import DevboxError, Exit, HostError, RollbackError
from devbox.faults import point
from devbox.host import files, journal
from devbox.host.journal import FileChange, json_indent
from devbox.paths import Paths

__all__ = ["FileChange", "Interrupted", "apply_changes", "json_indent", "recover", "restart_argv", "run_restart",
           "validate", "validate_available"]


class Interrupted(HostError):
    """Ctrl-C or SIGTERM arrived during a change; the change was rolled back before devbox stopped."""

    exit_code = Exit.INTERRUPTED


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


def dockerd_command() -> list[str]:
    """The dockerd to ask for ``--help`` and ``--validate``: ``DEVBOX_DOCKERD`` (a command line), else ``dockerd``."""
    return shlex.split(os.environ.get("DEVBOX_DOCKERD") or "dockerd")


def validate_available() -> bool:
    """Does this dockerd have ``--validate`` (Docker 23+)?"""
    try:
        return "--validate" in subprocess.run([*dockerd_command(), "--help"], capture_output=True, text=True,
                                              timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return False


def validate(config_file: Path) -> str | None:
    """``dockerd --validate`` on ``config_file`` as it is now, with /etc/subuid and /etc/subgid as they are
    now (Docker 26 looks the remap user's ranges up: "no subuid ranges found for user"); its complaint, or
    ``None`` (valid, or a dockerd without --validate)."""
    if not validate_available():
        return None
    r = subprocess.run([*dockerd_command(), "--validate", f"--config-file={config_file}"], capture_output=True, text=True)
    if r.returncode == 0:
        return None
    lines = [ln for ln in (r.stderr or r.stdout).strip().splitlines() if not ln.startswith("time=")]
    return " ".join(lines).replace(f" with file {config_file}:", ":") or f"exit status {r.returncode}"


# --- locks ---------------------------------------------------------------------------


def lock_order(paths: Paths, changed: list[Path]) -> list[Path]:
    """shadow-utils locks /etc/subuid before /etc/subgid (usermod's order); daemon.json comes after them."""
    order = [paths.subuid, paths.subgid, paths.daemon_json]
    return order + [p for p in changed if p not in order]


@contextlib.contextmanager
def devbox_lock(paths: Paths) -> Iterator[None]:
    """One devbox host change at a time (an ``flock``: a killed holder releases it)."""
    directory = paths.remap_journal.parent
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# --- signals ------------------------------------------------------------------------------


class _Signalled(BaseException):
    pass


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM (and SIGINT) raise, so the restart or verification stops and the rollback runs."""
    def raise_(signum: int, frame: FrameType | None) -> None:
        raise _Signalled(signum)

    previous = {s: signal.signal(s, raise_) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """A rollback runs to the end: a second Ctrl-C must not leave the host half-restored."""
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


# --- executing -----------------------------------------------------------------------------


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _write(change: FileChange) -> None:
    if change.delete:
        files.remove(change.path)
    else:
        files.write_atomic(change.path, change.new.encode())
    point("wrote-file")


def _come_back(restart_commands: list[list[str]], verify: Callable[[], str | None] | None, timeout: float) -> str | None:
    """Restart, wait for the engine, verify.  The failure, or ``None``."""
    from devbox.engine.client import wait_until_up

    failure = run_restart(restart_commands)
    point("restarted")
    if failure is None and not wait_until_up(timeout):
        failure = f"dockerd did not come back within {timeout:.0f}s"
    if failure is None and verify is not None:
        failure = verify()
    point("verified")
    return failure


def _undo_records(records: list[dict[str, Any]], progress: Callable[[str], None]) -> list[journal.Undone]:
    """Put every file of a change back (the caller holds the locks); what was done to each one changed."""
    said = []
    for f in records:
        path = Path(f["path"])
        current = _read(path)
        if f["existed"]:
            already_back = current is not None and sha256_hex(current) == f["before_sha256"]
        else:
            already_back = current is None
        if already_back:
            continue  # never written, or already put back
        undone = journal.undo(f, None if current is None else current.decode(errors="surrogateescape"))
        if undone.text is None:
            files.remove(path)
        else:
            files.write_atomic(path, undone.text.encode(errors="surrogateescape"))
        point("restored-file")
        progress(f"{path}: {undone.reason}")
        said.append(undone)
    return said


def _undo_files(paths: Paths, records: list[dict[str, Any]], progress: Callable[[str], None]) -> list[journal.Undone]:
    """:func:`_undo_records` under the locks."""
    with files.locked_in_order(lock_order(paths, [Path(f["path"]) for f in records])):
        return _undo_records(records, progress)


def apply_changes(
    paths: Paths,
    changes: tuple[FileChange, ...],
    restart_commands: list[list[str]],
    *,
    verify: Callable[[], str | None] | None,
    precheck: Callable[[], str | None] | None = None,
    op: str = "apply",
    user: str = "",
    timeout: float = 60,
    progress: Callable[[str], None] = lambda _: None,
) -> str:
    """Write ``changes`` (locked, atomic, backed up, journalled first), ``precheck()`` them (``dockerd
    --validate``: before any restart, so a refusal costs no downtime), restart dockerd, ``verify()``;
    roll back on failure or interruption.  ``op`` (``apply`` or ``revert``) says what the journal records.

    Returns the backup stamp.  Raises :class:`HostError` after a successful
    rollback (:class:`Interrupted` when a signal caused it), :class:`RollbackError`
    when even the rollback failed.
    """
    stamp = files.timestamp()
    with devbox_lock(paths):
        with files.locked_in_order(lock_order(paths, [c.path for c in changes])):
            point("locked-all")
            for change in changes:
                now = _read(change.path)
                if (now is not None) != change.existed or (now or b"").decode(errors="replace") != change.old:
                    raise HostError(f"{change.path} changed since devbox read it (another tool edited it meanwhile)",
                                    hint="re-run the command: nothing was changed")
                files.backup(files.Snapshot(change.path, now), paths.remap_backups, stamp)
            journal.begin(paths, op, user, stamp, changes)  # before the first file changes
            try:
                for change in changes:
                    _write(change)
                    progress(f"{'removed' if change.delete else 'wrote'} {change.path} "
                             f"(backup in {paths.remap_backups / stamp})")
                problem = precheck() if precheck is not None else None
                if problem is not None:
                    raise HostError(problem)
            except DevboxError as exc:
                # a write failed half-way (disk full, read-only): take back what was written, still locked
                with _signals_ignored():
                    _undo_records(_pending_files(paths), progress)
                    journal.abandon(paths)
                raise HostError(f"{exc.message}; nothing was changed (what had been written is put back)",
                                where=exc.where, hint=exc.hint) from None
            journal.advance(paths, "restarting")
        progress("restarting dockerd: " + " && ".join(shlex.join(a) for a in restart_commands))
        interrupted: int | None = None
        try:
            with _signals_interrupt():
                failure = _come_back(restart_commands, verify, timeout)
        except (_Signalled, KeyboardInterrupt) as exc:
            interrupted = exc.args[0] if isinstance(exc, _Signalled) and exc.args else signal.SIGINT
            failure = f"interrupted by {signal.Signals(interrupted).name} during the dockerd restart"
        if failure is None:
            journal.finish(paths)
            return stamp
        progress(f"failed: {failure}; rolling back")
        with _signals_ignored():
            journal.advance(paths, "rolling-back")
            merged = [u for u in _undo_files(paths, _pending_files(paths), progress) if not u.exact]
            second = _come_back(restart_commands, None, timeout)
            if second is not None:
                raise RollbackError(
                    f"{failure}; the files were put back, but dockerd did not come back on the old "
                    f"configuration either: {second}",
                    hint="check `journalctl -u docker` / the daemon log; backups are in " + str(paths.remap_backups / stamp),
                )
            journal.abandon(paths)
    state = ("every file is back as it was, keeping what other tools changed meanwhile" if merged
             else "every file is byte-identical to before")
    if interrupted is not None:
        raise Interrupted(f"{failure}; rolled back: {state} and dockerd runs on the old configuration")
    raise HostError(f"{failure}; rolled back: {state} and dockerd runs on the old configuration",
                    hint="see `devbox remap` for the details")


def _pending_files(paths: Paths) -> list[dict[str, Any]]:
    entry = journal.pending(paths)
    return list(entry["files"]) if entry is not None else []


# --- after a crash ---------------------------------------------------------------------------


def _sweep_debris(paths: Paths) -> None:
    """What a killed devbox can leave beside the files: its temp files, and ``FILE.<pid>`` lock links
    of processes that no longer run (a stale ``FILE.lock`` itself is taken over by the next lock)."""
    for path in lock_order(paths, []):
        with contextlib.suppress(OSError):
            for entry in os.scandir(path.parent):
                name = entry.name
                if name.startswith(f".{path.name}.") and name.endswith(".devbox-tmp"):
                    files.remove(Path(entry.path))
                elif name.startswith(f"{path.name}.") and name[len(path.name) + 1:].isdigit():
                    pid = int(name[len(path.name) + 1:])
                    if not files.pid_alive(pid):
                        files.remove(Path(entry.path))




def recover(paths: Paths, restart_commands: list[list[str]], *, timeout: float = 60,
            progress: Callable[[str], None] = lambda _: None) -> bool:
    """Finish what a killed devbox left: every file back as before that change, dockerd restarted if it
    had been restarted on the new one.  ``True`` when there was something to recover."""
    with devbox_lock(paths):
        _sweep_debris(paths)
        entry = journal.pending(paths)
        if entry is None:
            return False
        progress(journal.describe_pending(entry) + "; putting the files back as they were before it")
        with _signals_ignored():
            if entry.get("state") == "restarting":
                journal.advance(paths, "rolling-back")
            _undo_files(paths, entry["files"], progress)
            if entry.get("state") in ("restarting", "rolling-back"):
                progress("restarting dockerd on the configuration from before that change")
                failure = _come_back(restart_commands, None, timeout)
                if failure is not None:
                    raise RollbackError(f"the files are back, but dockerd did not come back: {failure}",
                                        hint="check `journalctl -u docker` / the daemon log")
            journal.abandon(paths)
    return True


