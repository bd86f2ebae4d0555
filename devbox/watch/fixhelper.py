"""The ``--fix`` helper: a short-lived container that chowns leaked paths back to the host user.

Under userns-remap, container root *is* the host user, and it holds CAP_CHOWN
over every id mapped into the namespace: ``chown -h 0:0`` on a file owned by
container uid 5 (host 200004) makes it the user's again, no sudo.  The image,
like the probe's, is imported from host files (``chown`` and the libraries it
loads), so no registry is involved.  Before running anything the engine must
prove that container root maps to this user: on a daemon without remap the same
command would hand the files to real root.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from typing import TYPE_CHECKING

from devbox.engine import client, hostimage
from devbox.engine.client import RootVerdict
from devbox.errors import DevboxError, EngineError

if TYPE_CHECKING:
    from devbox.engine.fastapi import Api
    from devbox.watch.leaks import HostUser

HELPER_REPO = "devbox/fixer"
HELPER_LABEL = "devbox.helper"
CHOWN_IN_IMAGE = "/bin/chown"
# One container per this many bytes of arguments: far below ARG_MAX, few containers for big fixes.
ARGS_BUDGET = 96 * 1024


# --- the image ----------------------------------------------------------------------


def helper_image_tar() -> bytes:
    """The host's chown and its libraries, plus the /fix mount point."""
    found = shutil.which("chown")
    if found is None:
        raise DevboxError("no chown on this host's PATH: the fix helper image is built from it", hint="install coreutils")
    return hostimage.rootfs_tar(hostimage.program_files(found, CHOWN_IN_IMAGE), dirs=("/fix",))


def ensure_helper_image(api: Api) -> str:
    """The helper image's reference, importing it when the daemon lacks it."""
    return hostimage.ensure(api, HELPER_REPO, helper_image_tar())


# --- may the helper run on this engine? ---------------------------------------------


def engine_fit(api: Api, user: HostUser) -> RootVerdict:
    """Does container root map to ``user`` on this engine (remap to the user, or rootless as the user)?"""
    return client.inspect_engine(api).root_is(user.name, user.uid, user.gid)


# --- running it ---------------------------------------------------------------------


def mount_plan(pairs: Sequence[tuple[str, str]]) -> tuple[dict[str, str], list[str]]:
    """Bind mounts (work dir -> /fix/N) and the paths as the container sees them.

    Only the work dirs are mounted (non-recursively): inside the helper no
    symbolic link can lead anywhere but into them or into the helper's own
    throwaway root filesystem (:mod:`devbox.watch.contain`).  The paths
    themselves are never mounted: ``chown -h`` must act on the entry.
    """
    mounts: dict[str, str] = {}
    inside: list[str] = []
    for root, path in pairs:
        target = mounts.setdefault(root, f"/fix/{len(mounts)}")
        inside.append(target + "/" + path[len(root.rstrip("/")) + 1:])
    return mounts, inside


def _batches(pairs: Sequence[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = [[]]
    size = 0
    for pair in pairs:
        if out[-1] and size + len(pair[1]) + 1 > ARGS_BUDGET:
            out.append([])
            size = 0
        out[-1].append(pair)
        size += len(pair[1]) + 1
    return [b for b in out if b]


def run_helper(api: Api, pairs: Sequence[tuple[str, str]]) -> None:
    """``chown -h 0:0 -- PATHS`` as container root in throwaway containers; ``pairs`` are (work dir, host path)."""
    image = ensure_helper_image(api)
    for batch in _batches(pairs):
        mounts, inside = mount_plan(batch)
        spec = {
            "Image": image,
            "Cmd": [CHOWN_IN_IMAGE, "-h", "0:0", "--", *inside],
            "User": "0:0",
            "NetworkDisabled": True,
            "Labels": {HELPER_LABEL: "fix"},
            "HostConfig": {
                "Mounts": [{"Type": "bind", "Source": d, "Target": t, "ReadOnly": False,
                            "BindOptions": {"NonRecursive": True}} for d, t in mounts.items()],
                "NetworkMode": "none",
            },
        }
        cid = api.create_container(spec)
        try:
            api.start(cid)
            result = api.call("POST", f"/containers/{cid}/wait", query={"condition": "not-running"})
            code = int((result or {}).get("StatusCode", -1))
            # chown exits 1 when some path failed (vanished, or a link leading nowhere inside the helper):
            # it carries on with the rest, and the caller checks every path.  Anything else is the helper's own failure.
            if code not in (0, 1):
                logs = api.logs(cid, tail=3).strip().replace("\n", "; ")
                raise EngineError(f"the fix helper container exited with {code}: {logs or 'no output'}")
        finally:
            try:
                api.remove_container(cid, force=True)
            except EngineError:  # cleanup must not mask the result
                pass
