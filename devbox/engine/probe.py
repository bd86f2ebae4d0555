"""The probe: a short-lived container that proves what the remap really does.

It bind-mounts a fresh temporary directory and, as container root, writes its
``/proc/self/uid_map`` and ``gid_map`` there and creates a file, then blocks.
From the host devbox reads (a) the file's owner, (b) the container process's
uid from ``/proc/PID/status``, (c) the maps.  No registry is needed: the probe
image is imported from a few host files (``/bin/sh`` and its libraries), so it
works on a daemon with no images at all, right after remap is switched on.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from devbox.core.idmap import IdMap, parse_proc_map
from devbox.engine import hostimage
from devbox.errors import EngineError
from devbox.faults import point

if TYPE_CHECKING:
    from devbox.engine.fastapi import Api

PROBE_REPO = "devbox/probe"
PROBE_LABEL = "devbox.probe"
SCRIPT = (
    "while IFS= read -r l; do echo \"$l\"; done < /proc/self/uid_map > /probe/uid_map && "
    "while IFS= read -r l; do echo \"$l\"; done < /proc/self/gid_map > /probe/gid_map && "
    ": > /probe/created && : > /probe/ready && read x"
)


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    file_uid: int | None
    file_gid: int | None
    process_uid: int | None
    process_gid: int | None
    uid_map: IdMap | None
    gid_map: IdMap | None
    seconds: float
    error: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "file_owner": None if self.file_uid is None else {"uid": self.file_uid, "gid": self.file_gid},
            "process": None if self.process_uid is None else {"uid": self.process_uid, "gid": self.process_gid},
            "uid_map": None if self.uid_map is None else [dataclasses.asdict(r) for r in self.uid_map],
            "gid_map": None if self.gid_map is None else [dataclasses.asdict(r) for r in self.gid_map],
            "seconds": round(self.seconds, 3),
            "error": self.error,
        }


# --- the image ----------------------------------------------------------------


def probe_image_tar() -> bytes:
    """/bin/sh and its libraries, plus the /probe mount point."""
    return hostimage.rootfs_tar(hostimage.program_files("/bin/sh", "/bin/sh"), dirs=("/probe",))


def ensure_probe_image(api: Api) -> str:
    """The probe image's reference, importing it when the daemon lacks it."""
    return hostimage.ensure(api, PROBE_REPO, probe_image_tar())


# --- running it ---------------------------------------------------------------


def _owner_of_process(pid: int) -> tuple[int | None, int | None]:
    uid = gid = None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                uid = int(line.split()[1])
            elif line.startswith("Gid:"):
                gid = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return uid, gid


def _sweep_stale_workdirs() -> None:
    """Temp dirs of probes whose devbox was killed (``devbox-probe-PID-*`` of a PID no longer running)."""
    tmp = Path(tempfile.gettempdir())
    try:
        entries = list(tmp.glob("devbox-probe-*-*"))
    except OSError:
        return
    for entry in entries:
        pid = entry.name.split("-")[2]
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(entry, ignore_errors=True)


def _failed(started: float, why: str) -> ProbeResult:
    return ProbeResult(None, None, None, None, None, None, time.monotonic() - started, f"probe did not report: {why}")


def _host_map(pid: int, name: str) -> IdMap | None:
    """``/proc/PID/uid_map`` read from the host: host ids, whatever user namespaces lie between
    (a rootless engine's own namespace, then keep-id's).  None when the host cannot see the process."""
    try:
        return parse_proc_map(Path(f"/proc/{pid}/{name}").read_text())
    except (OSError, ValueError):
        return None


def run(api: Api, owner: tuple[int, int] | None = None, timeout: float = 20, userns: str | None = None,
        idmap: str | None = None) -> ProbeResult:
    """Run the probe once.  ``owner`` is who the temporary directory should belong to
    (the target user, when devbox runs as root); the probe's process must be able to write there.
    ``userns`` is the container's ``UsernsMode`` (``keep-id`` on rootless Podman), None for the engine's default.
    ``idmap``: the directory is bound with this option (rootful Podman's ``idmap=uids=…;gids=…``)."""
    started = time.monotonic()
    image = ensure_probe_image(api)
    _sweep_stale_workdirs()
    workdir = tempfile.mkdtemp(prefix=f"devbox-probe-{os.getpid()}-")
    container = None
    try:
        if owner is not None and os.geteuid() == 0:
            os.chown(workdir, *owner)
        os.chmod(workdir, 0o755)
        spec = {
            "Image": image,
            "Cmd": ["/bin/sh", "-c", SCRIPT],
            "OpenStdin": True,
            "NetworkDisabled": True,
            "Labels": {PROBE_LABEL: "1"},
            "HostConfig": {"Binds": [f"{workdir}:/probe:rw" + (f",{idmap}" if idmap else "")], "NetworkMode": "none",
                           **({"UsernsMode": userns} if userns else {})},
        }
        container = api.create_container(spec)
        cid = container
        api.start(cid)
        point("probe-started")
        ready = Path(workdir, "ready")
        deadline = time.monotonic() + timeout
        delay = 0.002
        while not ready.exists():
            if time.monotonic() > deadline:
                state = api.inspect_container(cid).get("State", {})
                if state.get("Status") == "exited":
                    logs = api.logs(cid).strip()
                    return _failed(started, f"container exited with {state.get('ExitCode')}: {logs or 'no output'}")
                return _failed(started, "the bind-mounted directory stayed empty "
                                        "(an engine in a VM that cannot see this host's files?)")
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        state = api.inspect_container(cid).get("State", {})
        pid = int(state.get("Pid") or 0)
        proc_uid, proc_gid = _owner_of_process(pid) if pid else (None, None)
        st = os.lstat(os.path.join(workdir, "created"))
        # the maps as the host sees them; the container's own copy (relative to its parent
        # namespace) when the host cannot read the process (an engine in a VM)
        uid_map = _host_map(pid, "uid_map") if pid else None
        gid_map = _host_map(pid, "gid_map") if pid else None
        try:
            if uid_map is None or gid_map is None:
                uid_map = parse_proc_map(Path(workdir, "uid_map").read_text())
                gid_map = parse_proc_map(Path(workdir, "gid_map").read_text())
        except ValueError as exc:
            return _failed(started, f"unreadable id map from the container: {exc}")
        return ProbeResult(st.st_uid, st.st_gid, proc_uid, proc_gid, uid_map, gid_map, time.monotonic() - started)
    finally:
        if container is not None:
            try:
                api.remove_container(container, force=True)
            except EngineError:  # cleanup must not mask the result
                pass
        shutil.rmtree(workdir, ignore_errors=True)
