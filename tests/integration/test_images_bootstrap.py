"""`devbox images --bootstrap`: Debian base images made here with mmdebstrap, no registry, on Docker
(as root) and on rootless Podman (as the user, mmdebstrap's unshare mode) — the real tools, for real."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.daemon import SESSION, PrivateDaemon
from harness.ids import free_id
from harness.podman import RootlessPodman
from harness.sandbox import EtcSandbox

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def empty_engine(sandboxed: None) -> Iterator[PrivateDaemon]:
    """A dockerd with no images at all, as on an air-gapped machine right after installing Docker."""
    d = PrivateDaemon(f"bootstrap-{SESSION}")
    d.destroy()
    d.write_config({})
    d.start()
    yield d
    d.destroy()


@pytest.fixture(scope="module")
def podman_bootstrap(test_user: dict[str, object]) -> Iterator[tuple[RootlessPodman, subprocess.Popen[str], EtcSandbox]]:
    """`devbox images --bootstrap bookworm` as a rootless Podman account, started with the module: it runs
    beside the Docker bootstrap (each a real mmdebstrap, mostly waiting on Debian's mirrors)."""
    sb = EtcSandbox("bootpodman")
    p = RootlessPodman(sb, "devbox-booter", free_id(1750))
    proc: subprocess.Popen[str] | None = None
    try:
        p.start()
        proc = p.popen(sys.executable, "-m", "devbox", "images", "--bootstrap", "bookworm",
                       env={"DOCKER_HOST": p.host, "COLUMNS": "200"})
        yield p, proc, sb
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.communicate()
        p.destroy()
        sb.close()


def _project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "devbox.toml").write_text('name = "boot"\nprofile = "python"\n')
    return root


def test_bootstrap_on_docker_as_root(empty_engine: PrivateDaemon, tmp_path: Path,
                                     podman_bootstrap: tuple[RootlessPodman, subprocess.Popen[str], EtcSandbox]) -> None:
    # (podman_bootstrap: the rootless Podman bootstrap, the next test's, runs beside this one)
    d = empty_engine
    root = _project(tmp_path)
    env = {**d.env, "COLUMNS": "200", "HOME": str(tmp_path)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "devbox", *args], cwd=root, env=env, capture_output=True,
                              text=True, timeout=600)

    r = run("images", "--json")
    assert r.returncode == 0, r.stderr
    rows = {i["image"]: i for i in json.loads(r.stdout)["images"]}
    assert rows["debian:bookworm-slim"]["present"] is False
    assert rows["debian:bookworm-slim"]["bootstrap"] == "bookworm"
    assert "python/runtime" in rows["debian:bookworm-slim"]["used_by"]
    assert run("images").returncode == 1  # something is missing

    r = run("images", "--bootstrap", "bookworm")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "bootstrapping debian:bookworm-slim with mmdebstrap" in r.stderr
    assert "debian:bookworm-slim: imported in" in r.stderr
    out = d.docker("run", "--rm", "debian:bookworm-slim", "cat", "/etc/debian_version").stdout
    assert out.startswith("12.")
    assert d.docker("image", "inspect", "debian:bookworm").returncode == 0
    r = run("images", "--bootstrap", "bookworm")
    assert r.returncode == 0 and "debian:bookworm-slim: already in the engine" in r.stderr
    r = run("images", "--bootstrap", "Bookworm!")
    assert (r.returncode, r.stderr) == (
        2, "devbox: error: 'Bookworm!' is not a Debian release name — e.g. bookworm, trixie, sid\n")


def test_bootstrap_on_rootless_podman_as_the_user(
        podman_bootstrap: tuple[RootlessPodman, subprocess.Popen[str], EtcSandbox]) -> None:
    p, proc, etc_sandbox = podman_bootstrap
    env = {"DOCKER_HOST": p.host, "COLUMNS": "200"}
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stdout + stderr
    assert "debian:bookworm-slim: imported in" in stderr
    out = p.podman("run", "--rm", "debian:bookworm-slim", "cat", "/etc/debian_version").stdout
    assert out.startswith("12.")
    # imported through libpod's import, which removes its copy of the tarball (the compatible API's
    # leaves a /var/tmp/api_load.tar* of every import behind)
    assert p.leftover_temp_files() == []

    # Docker's remap layout (NAME:UID:1 first) leaves mmdebstrap one id: refused before it starts
    for f in ("/etc/subuid", "/etc/subgid"):
        etc_sandbox.write(f, f"devbox-booter:{p.uid}:1\ndevbox-booter:400000:65536\n")
    r = p.run(sys.executable, "-m", "devbox", "images", "--bootstrap", "--force", "bookworm", env=env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr == (
        "devbox: error: mmdebstrap's unshare mode maps devbox-booter's first /etc/subuid range only, and "
        f"/etc/subuid:1: devbox-booter:{p.uid}:1 has 1 id(s), not 65,536 (Docker's remap wants that line first) "
        "— run it as root: sudo devbox images --bootstrap bookworm\n")
