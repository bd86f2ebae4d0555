"""`devbox remap` against real dockerds whose /etc is a sandbox overlay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.daemon import PrivateDaemon
from harness.sandbox import EtcSandbox

USER = "devbox-tester"
UID = 1500
FILES = ("/etc/subuid", "/etc/subgid", "/etc/docker/daemon.json")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "DEVBOX_DAEMON_JSON": "/etc/docker/daemon.json",
        "DEVBOX_SYSTEM_STATE_DIR": str(tmp_path / "state"),
        "DEVBOX_STATE_DIR": str(tmp_path / "user-state"),
        "SUDO_USER": USER,
        "COLUMNS": "200",
    }


def _setup(sb: EtcSandbox, name: str, subuid: str, subgid: str | None = None,
           config: dict[str, object] | None = None, extra_args: list[str] | None = None,
           start: bool = True) -> PrivateDaemon:
    sb.write("/etc/subuid", subuid)
    sb.write("/etc/subgid", subuid if subgid is None else subgid)
    d = sb.daemon(name, config=config if config is not None else {}, extra_args=extra_args)
    if start:
        sb.start_daemon(d)
    return d


def _snapshot(sb: EtcSandbox) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for f in FILES:
        p = sb.path(f)
        out[f] = p.read_bytes() if p.exists() else None
    return out


def _findings(stdout: str) -> dict[str, dict[str, object]]:
    report = json.loads(stdout)
    return {f["id"]: f for f in report["findings"]}


def test_fresh_host_check_apply_prove_idempotent_revert(etc_sandbox: EtcSandbox, env: dict[str, str]) -> None:
    sb = etc_sandbox
    d = _setup(sb, "rm-fresh", "")
    env = {**env, **d.env}
    before = _snapshot(sb)

    r = sb.devbox("remap", env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "no line for devbox-tester in /etc/subuid" in r.stdout
    assert "fix: sudo devbox remap --apply" in r.stdout

    r = sb.devbox("remap", "--apply", "--yes", "--restart-cmd", sb.restart_cmd(d), env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "remap configured and proven: container root = host uid 1500" in r.stdout
    assert sb.read("/etc/subuid") == "devbox-tester:1500:1\ndevbox-tester:100000:65536\n"
    assert sb.read("/etc/subgid") == "devbox-tester:1500:1\ndevbox-tester:100000:65536\n"
    assert json.loads(sb.read("/etc/docker/daemon.json")) == {"userns-remap": "devbox-tester"}
    assert (d.data_root / "1500.1500").is_dir()

    r = sb.devbox("remap", "--json", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["ok"] is True
    assert report["probe"]["file_owner"] == {"uid": 1500, "gid": 1500}
    assert report["probe"]["process"] == {"uid": 1500, "gid": 1500}
    assert report["probe"]["uid_map"] == [
        {"container": 0, "host": 1500, "count": 1},
        {"container": 1, "host": 100000, "count": 65536},
    ]
    assert {f["status"] for f in report["findings"]} == {"ok"}

    applied = _snapshot(sb)
    r = sb.devbox("remap", "--apply", "--yes", "--restart-cmd", sb.restart_cmd(d), env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "nothing to change" in r.stdout
    assert _snapshot(sb) == applied

    r = sb.devbox("remap", "--revert", "--yes", "--restart-cmd", sb.restart_cmd(d), env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _snapshot(sb) == before
    assert d.ping()
    r = sb.devbox("remap", "--json", env=env)
    assert _findings(r.stdout)["daemon.live"]["status"] == "fail"
