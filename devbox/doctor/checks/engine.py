"""Engine checks: ``engine.socket``, ``engine.context``, ``engine.access``, ``engine.kind``."""

from __future__ import annotations

import dataclasses
import grp
import os
import pwd
import stat as _stat

from devbox.core.findings import Finding
from devbox.doctor.context import Context
from devbox.engine.endpoint import docker_config_dir, docker_context
from devbox.errors import EngineError
from devbox.errors import EngineErrorKind as Kind
from devbox.host.user import User
from devbox.remap.assess import assess_kind

ROOT_EQUIVALENT = "members of 'docker' are root-equivalent: any of them can start a privileged container"


def owner_names(st: os.stat_result) -> str:
    """``owner:group`` of a stat result, by name where the host has one."""
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{owner}:{group}"


def _host_line(ctx: Context) -> str:
    if ctx.environ.get("DOCKER_HOST"):
        return f"DOCKER_HOST={ctx.environ['DOCKER_HOST']} (from the environment)"
    found = ctx.endpoint
    return f"DOCKER_HOST is not set: {found.host} ({found.source})"


def _socket_line(ctx: Context) -> str | None:
    sock = ctx.socket
    if sock is None:
        return None
    try:
        st = os.stat(sock)
    except FileNotFoundError:
        return f"{sock} does not exist"
    except OSError as exc:
        return f"{sock}: {exc.strerror}"
    return f"{sock}: {_stat.filemode(st.st_mode)} {owner_names(st)}"


def check_socket(ctx: Context) -> list[Finding]:
    ev = [_host_line(ctx)]
    line = _socket_line(ctx)
    if line:
        ev.append(line)
    err = ctx.engine_error
    if err is None:
        return [Finding("engine.socket", "ok", tuple(ev))]
    ev.append(err.message)
    if err.kind is Kind.PERMISSION:
        me = _current_user_name()
        group = _socket_group(ctx) or "docker"
        fix = (f"sudo usermod -aG {group} {me}, then log in again ({ROOT_EQUIVALENT}); "
               "or run devbox with sudo")
    elif err.kind is Kind.UNREACHABLE:
        fix = "start the engine (sudo systemctl start docker), or set DOCKER_HOST to the engine you use"
    else:
        fix = err.hint or "check `docker info`"
    return [Finding("engine.socket", "fail", tuple(ev), fix)]


def _current_user_name() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def _socket_group(ctx: Context) -> str | None:
    if ctx.socket is None:
        return None
    try:
        return grp.getgrgid(os.stat(ctx.socket).st_gid).gr_name
    except (OSError, KeyError):
        return None


def check_context(ctx: Context) -> list[Finding]:
    config_dir = docker_config_dir(ctx.environ, ctx.user.home)
    name, endpoint = docker_context(config_dir, ctx.environ.get("DOCKER_CONTEXT") or None)
    if ctx.environ.get("DOCKER_HOST"):
        ev = (_host_line(ctx), "DOCKER_HOST overrides any docker context, for the CLI and for devbox alike")
        return [Finding("engine.context", "ok", ev)]
    if name is None:
        return [Finding("engine.context", "ok", (f"docker context: default ({config_dir / 'config.json'})",))]
    ev = (f"docker context: {name} → {endpoint or 'endpoint unreadable'} ({config_dir / 'config.json'})",
          f"devbox uses {ctx.host} ({ctx.endpoint.source})")
    if endpoint == ctx.host:
        return [Finding("engine.context", "ok", ev)]
    return [Finding("engine.context", "warn", ev,
                    f"export DOCKER_HOST={endpoint}" if endpoint else "docker context use default  (or set DOCKER_HOST)")]


def _groups_of(user: User) -> list[str]:
    names = []
    for gid in os.getgrouplist(user.name, user.gid):
        try:
            names.append(grp.getgrgid(gid).gr_name)
        except KeyError:
            names.append(str(gid))
    return names


def check_access(ctx: Context) -> list[Finding]:
    u = ctx.user
    sock = ctx.socket
    if sock is None:
        return [Finding("engine.access", "ok", (f"{ctx.host} is not a local socket: its access control is the remote end's",))]
    try:
        st = os.stat(sock)
    except OSError:
        return [Finding("engine.access", "skip", (f"{sock} does not exist",))]
    try:
        group = grp.getgrgid(st.st_gid)
        gname, members = group.gr_name, sorted(set(group.gr_mem) | {p.pw_name for p in pwd.getpwall() if p.pw_gid == st.st_gid})
    except KeyError:
        gname, members = str(st.st_gid), []
    mode = f"{sock}: {_stat.filemode(st.st_mode)} {owner_names(st)}"
    mine = _groups_of(u)
    if st.st_uid == u.uid:
        return [Finding("engine.access", "ok", (mode, f"{u.name} owns the socket"))]
    if gname in mine and st.st_mode & 0o060 == 0o060:
        ev = (mode, f"{u.name} reaches it through group '{gname}' (members: {', '.join(members) or u.name})",
              f"{ROOT_EQUIVALENT} that bind-mounts / and owns the host")
        return [Finding("engine.access", "warn", ev,
                        f"keep '{gname}' to accounts you would give root; the remap does not change that")]
    if st.st_mode & 0o006 == 0o006:
        return [Finding("engine.access", "fail", (mode, "the socket is world-writable: every local account is root-equivalent"),
                        f"sudo chmod o-rw {sock}  (and restart dockerd so it recreates it with group '{gname}')")]
    return [Finding("engine.access", "warn",
                    (mode, f"{u.name} is not in group '{gname}': devbox commands need sudo"),
                    f"sudo usermod -aG {gname} {u.name}, then log in again ({ROOT_EQUIVALENT}); or keep using sudo")]


def check_kind(ctx: Context) -> list[Finding]:
    e = ctx.state.engine
    if e is None:
        raise EngineError("engine not checked")
    f = assess_kind(ctx.state)
    extra = [f"components: {', '.join(e.components)}"] if e.components else []
    if e.platform:
        extra.append(f"platform: {e.platform}")
    if e.product == "docker" and e.rootless:
        extra.append("rootless Docker: container root is already you; files written by other container users land "
                     "on your /etc/subuid range, and userns-remap does not apply")
    return [dataclasses.replace(f, evidence=f.evidence + tuple(extra))]
