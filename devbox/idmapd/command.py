"""``devbox idmap``: check and prove (default), ``--install``, ``--uninstall``, ``--serve``."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from devbox import console
from devbox.core.findings import Finding, worst
from devbox.errors import DevboxError, Exit, HostError
from devbox.host import idmount
from devbox.host.files import write_atomic
from devbox.host.user import refuse_root, resolve_user
from devbox.idmapd import assess, client
from devbox.idmapd.server import PIDFILE, Helper, serve
from devbox.paths import Paths

UNIT = "devbox-idmapd.service"
RECORD = "idmapd.json"


def _serve_argv() -> list[str]:
    return [sys.executable, "-m", "devbox", "idmap", "--serve"]


def unit_text() -> str:
    run = client.run_dir()
    env = f"Environment=DEVBOX_IDMAP_RUN={run}\n" if str(run) != client.RUN_DEFAULT else ""
    return (
        "[Unit]\n"
        "Description=devbox idmap helper: idmapped views of work dirs for devbox up, without sudo\n"
        "Before=docker.service podman.service\n\n"
        "[Service]\n"
        f"{env}ExecStart={shlex.join(_serve_argv())}\n"
        "Restart=on-failure\n"
        "# the views must be made in the mount namespace the engine uses: no private mounts here\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )


# --- check and prove ---------------------------------------------------------------------------


def _work_dir() -> Path:
    from devbox.paths import project_root

    return project_root(None) or Path.cwd()


def status_command(*, json_out: bool, verbose: bool, prove: bool = True) -> Exit:
    user = refuse_root(resolve_user(), "idmapped views are made for a user, not for root",
                       "run as your own user (with sudo, SUDO_USER is used)")
    owner = (user.uid, user.gid)
    directory = _work_dir()
    findings = [assess.check_idmap_kernel(), assess.check_idmap_filesystem(directory), assess.check_idmap_helper()]
    views: list[dict[str, Any]] = []
    engine = None
    if prove and worst(findings) != "fail":
        findings.append(_prove(owner, directory))
        engine = _engine_label()
    if findings[2].status == "ok":
        with contextlib.suppress(DevboxError):
            views = client.listed(owner)
    ok = worst(findings) != "fail"
    if json_out:
        console.emit_json({"schema": "devbox.idmap/1", "ok": ok, "user": {"name": user.name, "uid": user.uid, "gid": user.gid},
                           "directory": str(directory), "run": str(client.run_dir()), "engine": engine,
                           "findings": [f.to_json() for f in findings], "views": views})
    else:
        console.say(f"devbox idmap — {user.name} (uid {user.uid}, gid {user.gid}), {directory}", style="bold")
        console.findings(findings, verbose)
        if views:
            console.say("")
            console.table(["view", "source", "map (uid)", "mounted"],
                          [(v["name"], v["source"], " ".join(map(str, v["uid"] or [])), "yes" if v["mounted"] else "no")
                           for v in views], title="Your views")
        console.say("")
        console.say("idmapped views proven: container writes are yours, and cannot be given away" if ok and prove
                    else "idmapped views look possible (proof skipped)" if ok
                    else "idmapped views do not work here: each failed check above says what to do",
                    style="green" if ok else "red")
    return Exit.OK if ok else Exit.PROBLEMS


def _engine_label() -> str | None:
    from devbox.engine.client import fast_api, inspect_engine

    with contextlib.suppress(DevboxError):
        return inspect_engine(fast_api()).label
    return None


def _prove(owner: tuple[int, int], directory: Path) -> Finding:
    from devbox.engine.client import fast_api, inspect_engine

    try:
        api = fast_api()
        info = inspect_engine(api)
    except DevboxError as exc:
        return Finding("idmap.proof", "skip", (f"no engine to prove it with: {exc.one_line()}",))
    if info.rootless or info.product != "docker":
        return Finding("idmap.proof", "skip", (f"{info.label}: views are for rootful Docker; this engine's own user "
                                               "namespace makes your files yours",))
    # container root is host root without remap, and you with it (then a view maps you onto yourself)
    writer = (owner if info.remap_ids() == owner else (0, 0)) if info.userns else (0, 0)
    return assess.prove(api, owner, directory, writer)


# --- install / uninstall ---------------------------------------------------------------------------


def _require_root(flag: str) -> None:
    if os.geteuid() != 0:
        raise HostError(f"devbox idmap {flag} installs a root helper", hint=f"run: sudo devbox idmap {flag}")


def _wait_for_helper(timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if client.socket_call(client.run_dir(), {"op": "ping"}, 2.0).get("ok"):
                return True
        except (HostError, OSError):
            pass
        time.sleep(0.05)
    return False


def _pid() -> int | None:
    try:
        pid = int((client.run_dir() / PIDFILE).read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def install_command(paths: Paths | None = None) -> Exit:
    _require_root("--install")
    paths = paths or Paths.from_env()
    run = client.run_dir()
    Helper(run).prepare()
    if paths.systemd_running.is_dir():
        unit = paths.systemd_unit_dirs[0] / UNIT
        write_atomic(unit, unit_text().encode())
        for argv in (["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", UNIT]):
            r = subprocess.run(argv, capture_output=True, text=True)
            if r.returncode != 0:
                raise HostError(f"{shlex.join(argv)} failed: {(r.stderr or r.stdout).strip()}", hint=f"journalctl -u {UNIT}")
        how: dict[str, object] = {"kind": "systemd", "unit": str(unit)}
    elif (running := _pid()) is not None and _wait_for_helper(2.0):
        how = {"kind": "process", "pid": running}
        console.info(f"the idmap helper already runs (pid {running})")
    else:
        proc = subprocess.Popen(_serve_argv(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True, cwd="/", close_fds=True)
        how = {"kind": "process", "pid": proc.pid}
    if not _wait_for_helper():
        raise HostError(f"the idmap helper did not answer at {run}", hint=f"see {run}/idmapd.log")
    record = paths.system_state / RECORD
    record.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(record, (json.dumps({**how, "run": str(run), "argv": _serve_argv()}) + "\n").encode(), mode=0o600)
    console.say(f"the idmap helper answers at {run}/idmapd.sock: `devbox up` makes idmapped views without sudo")
    if how["kind"] == "process":
        console.info(f"no systemd here: the helper (pid {_pid()}) does not start at boot by itself; add this to your "
                     f"boot script (for example /etc/rc.local): setsid {shlex.join(_serve_argv())} >/dev/null 2>&1 &")
    return Exit.OK


def uninstall_command(paths: Paths | None = None) -> Exit:
    """Stop the helper, release every view, remove what --install wrote.  Idempotent."""
    _require_root("--uninstall")
    paths = paths or Paths.from_env()
    run = client.run_dir()
    unit = paths.systemd_unit_dirs[0] / UNIT
    if unit.exists():
        subprocess.run(["systemctl", "disable", "--now", UNIT], capture_output=True)
        unit.unlink()
        subprocess.run(["systemctl", "daemon-reload"], capture_output=True)
    pid = _pid()
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _pid() is not None:
            time.sleep(0.05)
    released = 0
    for m in sorted(idmount.mounted_under(run / "mounts"), key=lambda m: -len(m.target)):
        idmount.detach_view(m.target)
        released += 1
    # remove only what the helper made, one empty directory at a time: never a recursive delete
    # under a path that might still be a view onto someone's files
    mounts = run / "mounts"
    if mounts.is_dir():
        for udir in mounts.iterdir():
            if udir.is_dir() and not udir.is_symlink():
                for entry in udir.iterdir():
                    if entry.suffix == ".json" or entry.name.endswith(".json.tmp"):
                        entry.unlink()
                    elif entry.is_dir() and not any(m.target == str(entry) for m in idmount.mounts()):
                        with contextlib.suppress(OSError):
                            entry.rmdir()
                with contextlib.suppress(OSError):
                    udir.rmdir()
        for leftover in (mounts / ".lock",):
            leftover.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            mounts.rmdir()
    for name in ("idmapd.sock", PIDFILE):
        (run / name).unlink(missing_ok=True)
    (paths.system_state / RECORD).unlink(missing_ok=True)
    console.say(f"the idmap helper is stopped and removed; {released} view(s) released"
                + (f" (its log stays in {run}/idmapd.log)" if (run / "idmapd.log").exists() else ""))
    return Exit.OK


def serve_command() -> Exit:
    serve(Helper(client.run_dir()))
    return Exit.OK
