"""Idmapped views: ``idmap.kernel``, ``idmap.filesystem``, ``idmap.helper``, ``idmap.proof``; and the
skips of remap-only checks when the strategy is ``idmap``."""

from __future__ import annotations

from pathlib import Path

from devbox.core.findings import Finding
from devbox.core.model import Project
from devbox.core.views import parse_user, writable_binds
from devbox.doctor.context import Context
from devbox.idmapd import assess

UNDER_IDMAP = "strategy idmap: dockerd is not remapped and no subordinate ids are used; idmapped views make your files yours (see idmap.*)"


def skipped_under_idmap(ctx: Context, ids: tuple[str, ...]) -> list[Finding] | None:
    """Skips for remap-only checks when the strategy is ``idmap`` (None otherwise)."""
    if ctx.state.strategy != "idmap":
        return None
    return [Finding(i, "skip", (UNDER_IDMAP,)) for i in ids]


PODMAN_MAKES_THEM = "rootful Podman makes idmapped binds itself (crun's idmap bind option): no helper, no views"


def views_needed(ctx: Context) -> str | None:
    """Why this project needs views (the strategy, or a non-root writer under remap), else None."""
    if ctx.state.strategy == "idmap":
        return "strategy idmap"
    p = ctx.project_or_error
    if ctx.state.strategy != "remap" or not isinstance(p, Project):
        return None
    for svc in p.profile().services:
        if writable_binds(svc) and svc.userns_mode != "host" and parse_user(svc.user) != (0, 0):
            return f"service {svc.name} runs as user \"{svc.user}\" and writes to a bind mount"
    return None


def _directory(ctx: Context) -> Path:
    return ctx.project_root or ctx.cwd


def check_idmap_host(ctx: Context) -> list[Finding]:
    return [assess.check_idmap_kernel(), assess.check_idmap_filesystem(_directory(ctx))]


def check_idmap_helper_for_up(ctx: Context) -> list[Finding]:
    if ctx.state.kind == "podman-rootful":
        return [Finding("idmap.helper", "skip", (PODMAN_MAKES_THEM,))]
    found = assess.check_idmap_helper(root_will_do=False)
    need = views_needed(ctx)
    if found.status == "fail" and need is None:
        e = ctx.state.engine
        alternative = (f"{found.fix}: idmapped views make your files yours without remapping this dockerd"
                       if e is not None and e.kind == "docker-rootful" and not e.userns else "no service here needs idmapped views")
        return [Finding("idmap.helper", "skip", (*found.evidence[:1], alternative))]
    if found.status == "fail":
        return [Finding("idmap.helper", "fail", (*found.evidence, f"needed: {need}"), found.fix)]
    return [found]


def check_idmap_proof(ctx: Context) -> list[Finding]:
    if ctx.state.kind == "podman-rootful":
        return [Finding("idmap.proof", "skip", (PODMAN_MAKES_THEM + "; the probe runs through one (probe.*)",))]
    if views_needed(ctx) is None:
        return [Finding("idmap.proof", "skip", ("no service here needs idmapped views",))]
    e = ctx.state.engine
    if e is None or e.rootless or e.product != "docker":
        return [Finding("idmap.proof", "skip", ("views are for rootful Docker",))]
    from devbox.engine.client import fast_api

    u = ctx.user
    owner = (u.uid, u.gid)
    writer = owner if e.userns and e.remap_ids() == owner else (0, 0)
    return [assess.prove(fast_api(), owner, _directory(ctx), writer)]
