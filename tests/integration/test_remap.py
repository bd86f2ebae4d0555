"""`devbox remap` against real dockerds whose /etc is a sandbox overlay."""

from __future__ import annotations

import json

import pytest

from harness.daemon import DOCKERS, PrivateDaemon
from harness.ids import TEST_UID
from harness.sandbox import EtcSandbox

# every test here runs against the host's Docker 20.10 and against Docker 26.1 (trixie's)
pytestmark = pytest.mark.parametrize("etc_sandbox", DOCKERS, indirect=True)

USER = "devbox-tester"
UID = TEST_UID
FILES = ("/etc/subuid", "/etc/subgid", "/etc/docker/daemon.json")


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

    r = sb.devbox("remap", "--apply", "--dry-run", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"--- /etc/subuid (now)\n+++ /etc/subuid (devbox)\n@@ -0,0 +1,2 @@\n+devbox-tester:{UID}:1\n+devbox-tester:100000:65536\n" in r.stdout
    assert '+  "userns-remap": "devbox-tester"' in r.stdout
    assert _snapshot(sb) == before  # a dry run changes nothing

    r = sb.devbox("remap", "--apply", "--yes", "--restart-cmd", sb.restart_cmd(d), env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"remap configured and proven: container root = host uid {UID}" in r.stdout
    assert sb.read("/etc/subuid") == f"devbox-tester:{UID}:1\ndevbox-tester:100000:65536\n"
    assert sb.read("/etc/subgid") == f"devbox-tester:{UID}:1\ndevbox-tester:100000:65536\n"
    assert json.loads(sb.read("/etc/docker/daemon.json")) == {"userns-remap": "devbox-tester"}
    assert (d.data_root / f"{UID}.{UID}").is_dir()

    r = sb.devbox("remap", "--json", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["ok"] is True
    assert report["probe"]["file_owner"] == {"uid": UID, "gid": UID}
    assert report["probe"]["process"] == {"uid": UID, "gid": UID}
    assert report["probe"]["uid_map"] == [
        {"container": 0, "host": UID, "count": 1},
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


def _apply(sb: EtcSandbox, d: PrivateDaemon, env: dict[str, str], *extra: str):  # type: ignore[no-untyped-def]
    return sb.devbox("remap", "--apply", "--yes", "--restart-cmd", sb.restart_cmd(d), *extra, env={**env, **d.env})


def _check(sb: EtcSandbox, d: PrivateDaemon, env: dict[str, str]) -> dict[str, dict[str, object]]:
    r = sb.devbox("remap", "--json", env={**env, **d.env})
    assert r.returncode in (0, 1), r.stderr
    return _findings(r.stdout)


def test_reversed_lines_detected_and_fixed(etc_sandbox: EtcSandbox, env: dict[str, str]) -> None:
    sb = etc_sandbox
    d = _setup(sb, "rm-rev", f"devbox-tester:100000:65536\ndevbox-tester:{UID}:1\n", config={"userns-remap": USER})
    found = _check(sb, d, env)
    assert found["subuid.own-line"]["status"] == "fail"
    assert found["subuid.own-line"]["evidence"][-1] == (
        f"devbox-tester:{UID}:1 is not first: dockerd takes the lines in file order, "
        "so container root becomes host uid 100000"
    )
    assert found["daemon.live"]["status"] == "fail"
    assert found["daemon.live"]["evidence"][-1] == (
        f"the engine at {d.host} remaps container root to 100000:100000, not to devbox-tester ({UID}:{UID})")
    assert found["probe.file-owner"]["evidence"] == [
        f"created by container root: host uid 100000, gid 100000 (want {UID}, {UID})"
    ]

    r = _apply(sb, d, env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"moved devbox-tester:{UID}:1 before devbox-tester:100000:65536" in r.stdout
    assert sb.read("/etc/subuid") == f"devbox-tester:{UID}:1\ndevbox-tester:100000:65536\n"
    assert {f["status"] for f in _check(sb, d, env).values()} == {"ok"}


def test_seed_style_range_replaced(etc_sandbox: EtcSandbox, env: dict[str, str]) -> None:
    sb = etc_sandbox
    d = _setup(sb, "rm-seed", f"devbox-tester:{UID}:65536\n", config={"userns-remap": USER, "debug": False})
    found = _check(sb, d, env)
    assert found["subuid.accounts"]["status"] == "fail"
    assert found["subuid.accounts"]["evidence"][0] == (
        f"/etc/subuid:1: devbox-tester:{UID}:65536 maps container uids 1.. onto host uids {UID + 1}.., the ids of real accounts"
    )
    r = _apply(sb, d, env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (f"replaced devbox-tester:{UID}:65536 (line 1): it maps container ids 1.. onto host ids {UID + 1}.., "
            "where real accounts live") in r.stdout
    assert sb.read("/etc/subuid") == f"devbox-tester:{UID}:1\ndevbox-tester:100000:65536\n"
    assert json.loads(sb.read("/etc/docker/daemon.json")) == {"userns-remap": USER, "debug": False}
    assert {f["status"] for f in _check(sb, d, env).values()} == {"ok"}


def test_range_overlapping_another_user_reallocated(etc_sandbox: EtcSandbox, env: dict[str, str]) -> None:
    sb = etc_sandbox
    text = f"devbox-other:100000:65536\ndevbox-tester:{UID}:1\ndevbox-tester:150000:65536\n"
    d = _setup(sb, "rm-ovl", text)
    found = _check(sb, d, env)
    assert found["subuid.overlap"]["status"] == "fail"
    assert found["subuid.overlap"]["evidence"] == [
        "/etc/subuid:3 devbox-tester:150000:65536 overlaps devbox-other's range devbox-other:100000:65536 at /etc/subuid:1"
    ]
    r = _apply(sb, d, env)
    assert r.returncode == 0, r.stdout + r.stderr
    expected = f"devbox-other:100000:65536\ndevbox-tester:{UID}:1\ndevbox-tester:215536:65536\n"
    assert sb.read("/etc/subuid") == expected
    assert sb.read("/etc/subgid") == expected
    assert {f["status"] for f in _check(sb, d, env).values()} == {"ok"}


def test_flag_and_daemon_json_conflict_detected_and_fixed(etc_sandbox: EtcSandbox, env: dict[str, str]) -> None:
    sb = etc_sandbox
    good = f"devbox-tester:{UID}:1\ndevbox-tester:100000:65536\n"
    flag = [f"--userns-remap={USER}"]
    d = _setup(sb, "rm-flag", good, config={"debug": False}, extra_args=flag)
    sb.write("/etc/systemd/system/docker.service.d/userns.conf",
             f"[Service]\nExecStart=\nExecStart=/usr/bin/dockerd -H fd:// --userns-remap={USER}\n")
    # what a user following two tutorials ends up with: dockerd would now refuse to start
    sb.write("/etc/docker/daemon.json", json.dumps({"debug": False, "userns-remap": USER}, indent=2) + "\n")
    found = _check(sb, d, env)
    flags = found["daemon.flags"]
    assert flags["status"] == "fail"
    assert f"/etc/systemd/system/docker.service.d/userns.conf:3: --userns-remap={USER}" in flags["evidence"]
    assert any(e.startswith("running dockerd (pid ") for e in flags["evidence"])
    assert "dockerd refuses to start" in flags["evidence"][-1]

    r = _apply(sb, d, env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'removed "userns-remap": it is also given as a flag' in r.stdout
    assert json.loads(sb.read("/etc/docker/daemon.json")) == {"debug": False}
    after = _check(sb, d, env)
    assert {f["status"] for f in after.values()} == {"ok"}


def test_daemon_that_cannot_start_rolls_back_byte_identical(etc_sandbox: EtcSandbox, env: dict[str, str]) -> None:
    sb = etc_sandbox
    d = _setup(sb, "rm-fail", "someone:300000:65536\n", config={"debug": False})
    before = _snapshot(sb)
    # a known trap: a 0700 parent of the data root stops a remapped dockerd (README, daemon.parents)
    d.data_root.parent.chmod(0o700)
    try:
        r = _apply(sb, d, env)
    finally:
        d.data_root.parent.chmod(0o711)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "rolled back: every file is byte-identical to before and dockerd runs on the old configuration" in r.stderr
    assert "Traceback" not in r.stderr
    assert _snapshot(sb) == before
    assert d.ping()
    assert "name=userns" not in d.docker("info", "--format", "{{.SecurityOptions}}").stdout


def test_a_daemon_json_dockerd_would_refuse(etc_sandbox: EtcSandbox, env: dict[str, str]) -> None:
    """daemon.json edited since dockerd started, with a key dockerd does not know.  Docker 26.1 has
    ``dockerd --validate``: devbox asks it first and writes nothing.  20.10 has none: the restart is the
    test, and the rollback cannot bring dockerd back either, since the old file is just as bad."""
    sb = etc_sandbox
    d = _setup(sb, "rm-val", "someone:300000:65536\n", config={"debug": False})
    sb.write("/etc/docker/daemon.json", '{"debug": false, "bogus-key": true}\n')
    before = _snapshot(sb)
    r = sb.devbox("remap", "--apply", "--dry-run", env={**env, **d.env})
    assert ("this dockerd has no --validate" in r.stderr) == (d.version == "20.10"), r.stdout + r.stderr
    r = _apply(sb, d, env)
    assert "Traceback" not in r.stderr
    assert _snapshot(sb) == before
    if d.version == "20.10":
        assert r.returncode == 2, r.stdout + r.stderr
        assert "the files were put back, but dockerd did not come back on the old configuration either" in r.stderr
        assert not d.ping()
    else:
        assert r.returncode == 2, r.stdout + r.stderr
        assert r.stderr.splitlines()[-1] == (
            "devbox: error: dockerd --validate rejects the new /etc/docker/daemon.json: unable to configure the "
            "Docker daemon: the following directives don't match any configuration option: bogus-key; nothing "
            "was changed (what had been written is put back)")
        assert d.ping()  # never restarted


def test_bad_inputs_one_line_nonzero_nothing_written(etc_sandbox: EtcSandbox, env: dict[str, str]) -> None:
    sb = etc_sandbox
    d = _setup(sb, "rm-bad", f"devbox-tester:{UID}:1\n", start=False)
    sb.write("/etc/docker/daemon.json", '{"debug": true,\n  "log-level": }\n')
    before = _snapshot(sb)
    e = {**env, **d.env}

    def one_line(r) -> str:  # type: ignore[no-untyped-def]
        assert r.returncode == 2, r.stdout + r.stderr
        assert "Traceback" not in r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, r.stderr
        return lines[0]

    line = one_line(sb.devbox("remap", "--apply", "--yes", "--restart-cmd", "true", env=e))
    assert line == ("devbox: error: /etc/docker/daemon.json:2: not valid JSON: Expecting value (at line 2, column 16)"
                    " — fix the file first; devbox will not rewrite a file it cannot read")
    line = one_line(sb.devbox("remap", "--apply", "--user", "nosuchuser", env=e))
    assert line == "devbox: error: unknown user 'nosuchuser' — pass --user NAME of an existing account"
    line = one_line(sb.devbox("remap", "--apply", "--user", "root", env=e))
    assert line.startswith("devbox: error: refusing to remap to root: container root would stay host root")
    assert _snapshot(sb) == before

    sb.write("/etc/docker/daemon.json", "{}\n")
    sb.write("/etc/subuid", f"devbox-tester:{UID}:1\ndevbox-tester:oops:65536\n")
    line = one_line(sb.devbox("remap", "--apply", "--yes", "--restart-cmd", "true", env=e))
    assert line == ("devbox: error: /etc/subuid:2: START 'oops' is not a non-negative integer — fix or remove that "
                    "line first; devbox will not rewrite a file it cannot parse")

    as_user = ["setpriv", "--reuid", USER, "--regid", USER, "--init-groups", "--"]
    sb.path("/etc/subuid").chmod(0o600)
    r = sb.run([*as_user, *sb_devbox_argv(), "remap", "--no-probe"], env=e)
    assert one_line(r) == ("devbox: error: cannot read /etc/subuid: permission denied — check its mode "
                           "(ls -l /etc/subuid) or run with sudo")
    sb.path("/etc/subuid").chmod(0o644)

    r = sb.run([*as_user, *sb_devbox_argv(), "remap", "--apply"], env=e)
    assert one_line(r) == ("devbox: error: changing /etc/subuid, /etc/subgid and daemon.json needs root — "
                           "run: sudo devbox remap --apply --user devbox-tester")

    missing = {**e, "DOCKER_HOST": "unix:///run/devbox-test/no-such.sock"}
    r = sb.devbox("remap", "--json", env=missing)
    assert r.returncode == 1
    assert _findings(r.stdout)["daemon.live"]["evidence"] == [
        "no Docker daemon socket at /run/devbox-test/no-such.sock — start the engine (sudo systemctl start docker) "
        "or set DOCKER_HOST"
    ]
    sb.start_daemon(d)
    other = ["setpriv", "--reuid", "devbox-other", "--regid", "devbox-other", "--init-groups", "--"]
    r = sb.run([*other, *sb_devbox_argv(), "remap", "--json", "--user", USER], env=e)
    assert r.returncode == 1, r.stderr
    assert _findings(r.stdout)["daemon.live"]["evidence"] == [
        f"permission denied on {d.socket} — add your user to the 'docker' group (root-equivalent) and log in again, "
        "or run with sudo"
    ]


def sb_devbox_argv() -> list[str]:
    import sys

    return [sys.executable, "-m", "devbox"]
