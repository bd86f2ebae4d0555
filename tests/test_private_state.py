"""Per-user state is private: leak records, the watcher's pidfile and log, error.log — 0600 files in 0700 dirs."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from devbox.host.files import open_private, private_dir
from devbox.watch import process
from devbox.watch.leaks import Kind, Leak, RecordLog

REPO = Path(__file__).resolve().parents[1]


def mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def test_private_dir_makes_each_missing_level_0700_and_leaves_existing_ones(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    old = os.umask(0o000)  # a permissive umask must not leak through
    try:
        private_dir(tmp_path / "a" / "b" / "c")
    finally:
        os.umask(old)
    assert [mode(tmp_path / p) for p in ("a", "a/b", "a/b/c")] == [0o700] * 3
    assert mode(tmp_path) == 0o755


def test_leak_records_are_private(tmp_path: Path) -> None:
    log = RecordLog(tmp_path / "state" / "watch" / "p.leaks.jsonl")
    log.write(Leak("/w/f", 100004, 100004, Kind.SUBORDINATE, 4, 4))
    log.close()
    assert mode(tmp_path / "state") == 0o700 and mode(tmp_path / "state" / "watch") == 0o700
    assert mode(tmp_path / "state" / "watch" / "p.leaks.jsonl") == 0o600
    log.write_unreadable([], 0.0)  # the list of unreadable directories beside the records
    assert mode(log.unreadable_path) == 0o600


def test_watcher_pidfile_and_log_are_private(tmp_path: Path) -> None:
    pidfile = tmp_path / "state" / "watch" / "p.pid"
    private_dir(pidfile.parent)
    process._write_pidfile(pidfile, 4242, None)
    assert mode(pidfile) == 0o600 and mode(pidfile.parent) == 0o700
    os.close(open_private(tmp_path / "state" / "watch" / "p.log"))
    assert mode(tmp_path / "state" / "watch" / "p.log") == 0o600


def test_error_log_is_private(tmp_path: Path) -> None:
    code = ("import sys; sys.argv=['devbox', 'x']\n"
            "from devbox import cli\n"
            "try:\n    raise RuntimeError('boom')\nexcept RuntimeError:\n    print(cli._save_traceback())\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO), "DEVBOX_STATE_DIR": str(tmp_path / "st")})
    assert r.returncode == 0, r.stderr
    log = Path(r.stdout.strip())
    assert log == tmp_path / "st" / "error.log"
    assert mode(log) == 0o600 and mode(log.parent) == 0o700
    assert "RuntimeError: boom" in log.read_text()


def test_a_state_dir_left_open_by_an_earlier_version_is_closed(tmp_path: Path) -> None:
    d = tmp_path / "watch"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    private_dir(d)
    assert mode(d) == 0o700
