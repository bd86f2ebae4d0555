"""Idmapped views of the work dirs (pure): which service gets one, through which map, under which name.

A *view* is a kernel idmapped mount of a bind-mounted host directory, made at a
staging path and bind-mounted into one service's container instead of the
directory itself (:mod:`devbox.host.idmount` makes it, the helper
:mod:`devbox.idmapd` decides who may ask).  Its map has one uid line and one
gid line, ``S W 1``: files stored as ``S`` (you) are seen as ``W`` (the host id
the service's writer runs as), and everything ``W`` creates is stored as you.
Any other writer gets ``EOVERFLOW``: no leak is possible through a view.

==============  ====================================  ==========================================
strategy        who gets a view                       writer ``W``
==============  ====================================  ==========================================
``idmap``       every service writing to a bind       the container uid itself (no user namespace)
``remap``       services running as a non-root uid    that uid through the remap (a subordinate id)
others          nobody: the engine's user namespace already makes container root you
==============  ====================================  ==========================================
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath

from devbox.core.idmap import IdMap, to_host
from devbox.core.model import Mount, Service, Stack

STRATEGIES_WITH_VIEWS = ("idmap", "remap")


@dataclasses.dataclass(frozen=True)
class View:
    """One idmapped view: ``source`` seen by ``service`` at ``target`` through ``S W 1`` lines."""

    project: str
    service: str
    source: str
    target: str
    owner: tuple[int, int]  # (uid, gid) files are stored as: you
    writer: tuple[int, int]  # host (uid, gid) the service writes as
    container_user: tuple[int, int]  # (uid, gid) inside the container, for messages

    @property
    def name(self) -> str:
        """Stable per (project, source, map): the same view is adopted, a changed map is a new one."""
        digest = hashlib.sha256(repr((self.source, self.owner, self.writer)).encode()).hexdigest()[:16]
        return f"{self.project}-{digest}"

    @property
    def uid_lines(self) -> tuple[tuple[int, int, int], ...]:
        return ((self.owner[0], self.writer[0], 1),)

    @property
    def gid_lines(self) -> tuple[tuple[int, int, int], ...]:
        return ((self.owner[1], self.writer[1], 1),)

    def to_json(self) -> dict[str, object]:
        return {"service": self.service, "source": self.source, "target": self.target, "name": self.name,
                "map": {"uid": list(self.uid_lines[0]), "gid": list(self.gid_lines[0])},
                "container_user": f"{self.container_user[0]}:{self.container_user[1]}"}


@dataclasses.dataclass(frozen=True)
class ViewPlan:
    views: tuple[View, ...] = ()
    refused: tuple[str, ...] = ()  # services that cannot write through a view, and why (one line each)

    def for_service(self, service: str) -> tuple[View, ...]:
        return tuple(v for v in self.views if v.service == service)


def staging_path(root: str, uid: int, name: str) -> str:
    """Where the helper attaches view ``name`` of user ``uid`` (one layout for helper and client)."""
    return str(PurePosixPath(root) / "mounts" / str(uid) / name)


def podman_idmap(owner: tuple[int, int], writer: tuple[int, int]) -> str:
    """A view made by rootful Podman itself: crun's bind option, ``S-W-1`` lines as a view's (files
    stored as ``owner`` are seen as ``writer``, and what ``writer`` creates is stored as ``owner``)."""
    return f"idmap=uids={owner[0]}-{writer[0]}-1;gids={owner[1]}-{writer[1]}-1"


def writable_binds(svc: Service) -> tuple[Mount, ...]:
    return tuple(m for m in svc.binds if not m.read_only)


def needs_user(svc: Service, strategy: str) -> bool:
    """Does planning ``svc`` need its container user resolved from the image (a name, or a uid
    without a group: Docker then takes the group from the image's passwd, else 0)?"""
    if strategy not in STRATEGIES_WITH_VIEWS or not writable_binds(svc) or svc.userns_mode == "host":
        return False
    return parse_user(svc.user) is None


def parse_user(user: str | None) -> tuple[int, int] | None:
    """``"UID:GID"`` (numbers) → the pair; ``None`` → root; anything else needs the image's passwd."""
    if user is None:
        return 0, 0
    uid, _, gid = user.partition(":")
    if uid.isdigit() and gid.isdigit():
        return int(uid), int(gid)
    return None


def plan_views(
    stack: Stack,
    strategy: str,
    owner: tuple[int, int],
    users: Mapping[str, tuple[int, int]],
    uid_map: IdMap | None = None,
    gid_map: IdMap | None = None,
    allowed: tuple[Sequence[tuple[int, int]], Sequence[tuple[int, int]]] | None = None,
    any_writer: bool = False,
) -> ViewPlan:
    """The views ``stack`` needs under ``strategy``.

    ``users``: each service's container ``(uid, gid)`` (resolved from the image where ``user`` is a
    name); a service missing there runs as root.  ``uid_map``/``gid_map``: the remap (container ->
    host) under ``remap``; ``None`` under ``idmap`` (container ids are host ids).  ``allowed``: the
    owner's subordinate (uid, gid) ranges ``(start, count)``, which a writer may be besides root and
    the owner (:mod:`devbox.idmapd.rules` applies the same rule).  ``any_writer``: no such rule, for
    views that exist only inside a container's mount namespace (rootful Podman's idmapped binds): no
    host process of another account can reach them, unlike the helper's staging mounts.
    """
    if strategy not in STRATEGIES_WITH_VIEWS:
        return ViewPlan()
    views: list[View] = []
    refused: list[str] = []
    for svc in stack.services:
        binds = writable_binds(svc)
        if not binds or svc.userns_mode == "host":
            continue
        cuid, cgid = users.get(svc.name, (0, 0))
        if strategy == "remap":
            if (cuid, cgid) == (0, 0):
                continue  # container root is you already
            assert uid_map is not None and gid_map is not None
            wuid, wgid = to_host(uid_map, cuid), to_host(gid_map, cgid)
            if wuid is None or wgid is None:
                refused.append(f"service {svc.name} runs as container {cuid}:{cgid}, which the remap does not map "
                               "(outside /etc/subuid's range)")
                continue
        else:
            wuid, wgid = cuid, cgid
        why = None if any_writer else _not_allowed(owner, (wuid, wgid), allowed)
        if why is not None:
            refused.append(f"service {svc.name} runs as container {cuid}:{cgid}, host {wuid}:{wgid}: {why}")
            continue
        for m in binds:
            views.append(View(stack.project, svc.name, m.source, m.target, owner, (wuid, wgid), (cuid, cgid)))
    return ViewPlan(tuple(views), tuple(refused))


def _not_allowed(owner: tuple[int, int], writer: tuple[int, int],
                 allowed: tuple[Sequence[tuple[int, int]], Sequence[tuple[int, int]]] | None) -> str | None:
    for i, what in ((0, "uid"), (1, "gid")):
        w = writer[i]
        if w in (0, owner[i]):
            continue
        ranges = allowed[i] if allowed is not None else ()
        if not any(start <= w < start + count for start, count in ranges):
            return (f"host {what} {w} is neither root, you ({owner[i]}) nor one of your subordinate ids, "
                    "so devbox will not let it write as you")
    return None


def apply_views(stack: Stack, plan: ViewPlan, root: str) -> Stack:
    """``stack`` with each viewed bind's source replaced by its view's staging path."""
    if not plan.views:
        return stack
    by_key = {(v.service, v.source, v.target): v for v in plan.views}
    services = []
    for svc in stack.services:
        mounts = tuple(
            dataclasses.replace(m, source=staging_path(root, v.owner[0], v.name))
            if m.kind == "bind" and (v := by_key.get((svc.name, m.source, m.target))) is not None else m
            for m in svc.mounts
        )
        services.append(dataclasses.replace(svc, mounts=mounts))
    return dataclasses.replace(stack, services=tuple(services))
