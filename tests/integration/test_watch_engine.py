"""The ownership watcher against real containers: chowns inside remapped containers, root-owned files
from a daemon without remap, ``--fix`` through the helper container, and the background watcher's life.

devbox runs as the test user (uid 1500) the way a person would; project dirs are owned by 1500.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.daemon import RUN, SESSION, PrivateDaemon
from harness.ids import TEST_UID

USER = "devbox-tester"
UID = TEST_UID
HOME = f"/run/devbox-test/home/{USER}"
IMAGE = "debian:bookworm-slim"

TINY = """\
description = "one service running as container uid 5"

[services.app]
image = "debian:bookworm-slim"
command = ["sleep", "infinity"]
user = "5"
working_dir = "/work"
"""


def make_project(name: str) -> tuple[Path, Path]:
    """A project dir (owned by 1500, profile 'tiny') and its own state dir."""
    base = RUN / f"watch-{SESSION}"
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)
    root, state = base / name, base / f"{name}-state"
    for d in (root, state):
        if d.exists():
            shutil.rmtree(d)
    (root / ".devbox" / "profiles").mkdir(parents=True)
    (root / ".devbox" / "profiles" / "tiny.toml").write_text(TINY)
    (root / "devbox.toml").write_text(f'name = "{name}"\nprofile = "tiny"\n\n[watch]\nignore = [".devbox"]\n')
    state.mkdir()
    for d in (root, state):
        for dirpath, _, files in os.walk(d):
            os.chown(dirpath, UID, UID)
            for f in files:
                os.chown(os.path.join(dirpath, f), UID, UID)
    return root, state


def env_for(engine: PrivateDaemon, state: Path) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "HOME": HOME, "COLUMNS": "250", "LANG": "C.UTF-8",
            "DEVBOX_STATE_DIR": str(state), **engine.env}


def as_user(argv: list[str]) -> list[str]:
    return ["setpriv", "--reuid", USER, "--regid", USER, "--init-groups", "--", *argv]


def devbox(engine: PrivateDaemon, root: Path, state: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(as_user([sys.executable, "-m", "devbox", *args]), cwd=root, env=env_for(engine, state),
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def no_traceback(r: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in r.stderr, r.stderr


class LiveWatch:
    """``devbox watch --json`` as the test user; its JSON lines collected by a reader thread."""

    def __init__(self, engine: PrivateDaemon, root: Path, state: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            as_user([sys.executable, "-m", "devbox", "watch", "--json", *args]), cwd=root, env=env_for(engine, state),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
        )
        self.records: list[dict[str, Any]] = []
        self._q: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self._stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()
        # the watches are in place once the first scan has been reported
        self.wait_stderr(lambda text: "watching " in text, 30)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._q.put(json.loads(line))

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def wait_stderr(self, pred: Callable[[str], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not pred(self.stderr):
            assert self.proc.poll() is None, f"devbox watch exited with {self.proc.returncode}:\n{self.stderr}"
            assert time.monotonic() < deadline, f"timed out; stderr:\n{self.stderr}"
            time.sleep(0.02)

    def wait_for(self, pred: Callable[[list[dict[str, Any]]], bool], timeout: float = 20) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while not pred(self.records):
            left = deadline - time.monotonic()
            assert left > 0, f"timed out with {len(self.records)} records; stderr:\n{self.stderr}"
            try:
                self.records.append(self._q.get(timeout=min(left, 0.5)))
            except queue.Empty:
                assert self.proc.poll() is None, f"devbox watch exited with {self.proc.returncode}:\n{self.stderr}"
        return self.records

    def collect(self, seconds: float) -> None:
        """Take in whatever arrives during ``seconds``."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                self.records.append(self._q.get(timeout=left))
            except queue.Empty:
                break

    def leaks(self) -> dict[str, dict[str, Any]]:
        return {r["path"]: r for r in self.records if r["state"] == "leak"}

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=20)
        err = self.stderr
        assert self.proc.returncode == 0, err
        assert "Traceback" not in err
        return err


@pytest.fixture
def remapped(remap_engine: PrivateDaemon) -> Iterator[PrivateDaemon]:
    yield remap_engine
    for cid in remap_engine.docker("ps", "-aq", "--filter", "label=devbox.project").stdout.split():
        remap_engine.docker("rm", "-f", cid, check=False)


def iso_ts(text: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# --- remapped daemon: chowns inside containers, bursts, --fix --------------------------------


def test_container_chowns_flagged_with_service_and_fixed(remapped: PrivateDaemon) -> None:
    root, state = make_project("wremap")
    w = LiveWatch(remapped, root, state)
    try:
        # 20 chowns to container uid 5 (service app), each stamped just before it happens
        script = "for i in $(seq 1 20); do : > /work/c$i; date +%s.%N; chown 5:5 /work/c$i; done"
        out = remapped.docker("run", "--rm", "-v", f"{root}:/work", IMAGE, "sh", "-c", script).stdout.split()
        stamps = {str(root / f"c{i}"): float(t) for i, t in enumerate(out, 1)}
        w.wait_for(lambda recs: set(stamps) <= {r["path"] for r in recs})
        leaks = w.leaks()
        for p in stamps:
            r = leaks[p]
            assert (r["uid"], r["gid"], r["kind"], r["container_uid"], r["service"]) == (200004, 200004, "subordinate", 5, "app")
        latency = [iso_ts(leaks[p]["at"]) - t for p, t in stamps.items()]
        assert statistics.median(latency) < 0.05, sorted(latency)
        assert max(latency) < 1.0, sorted(latency)

        # bursts: new directories and a chown right behind them, before any watch can exist
        burst = "for i in $(seq 1 20); do mkdir -p /work/a$i/b/c && : > /work/a$i/b/c/f && chown -R 7:7 /work/a$i; done"
        remapped.docker("run", "--rm", "-v", f"{root}:/work", IMAGE, "sh", "-c", burst)
        want = {str(root / f"a{i}" / sub) for i in range(1, 21) for sub in ("", "b", "b/c", "b/c/f")}
        want = {p.rstrip("/") for p in want}
        w.wait_for(lambda recs: want <= {r["path"] for r in recs if r["state"] == "leak"})
        w.collect(0.5)  # a duplicate would arrive right behind the first record
        leak_paths = [r["path"] for r in w.records if r["state"] == "leak"]
        assert len(leak_paths) == len(set(leak_paths)) == 100, leak_paths
        assert all(w.leaks()[p]["container_uid"] == 7 and w.leaks()[p]["service"] is None for p in want)

        # a file of real root's: not mapped into any container
        rootfile = root / "root-owned"
        rootfile.write_text("x")
        os.chown(rootfile, 0, 0)
        w.wait_for(lambda recs: str(rootfile) in {r["path"] for r in recs})
        assert w.leaks()[str(rootfile)]["kind"] == "root"

        r = devbox(remapped, root, state, "leaks", "--json")
        no_traceback(r)
        assert r.returncode == 1
        out = json.loads(r.stdout)
        assert out["unreadable"] == []
        listed = {rec["path"]: rec for rec in out["leaks"]}
        assert set(listed) == set(stamps) | want | {str(rootfile)}
        assert listed[str(root / "c1")]["service"] == "app"

        r = devbox(remapped, root, state, "leaks", "--fix")
        no_traceback(r)
        assert r.returncode == 1, r.stdout + r.stderr
        assert r.stdout == (
            "fixed 100 path(s): yours again (verified beneath the work dir)\n"
            "1 path(s) need root (owned by ids not mapped into the containers (real root, other accounts)); run:\n"
            "sudo devbox leaks --fix   (devbox, as root, chowns them beneath the work dir only)\n"
        )
        for p in set(stamps) | want:
            st = os.lstat(p)
            assert (st.st_uid, st.st_gid) == (UID, UID), p
        # the watcher sees the helper's chowns as fixes
        w.wait_for(lambda recs: set(stamps) | want <= {r["path"] for r in recs if r["state"] == "fixed"})
        r = devbox(remapped, root, state, "leaks", "--json")
        assert [rec["path"] for rec in json.loads(r.stdout)["leaks"]] == [str(rootfile)]
        assert remapped.docker("ps", "-aq", "--filter", "label=devbox.helper").stdout == ""
    finally:
        w.stop()


def test_watch_fix_gives_files_back_as_they_appear(remapped: PrivateDaemon) -> None:
    root, state = make_project("wautofix")
    w = LiveWatch(remapped, root, state, "--fix")
    try:
        remapped.docker("run", "--rm", "-v", f"{root}:/work", IMAGE, "sh", "-c",
                        "mkdir -p /work/out/deep && : > /work/out/deep/f && chown -R 5:5 /work/out")
        paths = {str(root / "out"), str(root / "out/deep"), str(root / "out/deep/f")}
        w.wait_for(lambda recs: paths <= {r["path"] for r in recs if r["state"] == "fixed"})
        for p in paths:
            st = os.lstat(p)
            assert (st.st_uid, st.st_gid) == (UID, UID)
    finally:
        err = w.stop()
    assert "devbox: warning" not in err, err


# --- a daemon without remap: root-owned files ---------------------------------------------------


def test_plain_daemon_root_owned_files_need_sudo(plain_engine: PrivateDaemon, test_user: dict[str, object]) -> None:
    root, state = make_project("wplain")
    w = LiveWatch(plain_engine, root, state)
    try:
        plain_engine.docker("run", "--rm", "-v", f"{root}:/work", IMAGE, "sh", "-c", "mkdir /work/out && : > /work/out/f")
        paths = [str(root / "out"), str(root / "out/f")]
        w.wait_for(lambda recs: set(paths) <= {r["path"] for r in recs})
        for p in paths:
            r = w.leaks()[p]
            assert (r["uid"], r["gid"], r["kind"], r["container_uid"], r["service"]) == (0, 0, "root", None, None)
    finally:
        w.stop()

    r = devbox(plain_engine, root, state, "leaks", "--fix")
    no_traceback(r)
    assert r.returncode == 1
    assert r.stdout == (
        "2 path(s) need root (owned by ids not mapped into the containers (real root, other accounts)); run:\n"
        "sudo devbox leaks --fix   (devbox, as root, chowns them beneath the work dir only)\n"
    )
    assert os.lstat(paths[1]).st_uid == 0

    # a container-uid file on this daemon: a helper here would run as real root, so only sudo helps
    sub = root / "sub"
    sub.write_text("x")
    os.chown(sub, 200004, 200004)
    r = devbox(plain_engine, root, state, "leaks", "--fix")
    no_traceback(r)
    assert r.returncode == 1
    assert r.stderr == (
        f"devbox: warning: no helper container: the engine at {plain_engine.host} runs containers as real root "
        "(no userns-remap), so it would chown to real root\n"
    )
    assert r.stdout == (
        "3 path(s) need root (the engine cannot help); run:\n"
        "sudo devbox leaks --fix   (devbox, as root, chowns them beneath the work dir only)\n"
    )
    assert os.lstat(sub).st_uid == 200004
    # the printed command: devbox as root (under sudo) gives every one of them back, beneath the work dir
    r = subprocess.run([sys.executable, "-m", "devbox", "leaks", "--fix"], cwd=root, capture_output=True, text=True,
                       env={**env_for(plain_engine, state), "SUDO_USER": USER}, timeout=120)
    no_traceback(r)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == "fixed 3 path(s): yours again (verified beneath the work dir)\n"
    for p in (paths[0], paths[1], str(sub)):
        assert (os.lstat(p).st_uid, os.lstat(p).st_gid) == (UID, UID), p


# --- the background watcher: up, crash, restart, down ----------------------------------------------


def test_background_watcher_lifecycle(remapped: PrivateDaemon) -> None:
    root, state = make_project("wbg")
    pidfile, log = state / "watch" / "wbg.pid", state / "watch" / "wbg.log"
    app = "devbox-wbg-app"
    r = devbox(remapped, root, state, "up", "-d")
    no_traceback(r)
    assert r.returncode == 0, r.stdout + r.stderr
    pid = int(pidfile.read_text())
    assert f"ownership watcher running (pid {pid}; log {log}; devbox leaks lists what it finds)\n" in r.stderr

    def leaks_json() -> dict[str, Any]:
        out = devbox(remapped, root, state, "leaks", "--json")
        no_traceback(out)
        data: dict[str, Any] = json.loads(out.stdout)
        return data

    def leaks_now() -> dict[str, dict[str, Any]]:
        return {rec["path"]: rec for rec in leaks_json()["leaks"]}

    def poll_leaks(path: Path, timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            found = leaks_now()
            if str(path) in found:
                return found[str(path)]
            assert time.monotonic() < deadline, f"{path} never recorded; log:\n{log.read_text()}"
            time.sleep(0.1)

    remapped.docker("exec", "-u", "0", app, "sh", "-c", "touch /work/x && chown 5:5 /work/x")
    rec = poll_leaks(root / "x")
    assert (rec["container_uid"], rec["service"], rec["kind"]) == (5, "app", "subordinate")

    # a directory a container user keeps to itself: a leak, and its contents unknown to the user's watcher
    remapped.docker("exec", "-u", "0", app, "sh", "-c",
                    "mkdir -m 700 /work/private && touch /work/private/f && chown -R 5:5 /work/private")
    rec = poll_leaks(root / "private")
    assert (rec["container_uid"], rec["is_dir"]) == (5, True)
    assert leaks_json()["unreadable"] == [str(root / "private")]
    deadline = time.monotonic() + 10
    while "private/: cannot be read, so what is inside it is not checked" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)

    r = devbox(remapped, root, state, "ps", "--json")
    assert json.loads(r.stdout)["watcher"] == {"state": "running", "pid": pid, "pidfile": str(pidfile), "log": str(log)}
    r = devbox(remapped, root, state, "ps")
    assert f"ownership watcher: running (pid {pid}; log {log})\n" in r.stdout

    # converging again leaves the running watcher alone
    r = devbox(remapped, root, state, "up", "-d")
    assert r.returncode == 0 and "ownership watcher" not in r.stderr, r.stderr
    assert int(pidfile.read_text()) == pid

    # killed: ps says so, it is not silently gone
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}/cmdline").exists() and Path(f"/proc/{pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    r = devbox(remapped, root, state, "ps")
    no_traceback(r)
    assert r.returncode == 0
    assert f"devbox: warning: ownership watcher: crashed (pid {pid} is gone; log {log}) — devbox up restarts it\n" in r.stderr
    assert json.loads(devbox(remapped, root, state, "ps", "--json").stdout)["watcher"]["state"] == "crashed"

    # meanwhile, a leak nobody watched; the restarted watcher's first scan finds it
    remapped.docker("exec", "-u", "0", app, "sh", "-c", "mkdir -p /work/later/d && touch /work/later/d/y && chown -R 5:5 /work/later")
    r = devbox(remapped, root, state, "up", "-d")
    no_traceback(r)
    assert f"devbox: warning: the ownership watcher (pid {pid}) had died; restarting it (its log: {log})\n" in r.stderr
    new_pid = int(pidfile.read_text())
    assert new_pid != pid
    found = leaks_json()  # no polling: the restart waited for the first scan
    assert {str(root / "later"), str(root / "later/d"), str(root / "later/d/y"), str(root / "x"), str(root / "private")} == {
        rec["path"] for rec in found["leaks"]}
    assert found["unreadable"] == [str(root / "private")]

    r = devbox(remapped, root, state, "down")
    no_traceback(r)
    assert r.returncode == 0
    assert f"ownership watcher stopped (pid {new_pid})\n" in r.stderr
    assert not pidfile.exists()
    assert not Path(f"/proc/{new_pid}/cmdline").exists() or not Path(f"/proc/{new_pid}/cmdline").read_bytes()
    assert "stopped watching after" in log.read_text()
