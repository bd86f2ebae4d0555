"""Base images without a registry: mmdebstrap tarballs, imported once per daemon."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .daemon import PrivateDaemon

CACHE = Path(os.environ.get("DEVBOX_TEST_CACHE", "/var/cache/devbox-test"))
RELEASES = ("bookworm", "trixie")


def tarball(release: str) -> Path:
    """Bootstrap ``release`` with mmdebstrap (≈15 s), cached across runs."""
    path = CACHE / f"{release}.tar"
    if path.exists() and path.stat().st_size > 0:
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{release}.partial.tar")  # mmdebstrap picks the format from the suffix
    subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase", release, str(tmp)], check=True)
    tmp.rename(path)
    return path


ROOTFS = {"26.1": "trixie"}  # a Docker version -> the Debian release whose docker.io it is


def docker_rootfs(version: str) -> Path:
    """A root filesystem with Debian's docker.io of ``version`` (mmdebstrap, ≈ 1 min), cached across runs."""
    release = ROOTFS[version]
    path = CACHE / f"docker-{version}-{release}"
    if (path / "usr" / "sbin" / "dockerd").exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    subprocess.run(["rm", "-rf", str(tmp)], check=True)
    subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase", "--include=docker.io,ca-certificates,iptables,tini",
                    release, str(tmp)], check=True)
    tmp.rename(path)
    return path


def import_base_images(daemon: PrivateDaemon, releases: tuple[str, ...] = RELEASES) -> None:
    """Make ``debian:RELEASE-slim`` (and ``debian:RELEASE``) exist on ``daemon``, as a user's Docker Hub pull would."""
    for release in releases:
        ref = f"debian:{release}-slim"
        if daemon.docker("image", "inspect", ref, check=False).returncode == 0:
            continue
        daemon.docker("import", str(tarball(release)), ref)
        daemon.docker("tag", ref, f"debian:{release}")

