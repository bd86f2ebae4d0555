"""Idmapped views, for real: the root helper, `devbox idmap`'s proof, `up` with strategy idmap on a dockerd
without remap, per-service views under remap, crash convergence, and the helper's refusals.

The helper runs as root in the suite's mount namespace (the one the test dockerds use), installed with
`devbox idmap --install` the way a user would (no systemd here: it starts itself); devbox runs as the
test user.  Only the host's Docker (20.10) runs these: the 26.1 daemon lives in its own root
filesystem, where the helper's staging directory is not mounted (README: the test matrix).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.daemon import RUN, SESSION, PrivateDaemon
from harness.ids import OTHER_UID, TEST_UID

from .test_stack import HOME, USER, make_profile_project, make_project, ok, owners

IDMAP_RUN = RUN / f"idmapd-{SESSION}"  # what PrivateDaemon.env gives every devbox run of the suite
MOUNTS = IDMAP_RUN / "mounts"

PROFILE = """\
description = "an editor and a runtime sharing the work dir"

[services.editor]
image = "debian:bookworm-slim"
command = ["sleep", "infinity"]
working_dir = "/work"

[services.runtime]
image = "debian:bookworm-slim"
command = ["sleep", "infinity"]
working_dir = "/work"
{runtime_user}
"""


def base_env(tmp: Path) -> dict[str, str]:
    return {"DEVBOX_IDMAP_RUN": str(IDMAP_RUN), "DEVBOX_SYSTEMD_RUNNING": "/nonexistent",
            "DEVBOX_SYSTEM_STATE_DIR": str(tmp / "system-state")}


def run_devbox(engine: PrivateDaemon, cwd: Path, *args: str, as_user: str | None = USER, env: dict[str, str] | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess[str]:
    full_env = {"PATH": os.environ["PATH"], "HOME": HOME, "COLUMNS": "200", "LANG": "C.UTF-8",
                "DEVBOX_IDMAP_RUN": str(IDMAP_RUN), **engine.env, **(env or {})}
    argv = [sys.executable, "-m", "devbox", *args]
    if as_user is not None:
        argv = ["setpriv", "--reuid", as_user, "--regid", as_user, "--init-groups", "--", *argv]
    return subprocess.run(argv, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def views_mounted() -> list[str]:
    """Mount points under the helper's staging directory, as this mount namespace sees them."""
    prefix = str(MOUNTS) + "/"
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(prefix)]


@pytest.fixture(scope="module")
def helper(test_user: dict[str, object], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """`sudo devbox idmap --install`, and `--uninstall` after the module."""
    env = {**os.environ, **base_env(tmp_path_factory.mktemp("idmap"))}
    r = subprocess.run([sys.executable, "-m", "devbox", "idmap", "--install"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no systemd here" in r.stderr and "does not start at boot by itself" in r.stderr
    assert os.stat(MOUNTS).st_mode & 0o777 == 0o700 and os.stat(MOUNTS).st_uid == 0
    # a second --install finds it running
    again = subprocess.run([sys.executable, "-m", "devbox", "idmap", "--install"], env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "already runs" in again.stderr, again.stdout + again.stderr
    yield env
    r = subprocess.run([sys.executable, "-m", "devbox", "idmap", "--uninstall"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert views_mounted() == []
    assert not (IDMAP_RUN / "idmapd.sock").exists()


def project(name: str, runtime_user: str = "", strategy: str = "auto", more_services: str = "") -> Path:
    return make_profile_project(name, PROFILE.format(runtime_user=runtime_user) + more_services,
                                f'\n[ownership]\nstrategy = "{strategy}"\n')


def ask_as_user(req: dict[str, object], uid: int = TEST_UID) -> dict[str, object]:
    """One raw request to the helper's socket from a process running as ``uid``."""
    code = ("import json, socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
            "s.sendall(sys.argv[2].encode() + b'\\n'); print(s.makefile().readline())")
    r = subprocess.run(["setpriv", "--reuid", str(uid), "--regid", str(uid), "--clear-groups", "--",
                        sys.executable, "-c", code, str(IDMAP_RUN / "idmapd.sock"), json.dumps(req)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    reply: dict[str, object] = json.loads(r.stdout)
    return reply


# --- the helper's rules -------------------------------------------------------------------------


def test_the_helper_grants_only_your_own_directory_mapped_onto_ids_you_hold(helper: dict[str, str]) -> None:
    root = make_project("rules", 'name = "rules"\n')
    mine = root / "mine"
    mine.mkdir()
    os.chown(mine, TEST_UID, TEST_UID)
    theirs = root / "theirs"
    theirs.mkdir()
    os.chown(theirs, OTHER_UID, OTHER_UID)
    link = root / "link"
    link.symlink_to(mine)
    os.lchown(link, TEST_UID, TEST_UID)

    def mount(source: str, writer: list[int], name: str = "rules-0000000000000000") -> dict[str, object]:
        return ask_as_user({"op": "mount", "name": name, "source": source, "writer": writer})

    refused = {
        "another user's directory": mount(str(theirs), [0, 0]),
        "a symlinked path": mount(str(link), [0, 0]),
        "a path through a symlink": mount(f"{link}/.", [0, 0]),
        "a path with ..": mount(f"{mine}/../mine", [0, 0]),
        "a map onto another account": mount(str(mine), [OTHER_UID, OTHER_UID]),
        "a map onto another group": mount(str(mine), [0, OTHER_UID]),
        "a name with a slash": mount(str(mine), [0, 0], name="../../etc"),
    }
    for what, reply in refused.items():
        assert reply["ok"] is False and reply["refused"] is True, (what, reply)
    assert "belongs to uid" in str(refused["another user's directory"]["error"])
    assert "symlink" in str(refused["a symlinked path"]["error"])
    assert "another account" in str(refused["a map onto another account"]["error"])
    assert views_mounted() == []

    granted = mount(str(mine), [0, 0])
    assert granted["ok"] is True and granted["adopted"] is False, granted
    assert granted["path"] == f"{MOUNTS}/{TEST_UID}/rules-0000000000000000"
    assert mount(str(mine), [0, 0])["adopted"] is True  # asked again: adopted, not stacked
    assert views_mounted() == [granted["path"]]
    # another user cannot see or release it: names live in the caller's own directory
    assert ask_as_user({"op": "list"}, uid=OTHER_UID)["views"] == []
    ask_as_user({"op": "unmount", "name": "rules-0000000000000000"}, uid=OTHER_UID)
    assert views_mounted() == [granted["path"]]
    assert ask_as_user({"op": "unmount", "name": "rules-0000000000000000"})["ok"] is True
    assert views_mounted() == []
    log = (IDMAP_RUN / "idmapd.log").read_text()
    assert log.count(f"REFUSED uid={TEST_UID}") >= len(refused)


# --- the proof, and up on a dockerd without remap ------------------------------------------------------


def test_devbox_idmap_proves_views_on_a_dockerd_without_remap(plain_engine: PrivateDaemon, helper: dict[str, str]) -> None:
    root = project("idproof")
    report = json.loads(run_devbox(plain_engine, root, "idmap", "--json").stdout)
    status = {f["id"]: f["status"] for f in report["findings"]}
    assert status == {"idmap.kernel": "ok", "idmap.filesystem": "ok", "idmap.helper": "ok", "idmap.proof": "ok"}, [f["evidence"] for f in report["findings"]]
    proof = next(f for f in report["findings"] if f["id"] == "idmap.proof")
    assert f"owned by {TEST_UID}:{TEST_UID} and {TEST_UID}:{TEST_UID} on the host" in proof["evidence"][0]
    assert "Value too large" in proof["evidence"][1]  # chown to uid 5 inside: EOVERFLOW
    assert report["ok"] is True and views_mounted() == []
    assert [p.name for p in root.iterdir() if p.name.startswith(".devbox-idmap")] == []


def test_up_with_idmap_on_a_plain_dockerd_writes_your_files_and_down_leaves_no_mount(
    plain_engine: PrivateDaemon, helper: dict[str, str],
) -> None:
    root = project("idplain")
    try:
        up = ok(run_devbox(plain_engine, root, "up", "-d"))
        assert "idmapped views: 1 made" in up.stderr  # editor and runtime see the work dir through one map: one mount
        assert len(views_mounted()) == 1
        out = ok(run_devbox(plain_engine, root, "exec", "editor", "sh", "-c",
                            "id -u; touch /work/by-editor; mkdir -p /work/src/pkg; echo x > /work/src/pkg/m.py; "
                            "stat -c %u /work/by-editor; chown 5 /work/by-editor 2>&1; echo rc=$?")).stdout
        lines = out.splitlines()
        assert lines[0] == "0" and lines[1] == "0"  # root inside, and the file looks like root's inside
        assert "Value too large" in out and "rc=1" in out
        ok(run_devbox(plain_engine, root, "exec", "runtime", "sh", "-c", "touch /work/by-runtime"))
        assert owners(root) == {}  # every file the containers wrote is the test user's
        ps = json.loads(ok(run_devbox(plain_engine, root, "ps", "--json")).stdout)
        assert ps["engine"]["strategy"] == "idmap" and ps["engine"]["processes_run_as"] == "host root"
        assert {v["service"] for v in ps["engine"]["views"]} == {"editor", "runtime"}
        assert all(s["up_to_date"] == "yes" for s in ps["services"]), ps
        human = ok(run_devbox(plain_engine, root, "ps"))
        assert "their processes still run as host root" in human.stderr
        assert "root is root" not in human.stderr
        ok(run_devbox(plain_engine, root, "up", "-d"))  # a second up: nothing changes, views adopted
        assert len(views_mounted()) == 1
        doctor = run_devbox(plain_engine, root, "doctor", "--json")
        assert doctor.stdout, doctor.stderr
        found = {f["id"]: f for f in json.loads(doctor.stdout)["findings"]}
        assert {i: found[i]["status"] for i in ("idmap.kernel", "idmap.filesystem", "idmap.helper", "idmap.proof",
                                               "project.by-design", "project.leaks")} == dict.fromkeys(
            ("idmap.kernel", "idmap.filesystem", "idmap.helper", "idmap.proof", "project.by-design", "project.leaks"), "ok")
        for remap_only in ("daemon.json", "daemon.live", "subuid.own-line", "probe.file-owner"):
            assert found[remap_only]["status"] == "skip", found[remap_only]
        assert doctor.returncode == 0, [f for f in found.values() if f["status"] == "fail"]
    finally:
        down = run_devbox(plain_engine, root, "down")
    assert down.returncode == 0, down.stderr
    assert "idmapped views: 1 released" in down.stderr
    assert views_mounted() == []


def test_a_sigkilled_up_converges_with_no_duplicate_mounts(plain_engine: PrivateDaemon, helper: dict[str, str]) -> None:
    # the runtime runs as your own uid: a second map, so a second view (a uid that is yours may write as you)
    root = project("idcrash", runtime_user=f'user = "{TEST_UID}:{TEST_UID}"')
    env = {"PATH": os.environ["PATH"], "HOME": HOME, "DEVBOX_IDMAP_RUN": str(IDMAP_RUN),
           "DEVBOX_FAULT_DELAY": "idmap-view=60", **plain_engine.env}
    proc = subprocess.Popen(["setpriv", "--reuid", USER, "--regid", USER, "--init-groups", "--",
                             sys.executable, "-m", "devbox", "up", "-d"], cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not views_mounted():
            assert proc.poll() is None and time.monotonic() < deadline, "up never made its first view"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert len(views_mounted()) == 1
        ok(run_devbox(plain_engine, root, "up", "-d"))
        mounted = views_mounted()
        assert len(mounted) == 2 and len(set(mounted)) == 2, mounted  # one each: adopted or replaced, never stacked
        ok(run_devbox(plain_engine, root, "exec", "editor", "touch", "/work/after-crash"))
        assert owners(root) == {}
        # the helper itself killed: the views stay for the containers, and a new helper adopts them
        os.kill(int((IDMAP_RUN / "idmapd.pid").read_text()), signal.SIGKILL)
        time.sleep(0.2)
        r = subprocess.run([sys.executable, "-m", "devbox", "idmap", "--install"], env=helper, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        again = ok(run_devbox(plain_engine, root, "up", "-d"))
        assert "idmapped views: 0 made, 2 adopted" in again.stderr
        assert sorted(views_mounted()) == sorted(mounted)
    finally:
        proc.kill() if proc.poll() is None else None
        ok(run_devbox(plain_engine, root, "down"))
    assert views_mounted() == []


def test_without_the_helper_up_says_what_to_run(plain_engine: PrivateDaemon, test_user: dict[str, object]) -> None:
    root = project("idnohelper")
    r = run_devbox(plain_engine, root, "up", "-d", env={"DEVBOX_IDMAP_RUN": str(RUN / "no-helper-here")})
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith("devbox: error: refusing to start: services that bind-mount your files (editor, runtime) "
                               "need idmapped views and the idmap helper does not answer at ")
    assert "run 'sudo devbox idmap --install' (idmapped views, this engine unchanged) or 'sudo devbox remap --apply'" in r.stderr
    assert plain_engine.docker("ps", "-aq", "--filter", "label=devbox.project=idnohelper").stdout == ""


# --- under remap: a service running as a non-root uid ----------------------------------------------------


def test_under_remap_a_runtime_running_as_uid_1000_writes_your_files(remap_engine: PrivateDaemon, helper: dict[str, str]) -> None:
    root = project("idremap", runtime_user='user = "1000:1000"')
    try:
        up = ok(run_devbox(remap_engine, root, "up", "-d"))
        assert "idmapped views: 1 made" in up.stderr  # only the runtime: the editor's root is you already
        out = ok(run_devbox(remap_engine, root, "exec", "runtime", "sh", "-c",
                            "id -u; mkdir -p /work/build/lib && touch /work/build/lib/out.pyc && stat -c %u /work/build; "
                            "chown 0 /work/build 2>&1; echo rc=$?")).stdout
        assert out.splitlines()[:2] == ["1000", "1000"], out  # yours, seen as its own inside
        assert "rc=1" in out
        ok(run_devbox(remap_engine, root, "exec", "editor", "touch", "/work/by-editor"))
        assert owners(root) == {}
        leaks = json.loads(run_devbox(remap_engine, root, "leaks", "--json").stdout)
        assert leaks["leaks"] == [], leaks
        ps = json.loads(ok(run_devbox(remap_engine, root, "ps", "--json")).stdout)
        assert ps["engine"]["strategy"] == "remap"
        (view,) = ps["engine"]["views"]
        assert view["service"] == "runtime" and view["container_user"] == "1000:1000"
        assert view["map"]["uid"][0] == TEST_UID and view["map"]["uid"][2] == 1
        found = {f["id"]: f for f in json.loads(run_devbox(remap_engine, root, "doctor", "--json").stdout)["findings"]}
        assert found["project.by-design"]["status"] == "ok", found["project.by-design"]
        assert "through its own idmapped view" in found["project.by-design"]["evidence"][1]
        assert found["idmap.helper"]["status"] == "ok" and found["idmap.proof"]["status"] == "ok", found["idmap.proof"]
    finally:
        ok(run_devbox(remap_engine, root, "down"))
    assert views_mounted() == []
