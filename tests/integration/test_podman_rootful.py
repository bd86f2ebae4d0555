"""Rootful Podman, for real: detected, the idmap strategy chosen and proven by the probe (its directory
an idmapped bind, as the work dir of `up`'s services is), and `up`/`exec`/`ps`/`doctor`/`down` as a pod
whose work-dir binds crun idmaps: what container root writes there is the user's, and no other
container user can create files there.  devbox runs as the test user, who may use the socket (what a
group on the socket gives on a real host).  How crun is made to run on this cgroups v1 hybrid host:
:class:`harness.podman.RootfulPodman`."""

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

from harness.ids import TEST_UID
from harness.podman import RootfulPodman

from .test_idmap import project as idmap_project
from .test_stack import HOME, USER, ok, owners

# test_idmap's editor and runtime (both write the work dir), and a web service published on a port the
# engine picks (perl-base is in every Debian image: a one-line HTTP answer, no package installs)
WEB = """
[services.web]
build = { path = "webimg" }
ports = ["127.0.0.1::8000"]
command = ["perl", "-MIO::Socket::INET", "-e", "$s = IO::Socket::INET->new(LocalPort => 8000, Listen => 5, ReuseAddr => 1) or die; while ($c = $s->accept) { print $c qq(HTTP/1.0 200 OK\\r\\n\\r\\nhello from the pod\\n); close $c }"]
workdir = false
"""


def project(name: str) -> Path:
    """The project: the runtime runs as 1000, and web's image is built from the project's Dockerfile (a
    build through rootful Podman)."""
    root = idmap_project(name, runtime_user='user = "1000:1000"', more_services=WEB)
    (root / "webimg").mkdir()
    (root / "webimg" / "Dockerfile").write_text("FROM debian:bookworm-slim\nRUN echo built by rootful Podman > /built\n")
    for f in (root / "webimg", root / "webimg" / "Dockerfile"):
        os.chown(f, TEST_UID, TEST_UID)
    return root


@pytest.fixture(scope="module")
def rootful(test_user: dict[str, object]) -> Iterator[RootfulPodman]:
    for tool in ("podman", "crun"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (tests/run installs podman and crun)", pytrace=False)
    p = RootfulPodman()
    try:
        p.start()
        p.allow(TEST_UID)
        p.import_base("bookworm")
        yield p
    finally:
        p.destroy()


def run(p: RootfulPodman, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "HOME": HOME, "COLUMNS": "200", "LANG": "C.UTF-8", "DOCKER_HOST": p.host}
    argv = ["setpriv", "--reuid", USER, "--regid", USER, "--init-groups", "--", sys.executable, "-m", "devbox", *args]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def _findings(stdout: str) -> dict[str, dict[str, object]]:
    return {f["id"]: f for f in json.loads(stdout)["findings"]}


def test_rootful_podman_runs_the_stack_with_idmapped_binds_proven_by_the_probe(rootful: RootfulPodman) -> None:
    p = rootful
    root = project("rootfulpod")

    r = run(p, root, "remap", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["engine"]["kind"] == "podman-rootful"
    assert report["strategy"] == {"name": "idmap", "why": "chosen for this engine (auto)", "setting": "auto"}
    found = _findings(r.stdout)
    # the probe wrote through an idmapped bind as container root: the file is the user's; its process is
    # host root (idmap fixes ownership, it does not isolate), with no user namespace
    for fid in ("probe.file-owner", "probe.process", "probe.uid-map"):
        assert found[fid]["status"] == "ok", found[fid]
    assert f"host uid {TEST_UID}, gid {TEST_UID}" in str(found["probe.file-owner"]["evidence"])
    assert "host uid 0" in str(found["probe.process"]["evidence"])
    r = run(p, root, "remap")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "idmap proven: what container root writes through an idmapped bind is yours" in r.stdout
    r = run(p, root, "remap", "--apply")  # nothing to write for Podman: no root needed, no daemon.json
    assert r.returncode == 0, r.stdout + r.stderr
    assert not Path("/etc/docker/daemon.json").exists() or "userns-remap" not in Path("/etc/docker/daemon.json").read_text()

    r = ok(run(p, root, "up", "-d"))
    assert "pod devbox-rootfulpod: created (idmapped binds; network: bridge)" in r.stdout + r.stderr
    ps = json.loads(ok(run(p, root, "ps", "--json")).stdout)
    assert ps["engine"]["kind"] == "podman-rootful" and ps["engine"]["strategy"] == "idmap"
    assert ps["engine"]["processes_run_as"] == "host root"
    assert {v["service"] for v in ps["engine"]["views"]} == {"editor", "runtime"}
    rows = {s["service"]: s for s in ps["services"]}
    assert {k: rows[k]["state"] for k in rows} == {"editor": "running", "runtime": "running", "web": "running"}
    assert rows["editor"]["userns_mode"] == "host (pod; idmapped binds)"
    # the pod publishes web's port on Podman's bridge (CNI portmap), on a port the engine picked
    (published,) = rows["web"]["ports"]
    assert published.startswith("127.0.0.1:") and published.endswith("->8000/tcp"), rows["web"]
    assert rows["editor"]["ports"] == []
    port = int(published.split(":")[1].split("-")[0])
    answers: list[str] = []  # until the service answers (it may not listen yet), 30 s at most
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not answers or answers[-1] != "hello from the pod\n"):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
                answers.append(resp.read().decode())
        except OSError as exc:
            answers.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.2)
    body = answers[-1] if answers else ""
    assert body == "hello from the pod\n", (published, answers[:3], answers[-3:], p.podman("ps", "-a", check=False).stdout,
                                             p.podman("logs", "devbox-rootfulpod-web", check=False).stdout)
    assert ok(run(p, root, "exec", "web", "--", "cat", "/built")).stdout == "built by rootful Podman\n"

    # each service's bind maps you on disk to its own user: the editor's to root, the runtime's (user
    # 1000, a devcontainer's remoteUser) to 1000; both write the user's files and see them as their own
    ok(run(p, root, "exec", "editor", "--", "sh", "-c", "echo hi > /work/from-root && mkdir -p /work/dir/sub"))
    ok(run(p, root, "exec", "runtime", "--", "touch", "/work/from-1000"))  # exec runs as the service's user
    seen = {svc: ok(run(p, root, "exec", svc, "--", "stat", "-c", "%u:%g", "/work/from-root", "/work/from-1000")).stdout.split()
            for svc in ("editor", "runtime")}
    assert seen == {"editor": ["0:0", "0:0"], "runtime": ["1000:1000", "1000:1000"]}
    # any other user of a container has no mapping on its bind: it cannot create files there (no leak by design)
    r = run(p, root, "exec", "editor", "--", "setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups",
            "touch", "/work/from-editor-1000")
    assert r.returncode != 0 and "Value too large" in r.stdout + r.stderr, r.stdout + r.stderr
    assert not (root / "from-editor-1000").exists()
    for made in ("from-root", "from-1000", "dir/sub"):
        assert (root / made).stat().st_uid == TEST_UID, made
    assert owners(root) == {}

    r = run(p, root, "doctor", "--json")
    doctor = _findings(r.stdout)
    assert doctor["engine.kind"]["status"] == "ok"
    assert "ownership strategy: idmap" in str(doctor["engine.kind"]["evidence"])
    assert doctor["idmap.helper"]["status"] == "skip" and "rootful Podman makes idmapped binds itself" in str(
        doctor["idmap.helper"]["evidence"])
    assert doctor["probe.file-owner"]["status"] == "ok"
    assert not [f for f in doctor.values() if f["status"] == "fail"], r.stdout

    ok(run(p, root, "down"))
    assert p.podman("pod", "ls", "-q").stdout.strip() == ""
    assert p.podman("ps", "-aq").stdout.strip() == ""
    assert owners(root) == {}


def test_on_runc_which_ignores_idmapped_binds_up_refuses_and_doctor_and_the_probe_say_so(rootful: RootfulPodman) -> None:
    # runc 1.1 silently ignores the idmap bind option: container root would write root's files
    p = rootful
    p.use_runtime("runc")
    try:
        _runc_is_refused(p)
    finally:
        p.use_runtime("crun")


def _runc_is_refused(p: RootfulPodman) -> None:
    root = project("rootfulrunc")
    r = run(p, root, "up", "-d")
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith("devbox: error: Podman ") and "runs containers with runc, which ignores idmapped binds" in r.stderr
    assert "set runtime = \"crun\" under [engine]" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert p.podman("ps", "-aq", "--filter", "label=devbox.project=rootfulrunc").stdout.strip() == ""
    r = run(p, root, "doctor", "--json")
    doctor = _findings(r.stdout)
    assert doctor["engine.kind"]["status"] == "fail" and "runc" in str(doctor["engine.kind"]["evidence"])
    # the probe shows what runc does: its file is host root's
    assert doctor["probe.file-owner"]["status"] == "fail", doctor["probe.file-owner"]
    assert "host uid 0, gid 0" in str(doctor["probe.file-owner"]["evidence"])
    assert r.returncode != 0
