"""Rootless Podman, as an ordinary account: engine detection, the keep-id strategy and its proof,
the own-line trap Docker's remap sets for Podman, and doctor — against a real ``podman system service``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.ids import free_id
from harness.podman import RootlessPodman
from harness.sandbox import EtcSandbox

from .conftest import PODMAN_FIRST, SAYS_SDK, PodmanPrebuild

NAME = "devbox-podder"
FIRST = 400000


@pytest.fixture
def podman(etc_sandbox: EtcSandbox) -> Iterator[RootlessPodman]:
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed (tests/run installs podman and uidmap)", pytrace=False)
    p = RootlessPodman(etc_sandbox, NAME, free_id(1700), FIRST)
    try:
        p.start(network=False)  # /dev/net/tun is root's, as on this machine: a pod would get no network
        yield p
    finally:
        p.destroy()


def _devbox(p: RootlessPodman, *args: str, cwd: str | None = None, says_sdk: bool = False) -> subprocess.CompletedProcess[str]:
    env = {"DOCKER_HOST": p.host, "COLUMNS": "200", "DEVBOX_STATE_DIR": str(p.home / ".local/state/devbox")}
    argv = [sys.executable, *(("-c", SAYS_SDK) if says_sdk else ("-m", "devbox")), *args]
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

    # without a usable /dev/net/tun the pod has no network: a profile that publishes ports is refused in
    # one line, before anything is built or started
    (proj / "devbox.toml").write_text('name = "proj"\nprofile = "ide-python"\n')
    r = _devbox(p, "up", "-d", cwd=str(proj))
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith("devbox: error: devbox.toml: profile ide-python: service ide publishes ports "
                               "(127.0.0.1:8888->8888/tcp), and the pod has no network to publish them on"), r.stderr
    assert p.podman("ps", "-aq").stdout == "" and p.podman("pod", "ls", "-q").stdout == ""


def _owners(root: Path) -> set[int]:
    found = {root.stat().st_uid}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            found.add(os.lstat(os.path.join(d, n)).st_uid)
    return found


def _containers(p: RootlessPodman) -> dict[str, str]:
    out = p.podman("ps", "-a", "--format", "{{.Names}} {{.ID}}").stdout.split()
    return dict(zip(out[::2], out[1::2], strict=True))


def test_up_switch_leaks_doctor_and_down_on_rootless_podman(podman_prebuilt: PodmanPrebuild) -> None:
    """The issue's "done": as an ordinary user on rootless Podman, ``init`` and ``up -d`` run the default
    profile as a keep-id pod; what the editor and the runtime write is yours; ``switch`` keeps the
    editor, the database and its rows; doctor is green; ``leaks --fix`` gives a root-made file back.
    Its images were built by ``devbox build`` through the same Podman since the session began."""
    p = podman_prebuilt.podman
    built = podman_prebuilt.log.read_text()
    assert "step 1/" in built and "image devbox/postgres:" in built, built[-2000:]  # Podman's "STEP 1/8:" lines
    proj = p.home / "proj"
    proj.mkdir()
    os.chown(proj, p.uid, p.uid)
    r = _devbox(p, "init", cwd=str(proj))
    assert r.returncode == 0, r.stdout + r.stderr

    r = _devbox(p, "up", "-d", cwd=str(proj))
    assert r.returncode == 0, r.stdout + r.stderr
    network = "slirp4netns" if shutil.which("slirp4netns") else "none"
    out = r.stdout + r.stderr
    assert f"pod devbox-proj: created (keep-id; network: {network}" in out, out
    assert "service db: created and started" in out and "service runtime: created and started" in out

    # the editor (vim) and the runtime write files in /work: yours, and they run as you
    r = _devbox(p, "exec", "editor", "--", "vim", "-es", "-c", "call writefile(['from vim'], '/work/notes.txt')", "-c", "qa!",
                cwd=str(proj))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (proj / "notes.txt").read_text() == "from vim\n"
    assert (proj / "notes.txt").stat().st_uid == p.uid and (proj / "notes.txt").stat().st_gid == p.uid
    r = _devbox(p, "exec", "runtime", "--", "sh", "-c",
                'id -u; psql -qc "create table kept (x int); insert into kept values (42)" && mkdir -p /work/out '
                "&& echo hi > /work/out/made-by-runtime", cwd=str(proj))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split()[0] == str(p.uid)  # the service runs as you (keep-id), reaches db by name
    if network != "none":  # the pod reaches the package index (the host's CA is mounted)
        r = _devbox(p, "exec", "runtime", "--", "sh", "-c",
                    "python3 -m venv /work/.venv && /work/.venv/bin/pip install -q six && /work/.venv/bin/python -c 'import six'",
                    cwd=str(proj))
        assert r.returncode == 0, r.stdout + r.stderr
    assert _owners(proj) == {p.uid}
    # the database runs as its image wants (root, then postgres), in your subordinate range, not as you
    db_uid = p.podman("exec", "devbox-proj-db", "stat", "-c", "%u", "/var/lib/postgresql/data/PG_VERSION").stdout.strip()
    assert db_uid.isdigit() and db_uid not in ("0", str(p.uid)), db_uid

    r = _devbox(p, "ps", "--json", cwd=str(proj))
    assert r.returncode == 0, r.stdout + r.stderr
    ps = json.loads(r.stdout)
    assert ps["engine"]["kind"] == "podman-rootless" and ps["engine"]["strategy"] == "keep-id"
    rows = {s["service"]: s for s in ps["services"]}
    assert set(rows) == {"editor", "runtime", "db"}  # not the pod's infra container
    assert all(s["state"] == "running" and s["userns_mode"] == "keep-id (pod)" for s in rows.values()), rows
    assert rows["db"]["health"] == "healthy" and rows["runtime"]["health"] is None  # ps ran db's check now

    r = _devbox(p, "up", "-d", cwd=str(proj))
    assert r.returncode == 0 and "up to date, nothing to do" in r.stderr, r.stdout + r.stderr

    # switch: only the runtime is new; the editor and the database (and its rows) stay
    before = _containers(p)
    r = _devbox(p, "switch", "python-3.13", cwd=str(proj))
    assert r.returncode == 0, r.stdout + r.stderr
    after = _containers(p)
    assert after["devbox-proj-editor"] == before["devbox-proj-editor"] and after["devbox-proj-db"] == before["devbox-proj-db"]
    assert after["devbox-proj-runtime"] != before["devbox-proj-runtime"]
    r = _devbox(p, "exec", "runtime", "--", "sh", "-c", 'python3 --version; psql -tAc "select x from kept"', cwd=str(proj))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("Python 3.13.") and r.stdout.splitlines()[-1] == "42", r.stdout

    # a file made by container root lands in your subordinate range: the watcher flags it, --fix gives it back
    p.podman("exec", "-u", "0", "devbox-proj-runtime", "sh", "-c", "mkdir /work/build && touch /work/build/by-root")
    assert (proj / "build" / "by-root").stat().st_uid == PODMAN_FIRST
    deadline = time.monotonic() + 30
    leaks: list[dict[str, object]] = []
    while time.monotonic() < deadline and len(leaks) < 2:
        leaks = json.loads(_devbox(p, "leaks", "--json", cwd=str(proj)).stdout)["leaks"]
        time.sleep(0.5)
    assert {str(leak["path"]) for leak in leaks} == {str(proj / "build"), str(proj / "build" / "by-root")}, leaks
    assert all(leak["container_uid"] == 0 for leak in leaks), leaks  # attributed through keep-id's map
    r = _devbox(p, "leaks", "--fix", cwd=str(proj))
    assert r.returncode == 0, r.stdout + r.stderr
    assert _owners(proj) == {p.uid}

    # a published port: the pod publishes it, so the pod is made again with its containers; the rows stay
    with open(proj / "devbox.toml", "a") as fh:
        fh.write('\n[services.runtime]\nports = ["127.0.0.1::8000"]\n')
    r = _devbox(p, "up", "-d", cwd=str(proj), says_sdk=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "pod devbox-proj: its network or published ports changed" in r.stderr, r.stderr
    # the pod, its three containers and the wait for db's health, all on the stdlib client
    assert "service runtime: created and started" in r.stderr and "docker SDK imported: False" in r.stderr, r.stderr
    assert _containers(p)["devbox-proj-db"] != after["devbox-proj-db"]
    r = _devbox(p, "exec", "runtime", "--", "sh", "-c",
                'psql -tAc "select x from kept" && (python3 -m http.server -d /work 8000 >/dev/null 2>&1 &) && sleep 1',
                cwd=str(proj))
    assert r.returncode == 0 and r.stdout.strip() == "42", r.stdout + r.stderr
    ports = {s["service"]: s["ports"] for s in json.loads(_devbox(p, "ps", "--json", cwd=str(proj)).stdout)["services"]}
    (bound,) = ports["runtime"]
    assert ports["db"] == [] and ports["editor"] == []  # the pod's port, shown for the service that publishes it
    host, _, rest = bound.partition(":")
    assert host == "127.0.0.1" and rest.endswith("->8000/tcp"), bound
    url = f"http://127.0.0.1:{rest.split('->')[0]}/notes.txt"
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                assert answer.read() == b"from vim\n"
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)

    r = _devbox(p, "doctor", "--json", cwd=str(proj))
    report = json.loads(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    found = {f["id"]: f for f in report["findings"]}
    assert "engine kind: podman-rootless" in found["engine.kind"]["evidence"]
    bad = {i: f for i, f in found.items() if f["status"] in ("fail", "warn")}
    assert bad == {} if network != "none" else set(bad) <= {"network.tls"}, bad
    assert found["project.leaks"]["status"] == "ok" and found["watcher.running"]["status"] == "ok"

    r = _devbox(p, "down", cwd=str(proj))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "pod devbox-proj: removed" in r.stderr, r.stderr
    assert p.podman("ps", "-aq").stdout == "" and p.podman("pod", "ls", "-q").stdout == ""
    assert "devbox-proj-pgdata-15" in p.podman("volume", "ls", "--format", "{{.Name}}").stdout  # the rows' volume stays
