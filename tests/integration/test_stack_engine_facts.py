"""What `up` and `ps` say about the engine itself: its remap (or lack of one), a base image it cannot pull."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

from harness.daemon import PrivateDaemon

from .test_stack import HOME, UID, USER, devbox, make_profile_project, ok

REPO = Path(__file__).resolve().parents[2]

PLAIN = """\
description = "one container, no bind mount of your files"

[services.app]
image = "debian:bookworm-slim"
command = ["sleep", "infinity"]
workdir = false
"""

UNPULLABLE = """\
description = "an image whose base no registry here has"

[services.app]
build = "unpullable"
command = ["sleep", "infinity"]
workdir = false
"""


def _project(name: str, profile: str) -> Path:
    return make_profile_project(name, profile)


def test_ps_on_a_daemon_without_remap_says_root_is_root(plain_engine: PrivateDaemon, test_user: dict[str, object]) -> None:
    root = _project("psplain", PLAIN)
    try:
        ok(devbox(plain_engine, root, "up", "-d"))
        report = json.loads(ok(devbox(plain_engine, root, "ps", "--json")).stdout)
        (app,) = report["services"]
        assert (app["userns_mode"], app["userns_host"], app["root_is_host_root"]) == ("none", False, True)
        human = ok(devbox(plain_engine, root, "ps"))
        assert "remapped" not in human.stdout
        assert "none (root is root!)" in human.stdout
        # auto on a dockerd without remap is idmap: files are made yours by views, processes stay host root
        assert report["engine"]["strategy"] == "idmap" and report["engine"]["processes_run_as"] == "host root"
        assert "their processes still run as host root" in human.stderr
    finally:
        devbox(plain_engine, root, "down")


def test_ps_on_a_remapped_daemon_says_remapped(remap_engine: PrivateDaemon) -> None:
    root = _project("psremap", PLAIN)
    try:
        ok(devbox(remap_engine, root, "up", "-d"))
        report = json.loads(ok(devbox(remap_engine, root, "ps", "--json")).stdout)
        (app,) = report["services"]
        assert (app["userns_mode"], app["root_is_host_root"]) == ("remapped", False)
    finally:
        devbox(remap_engine, root, "down")


def test_a_base_image_that_cannot_be_pulled_is_said_so(plain_engine: PrivateDaemon, test_user: dict[str, object]) -> None:
    root = _project("unpullable", UNPULLABLE)
    images = root / ".devbox" / "images"  # readable by the test user, who runs devbox
    shutil.copytree(REPO / "images", images)  # the shipped profiles' contexts, and one more
    (images / "unpullable").mkdir()
    # no registry is reachable from the test machine, and this image exists nowhere anyway
    (images / "unpullable" / "Dockerfile").write_text("FROM devbox-test.invalid/no-such-base:1\nRUN true\n")
    r = devbox(plain_engine, root, "up", "-d", env={"DEVBOX_IMAGES_DIR": str(images)})
    assert r.returncode == 2, r.stdout + r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("devbox: error: building devbox/unpullable:")
    assert ": cannot get the image devbox-test.invalid/no-such-base:1: " in last
    assert "the engine could not pull it: check that it reaches its registry (docker pull devbox-test.invalid/no-such-base:1)" in last
    assert "fix images/" not in r.stderr  # the Dockerfile is not to blame
    assert "Traceback" not in r.stderr


def test_sudo_up_runs_the_watcher_as_the_user_with_private_files(remap_engine: PrivateDaemon) -> None:
    """`sudo devbox up`: the background watcher runs as the user, its files are theirs, 0600 in 0700 dirs."""
    root = _project("sudowatch", PLAIN)
    sudo = {"SUDO_USER": USER}
    try:
        ok(devbox(remap_engine, root, "up", "-d", as_user=None, env=sudo))
        watch_dir = Path(HOME) / ".local" / "state" / "devbox" / "watch"
        pidfile = watch_dir / "sudowatch.pid"
        pid = int(pidfile.read_text())
        assert os.stat(f"/proc/{pid}").st_uid == UID  # not root
        for p, mode in ((pidfile, 0o600), (watch_dir / "sudowatch.log", 0o600), (watch_dir, 0o700)):
            st = os.stat(p)
            assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (UID, mode), p
        r = ok(devbox(remap_engine, root, "ps", as_user=None, env=sudo))
        assert f"ownership watcher: running (pid {pid}" in r.stdout
    finally:
        devbox(remap_engine, root, "down", as_user=None, env=sudo)
    assert not pidfile.exists()
