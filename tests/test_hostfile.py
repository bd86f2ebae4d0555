"""shadow-utils-style locking, atomic writes and snapshots, on a real filesystem (tmp_path)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from devbox.errors import HostError
from devbox.host.files import Snapshot, backup, locked, write_atomic


def test_lock_is_shadow_compatible_and_released(tmp_path: Path) -> None:
    f = tmp_path / "subuid"
    f.write_text("x\n")
    with locked(f):
        lock = tmp_path / "subuid.lock"
        assert lock.read_text() == f"{os.getpid()}\0"
        assert not (tmp_path / f"subuid.{os.getpid()}").exists() or lock.stat().st_nlink == 2
    assert not lock.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["subuid"]


def test_stale_lock_of_dead_process_is_taken_over(tmp_path: Path) -> None:
    f = tmp_path / "subuid"
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / "subuid.lock").write_text(f"{dead.pid}\0")
    with locked(f, tries=2, delay=0.01):
        assert (tmp_path / "subuid.lock").read_text() == f"{os.getpid()}\0"


def test_empty_lock_file_is_not_stale(tmp_path: Path) -> None:
    f = tmp_path / "subuid"
    (tmp_path / "subuid.lock").write_text("")
    with pytest.raises(HostError) as exc:
        with locked(f, tries=2, delay=0.01):
            pass
    assert exc.value.one_line() == (
        f"{tmp_path}/subuid.lock: {tmp_path}/subuid is locked by process (empty lock file) — wait for "
        "usermod/useradd to finish, or remove the lock if no such process runs"
    )
    assert (tmp_path / "subuid.lock").exists()  # someone else's lock is never removed


def test_live_holder_is_waited_for(tmp_path: Path) -> None:
    f = tmp_path / "subuid"
    released: list[float] = []
    holding = threading.Event()

    def holder() -> None:
        with locked(f):
            holding.set()
            time.sleep(0.5)
            released.append(time.time())

    t = threading.Thread(target=holder)
    t.start()
    holding.wait()
    # the same PID holds the lock (a thread), so give the contender its own process
    r = subprocess.run(
        [sys.executable, "-c", f"import sys, time; sys.path.insert(0, {str(Path(__file__).parents[1])!r});"
         f"from devbox.host.files import locked; from pathlib import Path\n"
         f"with locked(Path({str(f)!r}), delay=0.05): print(time.time())"],
        capture_output=True, text=True,
    )
    t.join()
    assert r.returncode == 0, r.stderr
    acquired = float(r.stdout)
    assert acquired >= released[0]  # it got the lock only once the holder let go


_CONTENDER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from devbox.host.files import locked
target, log = Path(sys.argv[2]), sys.argv[3]
for _ in range(int(sys.argv[4])):
    with locked(target, delay=0.001, tries=100000):
        start = time.monotonic()
        with open(log, "a") as fh:
            fh.write(f"in {start}\\n")
        time.sleep(0.002)
        end = time.monotonic()
        with open(log, "a") as fh:
            fh.write(f"out {end}\\n")
"""


def test_stale_lock_is_taken_over_by_exactly_one_contender(tmp_path: Path) -> None:
    """Several devbox processes meet the same stale lock at once: never two hold the lock together."""
    f = tmp_path / "subuid"
    log = tmp_path / "log"
    for _round in range(8):
        dead = subprocess.Popen(["true"])
        dead.wait()
        (tmp_path / "subuid.lock").write_text(f"{dead.pid}\0")  # left behind by a killed holder
        # the window between judging a lock stale and removing it is widened to 50 ms
        env = {**os.environ, "DEVBOX_FAULT_DELAY": "judged-stale=0.05"}
        procs = [subprocess.Popen([sys.executable, "-c", _CONTENDER, str(Path(__file__).parents[1]), str(f), str(log), "3"],
                                  env=env) for _ in range(4)]
        assert all(p.wait(timeout=60) == 0 for p in procs)
    events = [line.split() for line in log.read_text().splitlines()]
    # the holder writes "in" then "out": with mutual exclusion the log strictly alternates
    assert [e[0] for e in events] == ["in", "out"] * (8 * 4 * 3)
    assert not (tmp_path / "subuid.lock").exists()


def test_atomic_write_keeps_mode_and_leaves_no_temp(tmp_path: Path) -> None:
    f = tmp_path / "daemon.json"
    f.write_text("{}\n")
    f.chmod(0o640)
    inode = f.stat().st_ino
    write_atomic(f, b'{"userns-remap": "mino"}\n')
    assert f.read_bytes() == b'{"userns-remap": "mino"}\n'
    assert f.stat().st_mode & 0o777 == 0o640
    assert f.stat().st_ino != inode  # replaced by rename, never rewritten in place
    assert [p.name for p in tmp_path.iterdir()] == ["daemon.json"]


def test_snapshot_restores_bytes_and_absence(tmp_path: Path) -> None:
    present, absent = tmp_path / "a", tmp_path / "b"
    present.write_bytes(b"one\r\ntwo")
    snaps = [Snapshot.take(present), Snapshot.take(absent)]
    present.write_text("changed")
    absent.write_text("created")
    for s in snaps:
        s.restore()
    assert present.read_bytes() == b"one\r\ntwo"
    assert not absent.exists()
    saved = backup(snaps[0], tmp_path / "backups", "20260101T000000.0000")
    assert saved is not None and saved.read_bytes() == b"one\r\ntwo"
    assert saved.stat().st_mode & 0o777 == 0o600
    assert backup(snaps[1], tmp_path / "backups", "x") is None
