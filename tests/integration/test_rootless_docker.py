"""Rootless Docker (dockerd-rootless.sh under RootlessKit), as an ordinary account: detected, strategy
``rootless`` proven by the probe, ``remap --apply`` changes nothing, and ``up`` runs a stack whose
container root writes your files — against a real rootless dockerd."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.ids import free_id
from harness.images import tarball
from harness.rootless_docker import CONTRIB, RootlessDocker
from harness.sandbox import EtcSandbox

NAME = "devbox-rootlessd"
FIRST = 450000
# a profile of the project's own on the base image alone: nothing to build, what is tested is the engine
PROFILE = """\
description = "debian only, on rootless Docker"

[services.editor]
image = "debian:bookworm-slim"
command = ["sleep", "infinity"]
working_dir = "/work"

[services.tools]
image = "debian:bookworm-slim"
command = ["sleep", "infinity"]
workdir = false
volumes = ["cache:/cache"]
"""


@pytest.fixture
def rootless_docker(etc_sandbox: EtcSandbox) -> Iterator[RootlessDocker]:
    missing = [what for what, ok in (("rootlesskit", shutil.which("rootlesskit")),
                                    ("slirp4netns", shutil.which("slirp4netns")),
                                    ("dockerd-rootless.sh", (CONTRIB / "dockerd-rootless.sh").exists())) if not ok]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing (tests/run installs rootlesskit and slirp4netns)", pytrace=False)
    d = RootlessDocker(etc_sandbox, NAME, free_id(1730), FIRST)
    try:
        d.start()
        d.import_image(tarball("bookworm"), "debian:bookworm-slim")
        yield d
    finally:
        d.destroy()


def _devbox(d: RootlessDocker, *args: str, cwd: Path) -> tuple[int, str, str]:
    r = d.run("env", "-C", str(cwd), sys.executable, "-m", "devbox", *args,
              env={"COLUMNS": "200", "DEVBOX_STATE_DIR": str(d.home / ".local/state/devbox")})
    return r.returncode, r.stdout, r.stderr


def test_up_on_rootless_docker_makes_container_root_you(rootless_docker: RootlessDocker) -> None:
    d = rootless_docker
    proj = d.home / "proj"
    (proj / ".devbox" / "profiles").mkdir(parents=True)
    (proj / ".devbox" / "profiles" / "tiny.toml").write_text(PROFILE)
    (proj / "devbox.toml").write_text('name = "rl"\nprofile = "tiny"\n')
    for p in (proj, proj / ".devbox", proj / ".devbox" / "profiles", proj / ".devbox/profiles/tiny.toml", proj / "devbox.toml"):
        os.chown(p, d.uid, d.uid)

    rc, out, err = _devbox(d, "remap", "--json", cwd=proj)
    assert rc == 0, out + err
    report = json.loads(out)
    assert report["engine"]["kind"] == "docker-rootless"
    assert report["strategy"]["name"] == "rootless"
    # the probe: container root is you; uid 1 and up are your subordinate range
    assert report["probe"]["file_owner"] == {"uid": d.uid, "gid": d.uid}
    assert report["probe"]["uid_map"][:2] == [{"container": 0, "host": d.uid, "count": 1},
                                              {"container": 1, "host": FIRST, "count": 65536}]
    rc, out, err = _devbox(d, "remap", "--apply", "--yes", cwd=proj)
    assert rc == 0, out + err  # nothing to change, and never daemon.json (moby#48521)
    assert not d.sb.path("/etc/docker/daemon.json").exists()

    rc, out, err = _devbox(d, "up", "-d", cwd=proj)
    assert rc == 0, out + err
    rc, out, err = _devbox(d, "exec", "editor", "--", "sh", "-c", "id -u && mkdir /work/out && echo x > /work/out/made", cwd=proj)
    assert rc == 0 and out.split()[0] == "0", out + err  # container root ...
    made = proj / "out" / "made"
    assert made.stat().st_uid == d.uid and (proj / "out").stat().st_uid == d.uid  # ... writes files that are yours
    # a container user other than root lands in your subordinate range (what the watcher and doctor explain)
    r = d.run("docker", "exec", "-u", "1000", "devbox-rl-tools", "sh", "-c", "touch /tmp/x && stat -c %u /tmp/x")
    assert r.returncode == 0 and r.stdout.strip() == "1000", r.stdout + r.stderr

    rc, out, err = _devbox(d, "ps", "--json", cwd=proj)
    assert rc == 0, out + err
    ps = json.loads(out)
    assert ps["engine"]["kind"] == "docker-rootless" and ps["engine"]["strategy"] == "rootless"
    assert {s["service"]: s["state"] for s in ps["services"]} == {"editor": "running", "tools": "running"}
    assert not any(s["root_is_host_root"] for s in ps["services"])

    rc, out, err = _devbox(d, "doctor", "--json", cwd=proj)
    found = {f["id"]: f for f in json.loads(out)["findings"]}
    assert rc == 0, out + err
    assert "engine kind: docker-rootless" in found["engine.kind"]["evidence"]
    assert found["daemon.json"]["status"] == "skip"
    assert not [i for i, f in found.items() if f["status"] == "fail"]

    rc, out, err = _devbox(d, "down", cwd=proj)
    assert rc == 0, out + err
    assert d.run("docker", "ps", "-aq").stdout == ""
