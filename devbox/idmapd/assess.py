"""Can this host give ``up`` idmapped views, and do they work?  ``idmap.kernel``, ``idmap.filesystem``,
``idmap.helper`` and ``idmap.proof`` (shared by ``devbox idmap`` and ``devbox doctor``).

A syscall that succeeds is not proof (on some virtiofs shares the mount
attaches and writes fail), so the proof is a real container writing through a
real view of a fresh directory in the work dir's filesystem: the file it
creates must be yours on the host, and its ``chown`` to another uid must fail
with ``EOVERFLOW``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from devbox.core.findings import Finding
from devbox.core.views import View
from devbox.engine import hostimage
from devbox.errors import DevboxError, EngineError
from devbox.host import idmount
from devbox.idmapd import client

if TYPE_CHECKING:
    from devbox.engine.fastapi import Api

PROOF_REPO = "devbox/idmap-probe"
PROOF_SCRIPT = (": > /probe/created && mkdir /probe/made && "
                "{ chown 5:5 /probe/created 2>/probe/chown.err; echo $? > /probe/chown.rc; }")


def check_idmap_kernel(release: str | None = None) -> Finding:
    k = idmount.kernel_version(release)
    ev = (f"Linux {k[0]}.{k[1]} ({release or os.uname().release})",)
    if k >= idmount.MIN_KERNEL:
        return Finding("idmap.kernel", "ok", ev)
    return Finding("idmap.kernel", "fail", ev + ("idmapped mounts arrived in Linux 5.12",),
                   "use strategy = \"remap\" (sudo devbox remap --apply), or upgrade the kernel")


def check_idmap_filesystem(directory: Path) -> Finding:
    try:
        ok, why = idmount.fs_support(str(directory))
    except OSError as exc:
        return Finding("idmap.filesystem", "skip", (f"{directory}: {exc.strerror}",))
    ev = (f"{directory}: {why}",)
    if ok:
        return Finding("idmap.filesystem", "ok", ev)
    if ok is None:
        return Finding("idmap.filesystem", "warn", ev, "run `devbox idmap` for the proof: a real write through a view")
    return Finding("idmap.filesystem", "fail", ev, "move the work dir to ext4, xfs or btrfs, or use strategy = \"remap\"")


def check_idmap_helper(root_will_do: bool = True) -> Finding:
    """``root_will_do``: devbox running as root makes views in-process (``devbox idmap``); doctor asks
    about ``up`` run as the user, which needs the helper."""
    run = client.run_dir()
    if os.geteuid() == 0 and root_will_do:
        return Finding("idmap.helper", "ok", ("devbox runs as root: views are made in-process, under the same rules",))
    why = client.helper_status(run, root_will_do=False)
    if why is None:
        return Finding("idmap.helper", "ok", (f"the helper answers at {run}/idmapd.sock",))
    return Finding("idmap.helper", "fail", (why, "without it, `up` needs sudo to make idmapped views"), client.FIX_INSTALL)


def proof_image(api: Api) -> str:
    files = [f for prog in ("/bin/sh", "/bin/chown", "/bin/mkdir") for f in hostimage.program_files(prog, prog)]
    return hostimage.ensure(api, PROOF_REPO, hostimage.rootfs_tar(files, dirs=("/probe",)))


def prove(api: Api, owner: tuple[int, int], directory: Path, writer: tuple[int, int] = (0, 0),
          timeout: float = 30) -> Finding:
    """A container (root inside, host ``writer``) writes through a view of a fresh directory in ``directory``."""
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix=".devbox-idmap-check-", dir=directory))
    container = None
    view = View("devbox-check", "check", str(tmp.resolve()), "/probe", owner, writer, (0, 0))
    try:
        if os.geteuid() == 0:
            os.chown(tmp, *owner)
        tmp.chmod(0o755)
        path = client.make_views([view])[0]["path"]
        container = api.create_container({
            "Image": proof_image(api), "Cmd": ["/bin/sh", "-c", PROOF_SCRIPT], "NetworkDisabled": True,
            "Labels": {"devbox.probe": "1"}, "HostConfig": {"Binds": [f"{path}:/probe:rw"], "NetworkMode": "none"},
        })
        api.start(container)
        deadline = time.monotonic() + timeout
        while api.inspect_container(container).get("State", {}).get("Status") != "exited":
            if time.monotonic() > deadline:
                return Finding("idmap.proof", "fail", (f"the proof container did not finish in {timeout:.0f}s",))
            time.sleep(0.02)
        return _judge(tmp, owner, time.monotonic() - started, api.logs(container).strip())
    except (DevboxError, OSError) as exc:
        msg = exc.one_line() if isinstance(exc, DevboxError) else str(exc)
        return Finding("idmap.proof", "fail", (msg,), "see `devbox doctor`: idmap.kernel, idmap.filesystem, idmap.helper")
    finally:
        if container is not None:
            with contextlib.suppress(EngineError):
                api.remove_container(container, force=True)
        with contextlib.suppress(DevboxError, OSError):
            client.checked(client.ask({"op": "unmount", "name": view.name}, owner=owner), "releasing the proof view")
        shutil.rmtree(tmp, ignore_errors=True)


def _judge(tmp: Path, owner: tuple[int, int], seconds: float, logs: str) -> Finding:
    try:
        created, made = os.lstat(tmp / "created"), os.lstat(tmp / "made")
    except OSError:
        return Finding("idmap.proof", "fail", (f"the container could not write through the view: {logs or 'no output'}",),
                       "this filesystem attaches idmapped mounts but does not write through them: use strategy = \"remap\"")
    rc = (tmp / "chown.rc").read_text().strip() if (tmp / "chown.rc").exists() else "?"
    err = (tmp / "chown.err").read_text().strip() if (tmp / "chown.err").exists() else ""
    ev = [f"a file and a directory created by container root are owned by {created.st_uid}:{created.st_gid} "
          f"and {made.st_uid}:{made.st_gid} on the host (you: {owner[0]}:{owner[1]})",
          f"chown 5:5 inside: exit {rc}{' (' + err.split(': ', 1)[-1] + ')' if err else ''}",
          f"proved in {seconds:.2f}s"]
    mine = (created.st_uid, created.st_gid) == owner and (made.st_uid, made.st_gid) == owner
    if mine and rc not in ("0", "?"):
        return Finding("idmap.proof", "ok", tuple(ev))
    return Finding("idmap.proof", "fail", tuple(ev),
                   "the view did not map as it should: report this with `devbox idmap --json`")
