"""Subordinate-id checks: remap's ``assess_subid`` for /etc/subuid and /etc/subgid, plus an ok ``*.map-lines``."""

from __future__ import annotations

from devbox.core.findings import Finding
from devbox.core.idmap import KERNEL_MAP_LINES
from devbox.doctor.checks.idmap import skipped_under_idmap
from devbox.doctor.context import Context
from devbox.remap.assess import OLD_KERNEL_MAP_LINES, assess_newuidmap, assess_subid, rootless_fix


def subid_ids(name: str) -> tuple[str, ...]:
    """The ids a subordinate-id check reports for ``subuid``/``subgid`` (``*.syntax`` only when the file has a problem)."""
    return tuple(f"{name}.{what}" for what in ("own-line", "accounts", "overlap", "range", "map-lines"))


def _with_map_lines(found: list[Finding], name: str, owner: str, lines: int) -> list[Finding]:
    if any(f.id == f"{name}.map-lines" for f in found):
        return found
    return found + [Finding(f"{name}.map-lines", "ok",
                            (f"{lines} line(s) for {owner}: every kernel accepts {OLD_KERNEL_MAP_LINES} "
                             f"(4.15+ accept {KERNEL_MAP_LINES})",))]


def check_subuid(ctx: Context) -> list[Finding]:
    skipped = skipped_under_idmap(ctx, subid_ids("subuid"))
    if skipped:
        return skipped
    s, u = ctx.state, ctx.user
    found = assess_subid(s.subuid, u.name, u.uid, s.accounts, "uid", rootless_fix(s, u.name))
    return _with_map_lines(found, "subuid", u.name, len(s.uid_entries))


def check_subgid(ctx: Context) -> list[Finding]:
    skipped = skipped_under_idmap(ctx, subid_ids("subgid"))
    if skipped:
        return skipped
    s, u = ctx.state, ctx.user
    found = assess_subid(s.subgid, u.group, u.gid, s.groups, "gid", rootless_fix(s, u.group))
    return _with_map_lines(found, "subgid", u.group, len(s.gid_entries))


def check_newuidmap(ctx: Context) -> list[Finding]:
    e = ctx.state.engine
    if e is None or not e.rootless:
        return [Finding("host.newuidmap", "skip", ("only rootless engines use newuidmap and newgidmap",))]
    return [assess_newuidmap(ctx.state.id_helpers)]
