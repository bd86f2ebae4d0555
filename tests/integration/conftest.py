"""Real-engine fixtures.  Every test here talks to a dockerd the suite started itself.

Outside the sandbox that ``tests/run`` sets up, these tests are skipped on a
developer's machine — and fail in CI (``CI=true``) or with
``DEVBOX_REQUIRE_ENGINE=1``: a missing engine is never a silent pass there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.daemon import DOCKERS, SESSION, PrivateDaemon
from harness.ids import OTHER_UID, OTHER_USER, TEST_UID, TEST_USER
from harness.images import import_base_images
from harness.sandbox import EtcSandbox

SUITE_RANGE = 200000  # the test user's subordinate range in the suite's /etc/subuid and /etc/subgid


PREBUILD_FIXTURE = "prebuilt_images"
_prebuild_wanted = False
# What the tests taking prebuilt_images run, but only the images no earlier test builds (the python
# lifecycle test builds the editor, python and postgres images itself, and checks that it does).
PREBUILT = ("ide-code ide", "ide-python ide", "ide-code-node runtime db", "node runtime db")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    global _prebuild_wanted
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)
    # The profile tests (IDEs, node) need images whose cold builds take minutes (code-server's npm
    # install with native modules, JupyterLab's pip install): they start in the background at the
    # beginning of the session (fixture _prebuild) and those tests run last, so the builds overlap
    # the rest of the suite instead of adding to it.
    late = [i for i in items if PREBUILD_FIXTURE in getattr(i, "fixturenames", ())]
    _prebuild_wanted = bool(late)
    # Likewise the Podman stack's images, built in the background by its own rootless account.
    global _podman_prebuild_wanted
    podman_late = [i for i in items if PODMAN_PREBUILD_FIXTURE in getattr(i, "fixturenames", ())]
    _podman_prebuild_wanted = bool(podman_late)
    items[:] = [i for i in items if i not in late and i not in podman_late] + podman_late + late


class Prebuild:
    """``devbox build --nice`` of PREBUILT (profile and services), in the background on the session's remap engine."""

    def __init__(self, engine: PrivateDaemon, profiles: tuple[str, ...]) -> None:
        from .test_stack import make_project

        self.root = make_project("prebuild", 'name = "prebuild"\nprofile = "ide-code"\n')
        self.log = self.root.parent / "prebuild.log"
        self.script = " && ".join(f"{sys.executable} -m devbox build --nice --profile {p}" for p in profiles)
        self.env = {"PATH": os.environ["PATH"], "HOME": f"/run/devbox-test/home/{TEST_USER}", "LANG": "C.UTF-8", **engine.env}
        self.proc = self._start(self.log)
        self.done = False

    def _start(self, log_path: Path) -> subprocess.Popen[bytes]:
        with open(log_path, "wb") as log:
            return subprocess.Popen(
                ["setpriv", "--reuid", TEST_USER, "--regid", TEST_USER, "--init-groups", "--", "sh", "-c", self.script],
                cwd=self.root, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def wait(self, timeout: float = 1800) -> None:
        if self.done:
            return
        rc = self.proc.wait(timeout=timeout)
        if rc != 0:
            # Once more, in the foreground: a test running beside the builds may have disturbed them (it
            # must not: say so).  A build that is broken fails again, with both logs.
            first = self.log.read_text()[-3000:]
            print(f"\nbackground devbox build failed with {rc}; building again:\n{first}", file=sys.stderr)
            retry = self.log.with_suffix(".retry.log")
            rc = self._start(retry).wait(timeout=timeout)
            assert rc == 0, f"devbox build failed twice ({rc}):\n{first}\n--- again:\n{retry.read_text()[-3000:]}"
        self.done = True


# `python -c SAYS_SDK ARGS…` runs devbox ARGS… and says at its exit whether the Docker SDK was imported:
# a warm `up -d` makes all its calls on the stdlib client (devbox.engine.fastapi), on Docker and on Podman
SAYS_SDK = ("import atexit, sys; atexit.register(lambda: print('docker SDK imported:', 'docker' in sys.modules, "
            "file=sys.stderr)); sys.argv[0] = 'devbox'; from devbox.cli import main; main()")

@pytest.fixture(scope="session", autouse=True)
def _prebuild(request: pytest.FixtureRequest) -> Iterator[Prebuild | None]:
    if not _prebuild_wanted:
        yield None
        return
    _require_sandbox()
    engine: PrivateDaemon = request.getfixturevalue("remap_engine")
    pre = Prebuild(engine, PREBUILT)
    yield pre
    if pre.proc.poll() is None:
        pre.proc.kill()
        pre.proc.wait()


@pytest.fixture(scope="session")
def prebuilt_images(_prebuild: Prebuild | None) -> Prebuild:
    """The images of the PREBUILT profiles, built by ``devbox build`` (in the background since the session began)."""
    assert _prebuild is not None
    _prebuild.wait()
    return _prebuild


PODMAN_PREBUILD_FIXTURE = "podman_prebuilt"
_podman_prebuild_wanted = False
PODMAN_USER = "devbox-podstack"
PODMAN_FIRST = 500000
# the profiles the Podman stack test runs (`devbox build` of each: all of the first, the runtime of the second)
PODMAN_PREBUILT = ("python", "python-3.13 runtime")


class PodmanPrebuild:
    """A rootless Podman account of its own (sandbox, storage, service at nice 19) that imports the base
    images and runs ``devbox build`` of PODMAN_PREBUILT in the background from the session's start."""

    def __init__(self) -> None:
        from harness.ids import free_id
        from harness.podman import RootlessPodman

        self.sb = EtcSandbox("podstack")
        self.podman = RootlessPodman(self.sb, PODMAN_USER, free_id(1760), PODMAN_FIRST)
        self.podman.start(nice=19)
        self.log = self.podman.base / "prebuild.log"
        project = self.podman.home / "prebuild"
        project.mkdir()
        (project / "devbox.toml").write_text('name = "prebuild"\n')
        tars = [self.podman.readable_tarball(r) for r in ("bookworm", "trixie")]
        subprocess.run(["chown", "-R", f"{self.podman.uid}:{self.podman.uid}", str(project)], check=True)
        steps = [f"podman import {t} docker.io/library/debian:{t.stem}-slim" for t in tars]  # removed with the account
        steps += [f"{sys.executable} -m devbox build --profile {p}" for p in PODMAN_PREBUILT]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                self.podman.argv(["env", f"DOCKER_HOST={self.podman.host}", "COLUMNS=200",
                                  f"DEVBOX_STATE_DIR={self.podman.home}/.local/state/devbox",
                                  "nice", "-n", "19", "sh", "-c", f"cd {project} && " + " && ".join(steps)]),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.done = False

    def wait(self, timeout: float = 1200) -> None:
        if not self.done:
            rc = self.proc.wait(timeout=timeout)
            assert rc == 0, f"the Podman stack's devbox build failed ({rc}):\n{self.log.read_text()[-3000:]}"
            self.done = True

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()
        self.podman.destroy(background=True)
        self.sb.close()


@pytest.fixture(scope="session", autouse=True)
def _podman_prebuild() -> Iterator[PodmanPrebuild | None]:
    if not _podman_prebuild_wanted or shutil.which("podman") is None:
        yield None
        return
    _require_sandbox()
    pre = PodmanPrebuild()
    try:
        yield pre
    finally:
        pre.close()


@pytest.fixture(scope="session")
def podman_prebuilt(_podman_prebuild: PodmanPrebuild | None) -> PodmanPrebuild:
    """A rootless Podman account whose images for PODMAN_PREBUILT are built (since the session began)."""
    if _podman_prebuild is None:
        pytest.fail("podman is not installed (tests/run installs podman and uidmap)", pytrace=False)
    _podman_prebuild.wait()
    return _podman_prebuild


def _require_sandbox() -> None:
    problems = []
    if os.environ.get("DEVBOX_TEST_SANDBOX") != "1":
        problems.append("not inside the tests/run sandbox (run `sudo tests/run`)")
    if os.geteuid() != 0:
        problems.append("not root")
    if shutil.which("dockerd") is None:
        problems.append("dockerd is not installed")
    if not problems:
        return
    message = "; ".join(problems)
    if os.environ.get("CI") == "true" or os.environ.get("DEVBOX_REQUIRE_ENGINE") == "1":
        pytest.fail(f"real-engine tests cannot run: {message}", pytrace=False)
    pytest.skip(f"real-engine tests need the harness: {message}")


@pytest.fixture(scope="session")
def sandboxed() -> None:
    _require_sandbox()


@pytest.fixture(scope="session")
def test_user(sandboxed: None) -> dict[str, object]:
    """A real account (in the overlay /etc) with subordinate ids laid out the way devbox wants them."""
    subprocess.run(["groupadd", "-f", "docker"], check=True)
    for name, uid in ((TEST_USER, TEST_UID), (OTHER_USER, OTHER_UID)):
        # an account of that name the machine already has is reused (harness.ids took its uid)
        if subprocess.run(["id", name], capture_output=True).returncode != 0:
            subprocess.run(
                # the home lives under /run/devbox-test: /home is the machine's own, not the overlay
                ["useradd", "--uid", str(uid), "--user-group", "--no-create-home",
                 "--home-dir", f"/run/devbox-test/home/{name}", "--shell", "/bin/sh", name],
                check=True,
            )
        home = Path(f"/run/devbox-test/home/{name}")
        home.mkdir(parents=True, exist_ok=True)
        os.chown(home, uid, uid)
    subprocess.run(["usermod", "-aG", "docker", TEST_USER], check=True)
    for f in ("/etc/subuid", "/etc/subgid"):
        Path(f).write_text(f"{TEST_USER}:{TEST_UID}:1\n{TEST_USER}:{SUITE_RANGE}:65536\n")
    return {"name": TEST_USER, "uid": TEST_UID, "gid": TEST_UID, "home": f"/run/devbox-test/home/{TEST_USER}"}


@pytest.fixture(scope="session")
def plain_engine(sandboxed: None) -> Iterator[PrivateDaemon]:
    """A private dockerd without remap, with debian:bookworm-slim and debian:trixie-slim."""
    d = PrivateDaemon(f"plain-{SESSION}")
    d.destroy()
    d.write_config({})
    d.start()
    import_base_images(d)
    yield d
    d.destroy()


def _remapped(name: str, version: str) -> Iterator[PrivateDaemon]:
    d = PrivateDaemon(f"{name}-{SESSION}", version=version)
    d.destroy()
    d.write_config({"userns-remap": TEST_USER})
    d.start()
    import_base_images(d)
    yield d
    d.destroy()


@pytest.fixture(scope="session")
def remap_engine(test_user: dict[str, object]) -> Iterator[PrivateDaemon]:
    """A private dockerd with ``userns-remap`` for the test user (container root = uid 1500)."""
    yield from _remapped("remap", DOCKERS[0])


@pytest.fixture(scope="session")
def remap_engine_26(test_user: dict[str, object]) -> Iterator[PrivateDaemon]:
    """The same as ``remap_engine`` with Debian trixie's Docker 26.1, from its own root filesystem."""
    yield from _remapped("remap26", "26.1")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """devbox's environment in an /etc sandbox: its own state dirs, daemon.json in the sandbox, the test user."""
    return {
        "DEVBOX_DAEMON_JSON": "/etc/docker/daemon.json",
        "DEVBOX_SYSTEM_STATE_DIR": str(tmp_path / "state"),
        "DEVBOX_STATE_DIR": str(tmp_path / "user-state"),
        "SUDO_USER": TEST_USER,
        "COLUMNS": "200",
    }


@pytest.fixture
def etc_sandbox(test_user: dict[str, object], request: pytest.FixtureRequest) -> Iterator[EtcSandbox]:
    """A fresh /etc overlay (over the suite's) for tests that edit host configuration; its daemons are
    the host's Docker (20.10), or the version a test module asks for with ``docker_version``."""
    version = getattr(request, "param", None) or DOCKERS[0]
    sb = EtcSandbox(request.node.name[:20].replace("[", "-").replace("]", "").replace(".", ""), docker_version=version)
    yield sb
    sb.close()


@pytest.fixture(scope="session", autouse=True)
def _no_stray_watchers() -> Iterator[None]:
    """`devbox up` starts a background ownership watcher as the test user; none of this session's may
    outlive it (watchers inherit DEVBOX_TEST_SESSION through the environment)."""
    yield
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if entry.stat().st_uid != TEST_UID or b"--background" not in argv or b"devbox" not in argv:
                continue
            # only this session's: another test session on the machine has watchers of its own
            if f"DEVBOX_TEST_SESSION={SESSION}".encode() not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            os.kill(int(entry.name), 15)
        except (OSError, ValueError):
            continue
