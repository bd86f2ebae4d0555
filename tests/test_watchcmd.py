"""The project side of the watcher: helper mounts and batches, service uids, the watcher process's states,
and the CLI's one-line refusals.  (Containers and the background watcher for real: tests/integration/test_watch_engine.py.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devbox.core.model import Service
from devbox.paths import Paths
from devbox.watch import fixhelper
from devbox.watch import process as watcher_proc


def test_mount_plan_mounts_the_work_dirs_only_and_keeps_entries_unmounted() -> None:
    mounts, inside = fixhelper.mount_plan([("/p", "/p/a/b/f"), ("/p", "/p/a/g"), ("/q", "/q/x"), ("/p", "/p/a")])
    assert mounts == {"/p": "/fix/0", "/q": "/fix/1"}
    assert inside == ["/fix/0/a/b/f", "/fix/0/a/g", "/fix/1/x", "/fix/0/a"]


def test_mount_plan_sibling_prefix_is_not_a_parent() -> None:
    mounts, inside = fixhelper.mount_plan([("/p/ab", "/p/ab/f"), ("/p/a", "/p/a/f")])
    assert mounts == {"/p/ab": "/fix/0", "/p/a": "/fix/1"}
    assert inside == ["/fix/0/f", "/fix/1/f"]


def test_batches_stay_under_the_argument_budget() -> None:
    pairs = [("/work", f"/work/{'x' * 200}/{i}") for i in range(2000)]
    batches = fixhelper._batches(pairs)
    assert [p for b in batches for p in b] == pairs
    assert len(batches) > 1
    assert all(sum(len(p) + 1 for _, p in b) <= fixhelper.ARGS_BUDGET for b in batches)


def test_helper_image_is_deterministic_and_holds_chown() -> None:
    import io
    import tarfile

    data = fixhelper.helper_image_tar()
    assert data == fixhelper.helper_image_tar()
    names = tarfile.open(fileobj=io.BytesIO(data)).getnames()
    assert "bin/chown" in names and "fix" in names
    assert any(n.endswith(".so.6") or "libc" in n for n in names)


@pytest.mark.parametrize(("user", "uid"), [(None, 0), ("5", 5), ("1000:1000", 1000), ("postgres", None), ("node:node", None)])
def test_container_uid_of_a_service(user: str | None, uid: int | None) -> None:
    assert Service(name="s", image="i", user=user).container_uid == uid


# --- the watcher process's states ----------------------------------------------------------------


def fake_watcher() -> subprocess.Popen[bytes]:
    """A process whose command line is a background watcher's (once it has exec'd)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "devbox", "watch", "--background"])
    deadline = time.monotonic() + 10
    while b"--background" not in Path(f"/proc/{proc.pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline
        time.sleep(0.005)
    return proc


def paths_in(tmp_path: Path) -> Paths:
    return Paths(user_state=tmp_path / "state")


def test_status_not_running_running_and_crashed(tmp_path: Path) -> None:
    paths = paths_in(tmp_path)
    pidfile, log = paths.watcher_pidfile("p"), paths.watcher_log("p")
    assert watcher_proc.status("p", paths) == watcher_proc.WatcherStatus("not running", None, pidfile, log)
    assert watcher_proc.status("p", paths).line() == "ownership watcher: not running (devbox up starts it)"

    proc = fake_watcher()
    try:
        pidfile.parent.mkdir(parents=True)
        pidfile.write_text(f"{proc.pid}\n")
        st = watcher_proc.status("p", paths)
        assert (st.state, st.pid) == ("running", proc.pid)
        assert st.line() == f"ownership watcher: running (pid {proc.pid}; log {log})"
    finally:
        proc.kill()
        proc.wait()
    st = watcher_proc.status("p", paths)
    assert (st.state, st.pid) == ("crashed", proc.pid)
    assert st.line() == f"ownership watcher: crashed (pid {proc.pid} is gone; log {log}) — devbox up restarts it"


def test_a_reused_pid_is_not_the_watcher(tmp_path: Path) -> None:
    paths = paths_in(tmp_path)
    pidfile = paths.watcher_pidfile("p")
    pidfile.parent.mkdir(parents=True)
    pidfile.write_text(f"{os.getpid()}\n")  # alive, but pytest, not a watcher
    assert watcher_proc.status("p", paths).state == "crashed"
    pidfile.write_text("garbage\n")
    assert watcher_proc.status("p", paths) == watcher_proc.WatcherStatus("crashed", None, pidfile, paths.watcher_log("p"))


def test_stop_removes_a_crashed_watchers_pidfile_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = paths_in(tmp_path)
    pidfile = paths.watcher_pidfile("p")
    pidfile.parent.mkdir(parents=True)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    pidfile.write_text(f"{proc.pid}\n")
    assert watcher_proc.stop("p", paths).state == "crashed"
    assert not pidfile.exists()
    err = capsys.readouterr().err
    assert " ".join(err.split()) == (
        f"devbox: warning: the ownership watcher had crashed (pid {proc.pid} was gone; its log: {paths.watcher_log('p')})"
    )


def test_stop_terminates_a_running_watcher(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = paths_in(tmp_path)
    pidfile = paths.watcher_pidfile("p")
    pidfile.parent.mkdir(parents=True)
    proc = fake_watcher()
    pidfile.write_text(f"{proc.pid}\n")
    started = time.monotonic()
    watcher_proc.stop("p", paths)
    assert proc.wait(timeout=5) == -15
    assert time.monotonic() - started < 5
    assert not pidfile.exists()
    assert capsys.readouterr().err == f"ownership watcher stopped (pid {proc.pid})\n"


def test_cancel_stops_the_watcher_a_launch_started_and_forgets_its_pidfile(tmp_path: Path) -> None:
    paths = paths_in(tmp_path)
    pidfile = paths.watcher_pidfile("p")
    pidfile.parent.mkdir(parents=True)
    proc = fake_watcher()
    pidfile.write_text(f"{proc.pid}\n")
    read_end, write_end = os.pipe()
    os.close(write_end)
    launch = watcher_proc.Launch("p", paths, watcher_proc.status("p", paths), proc, read_end)
    launch.cancel()
    assert proc.poll() == -15
    assert not pidfile.exists()
    with pytest.raises(OSError):
        os.fstat(read_end)  # closed
    launch.cancel()  # twice: nothing left to do


def test_cancel_leaves_a_watcher_it_did_not_start_alone(tmp_path: Path) -> None:
    paths = paths_in(tmp_path)
    pidfile = paths.watcher_pidfile("p")
    pidfile.parent.mkdir(parents=True)
    proc = fake_watcher()
    try:
        pidfile.write_text(f"{proc.pid}\n")
        launch = watcher_proc.Launch("p", paths, watcher_proc.status("p", paths))  # it was running already
        launch.cancel()
        assert proc.poll() is None and pidfile.exists()
        assert launch.wait() == watcher_proc.status("p", paths)
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(os.geteuid() != 0, reason="the refusal is for root")
def test_up_as_root_without_sudo_user_starts_no_watcher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from devbox.config import resolve as config

    monkeypatch.delenv("SUDO_USER", raising=False)
    monkeypatch.setenv("DEVBOX_STATE_DIR", str(tmp_path / ".state"))
    (tmp_path / "devbox.toml").write_text('name = "p"\n')
    assert watcher_proc.on_up(config.find_project(tmp_path), "python") is None
    assert " ".join(capsys.readouterr().err.split()) == (
        "devbox: warning: the ownership watcher was not started: as root every file is yours: there is nothing to watch for — "
        "run devbox as your own user (or with sudo, which sets SUDO_USER)"
    )
    assert not (tmp_path / ".state").exists()


# --- the CLI's refusals: one line, exit 2 -----------------------------------------------------------


def run_cli(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {"PATH": os.environ["PATH"], "COLUMNS": "250", "DEVBOX_STATE_DIR": str(cwd / ".state"), **(env or {})}
    return subprocess.run([sys.executable, "-m", "devbox", *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=60)


def test_watch_outside_a_project_names_the_way_out(tmp_path: Path) -> None:
    r = run_cli(tmp_path, "watch")
    assert r.returncode == 2
    assert r.stderr == (
        f"devbox: error: no devbox.toml in {tmp_path} or any parent directory — run it in a project (devbox init writes one), "
        "or name the directories: devbox watch PATH...\n"
    )


def test_watch_refuses_a_file_argument(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    r = run_cli(tmp_path, "watch", "f")
    assert (r.returncode, r.stderr) == (2, "devbox: error: f: not a directory — devbox watch takes directories\n")


@pytest.mark.skipif(os.geteuid() != 0, reason="the refusal is for root")
def test_leaks_as_root_without_sudo_user_is_refused(tmp_path: Path) -> None:
    (tmp_path / "devbox.toml").write_text('name = "p"\n')
    r = run_cli(tmp_path, "leaks")
    assert r.returncode == 2
    assert r.stderr == (
        "devbox: error: as root every file is yours: there is nothing to watch for — "
        "run devbox as your own user (or with sudo, which sets SUDO_USER)\n"
    )


# --- devbox leaks: directories it cannot read -------------------------------------------------------------

NOBODY = 65534  # root reads every directory: these run devbox as nobody
LEAK_UID = 100004


@pytest.fixture
def locked_project() -> Iterator[tuple[Path, Path]]:
    """A project of nobody's holding ``locked/``: a directory of another uid, mode 000.  Under /tmp: tmp_path's
    parents are root's 0700 directories, which nobody could not cross."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run devbox as another user")
    base = Path(tempfile.mkdtemp(prefix="devbox-leaks-"))
    root, state = base / "p", base / "state"
    (root / "src").mkdir(parents=True)
    (root / "src" / "main.py").write_text("")
    (root / "devbox.toml").write_text('name = "p"\n')
    (root / "locked").mkdir()
    (root / "locked" / "secret").write_text("")
    state.mkdir()
    for dirpath, _, files in os.walk(base):
        os.chown(dirpath, NOBODY, NOBODY)
        for f in files:
            os.chown(os.path.join(dirpath, f), NOBODY, NOBODY)
    os.chown(root / "locked", LEAK_UID, LEAK_UID)
    (root / "locked").chmod(0)
    yield root, state
    shutil.rmtree(base, ignore_errors=True)


def leaks_as_nobody(root: Path, state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "COLUMNS": "250", "DEVBOX_STATE_DIR": str(state), "HOME": str(state)}
    argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--", sys.executable, "-m", "devbox", "leaks", *args]
    return subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=60)


def test_leaks_says_which_directories_it_could_not_read(locked_project: tuple[Path, Path]) -> None:
    root, state = locked_project
    r = leaks_as_nobody(root, state)
    assert r.returncode == 1, r.stderr
    assert "locked/" in r.stdout and "unmapped uid 100004" in r.stdout  # the directory itself is a leak
    err = [" ".join(line.split()) for line in r.stderr.splitlines()]
    assert err == [
        f"1 leaked path(s) from a scan of {root} (no watcher running); 'devbox leaks --fix' gives them back to you",
        "devbox: warning: locked/: cannot be read, so what is inside it is not checked",
    ]
    # unreadable, and not a leak: the user's own directory, mode 000
    shutil.rmtree(root / "src")
    subprocess.run(["chown", f"{NOBODY}:{NOBODY}", str(root / "locked")], check=True)
    r = leaks_as_nobody(root, state)
    assert r.returncode == 1 and r.stdout == ""
    assert [" ".join(line.split()) for line in r.stderr.splitlines()] == [
        f"no leaked files in what could be read (from a scan of {root} (no watcher running))",
        "devbox: warning: locked/: cannot be read, so what is inside it is not checked",
    ]


def test_leaks_json_keeps_the_records_under_leaks_and_adds_unreadable(locked_project: tuple[Path, Path]) -> None:
    root, state = locked_project
    r = leaks_as_nobody(root, state, "--json")
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    assert set(out) == {"leaks", "unreadable"}
    assert [(rec["path"], rec["uid"], rec["kind"], rec["state"]) for rec in out["leaks"]] == [
        (str(root / "locked"), LEAK_UID, "unmapped", "leak")
    ]
    assert out["unreadable"] == [str(root / "locked")]
    (root / "locked").chmod(0o755)  # readable again: nothing unknown, the leak stays
    out = json.loads(leaks_as_nobody(root, state, "--json").stdout)
    assert (len(out["leaks"]), out["unreadable"]) == (1, [])


def test_leaks_with_the_watcher_running_reports_what_it_could_not_read(locked_project: tuple[Path, Path]) -> None:
    from devbox.watch.leaks import Attribution, HostUser, RecordLog

    root, state = locked_project
    paths = Paths(user_state=state)
    records = RecordLog(paths.leak_records("p"))
    attr = Attribution(user=HostUser("nobody", NOBODY, NOBODY))
    records.write(attr.classify(str(root / "locked"), LEAK_UID, LEAK_UID, is_dir=True), at=1.0)
    # what the watcher saw: one still unreadable, one gone since, one outside the project
    records.write_unreadable([str(root / "locked"), str(root / "gone"), "/elsewhere/x"], at=1.0)
    records.close()
    for dirpath, _, files in os.walk(state):
        os.chown(dirpath, NOBODY, NOBODY)
        for f in files:
            os.chown(os.path.join(dirpath, f), NOBODY, NOBODY)
    proc = fake_watcher()
    try:
        paths.watcher_pidfile("p").write_text(f"{proc.pid}\n")
        r = leaks_as_nobody(root, state, "--json")
    finally:
        proc.kill()
        proc.wait()
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    assert [rec["path"] for rec in out["leaks"]] == [str(root / "locked")]
    assert out["unreadable"] == [str(root / "locked")]

