"""Tiny images made of the host's own binaries: no registry, no base image, no network.

The probe (``/bin/sh``) and the fix helper (``chown``) each need one program
and the shared objects it loads.  :func:`ensure` imports such a rootfs into the
engine under a content-derived tag, so it works on a daemon with no images at
all — right after remap is switched on, its data root is new and empty.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from devbox.engine.fastapi import Api

BASE_DIRS = ("/proc", "/dev", "/sys", "/tmp", "/etc")


def program_files(host_path: str, inside: str) -> list[tuple[str, str]]:
    """``(path in image, host file)`` for a host program and the shared objects ``ldd`` says it loads."""
    files = [(inside, os.path.realpath(host_path))]
    try:
        out = subprocess.run(["ldd", files[0][1]], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""  # static, or no ldd: the program alone
    for line in out.splitlines():
        for token in line.split():
            if token.startswith("/"):
                files.append((token, os.path.realpath(token)))
    return files


def rootfs_tar(files: Iterable[tuple[str, str]], dirs: Iterable[str] = ()) -> bytes:
    """A deterministic rootfs tarball: the same host files give the same bytes, so the same tag."""
    files = list(files)
    all_dirs = set(BASE_DIRS) | set(dirs)
    for inside, _ in files:
        parent = os.path.dirname(inside)
        while parent not in ("/", ""):
            all_dirs.add(parent)
            parent = os.path.dirname(parent)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for d in sorted(all_dirs):
            info = tarfile.TarInfo(d.lstrip("/"))
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        seen: set[str] = set()
        for inside, host in files:
            if inside in seen:
                continue
            seen.add(inside)
            with open(host, "rb") as fh:
                data = fh.read()
            info = tarfile.TarInfo(inside.lstrip("/"))
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def reference(repo: str, data: bytes) -> str:
    return f"{repo}:{hashlib.sha256(data).hexdigest()[:12]}"


def ensure(api: Api, repo: str, data: bytes) -> str:
    """The image's reference, importing ``data`` when the daemon lacks it."""
    ref = reference(repo, data)
    if not api.image_exists(ref):
        name, tag = ref.split(":")
        api.import_image(data, name, tag)
    return ref
