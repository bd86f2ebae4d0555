"""The stack's idmapped views: the strategy for this engine, the views it needs, made before services start.

:mod:`devbox.core.views` decides (pure); this module reads what deciding needs
(the engine, ``/etc/subuid``, a service image's ``/etc/passwd`` when its
``user`` is a name) and asks :mod:`devbox.idmapd.client` for the mounts.
"""

from __future__ import annotations

import dataclasses
import io
import tarfile
from collections.abc import Mapping
from typing import TYPE_CHECKING

from devbox import console
from devbox.core.idmap import predict_map
from devbox.core.model import Project, RemapPolicy, Stack
from devbox.core.ownership import Choice, Refusal, choose_strategy
from devbox.core.views import (
    STRATEGIES_WITH_VIEWS,
    ViewPlan,
    apply_views,
    needs_user,
    parse_user,
    plan_views,
    podman_idmap,
    writable_binds,
)
from devbox.engine.client import EngineInfo
from devbox.errors import DevboxError, EngineError
from devbox.host import idmount, observe
from devbox.host.user import User
from devbox.idmapd import client as helper
from devbox.paths import Paths

if TYPE_CHECKING:
    from devbox.engine.client import Engine


def choose_for_engine(info: EngineInfo, project: Project) -> Choice | Refusal:
    """The project's strategy on this engine (``auto``: remap where the daemon remaps, else idmap)."""
    return choose_strategy(info.kind, project.strategy, remapped=info.userns,
                           idmap_ok=idmount.kernel_version() >= idmount.MIN_KERNEL)


@dataclasses.dataclass(frozen=True)
class Views:
    strategy: str
    plan: ViewPlan
    stack: Stack  # the stack with viewed binds pointing at their staging paths
    missing_helper: str | None = None  # why views cannot be made (then ``stack`` is the plain one)
    # rootful Podman makes them itself (crun's idmap bind option): no helper, ``stack`` is the plain one
    engine_made: bool = False

    def podman_idmaps(self) -> dict[tuple[str, str, str], str]:
        """Each view as rootful Podman's bind option: (service, source, target) -> ``idmap=…``."""
        return {(v.service, v.source, v.target): podman_idmap(v.owner, v.writer) for v in self.plan.views}

    def to_json(self) -> list[dict[str, object]]:
        return [v.to_json() for v in self.plan.views]


def _passwd_of(client: Engine, image: str) -> tuple[str, str]:
    """``/etc/passwd`` and ``/etc/group`` of ``image`` (from a created, never started, container)."""
    cid = client.api.create_container({"Image": image, "Cmd": ["true"], "Entrypoint": []})
    try:
        out = []
        for path in ("/etc/passwd", "/etc/group"):
            try:
                data = client.api.get_archive(cid, path)
            except EngineError:
                out.append("")
                continue
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                member = tar.next()
                fh = tar.extractfile(member) if member is not None else None
                out.append(fh.read().decode(errors="replace") if fh is not None else "")
        return out[0], out[1]
    finally:
        client.api.remove_container(cid, force=True)


def resolve_spec(spec: str, passwd: str, group: str) -> tuple[int, int] | None:
    """Docker's reading of ``user``: a name or uid, then an optional ``:group``; the gid defaults to the
    passwd entry's, else 0.  ``None``: a name the image does not know (the engine refuses to start it)."""
    name, _, grp_spec = spec.partition(":")
    entries = [line.split(":") for line in passwd.splitlines() if line.count(":") >= 3]
    entry = next((e for e in entries if e[0] == name), None) or (
        next((e for e in entries if e[2] == name), None) if name.isdigit() else None)
    if entry is None and not name.isdigit():
        return None
    uid = int(entry[2]) if entry is not None else int(name)
    gid = int(entry[3]) if entry is not None and entry[3].isdigit() else 0
    if grp_spec:
        if grp_spec.isdigit():
            gid = int(grp_spec)
        else:
            found = next((line.split(":") for line in group.splitlines() if line.split(":")[0] == grp_spec), None)
            if found is None or len(found) < 3 or not found[2].isdigit():
                return None
            gid = int(found[2])
    return uid, gid


def container_users(client: Engine, stack: Stack, strategy: str,
                    present: Mapping[str, bool]) -> dict[str, tuple[int, int]]:
    """Each writing service's container ``(uid, gid)``; a name is read from its image when ``present``."""
    users: dict[str, tuple[int, int]] = {}
    cache: dict[str, tuple[str, str]] = {}
    for svc in stack.services:
        direct = parse_user(svc.user)
        if direct is not None:
            users[svc.name] = direct
            continue
        if not needs_user(svc, strategy) or not present.get(svc.image):
            continue
        if svc.image not in cache:
            cache[svc.image] = _passwd_of(client, svc.image)
        found = resolve_spec(svc.user or "", *cache[svc.image])
        if found is None:
            raise DevboxError(f"service {svc.name}: user \"{svc.user}\" is not in the image {svc.image}'s /etc/passwd",
                              hint=f"use a numeric user (\"UID:GID\") in [services.{svc.name}], or add the account to the image")
        users[svc.name] = found
    return users


def plan_stack_views(client: Engine, stack: Stack, strategy: str, user: User, paths: Paths,
         present: Mapping[str, bool], engine_kind: str = "") -> Views:
    """The views ``stack`` needs under ``strategy`` for ``user``, and the stack that uses them (on
    rootful Podman, which makes them itself, the same stack: :meth:`Views.podman_idmaps`)."""
    if strategy not in STRATEGIES_WITH_VIEWS or not any(writable_binds(s) for s in stack.services):
        return Views(strategy, ViewPlan(), stack)
    users = container_users(client, stack, strategy, present)
    subuid, subgid = observe.read_subid(paths.subuid), observe.read_subid(paths.subgid)
    uid_entries, gid_entries = subuid.owned_by(user.name), subgid.owned_by(user.group)
    # what the helper grants (devbox.idmapd.server: subuid by name, subgid by name or primary group)
    allowed = ([(e.start, e.count) for e in subuid.owned_by(user.name)],
               [(e.start, e.count) for e in {*subgid.owned_by(user.name), *subgid.owned_by(user.group)}])
    vp = plan_views(stack, strategy, (user.uid, user.gid), users,
                    predict_map(uid_entries), predict_map(gid_entries), allowed, any_writer=engine_kind == "podman-rootful")
    if not vp.views or engine_kind == "podman-rootful":
        return Views(strategy, vp, stack, engine_made=engine_kind == "podman-rootful")
    why = helper.helper_status()
    if why is not None:
        return Views(strategy, vp, stack, missing_helper=why)
    return Views(strategy, vp, apply_views(stack, vp, str(helper.run_dir())))


def guard_views(views: Views, project: Project) -> None:
    """Refuse (or warn, under ``[remap] policy = "warn"``) what views cannot make yours."""
    if project.remap is RemapPolicy.OFF:
        return
    problems = list(views.plan.refused)
    if views.missing_helper is not None:
        served = ", ".join(sorted({v.service for v in views.plan.views}))
        if views.strategy == "idmap":
            problems.append(f"services that bind-mount your files ({served}) need idmapped views and {views.missing_helper}")
        else:  # remap: only the non-root writers lose their views; container root is still you
            console.warn(f"{served}: run as non-root users and need idmapped views, but {views.missing_helper}; "
                         f"files they write will not be yours — fix: {helper.FIX_INSTALL}")
    if not problems:
        return
    fix = (f"run '{helper.FIX_INSTALL}' (idmapped views, this engine unchanged) or 'sudo devbox remap --apply' "
           "(remap the whole daemon)") if views.missing_helper and views.strategy == "idmap" else \
        "run such services as root (remove user = ...) or as your own uid; see devbox doctor"
    message = "; ".join(problems) + "; files they write would not be yours"
    if project.remap is RemapPolicy.REQUIRE:
        raise DevboxError(f"refusing to start: {message}", hint=f"{fix} (or set [remap] policy = \"warn\" in devbox.toml)")
    console.warn(f"starting anyway: {message} — fix: {fix}")


def ensure_views(views: Views) -> None:
    """Make or adopt every view before any container that uses one is created or started."""
    if views.missing_helper is None and views.plan.views and not views.engine_made:
        # services that see one directory through one map share one mount
        unique = list({v.name: v for v in views.plan.views}.values())
        adopted = sum(1 for r in helper.make_views(unique) if r.get("adopted"))
        made = len(unique) - adopted
        console.info(f"idmapped views: {made} made, {adopted} adopted"
                     if adopted else f"idmapped views: {made} made")


def release_project_views(project: str, user: User, keep: Views | None = None) -> list[str]:
    """Unmount the project's views that ``keep`` does not use (all of them without ``keep``)."""
    names = {v.name for v in keep.plan.views} if keep is not None and keep.missing_helper is None else set()
    if not (helper.run_dir() / "mounts").is_dir():
        return []  # no view was ever made here
    if not names and helper.helper_status() is not None:  # with views kept, planning just heard the helper answer
        return []
    return helper.release_views(project, (user.uid, user.gid), names)
