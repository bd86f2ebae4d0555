"""Project checks: ``project.config``, ``project.by-design``, ``project.containers``, ``project.leaks``,
``project.inotify``."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from devbox.core.findings import Finding
from devbox.core.idmap import to_host
from devbox.doctor.context import Context
from devbox.errors import ConfigError
from devbox.watch.leaks import Leak, load_records, plan_fix, unreadable_line
from devbox.watch.source import max_user_watches


def check_project(ctx: Context) -> list[Finding]:
    p = ctx.project_or_error
    if p is None:
        return [Finding("project.config", "skip", (f"no devbox.toml in {ctx.cwd} or any parent directory",))]
    if isinstance(p, ConfigError):
        return [Finding("project.config", "fail", (p.one_line(),), p.hint or f"edit {p.where or ctx.project_root}")]
    prof = p.profile()
    return [Finding("project.config", "ok", (
        f"{p.file}: project {p.name}, profile {prof.name} ({', '.join(prof.service_names)})",))]


def check_by_design(ctx: Context) -> list[Finding]:
    """Services whose configuration guarantees files that are not the user's in a bind mount.

    A non-root service under remap is fine when the idmap helper answers: ``up`` gives it its own
    idmapped view (:mod:`devbox.core.views`), through which what it writes is stored as you."""
    from devbox.idmapd.client import FIX_INSTALL, helper_status

    u = ctx.user
    uid_map = ctx.state.predicted_uid_map
    strategy = ctx.state.strategy
    podman_binds = ctx.state.kind == "podman-rootful"
    fails: list[str] = []
    warns: list[str] = []
    fixes: list[str] = []
    viewed: list[str] = []
    helper_why: str | None = None
    helper_asked = False
    for prof_name in ctx.profiles_checked:
        for svc in ctx.project.profile(prof_name).services:
            writable = [m for m in svc.binds if not m.read_only]
            if not writable:
                continue
            where = f"profile {prof_name}: services.{svc.name}"
            binds = ", ".join(f"{m.source} → {m.target}" for m in writable)
            if svc.userns_mode == "host":
                warns.append(f"{where}: userns_mode = \"host\" ({svc.userns_reason}): its root is the host's root, "
                             f"so what it writes to {binds} is owned by root")
                continue
            cuid = svc.container_uid  # 0 without a user: container root, which is you
            name = (svc.user or "root").split(":", 1)[0]
            if strategy == "idmap":
                if podman_binds:  # rootful Podman's binds exist only in the container: any user may write as you
                    viewed.append(f"{where}: writes to {binds} through an idmapped bind (made by Podman)")
                elif cuid is not None and cuid not in (0, u.uid):
                    fails.append(f"{where}: user = \"{svc.user}\" is host uid {cuid} without a remap, not you: "
                                 "devbox will not let another account write as you, so up refuses it")
                    fixes.append(f"remove user = \"{svc.user}\" from [services.{svc.name}] (root writes through your view)")
                else:
                    viewed.append(f"{where}: writes to {binds} through an idmapped view")
                continue
            if cuid == 0 or name == "root":
                continue
            if strategy == "remap":
                if not helper_asked:
                    helper_why, helper_asked = helper_status(root_will_do=False), True
                if helper_why is None:
                    viewed.append(f"{where}: user = \"{svc.user}\" writes to {binds} through its own idmapped view "
                                  f"(stored as {u.name})")
                    continue
            if cuid is None:
                what = f"user \"{name}\" is resolved inside the image; any uid but 0 maps into {u.name}'s subordinate range"
            else:
                hid = to_host(uid_map, cuid)
                what = (f"container uid {cuid} is host uid {hid}, in {u.name}'s subordinate range" if hid is not None
                        else f"container uid {cuid} is not mapped by /etc/subuid")
            fails.append(f"{where}: user = \"{svc.user}\" writes to {binds}: {what}"
                         + (", and no idmap helper answers to give it a view" if helper_why else ""))
            fixes.append(f"{FIX_INSTALL} (up then gives it an idmapped view that stores its files as you), or remove "
                         f"user = \"{svc.user}\" from [services.{svc.name}] in {ctx.project.file}: "
                         f"with the remap, container root is already you (uid {u.uid})")
    if fails:
        return [Finding("project.by-design", "fail", tuple(fails + warns), "; ".join(dict.fromkeys(fixes)))]
    if warns:
        return [Finding("project.by-design", "warn", tuple(warns),
                        "keep only what truly needs host namespaces; `devbox leaks --fix` cannot fix root-owned files without sudo")]
    return [Finding("project.by-design", "ok",
                    (f"checked profile(s) {', '.join(ctx.profiles_checked)}: every service writing to a bind mount runs as "
                     "container root" + (" or through an idmapped view" if viewed else ""), *viewed))]


def check_containers(ctx: Context) -> list[Finding]:
    bad: list[str] = []
    privileged = False
    for c in ctx.containers:
        hc = c.get("HostConfig") or {}
        what = []
        if hc.get("Privileged"):
            what.append("privileged")
            privileged = True
        for key, label in (("UsernsMode", "user"), ("NetworkMode", "network"), ("PidMode", "pid"), ("IpcMode", "ipc"), ("UTSMode", "uts")):
            if hc.get(key) == "host":
                what.append(f"host {label} namespace")
        if what:
            state = (c.get("State") or {}).get("Status", "?")
            bad.append(f"{str(c.get('Name', '?')).lstrip('/')} ({state}): {', '.join(what)}")
    if not bad:
        return [Finding("project.containers", "ok", (f"{len(ctx.containers)} container(s) labelled devbox.project={ctx.project.name}",))]
    return [Finding("project.containers", "fail" if privileged else "warn", tuple(bad),
                    "remove them (devbox down) and start the stack with devbox up: devbox never creates privileged containers")]


def _relative(path: str, roots: Sequence[str]) -> str:
    for root in roots:
        prefix = root.rstrip("/") + "/"
        if path.startswith(prefix):
            return path[len(prefix):]
    return path


def _some(items: Sequence[str], limit: int) -> str:
    more = f", … ({len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def summarise_leaks(leaks: Sequence[Leak], roots: Sequence[str], limit: int = 3) -> list[str]:
    """One line per owner: how many paths, which service, a few examples (relative to their work dir)."""
    groups: dict[str, list[Leak]] = {}
    for leak in leaks:
        groups.setdefault(leak.owner_text(), []).append(leak)
    out = []
    for owner, group in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        paths = sorted(_relative(x.path, roots) + ("/" if x.is_dir else "") for x in group)
        out.append(f"{len(group)} path(s) owned by {owner}: {_some(paths, limit)}")
    return out


def check_leaks(ctx: Context) -> list[Finding]:
    roots = ctx.workdirs
    records = ctx.records_path
    if records.exists():
        leaks = [Leak.from_record(r) for r in load_records(records, under=roots)]
        source = f"from the watcher's records ({records})"
    else:
        attr = ctx.attribution
        leaks = sorted((attr.classify(p, u, g, is_dir=d) for p, u, g, d in ctx.scan.found), key=lambda x: x.path)
        source = f"from a scan of {ctx.scan.dirs:,} directories under {', '.join(roots)}"
    unreadable = sorted(ctx.scan.unreadable)
    # a leaked directory is unreadable because of its owner, and chowning it back fixes both;
    # one of yours that you cannot list needs its mode fixed
    leaked = {x.path for x in leaks}
    closed = [d for d in unreadable if d not in leaked]
    chmod = shlex.join(["chmod", "u+rx", "--", *closed]) if closed else None
    unread = [unreadable_line(unreadable, lambda p: _relative(p, roots))] if unreadable else []
    if not leaks and not unread:
        return [Finding("project.leaks", "ok", (f"no leaked files {source}",))]
    if not leaks:
        return [Finding("project.leaks", "warn", (f"no leaked files {source} in what could be read", *unread),
                        f"{chmod}  (then run devbox doctor again)")]
    ev = [f"{len(leaks)} leaked path(s) {source}", *summarise_leaks(leaks, roots), *unread]
    plan = plan_fix(leaks, ctx.attribution.user)
    fixes = []
    if plan.by_helper:
        fixes.append(f"devbox leaks --fix  (a helper container chowns the {len(plan.by_helper)} mapped path(s) back to you, no sudo)")
    if plan.needs_root:
        fixes.append(shlex.join(plan.root_command))
    if chmod:
        fixes.append(chmod)
    return [Finding("project.leaks", "fail", tuple(ev), "; then ".join(fixes))]


def check_inotify(ctx: Context) -> list[Finding]:
    limit = max_user_watches(ctx.paths.proc)
    dirs = ctx.scan.dirs
    ignoring = ", ".join(ctx.project.watch.ignore) or "nothing"
    ev: tuple[str, ...] = (f"{dirs:,} directories to watch under {', '.join(ctx.workdirs)} (ignoring {ignoring})",
          f"fs.inotify.max_user_watches = {limit:,}" if limit is not None else "fs.inotify.max_user_watches is unreadable")
    if ctx.scan.unreadable:
        n = len(ctx.scan.unreadable)
        ev += (f"not counted: what {n} unreadable {'directory holds' if n == 1 else 'directories hold'} (see project.leaks)",)
    if limit is None or dirs <= limit * 0.9:
        return [Finding("project.inotify", "ok", ev)]
    want = max(dirs * 2, 65536)
    return [Finding("project.inotify", "warn", ev + (
        "the watcher would leave directories unwatched and fall back to periodic rescans (about 1.3 KiB kernel memory per watch)",),
        f"sudo sysctl fs.inotify.max_user_watches={want}  (persist it in /etc/sysctl.d/)")]
