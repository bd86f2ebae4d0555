"""Rootless Podman, as an ordinary account: engine detection, the keep-id strategy and its proof,
the own-line trap Docker's remap sets for Podman, and doctor — against a real ``podman system service``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.ids import free_id
from harness.podman import RootlessPodman
from harness.sandbox import EtcSandbox

NAME = "devbox-podder"
FIRST = 400000


@pytest.fixture
def podman(etc_sandbox: EtcSandbox) -> Iterator[RootlessPodman]:
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed (tests/run installs podman and uidmap)", pytrace=False)
    p = RootlessPodman(etc_sandbox, NAME, free_id(1700), FIRST)
    try:
        p.start()
        yield p
    finally:
        p.destroy()


def _devbox(p: RootlessPodman, *args: str, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"DOCKER_HOST": p.host, "COLUMNS": "200", "DEVBOX_STATE_DIR": str(p.home / ".local/state/devbox")}
    argv = [sys.executable, "-m", "devbox", *args]
    if cwd:
        argv = ["env", "-C", cwd, *argv]
    return p.run(*argv, env=env)


def _findings(stdout: str) -> dict[str, dict[str, object]]:
    return {f["id"]: f for f in json.loads(stdout)["findings"]}


def test_rootless_podman_is_detected_and_keep_id_is_proven(podman: RootlessPodman) -> None:
    p = podman
    r = _devbox(p, "remap", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["engine"]["kind"] == "podman-rootless"
    assert report["engine"]["product"] == "podman"
    assert report["strategy"] == {"name": "keep-id", "why": "chosen for this engine (auto)", "setting": "auto"}
    found = _findings(r.stdout)
    assert "daemon.json" not in found and "daemon.live" not in found  # dockerd's layers do not apply
    assert found["host.newuidmap"]["status"] == "ok"
    # the probe ran with --userns=keep-id: your uid inside is you, and the map is keep-id's
    u = p.uid
    probe = report["probe"]
    assert probe["file_owner"] == {"uid": u, "gid": u}
    assert probe["process"] == {"uid": u, "gid": u}
    want = [{"container": 0, "host": FIRST, "count": u},
            {"container": u, "host": u, "count": 1},
            {"container": u + 1, "host": FIRST + u, "count": 65536 - u}]
    assert probe["uid_map"] == want and probe["gid_map"] == want
    assert report["predicted"]["uid_map"] == want
    assert all(found[i]["status"] == "ok" for i in ("probe.file-owner", "probe.process", "probe.uid-map"))

    # the same through the socket found on its own: $XDG_RUNTIME_DIR/podman/podman.sock
    r = p.run(sys.executable, "-m", "devbox", "remap", "--json", env={"COLUMNS": "200"})
    if not Path("/var/run/docker.sock").exists():  # a machine's own Docker socket would come first
        assert r.returncode == 0, r.stdout + r.stderr
        assert json.loads(r.stdout)["engine"]["source"] == "the rootless Podman socket"

    # --apply changes nothing and never writes daemon.json
    r = _devbox(p, "remap", "--apply", "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "needs no userns-remap, and keep-id is proven" in r.stdout
    assert not p.sb.path("/etc/docker/daemon.json").exists()


def test_the_own_line_docker_needs_breaks_rootless_podman_and_the_printed_fix_works(podman: RootlessPodman) -> None:
    """``NAME:UID:1`` (what Docker's remap wants first) makes rootless Podman refuse to start."""
    p = podman
    u = p.uid
    for f in ("/etc/subuid", "/etc/subgid"):
        p.sb.write(f, f"{NAME}:{u}:1\n{NAME}:{FIRST}:65536\n")
    p.stop()
    p.podman("system", "migrate", check=False)
    with pytest.raises(RuntimeError, match="includes the user UID"):
        p.start()  # Podman itself refuses to start: its socket never answers
    r = _devbox(p, "remap", "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    found = _findings(r.stdout)
    assert found["engine.kind"]["status"] == "fail"
    assert f"{p.host} is a Podman socket: podman-rootless" in found["engine.kind"]["evidence"]
    own = found["subuid.own-line"]
    assert own["status"] == "fail"
    assert f"/etc/subuid:1: {NAME}:{u}:1 includes your own uid {u}: rootless Podman refuses" in " ".join(own["evidence"])
    assert own["fix"] == f"sudo usermod --del-subuids {u}-{u} {NAME}, then: podman system migrate"
    assert found["subgid.own-line"]["fix"] == f"sudo usermod --del-subgids {u}-{u} {NAME}, then: podman system migrate"
    assert found["probe.file-owner"]["status"] == "skip"
    r = _devbox(p, "remap", "--apply", "--yes")
    assert r.returncode == 2 and "daemon.json is not written" in r.stderr, r.stdout + r.stderr
    assert f"usermod --del-subuids {u}-{u} {NAME}" in r.stderr

    # the fixes, exactly as printed (root's half in the sandbox, the user's as the user)
    p.sb.run(["usermod", "--del-subuids", f"{u}-{u}", NAME], check=True)
    p.sb.run(["usermod", "--del-subgids", f"{u}-{u}", NAME], check=True)
    p.stop()
    p.podman("system", "migrate")
    p.start()
    r = _devbox(p, "remap", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert p.sb.read("/etc/subuid") == f"{NAME}:{FIRST}:65536\n"


def test_doctor_names_the_engine_and_the_strategy_and_skips_dockerd(podman: RootlessPodman, tmp_path: Path) -> None:
    p = podman
    r = _devbox(p, "doctor", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    found = {f["id"]: f for f in report["findings"]}
    kind = found["engine.kind"]
    assert kind["status"] == "ok"
    assert f"{p.host}: Podman 4" in kind["evidence"][0]
    assert "engine kind: podman-rootless" in kind["evidence"]
    assert any(e.startswith("ownership strategy: keep-id") for e in kind["evidence"])
    for fid in ("daemon.json", "daemon.flags", "daemon.live", "daemon.parents", "daemon.old-images"):
        assert found[fid]["status"] == "skip", fid
    assert found["probe.uid-map"]["status"] == "ok"
    assert found["host.newuidmap"]["status"] == "ok"

    # a project that asks for Docker's remap on Podman is told why it cannot work
    proj = p.home / "proj"
    proj.mkdir()
    (proj / "devbox.toml").write_text('[ownership]\nstrategy = "remap"\n')
    subprocess.run(["chown", "-R", f"{p.uid}:{p.uid}", str(proj)], check=True)
    r = _devbox(p, "doctor", "--json", cwd=str(proj))
    found = {f["id"]: f for f in json.loads(r.stdout)["findings"]}
    assert r.returncode == 1
    assert found["engine.kind"]["status"] == "fail"
    assert ('strategy "remap" cannot work on podman-rootless: userns-remap is a dockerd setting; '
            "Podman maps ids per container") in found["engine.kind"]["evidence"]
    assert found["engine.kind"]["fix"] == 'use strategy = "auto" (keep-id on this engine)'
    assert found["probe.file-owner"]["status"] == "skip"

    # up says what it cannot do yet, in one line, and starts nothing
    (proj / "devbox.toml").write_text('name = "proj"\n')
    r = _devbox(p, "up", "-d", cwd=str(proj))
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith("devbox: error: devbox up does not run on Podman yet (Podman 4.3.1 (API 1.41), rootless")
    assert p.podman("ps", "-aq").stdout == ""
