"""The eight devcontainer.json files of tests/data/devcontainer, imported and brought up for real as the test
user on the remapped engine, with every file in the project checked to be the user's; and the compose export
run by Debian's docker-compose 1.29 on the same engine.

Non-root users (vscode, node, dev: uid 1000/1001 inside) write through per-service idmapped views, which
need the idmap helper: its module fixture comes from test_idmap.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.daemon import PrivateDaemon

from .test_idmap import helper  # noqa: F401  (the module-scoped `devbox idmap --install` fixture)
from .test_stack import HOME, UID, USER, devbox, host_engine, make_project, ok, owners  # noqa: F401

DATA = Path(__file__).resolve().parents[1] / "data" / "devcontainer"

# case -> (service to exec in, files the lifecycle commands leave in the project)
CASES = {
    "image-basic": ("dev", ["created-by-post-create"]),
    "dockerfile-nonroot": ("dev", ["made-by-vscode"]),
    "mounts-both": ("dev", []),
    "lifecycle-forms": ("dev", ["out/1-on-create", "out/2-post-create", "out/3-post-start", "out/4-post-start-array"]),
    "jsonc-comments": ("dev", []),
    "runargs-refusals": ("dev", []),
    "compose-stack": ("app", ["made-by-node"]),
    "build-target": ("dev", []),
    "root-dockerfile-context": ("dev", ["whoami"]),
}


def chown_tree(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames, "."]:
            os.lchown(os.path.join(dirpath, name), UID, UID)


def devcontainer_project(case: str) -> Path:
    root = make_project(case, "")
    (root / "devbox.toml").unlink()
    src = DATA / case
    if (src / ".devcontainer").is_dir():
        shutil.copytree(src / ".devcontainer", root / ".devcontainer")
    else:
        shutil.copytree(src, root / ".devcontainer")
    for d in ("cache", "config"):
        (root / d).mkdir()
    chown_tree(root)
    return root


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_devcontainer_json_runs_and_its_files_are_yours(case: str, host_engine: PrivateDaemon,  # noqa: F811
                                                          helper: dict[str, str]) -> None:  # noqa: F811
    root = devcontainer_project(case)
    service, made = CASES[case]
    r = devbox(host_engine, root, "up", "-d")
    assert r.returncode == 2 and "devbox import devcontainer" in r.stderr, r.stderr  # it offers the import
    ok(devbox(host_engine, root, "import", "devcontainer"))
    try:
        up = ok(devbox(host_engine, root, "up", "-d"))
        assert "up in" in up.stderr, up.stderr
        workdir = ok(devbox(host_engine, root, "exec", service, "--", "pwd")).stdout.strip()
        ok(devbox(host_engine, root, "exec", service, "--", "sh", "-c", "mkdir -p sub && echo hi > sub/by-exec"))
        assert (root / "sub" / "by-exec").read_text() == "hi\n", workdir
        for name in made:
            assert (root / name).exists(), f"{name} not made by the lifecycle commands"
        assert owners(root) == {}
        if case == "build-target":  # the dev stage, not the last one
            assert ok(devbox(host_engine, root, "exec", "dev", "--", "cat", "/stage")).stdout == "dev\n"
        if case == "root-dockerfile-context":
            assert (root / "whoami").read_text() == "1001\n"  # ran as the image's `dev`, its file is yours
        if case == "mounts-both":
            ok(devbox(host_engine, root, "exec", "dev", "--", "touch", "/cache/c"))
            r = devbox(host_engine, root, "exec", "dev", "--", "touch", "/config/c")
            assert r.returncode != 0  # read-only
            assert owners(root) == {}
    finally:
        ok(devbox(host_engine, root, "down", "--volumes"))


PROFILE = """\
description = "an editor writing the work dir after a healthy db"

[services.db]
image = "debian:bookworm-slim"
command = ["sleep", "infinity"]
workdir = false
volumes = ["data:/data"]
healthcheck = { test = ["true"], interval = 1, retries = 10 }

[services.editor]
image = "debian:bookworm-slim"
command = ["sleep", "infinity"]
working_dir = "/work"
env = { FROM_PROFILE = "yes" }
depends_on = { db = "healthy" }
"""


def compose(engine: PrivateDaemon, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "HOME": HOME, "LANG": "C.UTF-8", **engine.env}
    argv = ["setpriv", "--reuid", USER, "--regid", USER, "--init-groups", "--",
            "docker-compose", "-p", "dcexport", "-f", "compose.yaml", *args]
    return subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def test_the_compose_export_runs_under_docker_compose_and_files_are_yours(host_engine: PrivateDaemon) -> None:  # noqa: F811
    assert shutil.which("docker-compose"), "tests/run installs docker-compose"
    root = make_project("dcexport", 'name = "dcexport"\nprofile = "p"\n')
    (root / ".devbox" / "profiles").mkdir(parents=True)
    (root / ".devbox" / "profiles" / "p.toml").write_text(PROFILE)
    chown_tree(root)
    r = ok(devbox(host_engine, root, "export", "compose", "-o", "compose.yaml"))
    assert "container root is you under compose too" in r.stderr
    text = (root / "compose.yaml").read_text()
    assert text.startswith("# Exported by `devbox export compose`")
    assert "ownership watcher (devbox watch) does not run under compose" in text
    try:
        up = compose(host_engine, root, "up", "-d")
        assert up.returncode == 0, up.stdout + up.stderr
        ex = compose(host_engine, root, "exec", "-T", "editor", "sh", "-c", "echo $FROM_PROFILE > /work/by-compose; id -u")
        assert ex.returncode == 0 and ex.stdout.strip() == "0", ex.stdout + ex.stderr
        assert (root / "by-compose").read_text() == "yes\n"
        assert owners(root) == {}
        health = host_engine.docker("inspect", "-f", "{{.State.Health.Status}}", "dcexport_db_1").stdout.strip()
        assert health == "healthy"
    finally:
        down = compose(host_engine, root, "down", "-v")
        assert down.returncode == 0, down.stdout + down.stderr
