"""The background ownership watcher's process: started by ``devbox up``, stopped by ``down``, shown by ``ps``.

It is ``python -m devbox watch --background`` run in the project directory, in
its own session, with its output appended to ``Paths.watcher_log(NAME)`` and
its PID in ``Paths.watcher_pidfile(NAME)`` (the contract :mod:`devbox.doctor`
reads).  A pidfile whose process is gone (or is no longer a devbox watcher:
PIDs get reused) means the watcher *crashed*: that is reported, never treated
as "not running".  Only a clean stop removes the pidfile.

Run as root for a user (``sudo devbox up``), the watcher runs *as that user*,
with its files in that user's state directory: it needs no privilege, and
nothing it writes may become another root-owned file in their home.
"""

from __future__ import annotations

import dataclasses
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devbox import console
from devbox.errors import DevboxError
from devbox.host.files import open_private, private_dir, write_atomic
from devbox.host.user import User, acting_for_other, paths_for, resolve_user
from devbox.paths import Paths
from devbox.watch.leaks import watch_user

if TYPE_CHECKING:
    from devbox.core.model import Project

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


@dataclasses.dataclass(frozen=True)
class WatcherStatus:
    state: str  # "running", "not running", "crashed"
    pid: int | None
    pidfile: Path
    log: Path

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "pid": self.pid, "pidfile": str(self.pidfile), "log": str(self.log)}

    def line(self) -> str:
        if self.state == "running":
            return f"ownership watcher: running (pid {self.pid}; log {self.log})"
        if self.state == "crashed":
            return f"ownership watcher: crashed (pid {self.pid} is gone; log {self.log}) — devbox up restarts it"
        return "ownership watcher: not running (devbox up starts it)"


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [os.fsdecode(a) for a in raw.split(b"\0") if a]


def _is_watcher(pid: int) -> bool:
    argv = _cmdline(pid)
    if not argv:
        return False  # gone, or a zombie
    # really ours, not a reused PID
    return "devbox" in argv and "watch" in argv and "--background" in argv


def _read_pid(pidfile: Path) -> int | None:
    try:
        text = pidfile.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError:
        return -1
    return int(text) if text.isdigit() else -1


def _default_paths() -> Paths:
    return paths_for(resolve_user())


def status(project: str, paths: Paths | None = None) -> WatcherStatus:
    paths = paths or _default_paths()
    pidfile, log = paths.watcher_pidfile(project), paths.watcher_log(project)
    pid = _read_pid(pidfile)
    if pid is None:
        return WatcherStatus("not running", None, pidfile, log)
    if pid > 0 and _is_watcher(pid):
        return WatcherStatus("running", pid, pidfile, log)
    return WatcherStatus("crashed", pid if pid > 0 else None, pidfile, log)


def show(st: WatcherStatus) -> None:
    if st.state == "crashed":
        console.warn(st.line())
    else:
        console.say(st.line())


def _argv(profile: str) -> list[str]:
    return [sys.executable, "-m", "devbox", "watch", "--background", "--profile", profile]


def _write_pidfile(pidfile: Path, pid: int, owner: User | None) -> None:
    write_atomic(pidfile, f"{pid}\n".encode(), mode=0o600)
    if owner is not None:
        os.chown(pidfile, owner.uid, owner.gid)


def _log_tail(log: Path, lines: int = 1) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


class Launch:
    """A watcher start begun by :func:`launch`: :meth:`wait` collects its ready signal, :meth:`cancel` takes it back.

    Split so that ``up`` can let the watcher import and scan while the engine
    starts the containers, and only wait for it at the end.
    """

    def __init__(self, project: str, paths: Paths, status: WatcherStatus,
                 proc: subprocess.Popen[bytes] | None = None, ready_fd: int | None = None) -> None:
        self.project = project
        self.paths = paths
        self.status = status
        self.proc = proc
        self._ready_fd = ready_fd

    def wait(self) -> WatcherStatus:
        """Until the watcher's watches and first scan are done (at most ``READY_TIMEOUT``); say how it went."""
        proc, fd = self.proc, self._ready_fd
        if proc is None or fd is None:
            return self.status  # one for this profile was already running
        self._ready_fd = None
        try:
            ready, _, _ = select.select([fd], [], [], READY_TIMEOUT)
            said = os.read(fd, 64) if ready else None
        finally:
            os.close(fd)
        log = self.status.log
        if said is None:
            console.warn(f"the ownership watcher (pid {proc.pid}) is still scanning after {READY_TIMEOUT:g} s; it carries on in the background (log: {log})")
        elif not said.startswith(b"ready"):
            proc.wait(timeout=5)
            console.warn(f"the ownership watcher did not start: {_log_tail(log) or 'no output'} (log: {log})")
        else:
            console.info(f"ownership watcher running (pid {proc.pid}; log {log}; devbox leaks lists what it finds)")
        return status(self.project, self.paths)

    def cancel(self) -> None:
        """Stop a watcher this launch started (``up`` failed before the stack was up); leave any other alone."""
        proc, fd = self.proc, self._ready_fd
        if proc is None:
            return
        self.proc, self._ready_fd = None, None
        if fd is not None:
            os.close(fd)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if _read_pid(self.status.pidfile) == proc.pid:
            self.status.pidfile.unlink(missing_ok=True)


def launch(project: str, root: Path, profile: str, user: User, paths: Paths | None = None) -> Launch:
    """Start the watcher for ``user`` unless one for this profile already runs; do not wait for it
    (see :meth:`Launch.wait`).  As root acting for ``user``, the watcher runs as ``user``."""
    paths = paths or paths_for(user)
    st = status(project, paths)
    argv = _argv(profile)
    if st.state == "running" and st.pid is not None:
        running = _cmdline(st.pid) or []
        if running[: len(argv)] == argv:
            return Launch(project, paths, st)
        stop(project, paths, quiet=True)  # another profile: other services to name
    elif st.state == "crashed":
        console.warn(f"the ownership watcher (pid {st.pid}) had died; restarting it (its log: {st.log})")
    owner = user if acting_for_other(user) else None
    private_dir(st.log.parent, owner)
    read_end, write_end = os.pipe()
    env = dict(os.environ)
    package_parent = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH", "")) if p)
    as_user: dict[str, Any] = {}
    if owner is not None:
        # root's own environment must not steer the user's watcher to root's state dir
        env = {k: v for k, v in env.items() if not k.startswith("XDG_")}
        env.update(HOME=owner.home, USER=owner.name, LOGNAME=owner.name)
        as_user = {"user": owner.uid, "group": owner.gid, "extra_groups": os.getgrouplist(owner.name, owner.gid)}
    try:
        with open(open_private(st.log), "ab") as log:
            if owner is not None:
                os.fchown(log.fileno(), owner.uid, owner.gid)
            log.write(f"--- devbox watcher starting {time.strftime('%Y-%m-%dT%H:%M:%S%z')} (profile {profile})\n".encode())
            log.flush()
            proc = subprocess.Popen(
                [*argv, "--ready-fd", str(write_end)],
                # the very binary running now, even when the path to sys.executable crosses a
                # directory this user cannot search (a venv made from root's interpreter)
                executable="/proc/self/exe" if os.path.exists("/proc/self/exe") else None,
                cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                pass_fds=(write_end,), start_new_session=True, **as_user,
            )
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    _write_pidfile(st.pidfile, proc.pid, owner)
    return Launch(project, paths, st, proc, read_end)


def stop(project: str, paths: Paths | None = None, *, quiet: bool = False) -> WatcherStatus:
    """Stop the watcher (SIGTERM, then SIGKILL after a while) and remove its pidfile; report a crashed one."""
    paths = paths or _default_paths()
    st = status(project, paths)
    if st.state == "crashed":
        console.warn(f"the ownership watcher had crashed (pid {st.pid} was gone; its log: {st.log})")
        st.pidfile.unlink(missing_ok=True)
        return st
    if st.state != "running" or st.pid is None:
        return st
    pid = st.pid
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    delay = 0.01
    while _is_watcher(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
    st.pidfile.unlink(missing_ok=True)
    if not quiet:
        console.info(f"ownership watcher stopped (pid {pid})")
    return st


def forget_if_mine(pidfile: Path) -> None:
    """The watcher itself, on a clean stop: remove the pidfile if it still names this process."""
    if _read_pid(pidfile) == os.getpid():
        pidfile.unlink(missing_ok=True)


def on_up(project: Project, profile: str) -> Launch | None:
    """``devbox up``'s (and ``switch``'s) hook: launch the watcher of the project's writable work dirs.

    ``None`` when there is nothing to watch: no writable work dir, or devbox runs
    as root without SUDO_USER (every file is root's own; the watcher would refuse).
    """
    if not any(not m.read_only for m in project.workdirs):
        return None
    try:
        user = watch_user()
    except DevboxError as exc:
        console.warn(f"the ownership watcher was not started: {exc.one_line()}")
        return None
    return launch(project.name, project.root, profile, user)
