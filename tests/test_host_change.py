"""The host-change transaction on real files: rollback, concurrent edits, signals, and a crash suite.

The files live in a temp dir; the "restart" is ``true`` and the engine a stub
that answers ``/_ping`` (tests/harness/stub_engine.py), because what is under
test is the files, the locks and the journal.  The same transaction against a
real dockerd, through the CLI, is in tests/integration/test_remap_crash.py.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devbox.errors import HostError
from devbox.host import change, journal
from devbox.paths import Paths
from harness.change_driver import OWN, RANGE, USER, apply_changes_for, paths_in
from harness.stub_engine import stub_engine

DRIVER = Path(__file__).parent / "harness" / "change_driver.py"
OLD = {"subuid": "alice:200000:65536\n", "subgid": "alice:200000:65536\n", "daemon.json": '{\n  "debug": true\n}\n'}
OTHER_LINE = "bob:400000:65536"  # what a concurrent `usermod --add-subuids` adds for another user


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    d = tmp_path / "host"
    d.mkdir()
    reset(d)
    with stub_engine(tmp_path / "engine.sock") as sock:
        monkeypatch.setenv("DOCKER_HOST", f"unix://{sock}")
        yield d


def reset(d: Path) -> None:
    for name, text in OLD.items():
        (d / name).write_text(text)
    subprocess.run(["rm", "-rf", str(d / "state")], check=True)


def contents(d: Path) -> dict[str, str | None]:
    return {name: (d / name).read_text() if (d / name).exists() else None for name in OLD}


def new_contents(d: Path) -> dict[str, str]:
    return {c.path.name: c.new for c in apply_changes_for(paths_in(d))}


def test_apply_writes_journals_and_keeps_backups(host: Path) -> None:
    paths = paths_in(host)
    want = new_contents(host)
    stamp = change.apply_changes(paths, apply_changes_for(paths), [["true"]], verify=None, user=USER)
    assert contents(host) == want
    assert contents(host)["subuid"] == f"{OWN}\n{RANGE}\nalice:200000:65536\n"
    j = journal.Journal.load(paths.remap_journal)
    assert j.pending is None and [a["stamp"] for a in j.applies] == [stamp]
    assert (paths.remap_backups / stamp / str(host / "subuid").strip("/").replace("/", "_")).read_text() == OLD["subuid"]
    assert sorted(p.name for p in host.iterdir()) == ["daemon.json", "state", "subgid", "subuid"]  # no locks, no temps


def test_a_failed_verification_rolls_back_byte_for_byte(host: Path) -> None:
    paths = paths_in(host)
    with pytest.raises(HostError) as raised:
        change.apply_changes(paths, apply_changes_for(paths), [["true"]], verify=lambda: "the probe says no", user=USER)
    assert raised.value.message == ("the probe says no; rolled back: every file is byte-identical to before and dockerd "
                                    "runs on the old configuration")
    assert contents(host) == OLD
    assert journal.Journal.load(paths.remap_journal).pending is None
    assert journal.Journal.load(paths.remap_journal).applies == []


def test_rollback_keeps_what_another_tool_wrote_meanwhile(host: Path) -> None:
    """usermod adds a line while dockerd restarts; the rollback takes back devbox's lines only."""
    paths = paths_in(host)

    def usermod_meanwhile() -> str:
        with open(host / "subuid", "a") as fh:
            fh.write(OTHER_LINE + "\n")
        return "the probe says no"

    with pytest.raises(HostError) as raised:
        change.apply_changes(paths, apply_changes_for(paths), [["true"]], verify=usermod_meanwhile, user=USER)
    assert "keeping what other tools changed meanwhile" in raised.value.message
    assert (host / "subuid").read_text() == f"alice:200000:65536\n{OTHER_LINE}\n"
    assert contents(host)["subgid"] == OLD["subgid"] and contents(host)["daemon.json"] == OLD["daemon.json"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_the_restart_completes_the_rollback(host: Path, signum: int) -> None:
    paths = paths_in(host)

    def interrupted() -> str | None:
        os.kill(os.getpid(), signum)
        time.sleep(5)  # the handler raises before this ends
        return None

    with pytest.raises(change.Interrupted) as raised:
        change.apply_changes(paths, apply_changes_for(paths), [["true"]], verify=interrupted, user=USER)
    assert raised.value.message.startswith(f"interrupted by {signal.Signals(signum).name} during the dockerd restart; "
                                           "rolled back: every file is byte-identical")
    assert int(raised.value.exit_code) == 130
    assert contents(host) == OLD
    assert journal.pending(paths) is None
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


def test_a_file_changed_since_planning_stops_everything(host: Path) -> None:
    paths = paths_in(host)
    changes = apply_changes_for(paths)
    (host / "subgid").write_text("carol:500000:65536\n")
    with pytest.raises(HostError) as raised:
        change.apply_changes(paths, changes, [["true"]], verify=None, user=USER)
    assert raised.value.one_line() == (f"{host}/subgid changed since devbox read it (another tool edited it meanwhile) — "
                                       "re-run the command: nothing was changed")
    assert contents(host) == {**OLD, "subgid": "carol:500000:65536\n"}
    assert journal.pending(paths) is None


def test_a_write_failing_half_way_takes_back_what_was_written(host: Path) -> None:
    paths = paths_in(host)
    changes = apply_changes_for(paths)
    # daemon.json's directory vanishes and a file takes its place: its write fails after subuid and subgid's
    broken = Paths(subuid=paths.subuid, subgid=paths.subgid, daemon_json=host / "blocker" / "daemon.json",
                   system_state=paths.system_state)
    (host / "blocker").write_text("not a directory")
    changes = (*changes[:2], journal.FileChange(broken.daemon_json, "", "{}\n", False, ("x",)))
    with pytest.raises(HostError):
        change.apply_changes(broken, changes, [["true"]], verify=None, user=USER)
    assert contents(host) == OLD
    assert journal.pending(broken) is None


def test_revert_undoes_exactly_the_apply_and_retires_the_journal(host: Path) -> None:
    paths = paths_in(host)
    change.apply_changes(paths, apply_changes_for(paths), [["true"]], verify=None, user=USER)
    with open(host / "subuid", "a") as fh:
        fh.write(OTHER_LINE + "\n")  # someone else's line since: a revert keeps it
    changes = journal.plan_revert(paths)
    change.apply_changes(paths, changes, [["true"]], verify=None, op="revert", user=USER)
    assert contents(host) == {**OLD, "subuid": f"alice:200000:65536\n{OTHER_LINE}\n"}
    assert not paths.remap_journal.exists()
    assert len(list(paths.remap_journal.parent.glob("journal.reverted-*.json"))) == 1


# --- the crash suite --------------------------------------------------------------------------


def _driver(d: Path, op: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(DRIVER), str(d), op], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def _points(d: Path, op: str, tmp: Path) -> list[str]:
    trace = tmp / f"trace-{op}"
    trace.unlink(missing_ok=True)
    r = _driver(d, op, {"DEVBOX_FAULT_TRACE": str(trace)})
    assert r.returncode == 0, r.stderr
    return [line.split(" ", 1)[1] for line in trace.read_text().splitlines()]


def _assert_whole(d: Path, old: dict[str, str | None], new: dict[str, str | None], where: str) -> None:
    now = contents(d)
    for name in OLD:
        assert now[name] in (old[name], new[name]), f"{name} torn after a kill at {where}: {now[name]!r}"


def _assert_next_run_converges(d: Path, op: str, want: dict[str, str | None], where: str) -> None:
    r = _driver(d, op)
    assert r.returncode == 0, f"after a kill at {where}: {r.stderr}"
    assert contents(d) == want, f"after a kill at {where}"
    assert journal.pending(paths_in(d)) is None
    leftovers = sorted(p.name for p in d.iterdir() if p.name not in (*OLD, "state"))
    assert leftovers == [], f"after a kill at {where}: {leftovers}"


def test_kill_at_every_fault_point_of_apply_and_revert(host: Path, tmp_path: Path) -> None:
    """SIGKILL at each point an apply or a revert passes: every file is whole, the next run converges."""
    want_new = new_contents(host)
    apply_points = _points(host, "apply", tmp_path)
    revert_points = _points(host, "revert", tmp_path)
    assert contents(host) == OLD  # the traced apply and revert went there and back
    assert len(apply_points) >= 15 and len(revert_points) >= 15
    killed = 0
    for n, name in enumerate(apply_points, start=1):
        reset(host)
        r = _driver(host, "apply", {"DEVBOX_FAULT_POINT": str(n)})
        assert r.returncode == -signal.SIGKILL, (n, name, r.stderr)
        killed += 1
        where = f"apply point {n} ({name})"
        _assert_whole(host, dict(OLD), dict(want_new), where)
        _assert_next_run_converges(host, "apply", dict(want_new), where)
    for n, name in enumerate(revert_points, start=1):
        reset(host)
        assert _driver(host, "apply").returncode == 0
        r = _driver(host, "revert", {"DEVBOX_FAULT_POINT": str(n)})
        assert r.returncode == -signal.SIGKILL, (n, name, r.stderr)
        killed += 1
        where = f"revert point {n} ({name})"
        _assert_whole(host, dict(want_new), dict(OLD), where)
        _assert_next_run_converges(host, "revert", dict(OLD), where)
    assert killed == len(apply_points) + len(revert_points)


def test_kill_at_random_times(host: Path) -> None:
    """SIGKILL after a random delay, apply and revert in turn: every file is whole, the next run converges."""
    rng = random.Random(int(os.environ.get("DEVBOX_CRASH_SEED", "20261125")))
    want_new = new_contents(host)
    env = {**os.environ}
    for i in range(int(os.environ.get("DEVBOX_CRASH_RANDOM", "60"))):
        op = "apply" if i % 2 == 0 else "revert"
        before, after = (dict(OLD), dict(want_new)) if op == "apply" else (dict(want_new), dict(OLD))
        proc = subprocess.Popen([sys.executable, str(DRIVER), str(host), op], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.03, 0.25))  # interpreter start-up is ~30 ms; the transaction follows
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _assert_whole(host, before, after, f"random kill {i} of {op}")
        _assert_next_run_converges(host, op, after, f"random kill {i} of {op}")


def test_pending_is_shown_as_json_ready_data(host: Path, tmp_path: Path) -> None:
    paths = paths_in(host)
    points = _points(host, "apply", tmp_path)
    reset(host)
    first_write = points.index("wrote-file") + 1  # killed right after the first file changed
    r = _driver(host, "apply", {"DEVBOX_FAULT_POINT": str(first_write)})
    assert r.returncode == -signal.SIGKILL
    entry = journal.pending(paths)
    assert entry is not None and entry["op"] == "apply"
    assert journal.describe_pending(entry).startswith("an earlier `devbox remap --apply` (backup ")
    json.dumps(entry)  # it is what `devbox remap --json` reports under "unfinished"
