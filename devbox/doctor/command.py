"""``devbox doctor [--fix]``: what the CLI calls (see :mod:`devbox.doctor` for the ids and the JSON schema)."""

from __future__ import annotations

import os
import shlex
from typing import Any

from devbox import console
from devbox.core.findings import worst
from devbox.doctor.checks import CHECKS, fixable
from devbox.doctor.context import Context, gather
from devbox.doctor.render import doctor_report_json, render
from devbox.doctor.runner import run_checks
from devbox.errors import Exit, HostError
from devbox.host import change
from devbox.host.user import User, paths_for, refuse_root, resolve_user
from devbox.remap.plan import apply_remap, plan_remap


def _require_root(user: User, restart_cmd: str | None) -> None:
    if os.geteuid() != 0:
        args = ["devbox", "doctor", "--fix", "--user", user.name] + (["--restart-cmd", restart_cmd] if restart_cmd else [])
        raise HostError("--fix changes /etc/subuid, /etc/subgid and daemon.json and restarts dockerd: it needs root",
                        hint=f"run: sudo {shlex.join(args)}")


def apply_fix(ctx: Context, restart_cmd: str | None) -> dict[str, Any]:
    """remap's plan, executed with its lock, backups, restart, proof and rollback; recorded for --revert."""
    p = plan_remap(ctx.state, ctx.paths)
    if p.nothing_to_do:
        return {"changes": [], "restarted": False, "backup": None}
    for c in p.changes:
        console.info(f"{c.path}: " + "; ".join(c.reasons))
    if p.restart_reason:
        console.info(p.restart_reason)
    stamp = apply_remap(ctx.paths, ctx.user, p, restart_cmd, progress=console.info)
    return {
        "changes": [{"path": str(c.path), "reasons": list(c.reasons)} for c in p.changes],
        "restarted": True,
        "backup": str(ctx.paths.remap_backups / stamp) if p.changes else None,
    }


def doctor_command(*, user: str | None, json_out: bool, fix: bool, verbose: bool, restart_cmd: str | None) -> Exit:
    target = refuse_root(resolve_user(user), "refusing to remap to root: container root would stay host root",
                         "run as your own user, or pass --user NAME (with sudo, SUDO_USER is used)")
    paths = paths_for(target)
    ctx = gather(paths, target)
    results = run_checks(CHECKS, ctx)
    fixed = None
    if fix and fixable(results, ctx.engine_error, ctx.state.engine.kind if ctx.state.engine else None):
        _require_root(target, restart_cmd)
        if not json_out:
            render(ctx, results, False, title="devbox doctor (before --fix)")
            console.say("")
        if change.recover(paths, change.restart_argv(paths, restart_cmd), progress=console.info):
            ctx = gather(paths, target)  # what a killed devbox left is undone: plan from what is there now
        fixed = apply_fix(ctx, restart_cmd)
        ctx = gather(paths, target)
        results = run_checks(CHECKS, ctx)
    elif fix:
        fixed = {"changes": [], "restarted": False, "backup": None}
        if not json_out:
            console.info("--fix: nothing that devbox can fix safely has failed")
    if json_out:
        console.emit_json(doctor_report_json(ctx, results, fixed))
    else:
        render(ctx, results, verbose, title="devbox doctor (after --fix)" if fixed and fixed["restarted"] else "devbox doctor")
    return Exit.PROBLEMS if worst(r.finding for r in results) == "fail" else Exit.OK
