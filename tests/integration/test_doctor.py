"""`devbox doctor` against real dockerds whose /etc is a sandbox overlay: each broken setup built for real."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.daemon import RUN, SESSION, PrivateDaemon
from harness.ids import OTHER_UID, TEST_UID
from harness.images import import_base_images
from harness.sandbox import EtcSandbox

USER = "devbox-tester"
UID = TEST_UID
GOOD = f"devbox-tester:{UID}:1\ndevbox-tester:100000:65536\n"
REMAP_IDS = ("subuid.own-line", "subuid.accounts", "subuid.overlap", "subuid.range", "subgid.own-line",
             "subgid.accounts", "subgid.overlap", "subgid.range", "daemon.json", "daemon.flags", "daemon.live",
             "probe.file-owner", "probe.process", "probe.uid-map")


@pytest.fixture
def project(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A project directory owned by the test user, where remapped containers can reach it."""
    root = RUN / f"proj-{SESSION}-{request.node.name[:24]}"
    shutil.rmtree(root, ignore_errors=True)
    (root / "data").mkdir(parents=True)
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _own(root: Path) -> None:
    for p in (root, *root.rglob("*")):
        os.chown(p, UID, UID, follow_symlinks=False)


def _doctor(sb: EtcSandbox, env: dict[str, str], *args: str, cwd: str = "/", as_user: str | None = None,
            ) -> tuple[int, dict[str, Any], str]:
    argv = ["env", "-C", cwd]
    if as_user:
        argv += ["setpriv", "--reuid", as_user, "--regid", as_user, "--init-groups", "--"]
    r = sb.run([*argv, sys.executable, "-m", "devbox", "doctor", "--json", *args], env=env, timeout=300)
    assert r.returncode in (0, 1), r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["schema"] == "devbox.doctor/1"
    assert report["ok"] is (r.returncode == 0)
    return r.returncode, {f["id"]: f for f in report["findings"]}, r.stderr


def _setup(sb: EtcSandbox, name: str, subuid: str, config: dict[str, object] | None = None,
           extra_args: list[str] | None = None, start: bool = True) -> PrivateDaemon:
    sb.write("/etc/subuid", subuid)
    sb.write("/etc/subgid", subuid)
    d = sb.daemon(name, config=config if config is not None else {}, extra_args=extra_args)
    if start:
        sb.start_daemon(d)
    return d


def _fix(sb: EtcSandbox, d: PrivateDaemon, env: dict[str, str]) -> tuple[int, dict[str, Any], str]:
    return _doctor(sb, {**env, **d.env}, "--fix", "--restart-cmd", sb.restart_cmd(d))


def _assert_remap_ok(found: dict[str, Any]) -> None:
    assert {i: found[i]["status"] for i in REMAP_IDS} == {i: "ok" for i in REMAP_IDS}


def _probe_tag() -> str:
    import hashlib

    from devbox.engine.probe import PROBE_REPO, probe_image_tar

    return f"{PROBE_REPO}:{hashlib.sha256(probe_image_tar()).hexdigest()[:12]}"


def test_remap_off_fixed_then_old_images_counted(etc_sandbox: EtcSandbox, env: dict[str, str]) -> None:
    sb = etc_sandbox
    d = _setup(sb, "dr-off", GOOD, config={"debug": False})
    e = {**env, **d.env}
    rc, found, _ = _doctor(sb, e)
    assert rc == 1
    assert found["daemon.json"]["status"] == "fail"
    assert found["daemon.json"]["evidence"] == ['/etc/docker/daemon.json has no "userns-remap"']
    assert found["daemon.json"]["fix"] == "sudo devbox remap --apply"
    assert found["daemon.live"]["status"] == "fail"
    assert found["daemon.live"]["evidence"][-1] == f"the engine at {d.host} runs containers as real root (no userns-remap)"
    assert found["daemon.live"]["fix"] == "restart dockerd after configuring: sudo devbox remap --apply"
    assert found["probe.file-owner"]["evidence"] == [f"created by container root: host uid 0, gid 0 (want {UID}, {UID})"]
    assert found["probe.process"]["evidence"] == ["container root's process: host uid 0, gid 0"]
    assert found["daemon.old-images"] == {
        "id": "daemon.old-images", "group": "daemon", "status": "ok", "title": "images from before the remap",
        "evidence": [f"data root {d.data_root} is not a remapped one: every image is visible"], "fix": None,
        "needs": ["engine.socket"],
    }
    assert found["engine.kind"]["status"] == "ok"
    assert found["engine.kind"]["evidence"][0].startswith(f"{d.host}: Docker 20.10")
    assert found["engine.access"]["status"] == "warn"
    assert found["engine.access"]["evidence"] == [
        f"{d.socket}: srw-rw---- root:docker",
        "devbox-tester reaches it through group 'docker' (members: devbox-tester)",
        "members of 'docker' are root-equivalent: any of them can start a privileged container that bind-mounts / "
        "and owns the host",
    ]

    rc, found, err = _fix(sb, d, env)
    assert rc == 0, err
    assert "restarting dockerd" in err
    _assert_remap_ok(found)
    assert json.loads(sb.read("/etc/docker/daemon.json")) == {"debug": False, "userns-remap": USER}
    # the probe image imported before the remap is still under the old root, invisible now
    old = found["daemon.old-images"]
    assert old["status"] == "warn"
    assert old["evidence"] == [
        f"{d.data_root}/image/overlay2/repositories.json: 1 image(s), 1 tag(s): {_probe_tag()}",
        f"dockerd now keeps everything under {d.data_root}/{UID}.{UID}: these are not visible while the remap is on (not lost)",
    ]
    assert old["fix"].startswith("to use one under the remap: sudo devbox remap --revert, docker save IMAGE -o image.tar")
    # --fix went through remap's journal: remap --revert undoes it
    journal = json.loads((Path(env["DEVBOX_SYSTEM_STATE_DIR"]) / "remap" / "journal.json").read_text())
    assert [f["path"] for f in journal["applies"][0]["files"]] == ["/etc/docker/daemon.json"]


def test_reversed_subuid_lines(etc_sandbox: EtcSandbox, env: dict[str, str]) -> None:
    sb = etc_sandbox
    d = _setup(sb, "dr-rev", f"devbox-tester:100000:65536\ndevbox-tester:{UID}:1\n", config={"userns-remap": USER})
    rc, found, _ = _doctor(sb, {**env, **d.env})
    assert rc == 1
    f = found["subuid.own-line"]
    assert (f["status"], f["fix"]) == ("fail", f"sudo devbox remap --apply  (moves devbox-tester:{UID}:1 first)")
    assert f["evidence"] == [
        "/etc/subuid:1: devbox-tester:100000:65536",
        f"/etc/subuid:2: devbox-tester:{UID}:1",
        f"devbox-tester:{UID}:1 is not first: dockerd takes the lines in file order, so container root becomes host uid 100000",
    ]
    assert found["daemon.live"]["evidence"][-1] == (
        f"the engine at {d.host} remaps container root to 100000:100000, not to devbox-tester ({UID}:{UID})")
    assert found["probe.file-owner"]["evidence"] == [
        f"created by container root: host uid 100000, gid 100000 (want {UID}, {UID})"
    ]
    rc, found, err = _fix(sb, d, env)
    assert rc == 0, err
    _assert_remap_ok(found)
    assert sb.read("/etc/subuid") == GOOD


def test_seed_style_range(etc_sandbox: EtcSandbox, env: dict[str, str]) -> None:
    sb = etc_sandbox
    d = _setup(sb, "dr-seed", f"devbox-tester:{UID}:65536\n", config={"userns-remap": USER})
    rc, found, _ = _doctor(sb, {**env, **d.env})
    assert rc == 1
    f = found["subuid.accounts"]
    assert (f["status"], f["fix"]) == ("fail", "sudo devbox remap --apply  (replaces the range with a free one)")
    assert f["evidence"][0] == (f"/etc/subuid:1: devbox-tester:{UID}:65536 maps container uids 1.. onto host uids {UID + 1}.., "
                                "the ids of real accounts")
    rc, found, err = _fix(sb, d, env)
    assert rc == 0, err
    _assert_remap_ok(found)
    assert sb.read("/etc/subuid") == GOOD


def test_overlapping_range(etc_sandbox: EtcSandbox, env: dict[str, str]) -> None:
    sb = etc_sandbox
    text = f"devbox-other:100000:65536\ndevbox-tester:{UID}:1\ndevbox-tester:150000:65536\n"
    d = _setup(sb, "dr-ovl", text, config={"userns-remap": USER})
    rc, found, _ = _doctor(sb, {**env, **d.env})
    assert rc == 1
    f = found["subuid.overlap"]
    assert f["status"] == "fail"
    assert f["evidence"] == [
        "/etc/subuid:3 devbox-tester:150000:65536 overlaps devbox-other's range devbox-other:100000:65536 at /etc/subuid:1"
    ]
    assert f["fix"] == "sudo devbox remap --apply  (gives devbox-tester a free range; other users' lines are left alone)"
    rc, found, err = _fix(sb, d, env)
    assert rc == 0, err
    _assert_remap_ok(found)
    assert sb.read("/etc/subuid") == f"devbox-other:100000:65536\ndevbox-tester:{UID}:1\ndevbox-tester:215536:65536\n"


def test_flag_and_daemon_json_conflict(etc_sandbox: EtcSandbox, env: dict[str, str]) -> None:
    sb = etc_sandbox
    d = _setup(sb, "dr-flag", GOOD, config={"debug": False}, extra_args=[f"--userns-remap={USER}"])
    sb.write("/etc/docker/daemon.json", json.dumps({"debug": False, "userns-remap": USER}, indent=2) + "\n")
    rc, found, _ = _doctor(sb, {**env, **d.env})
    assert rc == 1
    f = found["daemon.flags"]
    assert f["status"] == "fail"
    pid = d.pid()
    assert f["evidence"] == [
        f"running dockerd (pid {pid}): --userns-remap={USER}",
        '/etc/docker/daemon.json also sets "userns-remap": dockerd refuses to start when a directive is both a flag '
        "and in the config file",
    ]
    assert f["fix"] == (f'sudo devbox remap --apply  (removes the duplicate "userns-remap" from daemon.json; the flag in '
                        f"running dockerd (pid {pid}) stays)")
    rc, found, err = _fix(sb, d, env)
    assert rc == 0, err
    _assert_remap_ok(found)
    assert json.loads(sb.read("/etc/docker/daemon.json")) == {"debug": False}


def test_daemon_down_skips_dependents_and_fix_starts_it(etc_sandbox: EtcSandbox, env: dict[str, str]) -> None:
    sb = etc_sandbox
    d = _setup(sb, "dr-down", GOOD, config={"userns-remap": USER}, start=False)
    rc, found, _ = _doctor(sb, {**env, **d.env})
    assert rc == 1
    assert found["engine.socket"] == {
        "id": "engine.socket", "group": "engine", "status": "fail", "title": "Docker engine reachable", "needs": [],
        "evidence": [f"DOCKER_HOST={d.host} (from the environment)", f"{d.socket} does not exist",
                     f"no Docker daemon socket at {d.socket}"],
        "fix": "start the engine (sudo systemctl start docker), or set DOCKER_HOST to the engine you use",
    }
    for fid in ("engine.kind", "daemon.live", "daemon.old-images", "probe.file-owner", "probe.process", "probe.uid-map"):
        assert (found[fid]["status"], found[fid]["evidence"]) == (
            "skip", ["skipped: engine.socket (Docker engine reachable) failed"]), fid
    # the files are right: nothing else fails
    assert {i for i, f in found.items() if f["status"] == "fail"} == {"engine.socket"}
    rc, found, err = _fix(sb, d, env)
    assert rc == 0, err
    _assert_remap_ok(found)
    assert found["engine.socket"]["status"] == "ok"


def test_socket_without_permission(etc_sandbox: EtcSandbox, env: dict[str, str]) -> None:
    sb = etc_sandbox
    d = _setup(sb, "dr-perm", GOOD, config={"userns-remap": USER})
    e = {k: v for k, v in {**env, **d.env}.items() if k != "SUDO_USER"}
    rc, found, _ = _doctor(sb, e, as_user="devbox-other")
    assert rc == 1
    assert found["engine.socket"]["evidence"] == [
        f"DOCKER_HOST={d.host} (from the environment)",
        f"{d.socket}: srw-rw---- root:docker",
        f"permission denied on {d.socket}",
    ]
    assert found["engine.socket"]["fix"] == (
        "sudo usermod -aG docker devbox-other, then log in again (members of 'docker' are root-equivalent: any of them "
        "can start a privileged container); or run devbox with sudo"
    )
    assert found["engine.access"]["status"] == "warn"
    assert found["engine.access"]["evidence"][-1] == "devbox-other is not in group 'docker': devbox commands need sudo"
    assert found["probe.uid-map"]["evidence"] == ["skipped: engine.socket (Docker engine reachable) failed"]
    # --fix needs root: one line, exit 2, nothing changed
    before = sb.read("/etc/subuid")
    r = sb.run(["setpriv", "--reuid", "devbox-other", "--regid", "devbox-other", "--init-groups", "--",
                sys.executable, "-m", "devbox", "doctor", "--fix"], env=e)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip().splitlines() == [
        "devbox: error: --fix changes /etc/subuid, /etc/subgid and daemon.json and restarts dockerd: it needs root — "
        "run: sudo devbox doctor --fix --user devbox-other"
    ]
    assert sb.read("/etc/subuid") == before
    # people's output: grouped, one line per check, details and the fix only where something is wrong
    r = sb.run(["setpriv", "--reuid", "devbox-other", "--regid", "devbox-other", "--init-groups", "--",
                sys.executable, "-m", "devbox", "doctor"], env=e)
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert lines[0] == f"devbox doctor — devbox-other (uid {OTHER_UID}, gid {OTHER_UID})"
    assert lines[2:8] == [
        "engine",
        "✗ fail Docker engine reachable  [engine.socket]",
        f"       DOCKER_HOST={d.host} (from the environment)",
        f"       {d.socket}: srw-rw---- root:docker",
        f"       permission denied on {d.socket}",
        "       fix: sudo usermod -aG docker devbox-other, then log in again (members of 'docker' are root-equivalent: "
        "any of them can start a privileged container); or run devbox with sudo",
    ]
    assert "✓ ok   kernel user namespaces  [kernel.userns]" in lines
    assert lines[lines.index("✓ ok   kernel user namespaces  [kernel.userns]") + 1].startswith("✓ ok   AppArmor")
    assert lines[-1].endswith("skipped") and lines[-1].startswith(f"{sum(1 for x in found.values() if x['status'] == 'fail')} failed")


PROJECT = 'name = "{name}"\n'


def test_profile_user_in_subordinate_range_writing_the_work_dir(
    etc_sandbox: EtcSandbox, env: dict[str, str], project: Path,
) -> None:
    sb = etc_sandbox  # /etc/subuid from the suite: devbox-tester:UID:1, devbox-tester:200000:65536
    (project / "devbox.toml").write_text('name = "byuser"\n\n[services.runtime]\nuser = "1000"\n')
    _own(project)
    e = {**env, "DOCKER_HOST": "unix:///run/devbox-test/no-such.sock"}
    rc, found, _ = _doctor(sb, e, cwd=str(project))
    assert rc == 1
    assert found["project.config"]["evidence"] == [
        f"{project}/devbox.toml: project byuser, profile python (db, editor, runtime)"
    ]
    assert found["project.by-design"] == {
        "id": "project.by-design", "group": "project", "status": "fail",
        "title": "no service is set up to write files you will not own", "needs": ["project.config"],
        "evidence": [f'profile python: services.runtime: user = "1000" writes to {project} → /work: container uid 1000 '
                     "is host uid 200999, in devbox-tester's subordinate range, and no idmap helper answers to give it a view"],
        "fix": "sudo devbox idmap --install (up then gives it an idmapped view that stores its files as you), or remove "
               f'user = "1000" from [services.runtime] in {project}/devbox.toml: with the remap, container root '
               f"is already you (uid {UID})",
    }
    assert found["project.leaks"]["status"] == "ok"
    assert found["project.containers"]["evidence"] == ["skipped: engine.socket (Docker engine reachable) failed"]

    (project / "devbox.toml").write_text('name = "byuser"\n')
    rc, found, _ = _doctor(sb, e, cwd=str(project))
    assert found["project.by-design"]["status"] == "ok"


def test_leaked_files_privileged_container_and_watcher(
    etc_sandbox: EtcSandbox, env: dict[str, str], project: Path, plain_engine: PrivateDaemon,
) -> None:
    from devbox.watch.leaks import Kind, Leak, RecordLog

    sb = etc_sandbox
    d = _setup(sb, "dr-leak", GOOD, config={"userns-remap": USER})
    import_base_images(d, ("bookworm",))
    (project / "devbox.toml").write_text('name = "leaky"\n')
    (project / "data" / "mine").write_text("x")
    _own(project)
    data = project / "data"
    img = "debian:bookworm-slim"
    # for real: a container user's chown on the remapped daemon, root's write on one without remap
    d.docker("run", "--rm", "-v", f"{data}:/data", img, "sh", "-c", "touch /data/by-uid5 && chown 5:5 /data/by-uid5")
    plain_engine.docker("run", "--rm", "-v", f"{data}:/data", img, "touch", "/data/by-root")
    assert (os.stat(data / "by-uid5").st_uid, os.stat(data / "by-root").st_uid) == (100004, 0)
    d.docker("create", "--privileged", "--userns=host", "--label", "devbox.project=leaky", "--name", f"leaky-priv-{SESSION}", img, "true")

    e = {**env, **d.env}
    rc, found, _ = _doctor(sb, e, cwd=str(project))
    assert rc == 1
    leaks = found["project.leaks"]
    assert leaks["status"] == "fail"
    assert leaks["evidence"] == [
        f"2 leaked path(s) from a scan of 2 directories under {project}",
        "1 path(s) owned by container uid 5 (host uid 100004): data/by-uid5",
        "1 path(s) owned by root (uid 0): data/by-root",
    ]
    assert leaks["fix"] == ("devbox leaks --fix  (a helper container chowns the 1 mapped path(s) back to you, no sudo); "
                            "then sudo devbox leaks --fix")
    assert found["project.containers"]["status"] == "fail"
    assert found["project.containers"]["evidence"] == [f"leaky-priv-{SESSION} (created): privileged, host user namespace"]
    assert found["project.inotify"]["status"] == "ok"
    assert found["project.inotify"]["evidence"][0] == (
        f"2 directories to watch under {project} (ignoring nothing)"
    )
    # as you, a directory you cannot list is named (what it holds is unknown), not passed over
    closed = data / "closed"
    closed.mkdir()
    os.chown(closed, UID, UID)
    closed.chmod(0)
    _, as_you, _ = _doctor(sb, {**e, "DEVBOX_STATE_DIR": str(RUN / f"no-state-{SESSION}")}, cwd=str(project), as_user=USER)
    leaks = as_you["project.leaks"]
    assert leaks["evidence"][-1] == "data/closed/: cannot be read, so what is inside it is not checked"
    assert leaks["fix"].endswith(f"; then chmod u+rx -- {closed}")
    closed.rmdir()
    pidfile = Path(env["DEVBOX_STATE_DIR"]) / "watch" / "leaky.pid"
    assert found["watcher.running"]["status"] == "ok"
    assert found["watcher.running"]["evidence"] == [f"{pidfile} does not exist", "no running container of leaky: no watcher needed"]

    # a running stack without its watcher
    d.docker("run", "-d", "--label", "devbox.project=leaky", "--name", f"leaky-run-{SESSION}", img, "sleep", "300")
    rc, found, _ = _doctor(sb, e, cwd=str(project))
    w = found["watcher.running"]
    assert (w["status"], w["evidence"]) == ("warn", [f"{pidfile} does not exist: no watcher", "1 running container(s) of leaky"])
    assert w["fix"] == "devbox up  (starts the watcher), or run devbox watch in a terminal"
    # a watcher that died
    pidfile.parent.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    pidfile.write_text(f"{dead.pid}\n")
    rc, found, _ = _doctor(sb, e, cwd=str(project))
    log = pidfile.with_suffix(".log")
    assert found["watcher.running"]["evidence"][0] == f"{pidfile}: pid {dead.pid} is not running (the watcher died; its log: {log})"
    assert found["watcher.running"]["status"] == "warn"
    # a live one, and its records are what doctor reports
    # (a process whose command line is the background watcher's: doctor checks it is one, not a reused pid)
    live = subprocess.Popen(["sh", "-c", "sleep 300", "devbox", "watch", "--background"])
    pidfile.write_text(f"{live.pid}\n")
    records = RecordLog(pidfile.with_name("leaky.leaks.jsonl"))
    records.write(Leak(f"{data}/n/pkg", 101000, 101000, Kind.SUBORDINATE, 1000, 1000, ("runtime",), is_dir=True))
    records.close()
    rc, found, _ = _doctor(sb, e, cwd=str(project))
    assert found["watcher.running"]["status"] == "ok"
    assert found["project.leaks"]["evidence"] == [
        f"1 leaked path(s) from the watcher's records ({records.path})",
        "1 path(s) owned by container uid 1000 (host uid 101000, service runtime): data/n/pkg/",
    ]
    live.kill()
    d.docker("rm", "-f", f"leaky-run-{SESSION}", f"leaky-priv-{SESSION}")
