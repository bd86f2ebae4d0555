"""``up``'s remap guard: before starting services that bind-mount your files, is container root you?

``[remap] policy`` decides what happens when it is not: ``require`` refuses,
``warn`` warns, ``off`` does not look.  The answer is proven by the probe and
cached per daemon, so a second ``up`` costs one ``info`` call.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import TYPE_CHECKING

from devbox import console
from devbox.core.model import Project, RemapPolicy
from devbox.core.ownership import Refusal, idmap_runtime_refusal
from devbox.engine import client as engine
from devbox.errors import DevboxError, HostError
from devbox.host import observe
from devbox.host.files import private_dir, write_atomic
from devbox.host.user import User
from devbox.paths import Paths
from devbox.remap.assess import FIX_APPLY
from devbox.stack.reconcile import Action, StackPlan

if TYPE_CHECKING:
    from devbox.engine.client import Engine

REMAP_CACHE = "remap-verified.json"


@dataclasses.dataclass(frozen=True)
class RemapVerdict:
    ok: bool
    reason: str  # why not (or how it was proven)


def remap_verdict(client: Engine, paths: Paths, user: User,
                  info: engine.EngineInfo | None = None) -> RemapVerdict:
    """Is container root the invoking user on this engine?  Proven by the probe, cached per daemon.

    The fast path is one ``info`` call: the cache key holds the daemon's data
    root, security options, PID and process start time, so a restarted (say,
    upgraded) or reconfigured dockerd is probed again.
    """
    from devbox.remap.assess import assess_engine, assess_probe, observe_host

    info = info or engine.inspect_engine(client)
    verdict = info.root_is(user.name, user.uid, user.gid)
    if not verdict.ok or info.rootless:
        return RemapVerdict(verdict.ok, verdict.reason)
    pid = observe.find_dockerd_pid(paths)
    started = ""
    if pid is not None:
        try:
            started = (paths.proc / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[19]
        except (OSError, IndexError):
            started = ""
    key = hashlib.sha256(
        json.dumps([info.host, info.data_root, list(info.security_options), pid, started, user.uid, user.gid]).encode()
    ).hexdigest()
    cache = paths.user_state / REMAP_CACHE
    try:
        if json.loads(cache.read_text()).get("key") == key:
            return RemapVerdict(True, "probe-verified (cached for this dockerd)")
    except (OSError, ValueError, AttributeError):
        pass
    state = observe_host(paths, user, engine=True, probe=True)
    failed = [f for f in assess_engine(state) + assess_probe(state) if f.status == "fail"]
    if failed:
        return RemapVerdict(False, f"{failed[0].title}: no — {failed[0].evidence[-1] if failed[0].evidence else ''}".rstrip(" —"))
    try:
        private_dir(cache.parent)
        write_atomic(cache, (json.dumps({"key": key}) + "\n").encode(), mode=0o600)
    except (HostError, OSError):
        pass  # only a cache: the next up probes again
    return RemapVerdict(True, "probe-verified")


def guard_engine(client: Engine, project: Project) -> tuple[engine.EngineInfo, str]:
    """The engine, and the project's ``[ownership] strategy`` on it, which must work there; on Podman,
    ``up`` runs rootless with keep-id, rootful with idmapped binds (:mod:`devbox.stack.pods`)."""
    from devbox.stack.views import choose_for_engine

    info = engine.inspect_engine(client, brief=True)  # the kind and what up needs, no more (Podman's info is slow)
    choice = choose_for_engine(info, project)
    if isinstance(choice, Refusal):
        raise DevboxError(f"{info.label} at {info.host}: {choice.message}", hint=choice.fix)
    if info.kind == "podman-rootful" and choice.strategy == "idmap":
        info = engine.inspect_engine(client)  # idmap's binds depend on the OCI runtime, which brief facts lack
        refused = idmap_runtime_refusal(info.kind, choice.strategy, info.oci_runtime)
        if refused is not None:
            raise DevboxError(f"{info.label} at {info.host}: {refused.message}", hint=refused.fix)
    if info.product == "podman" and choice.strategy not in ("keep-id", "idmap"):
        raise DevboxError(
            f"devbox up runs on rootless Podman with keep-id and on rootful Podman with idmapped binds; "
            f"{info.label} at {info.host} would need strategy {choice.strategy}",
            hint="set [ownership] strategy = \"auto\" in devbox.toml")
    return info, choice.strategy


def guard_remap(client: Engine, project: Project, plan: StackPlan, user: User, paths: Paths,
                info: engine.EngineInfo | None = None) -> None:
    """``[remap] policy``: refuse (require) or warn before starting services that bind-mount host dirs."""
    if project.remap is RemapPolicy.OFF:
        return
    starting = sorted(
        {op.service.name for op in plan.operations if op.action in (Action.CREATE, Action.RECREATE, Action.START)
         and op.service is not None and any(not m.read_only for m in op.service.binds)
         and op.service.userns_mode != "host"}
    )
    if not starting:
        return
    verdict = remap_verdict(client, paths, user, info)
    if verdict.ok:
        return
    what = f"services that bind-mount your files ({', '.join(starting)})"
    if project.remap is RemapPolicy.REQUIRE:
        raise DevboxError(
            f"refusing to start {what}: {verdict.reason}; files they write would not be yours",
            hint=f"run '{FIX_APPLY}' (or set [remap] policy = \"warn\" in devbox.toml)",
        )
    console.warn(f"starting {what} without a working remap: {verdict.reason}; files they write may not be yours — fix: {FIX_APPLY}")


