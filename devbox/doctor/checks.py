"""``devbox doctor``: every check that decides whether bind-mounted files stay yours, with evidence and a fix.

Shape: :func:`gather` reads everything once (host files, the engine, the probe,
the project, its containers, the watcher's files) into a :class:`Context`;
:data:`CHECKS` turn it into :class:`~devbox.findings.Finding`s; :func:`run_checks`
runs them in dependency order (pure: a check whose prerequisite failed or was
skipped is reported as ``skip``, naming that prerequisite).  The kernel,
subordinate-id, daemon and probe findings are :mod:`devbox.remap`'s own
(``assess_*``), with the same ids; ``--fix`` applies :func:`devbox.remap.plan`
through :func:`devbox.remap.apply_plan` (locked, atomic, backed up, rolled back
on failure, recorded so ``devbox remap --revert`` undoes it) and then checks again.

Finding ids, in order (group: ids):

* engine: ``engine.socket``, ``engine.context``, ``engine.access``, ``engine.kind``
* kernel: ``kernel.userns``, ``kernel.apparmor``
* subordinate ids: ``subuid.syntax``, ``subuid.own-line``, ``subuid.accounts``, ``subuid.overlap``,
  ``subuid.range``, ``subuid.map-lines`` and the same six for ``subgid.`` (``*.syntax`` only when
  the file has a problem)
* daemon: ``daemon.json``, ``daemon.flags``, ``daemon.live``, ``daemon.parents``, ``daemon.old-images``
* proof: ``probe.file-owner``, ``probe.process``, ``probe.uid-map``
* project: ``project.config``, ``project.by-design``, ``project.containers``, ``project.leaks``,
  ``project.inotify``
* watcher: ``watcher.running``

``--json`` prints one object (schema ``devbox.doctor/1``, keys sorted)::

    {
      "schema": "devbox.doctor/1",
      "ok": true,                      # no finding has status "fail" (exit code 0, else 1)
      "status": "ok|warn|fail",        # the worst status
      "user": {"name": str, "uid": int, "gid": int, "group": str},
      "project": {"name": str, "root": str, "profile": str} | null,
      "counts": {"ok": int, "warn": int, "fail": int, "skip": int},
      "findings": [                    # in check order
        {"id": str, "group": str, "status": "ok|warn|fail|skip", "title": str,
         "evidence": [str, ...], "fix": str | null, "needs": [str, ...]}
      ],
      "probe": {...} | null,           # devbox.probe.ProbeResult.to_json()
      "fixed": null | {                # --fix only: what was applied before the re-check
        "changes": [{"path": str, "reasons": [str, ...]}],
        "restarted": bool, "backup": str | null
      }
    }

Watcher contract (shared with :mod:`devbox.watch` and ``devbox up``/``down``):
the background watcher of project NAME writes its PID as decimal text to
``Paths.watcher_pidfile(NAME)`` (``$XDG_STATE_HOME/devbox/watch/NAME.pid``, the
*target user's* state dir) and its leak records (:class:`devbox.leaks.RecordLog`)
to ``Paths.leak_records(NAME)``.  Doctor only reads them.
"""

from __future__ import annotations

import dataclasses
import grp
import json
import os
import pwd
import stat as _stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devbox import remap
from devbox.errors import ConfigError, DevboxError, EngineError, Exit, HostError
from devbox.findings import Finding, worst
from devbox.host import User
from devbox.paths import Paths

if TYPE_CHECKING:
    import docker

    from devbox.leaks import Leak
    from devbox.model import Project, Service
    from devbox.watch import ScanResult

SCHEMA = "devbox.doctor/1"
GROUPS = ("engine", "kernel", "subordinate ids", "daemon", "proof", "project", "watcher")
APPARMOR_SYSCTL = "/proc/sys/kernel/apparmor_restrict_unprivileged_userns"
ROOT_EQUIVALENT = "members of 'docker' are root-equivalent: any of them can start a privileged container"

# --- running checks in dependency order (pure) -----------------------------------------


@dataclasses.dataclass(frozen=True)
class Check:
    """One check: the findings it reports (id, title), what it needs, and how it decides."""

    group: str
    ids: tuple[tuple[str, str], ...]
    needs: tuple[str, ...]
    run: Callable[[Any], list[Finding]]


@dataclasses.dataclass(frozen=True)
class Result:
    group: str
    finding: Finding
    needs: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {**self.finding.to_json(), "group": self.group, "needs": list(self.needs)}


def skip_reason(need: Finding) -> str:
    verb = "failed" if need.status == "fail" else "was skipped"
    return f"skipped: {need.id} ({need.title}) {verb}"


def run_checks(checks: Sequence[Check], ctx: Any) -> list[Result]:
    """Run ``checks`` in order.  A check whose prerequisite failed or was skipped reports
    each of its ids as ``skip``; a check raising :class:`DevboxError` reports them as ``fail``."""
    seen: dict[str, Finding] = {}
    out: list[Result] = []
    for check in checks:
        for need in check.needs:
            if need not in seen:
                raise ValueError(f"check {check.ids[0][0]} needs {need}, which no earlier check reports")
        blocked = [seen[n] for n in check.needs if seen[n].status in ("fail", "skip")]
        if blocked:
            found = [Finding(i, "skip", t, tuple(skip_reason(b) for b in blocked)) for i, t in check.ids]
        else:
            try:
                found = check.run(ctx)
            except DevboxError as exc:
                found = [Finding(i, "fail", t, (exc.one_line(),)) for i, t in check.ids]
        for f in found:
            seen[f.id] = f
            out.append(Result(check.group, f, check.needs))
    return out


def counts(results: Iterable[Result]) -> dict[str, int]:
    out = {"ok": 0, "warn": 0, "fail": 0, "skip": 0}
    for r in results:
        out[r.finding.status] += 1
    return out


# --- what doctor reads (side effects, once) ---------------------------------------------


@dataclasses.dataclass(frozen=True)
class EngineFacts:
    """What the engine says about itself beyond :class:`devbox.engine.EngineInfo`."""

    components: tuple[str, ...]
    platform: str


class Context:
    """Everything the checks look at.  Built by :func:`gather`; tests may build one by hand."""

    def __init__(
        self,
        *,
        paths: Paths,
        state: remap.HostState,
        engine_error: EngineError | None,
        facts: EngineFacts | None,
        client: docker.DockerClient | None,
        cwd: Path,
        user_state: Path,
        environ: Mapping[str, str],
    ) -> None:
        self.paths = paths
        self.state = state
        self.engine_error = engine_error
        self.facts = facts
        self.client = client
        self.cwd = cwd
        self.user_state = user_state
        self.environ = environ

    @property
    def user(self) -> User:
        return self.state.user

    @property
    def host(self) -> str:
        return self.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"

    @property
    def socket(self) -> str | None:
        return self.host[len("unix://"):] if self.host.startswith("unix://") else None

    # -- the project, loaded once

    @cached_property
    def project_root(self) -> Path | None:
        from devbox.paths import project_root

        return project_root(self.cwd)

    @cached_property
    def project_or_error(self) -> Project | ConfigError | None:
        if self.project_root is None:
            return None
        from devbox import config

        try:
            return config.load_project(self.project_root, home=Path(self.user.home))
        except ConfigError as exc:
            return exc

    @property
    def project(self) -> Project:
        p = self.project_or_error
        if p is None or isinstance(p, ConfigError):
            raise ConfigError("no usable devbox.toml")  # unreachable: project.* checks need project.config
        return p

    @cached_property
    def containers(self) -> list[dict[str, Any]]:
        """``docker inspect`` of every container labelled with this project."""
        from devbox.engine import call
        from devbox.model import LABEL_PROJECT

        client = self.client
        if client is None:
            return []
        found = call(lambda: client.containers.list(all=True, filters={"label": f"{LABEL_PROJECT}={self.project.name}"}))
        return sorted((c.attrs for c in found), key=lambda a: str(a.get("Name", "")))

    @cached_property
    def running_profile(self) -> str | None:
        from devbox.model import LABEL_PROFILE

        for c in self.containers:
            if c.get("State", {}).get("Running"):
                return str((c.get("Config", {}).get("Labels") or {}).get(LABEL_PROFILE) or "") or None
        return None

    @property
    def stack_running(self) -> bool:
        return any(c.get("State", {}).get("Running") for c in self.containers)

    @property
    def profiles_checked(self) -> list[str]:
        names = [self.project.default_profile]
        if self.running_profile and self.running_profile not in names and self.running_profile in self.project.profiles:
            names.append(self.running_profile)
        return names

    @property
    def workdirs(self) -> list[str]:
        return [m.source for m in self.project.workdirs if not m.read_only]

    @property
    def records_path(self) -> Path:
        return dataclasses.replace(self.paths, user_state=self.user_state).leak_records(self.project.name)

    @property
    def pidfile(self) -> Path:
        return dataclasses.replace(self.paths, user_state=self.user_state).watcher_pidfile(self.project.name)

    @cached_property
    def attribution(self) -> Any:
        from devbox.leaks import HostUser, load_attribution

        u = self.user
        by_uid: dict[int, list[str]] = {}
        host_ns: list[str] = []
        for prof in self.profiles_checked:
            for svc in self.project.profile(prof).services:
                cuid = service_uid(svc)
                if cuid is not None and svc.name not in by_uid.setdefault(cuid, []):
                    by_uid[cuid].append(svc.name)
                if svc.userns_mode == "host" and svc.name not in host_ns:
                    host_ns.append(svc.name)
        user = HostUser(u.name, u.uid, u.gid, frozenset(self.project.watch.allowed_gids))
        return load_attribution(user, by_uid, subuid=self.paths.subuid, subgid=self.paths.subgid, host_ns_services=host_ns)

    @cached_property
    def scan(self) -> ScanResult:
        from devbox.watch import scan

        return scan(self.workdirs, self.attribution.user, ignore=self.project.watch.ignore)


def user_state_dir(paths: Paths, user: User, environ: Mapping[str, str]) -> Path:
    """The *target user's* state dir: under sudo, not root's."""
    if environ.get("DEVBOX_STATE_DIR"):
        return paths.user_state
    if os.geteuid() == 0 and user.uid != 0:
        return Path(user.home) / ".local" / "state" / "devbox"
    return paths.user_state


def gather(paths: Paths, user: User, *, probe: bool = True, cwd: Path | None = None) -> Context:
    """Read every layer once; engine and probe failures are kept as data."""
    from devbox import engine as engine_mod

    state = remap.observe(paths, user, engine=False)
    client = None
    info = None
    facts = None
    engine_error: EngineError | None = None
    probe_result = None
    probe_error = None
    try:
        client = engine_mod.connect(timeout=60)
        info = engine_mod.info(client)
        facts = _engine_facts(client)
    except EngineError as exc:
        engine_error = exc
        client = None
    if client is not None and probe:
        from devbox import probe as probe_mod

        try:
            probe_result = probe_mod.run(client, owner=(user.uid, user.gid))
            probe_error = probe_result.error
        except DevboxError as exc:
            probe_error = exc.one_line()
    state = dataclasses.replace(
        state, engine=info, engine_error=engine_error.one_line() if engine_error else None,
        probe=probe_result, probe_error=probe_error,
    )
    return Context(paths=paths, state=state, engine_error=engine_error, facts=facts, client=client,
                   cwd=cwd or Path.cwd(), user_state=user_state_dir(paths, user, os.environ), environ=dict(os.environ))


def _engine_facts(client: docker.DockerClient) -> EngineFacts:
    from devbox.engine import call

    version: dict[str, Any] = call(client.version)
    components = tuple(str(c.get("Name", "")) for c in version.get("Components") or ())
    platform = str((version.get("Platform") or {}).get("Name", ""))
    return EngineFacts(components, platform)


# --- engine -------------------------------------------------------------------------------


def _owner_names(st: os.stat_result) -> str:
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
    return "DOCKER_HOST is not set: unix:///var/run/docker.sock"


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
    return f"{sock}: {_stat.filemode(st.st_mode)} {_owner_names(st)}"


def check_socket(ctx: Context) -> list[Finding]:
    title = "Docker engine reachable"
    ev = [_host_line(ctx)]
    line = _socket_line(ctx)
    if line:
        ev.append(line)
    err = ctx.engine_error
    if err is None:
        return [Finding("engine.socket", "ok", title, tuple(ev))]
    ev.append(err.message)
    if err.message.startswith("permission denied"):
        me = _current_user_name()
        group = _socket_group(ctx) or "docker"
        fix = (f"sudo usermod -aG {group} {me}, then log in again ({ROOT_EQUIVALENT}); "
               "or run devbox with sudo")
    elif err.message.startswith("no Docker daemon socket") or "refused" in err.message:
        fix = "start the engine (sudo systemctl start docker), or set DOCKER_HOST to the engine you use"
    else:
        fix = err.hint or "check `docker info`"
    return [Finding("engine.socket", "fail", title, tuple(ev), fix)]


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


def _docker_config_dir(ctx: Context) -> Path:
    if ctx.environ.get("DOCKER_CONFIG"):
        return Path(ctx.environ["DOCKER_CONFIG"])
    return Path(ctx.user.home) / ".docker"


def docker_context(config_dir: Path) -> tuple[str | None, str | None]:
    """The docker CLI's current context and its endpoint (``None`` when default or unreadable)."""
    import hashlib

    try:
        name = json.loads((config_dir / "config.json").read_text()).get("currentContext")
    except (OSError, ValueError, AttributeError):
        return None, None
    if not name or name == "default":
        return None, None
    meta = config_dir / "contexts" / "meta" / hashlib.sha256(name.encode()).hexdigest() / "meta.json"
    try:
        endpoint = json.loads(meta.read_text())["Endpoints"]["docker"]["Host"]
    except (OSError, ValueError, KeyError, TypeError):
        return str(name), None
    return str(name), str(endpoint)


def check_context(ctx: Context) -> list[Finding]:
    title = "the docker CLI and devbox use the same engine"
    config_dir = _docker_config_dir(ctx)
    name, endpoint = docker_context(config_dir)
    if ctx.environ.get("DOCKER_HOST"):
        ev = (_host_line(ctx), "DOCKER_HOST overrides any docker context, for the CLI and for devbox alike")
        return [Finding("engine.context", "ok", title, ev)]
    if name is None:
        return [Finding("engine.context", "ok", title, (f"docker context: default ({config_dir / 'config.json'})",))]
    ev = (f"docker context: {name} → {endpoint or 'endpoint unreadable'} ({config_dir / 'config.json'})",
          f"devbox uses {ctx.host}: the Docker SDK ignores docker contexts")
    if endpoint == ctx.host:
        return [Finding("engine.context", "ok", title, ev)]
    return [Finding("engine.context", "warn", title, ev,
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
    title = "who can use the Docker socket"
    u = ctx.user
    sock = ctx.socket
    if sock is None:
        return [Finding("engine.access", "ok", title, (f"{ctx.host} is not a local socket: its access control is the remote end's",))]
    try:
        st = os.stat(sock)
    except OSError:
        return [Finding("engine.access", "skip", title, (f"{sock} does not exist",))]
    try:
        group = grp.getgrgid(st.st_gid)
        gname, members = group.gr_name, sorted(set(group.gr_mem) | {p.pw_name for p in pwd.getpwall() if p.pw_gid == st.st_gid})
    except KeyError:
        gname, members = str(st.st_gid), []
    mode = f"{sock}: {_stat.filemode(st.st_mode)} {_owner_names(st)}"
    mine = _groups_of(u)
    if st.st_uid == u.uid:
        return [Finding("engine.access", "ok", title, (mode, f"{u.name} owns the socket"))]
    if gname in mine and st.st_mode & 0o060 == 0o060:
        ev = (mode, f"{u.name} reaches it through group '{gname}' (members: {', '.join(members) or u.name})",
              f"{ROOT_EQUIVALENT} that bind-mounts / and owns the host")
        return [Finding("engine.access", "warn", title, ev,
                        f"keep '{gname}' to accounts you would give root; the remap does not change that")]
    if st.st_mode & 0o006 == 0o006:
        return [Finding("engine.access", "fail", title, (mode, "the socket is world-writable: every local account is root-equivalent"),
                        f"sudo chmod o-rw {sock}  (and restart dockerd so it recreates it with group '{gname}')")]
    return [Finding("engine.access", "warn", title,
                    (mode, f"{u.name} is not in group '{gname}': devbox commands need sudo"),
                    f"sudo usermod -aG {gname} {u.name}, then log in again ({ROOT_EQUIVALENT}); or keep using sudo")]


def check_kind(ctx: Context) -> list[Finding]:
    title = "the engine is rootful Docker (what userns-remap applies to)"
    e = ctx.state.engine
    facts = ctx.facts
    if e is None or facts is None:
        raise EngineError("engine not checked")
    ev = [f"{e.host}: Docker {e.version} (API {e.api_version})" + (f", {facts.platform}" if facts.platform else "")]
    if any("podman" in c.lower() for c in facts.components) or "podman" in facts.platform.lower():
        ev.append(f"components: {', '.join(facts.components)}")
        return [Finding("engine.kind", "warn", title, tuple(ev) + (
            "Podman's Docker API: userns-remap and daemon.json do not apply; rootless Podman maps container "
            "root to you already, and container users to your /etc/subuid range",),
            "use `podman run --userns=keep-id` for your own uid inside, or point DOCKER_HOST at a rootful dockerd")]
    if e.rootless:
        ev.append(f"SecurityOptions: {', '.join(e.security_options)}")
        return [Finding("engine.kind", "warn", title, tuple(ev) + (
            "rootless Docker: container root is already you; files written by other container users land on "
            "your /etc/subuid range, and userns-remap does not apply",), None)]
    return [Finding("engine.kind", "ok", title, tuple(ev))]


# --- kernel -------------------------------------------------------------------------------


def check_kernel(ctx: Context) -> list[Finding]:
    return [remap.assess_kernel(ctx.state.kernel)]


def check_apparmor(ctx: Context) -> list[Finding]:
    title = "AppArmor's unprivileged user-namespace restriction"
    value = ctx.state.kernel.apparmor_restrict_unprivileged
    if value is None:
        return [Finding("kernel.apparmor", "ok", title, (f"{APPARMOR_SYSCTL} does not exist: no such restriction on this kernel",))]
    ev = (f"{APPARMOR_SYSCTL} = {value}",)
    if value == 0:
        return [Finding("kernel.apparmor", "ok", title, ev)]
    rootless = ctx.state.engine is not None and (ctx.state.engine.rootless or
                                                  (ctx.facts is not None and "podman" in " ".join(ctx.facts.components).lower()))
    if rootless:
        return [Finding("kernel.apparmor", "fail", title, ev + (
            "a rootless engine creates its user namespaces unprivileged: AppArmor denies that without a profile",),
            "install the distribution's AppArmor profile for rootlesskit/podman, or: "
            "sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0")]
    return [Finding("kernel.apparmor", "ok", title, ev + (
        "dockerd runs as root: userns-remap is not affected (rootless Docker and Podman would be)",))]


# --- subordinate ids ---------------------------------------------------------------------


def _with_map_lines(found: list[Finding], name: str, path: str, owner: str, lines: int) -> list[Finding]:
    if any(f.id == f"{name}.map-lines" for f in found):
        return found
    from devbox.idmap import KERNEL_MAP_LINES

    return found + [Finding(f"{name}.map-lines", "ok", f"{path} map fits old kernels",
                            (f"{lines} line(s) for {owner}: every kernel accepts {remap.OLD_KERNEL_MAP_LINES} "
                             f"(4.15+ accept {KERNEL_MAP_LINES})",))]


def check_subuid(ctx: Context) -> list[Finding]:
    s, u = ctx.state, ctx.user
    found = remap.assess_subid(s.subuid, u.name, u.uid, s.accounts, "uid")
    return _with_map_lines(found, "subuid", s.subuid.path, u.name, len(s.uid_entries))


def check_subgid(ctx: Context) -> list[Finding]:
    s, u = ctx.state, ctx.user
    found = remap.assess_subid(s.subgid, u.group, u.gid, s.groups, "gid")
    return _with_map_lines(found, "subgid", s.subgid.path, u.group, len(s.gid_entries))


# --- daemon -------------------------------------------------------------------------------


def check_daemon_config(ctx: Context) -> list[Finding]:
    return remap.assess_daemon_config(ctx.state)


def check_live(ctx: Context) -> list[Finding]:
    return remap.assess_engine(ctx.state)


def _remap_configured(ctx: Context) -> bool:
    dj = ctx.state.daemon_json
    return bool(ctx.state.flags) or (dj is not None and remap.KEY in dj.data)


def data_root(ctx: Context) -> tuple[Path, bool]:
    """The data root whose ``UID.GID`` subdirectory a remapped dockerd uses, and whether it is live."""
    e = ctx.state.engine
    if e is not None and e.data_root:
        root = Path(e.data_root)
        return (root.parent, True) if e.remap_ids() is not None else (root, True)
    dj = ctx.state.daemon_json
    configured = dj.data.get("data-root") if dj is not None else None
    return Path(str(configured or "/var/lib/docker")), False


def blocking_parents(root: Path, uid: int, gid: int) -> list[tuple[str, str]]:
    """``(dir, mode)`` for each parent of ``root`` (``/`` excluded) that host ``uid``/``gid`` cannot traverse.

    dockerd's own test (``idtools.CanAccess`` on every parent of the remapped
    root): owner, else group, else other x bit.  ``root`` itself is fine:
    dockerd makes it 0710 with the remapped gid.
    """
    out = []
    for d in root.parents:
        if d == Path("/"):
            break
        try:
            st = os.stat(d)
        except OSError:
            continue
        if st.st_uid == uid:
            ok = st.st_mode & _stat.S_IXUSR
        elif st.st_gid == gid:
            ok = st.st_mode & _stat.S_IXGRP
        else:
            ok = st.st_mode & _stat.S_IXOTH
        if not ok:
            out.append((str(d), f"{_stat.filemode(st.st_mode)} {_owner_names(st)}"))
    return out


def check_parents(ctx: Context) -> list[Finding]:
    title = "the data root's parents let the remapped root through (o+x)"
    root, live = data_root(ctx)
    u = ctx.user
    remapped = root / f"{u.uid}.{u.gid}"
    dj = ctx.state.daemon_json
    source = "the running dockerd" if live else "daemon.json" if dj is not None and "data-root" in dj.data else "the default"
    lacking = blocking_parents(root, u.uid, u.gid)
    if not lacking:
        return [Finding("daemon.parents", "ok", title, (f"every parent of {root} (from {source}) lets host uid {u.uid} through",))]
    ev = tuple(f"{d}: {mode} (no o+x)" for d, mode in lacking)
    on = _remap_configured(ctx) or (ctx.state.engine is not None and ctx.state.engine.userns)
    why = (f"a remapped dockerd refuses to start: container root (host uid {u.uid}) cannot reach {remapped}"
           if on else f"turning the remap on would fail: container root (host uid {u.uid}) could not reach {remapped}")
    return [Finding("daemon.parents", "fail" if on else "warn", title, ev + (why,),
                    "sudo chmod o+x " + " ".join(d for d, _ in lacking))]


def count_old_images(parent: Path) -> tuple[list[str], int, int]:
    """Evidence lines, image count and container count under a data root from before the remap."""
    ev: list[str] = []
    images = 0
    image_dir = parent / "image"
    drivers = sorted(p for p in image_dir.iterdir() if p.is_dir()) if image_dir.is_dir() else []
    for driver in drivers:
        content = driver / "imagedb" / "content" / "sha256"
        n = sum(1 for _ in content.iterdir()) if content.is_dir() else 0
        tags: list[str] = []
        repos = driver / "repositories.json"
        try:
            data = json.loads(repos.read_text())
            for refs in (data.get("Repositories") or {}).values():
                tags += list(refs)
        except (OSError, ValueError, AttributeError):
            pass
        tags = sorted(t for t in tags if "@sha256:" not in t)
        if n or tags:
            shown = ", ".join(tags[:5]) + (f", … ({len(tags) - 5} more)" if len(tags) > 5 else "")
            ev.append(f"{repos}: {n} image(s), {len(tags)} tag(s)" + (f": {shown}" if tags else ""))
        images += n
    containers_dir = parent / "containers"
    containers = sum(1 for p in containers_dir.iterdir() if p.is_dir()) if containers_dir.is_dir() else 0
    if containers:
        ev.append(f"{containers_dir}: {containers} container(s)")
    return ev, images, containers


def check_old_images(ctx: Context) -> list[Finding]:
    title = "images from before the remap"
    e = ctx.state.engine
    if e is None:
        raise EngineError("engine not checked")
    ids = e.remap_ids()
    if ids is None:
        return [Finding("daemon.old-images", "ok", title, (f"data root {e.data_root} is not a remapped one: every image is visible",))]
    parent = Path(e.data_root).parent
    try:
        ev, images, containers = count_old_images(parent)
    except PermissionError as exc:
        return [Finding("daemon.old-images", "skip", title, (f"cannot read {exc.filename}: permission denied — run with sudo to count",))]
    if not images and not containers:
        return [Finding("daemon.old-images", "ok", title, (f"nothing under {parent} outside {e.data_root}",))]
    ev.append(f"dockerd now keeps everything under {e.data_root}: these are not visible while the remap is on (not lost)")
    return [Finding("daemon.old-images", "warn", title, tuple(ev),
                    "to use one under the remap: sudo devbox remap --revert, docker save IMAGE -o image.tar, "
                    "sudo devbox remap --apply, docker load -i image.tar (or rebuild it); "
                    "to reclaim the space once nothing there is needed: docker system prune -a before turning the remap on")]


# --- proof ----------------------------------------------------------------------------------


def check_probe(ctx: Context) -> list[Finding]:
    return remap.assess_probe(ctx.state)


# --- project ----------------------------------------------------------------------------


def service_uid(svc: Service) -> int | None:
    """The container uid a service runs as when its ``user`` says so numerically."""
    if svc.user is None:
        return None
    name = svc.user.split(":", 1)[0]
    return int(name) if name.isdigit() else None


def check_project(ctx: Context) -> list[Finding]:
    title = "devbox.toml and its profiles load"
    p = ctx.project_or_error
    if p is None:
        return [Finding("project.config", "skip", title, (f"no devbox.toml in {ctx.cwd} or any parent directory",))]
    if isinstance(p, ConfigError):
        return [Finding("project.config", "fail", title, (p.one_line(),), p.hint or f"edit {p.where or ctx.project_root}")]
    prof = p.profile()
    return [Finding("project.config", "ok", title, (
        f"{p.file}: project {p.name}, profile {prof.name} ({', '.join(prof.service_names)})",))]


def check_by_design(ctx: Context) -> list[Finding]:
    """Services whose configuration guarantees files that are not the user's in a bind mount."""
    from devbox.idmap import to_host

    title = "no service is set up to write files you will not own"
    u = ctx.user
    uid_map = ctx.state.predicted_uid_map
    fails: list[str] = []
    warns: list[str] = []
    fixes: list[str] = []
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
            if svc.user is None:
                continue
            cuid = service_uid(svc)
            name = svc.user.split(":", 1)[0]
            if cuid == 0 or name == "root":
                continue
            if cuid is None:
                what = f"user \"{name}\" is resolved inside the image; any uid but 0 maps into {u.name}'s subordinate range"
            else:
                hid = to_host(uid_map, cuid)
                what = (f"container uid {cuid} is host uid {hid}, in {u.name}'s subordinate range" if hid is not None
                        else f"container uid {cuid} is not mapped by /etc/subuid")
            fails.append(f"{where}: user = \"{svc.user}\" writes to {binds}: {what}")
            fixes.append(f"remove user = \"{svc.user}\" from [services.{svc.name}] in {ctx.project.file}: "
                         f"with the remap, container root is already you (uid {u.uid})")
    if fails:
        return [Finding("project.by-design", "fail", title, tuple(fails + warns), "; ".join(dict.fromkeys(fixes)))]
    if warns:
        return [Finding("project.by-design", "warn", title, tuple(warns),
                        "keep only what truly needs host namespaces; `devbox leaks --fix` cannot fix root-owned files without sudo")]
    return [Finding("project.by-design", "ok", title,
                    (f"checked profile(s) {', '.join(ctx.profiles_checked)}: every service writing to a bind mount runs as container root",))]


def check_containers(ctx: Context) -> list[Finding]:
    title = "no project container runs privileged or in host namespaces"
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
        return [Finding("project.containers", "ok", title, (f"{len(ctx.containers)} container(s) labelled devbox.project={ctx.project.name}",))]
    return [Finding("project.containers", "fail" if privileged else "warn", title, tuple(bad),
                    "remove them (devbox down) and start the stack with devbox up: devbox never creates privileged containers")]


def summarise_leaks(leaks: Sequence[Leak], roots: Sequence[str], limit: int = 3) -> list[str]:
    """One line per owner: how many paths, which service, a few examples (relative to their work dir)."""
    groups: dict[str, list[Leak]] = {}
    for leak in leaks:
        groups.setdefault(leak.owner_text(), []).append(leak)

    def shown(path: str) -> str:
        for root in roots:
            prefix = root.rstrip("/") + "/"
            if path.startswith(prefix):
                return path[len(prefix):]
        return path

    out = []
    for owner, group in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        paths = sorted(shown(x.path) + ("/" if x.is_dir else "") for x in group)
        more = f", … ({len(paths) - limit} more)" if len(paths) > limit else ""
        out.append(f"{len(group)} path(s) owned by {owner}: {', '.join(paths[:limit])}{more}")
    return out


def check_leaks(ctx: Context) -> list[Finding]:
    from devbox.leaks import Leak, load_records, plan_fix

    title = "the work dirs hold only your files"
    roots = ctx.workdirs
    records = ctx.records_path
    if records.exists():
        leaks = [Leak.from_record(r) for r in load_records(records, under=roots)]
        source = f"from the watcher's records ({records})"
    else:
        attr = ctx.attribution
        leaks = sorted((attr.classify(p, u, g, is_dir=d) for p, u, g, d in ctx.scan.found), key=lambda x: x.path)
        source = f"from a scan of {ctx.scan.dirs:,} directories under {', '.join(roots)}"
    if not leaks:
        return [Finding("project.leaks", "ok", title, (f"no leaked files {source}",))]
    ev = [f"{len(leaks)} leaked path(s) {source}"] + summarise_leaks(leaks, roots)
    plan = plan_fix(leaks, ctx.attribution.user)
    fixes = []
    if plan.by_helper:
        fixes.append(f"devbox leaks --fix  (a helper container chowns the {len(plan.by_helper)} mapped path(s) back to you, no sudo)")
    if plan.needs_root:
        import shlex

        fixes.append(shlex.join(plan.root_command))
    return [Finding("project.leaks", "fail", title, tuple(ev), "; then ".join(fixes))]


def check_inotify(ctx: Context) -> list[Finding]:
    from devbox.watch import max_user_watches

    title = "inotify can watch every work dir directory"
    limit = max_user_watches(ctx.paths.proc)
    dirs = ctx.scan.dirs
    ev = (f"{dirs:,} directories to watch under {', '.join(ctx.workdirs)} (ignoring {', '.join(ctx.project.watch.ignore)})",
          f"fs.inotify.max_user_watches = {limit:,}" if limit is not None else "fs.inotify.max_user_watches is unreadable")
    if limit is None or dirs <= limit * 0.9:
        return [Finding("project.inotify", "ok", title, ev)]
    want = max(dirs * 2, 65536)
    return [Finding("project.inotify", "warn", title, ev + (
        "the watcher would leave directories unwatched and fall back to periodic rescans (about 1.3 KiB kernel memory per watch)",),
        f"sudo sysctl fs.inotify.max_user_watches={want}  (persist it in /etc/sysctl.d/)")]


# --- watcher -----------------------------------------------------------------------------


def check_watcher(ctx: Context) -> list[Finding]:
    title = "the ownership watcher runs for the running stack"
    from devbox import watcher_proc

    st = watcher_proc.status(ctx.project.name, dataclasses.replace(ctx.paths, user_state=ctx.user_state))
    pidfile, pid = st.pidfile, st.pid
    running = [str(c.get("Name", "")).lstrip("/") for c in ctx.containers if (c.get("State") or {}).get("Running")]
    stack = f"{len(running)} running container(s) of {ctx.project.name}" if running else f"no running container of {ctx.project.name}"
    if st.state == "running":
        return [Finding("watcher.running", "ok", title, (f"{pidfile}: pid {pid} is running", stack))]
    if st.state == "crashed":
        what = f"pid {pid} is not running" if pid is not None else "holds no pid"
        return [Finding("watcher.running", "warn" if running else "ok", title,
                        (f"{pidfile}: {what} (the watcher died; its log: {st.log})", stack),
                        "devbox up  (restarts the watcher; its first scan finds what happened meanwhile)" if running else None)]
    if running:
        return [Finding("watcher.running", "warn", title, (f"{pidfile} does not exist: no watcher", stack),
                        "devbox up  (starts the watcher), or run devbox watch in a terminal")]
    return [Finding("watcher.running", "ok", title, (f"{pidfile} does not exist", stack + ": no watcher needed"))]


# --- the list, in dependency order ------------------------------------------------------------


def _ids(*pairs: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    return pairs


def _subid_ids(name: str, path: str) -> tuple[tuple[str, str], ...]:
    return (
        (f"{name}.own-line", f"{path} maps container root to you"),
        (f"{name}.accounts", f"{path} ranges stay clear of real accounts"),
        (f"{name}.overlap", f"{path} ranges are yours alone"),
        (f"{name}.range", f"{path} gives you enough subordinate ids"),
        (f"{name}.map-lines", f"{path} map fits old kernels"),
    )


PROBE_IDS = _ids(
    ("probe.file-owner", "a file created by container root is yours"),
    ("probe.process", "container root runs as you on the host"),
    ("probe.uid-map", "/proc/self/uid_map is what /etc/subuid predicts"),
)

CHECKS: tuple[Check, ...] = (
    Check("engine", _ids(("engine.socket", "Docker engine reachable")), (), check_socket),
    Check("engine", _ids(("engine.context", "the docker CLI and devbox use the same engine")), (), check_context),
    Check("engine", _ids(("engine.access", "who can use the Docker socket")), (), check_access),
    Check("engine", _ids(("engine.kind", "the engine is rootful Docker (what userns-remap applies to)")), ("engine.socket",), check_kind),
    Check("kernel", _ids(("kernel.userns", "kernel user namespaces")), (), check_kernel),
    Check("kernel", _ids(("kernel.apparmor", "AppArmor's unprivileged user-namespace restriction")), (), check_apparmor),
    Check("subordinate ids", _subid_ids("subuid", "/etc/subuid"), (), check_subuid),
    Check("subordinate ids", _subid_ids("subgid", "/etc/subgid"), (), check_subgid),
    Check("daemon", _ids(("daemon.json", "daemon.json sets userns-remap"),
                         ("daemon.flags", "userns-remap set once (flag or daemon.json, not both)")), (), check_daemon_config),
    Check("daemon", _ids(("daemon.live", "running dockerd uses the remap")), ("engine.socket",), check_live),
    Check("daemon", _ids(("daemon.parents", "the data root's parents let the remapped root through (o+x)")), (), check_parents),
    Check("daemon", _ids(("daemon.old-images", "images from before the remap")), ("engine.socket",), check_old_images),
    Check("proof", PROBE_IDS, ("engine.socket", "kernel.userns"), check_probe),
    Check("project", _ids(("project.config", "devbox.toml and its profiles load")), (), check_project),
    Check("project", _ids(("project.by-design", "no service is set up to write files you will not own")), ("project.config",), check_by_design),
    Check("project", _ids(("project.containers", "no project container runs privileged or in host namespaces")),
          ("project.config", "engine.socket"), check_containers),
    Check("project", _ids(("project.leaks", "the work dirs hold only your files")), ("project.config",), check_leaks),
    Check("project", _ids(("project.inotify", "inotify can watch every work dir directory")), ("project.config",), check_inotify),
    Check("watcher", _ids(("watcher.running", "the ownership watcher runs for the running stack")),
          ("project.config", "engine.socket"), check_watcher),
)

# Findings that remap's plan/execute can make right (restarting dockerd included).
REMAP_PREFIXES = ("subuid.", "subgid.", "daemon.json", "daemon.flags", "daemon.live", "probe.")


def fixable(results: Sequence[Result], engine_error: EngineError | None) -> bool:
    """Would ``--fix`` (remap's plan + a dockerd restart) address something that failed?"""
    by_id = {r.finding.id: r.finding for r in results}
    if by_id.get("kernel.userns") and by_id["kernel.userns"].status == "fail":
        return False
    if any(r.finding.status == "fail" and r.finding.id.startswith(REMAP_PREFIXES) and not r.finding.id.endswith("map-lines")
           for r in results):
        return True
    # a stopped daemon: the restart command starts it (permission or a wrong DOCKER_HOST it cannot help)
    return engine_error is not None and (engine_error.message.startswith("no Docker daemon socket") or "refused" in engine_error.message)


# --- rendering ------------------------------------------------------------------------------


def report_json(ctx: Context, results: Sequence[Result], fixed: dict[str, Any] | None) -> dict[str, Any]:
    u = ctx.user
    project = ctx.project_or_error
    status = worst(r.finding for r in results)
    return {
        "schema": SCHEMA,
        "ok": status != "fail",
        "status": status,
        "user": {"name": u.name, "uid": u.uid, "gid": u.gid, "group": u.group},
        "project": None if project is None or isinstance(project, ConfigError)
        else {"name": project.name, "root": str(project.root), "profile": project.default_profile},
        "counts": counts(results),
        "findings": [r.to_json() for r in results],
        "probe": ctx.state.probe.to_json() if ctx.state.probe else None,
        "fixed": fixed,
    }


def render_lines(results: Sequence[Result], verbose: bool) -> list[tuple[str, str, str, str]]:
    """What people see, as ``(kind, status, text, style)`` rows (pure, so it is tested without a terminal).

    kinds: ``group`` header, ``check`` (one per finding; a skip carries its reason),
    ``detail`` (evidence: failures and warnings, or everything with ``verbose``), ``fix``.
    """
    rows: list[tuple[str, str, str, str]] = []
    group = None
    for r in results:
        f = r.finding
        if r.group != group:
            group = r.group
            rows.append(("group", "", group, "bold"))
        rows.append(("check", f.status, f"{f.title}  [{f.id}]", ""))
        if f.status == "skip" and not verbose:
            rows += [("detail", "", e, "dim") for e in f.evidence[:1]]
        elif verbose or f.status in ("fail", "warn"):
            rows += [("detail", "", e, "dim") for e in f.evidence]
        if f.fix and f.status in ("fail", "warn"):
            rows.append(("fix", "", f"fix: {f.fix}", "cyan"))
    return rows


def summary_line(results: Sequence[Result]) -> str:
    c = counts(results)
    return f"{c['fail']} failed, {c['warn']} warning(s), {c['ok']} ok, {c['skip']} skipped"


def render(ctx: Context, results: Sequence[Result], verbose: bool, title: str = "devbox doctor") -> None:
    from devbox import console

    u = ctx.user
    console.say(f"{title} — {u.name} (uid {u.uid}, gid {u.gid})", style="bold")
    for kind, status, text, style in render_lines(results, verbose):
        if kind == "group":
            console.say("")
            console.say(text, style=style)
        elif kind == "check":
            console.status_line(status, text)
        else:
            console.indented([text], style=style)
    status = worst(r.finding for r in results)
    console.say("")
    console.say(summary_line(results), style={"ok": "green", "warn": "yellow", "fail": "red"}[status])


# --- the command ----------------------------------------------------------------------------


def _require_root(user: User, restart_cmd: str | None) -> None:
    if os.geteuid() != 0:
        import shlex

        args = ["devbox", "doctor", "--fix", "--user", user.name] + (["--restart-cmd", restart_cmd] if restart_cmd else [])
        raise HostError("--fix changes /etc/subuid, /etc/subgid and daemon.json and restarts dockerd: it needs root",
                        hint=f"run: sudo {shlex.join(args)}")


def apply_fix(ctx: Context, restart_cmd: str | None) -> dict[str, Any]:
    """remap's plan, executed with its lock, backups, restart, proof and rollback; recorded for --revert."""
    from devbox import console

    p = remap.plan(ctx.state, ctx.paths)
    if p.nothing_to_do:
        return {"changes": [], "restarted": False, "backup": None}
    for c in p.changes:
        console.info(f"{c.path}: " + "; ".join(c.reasons))
    if p.restart_reason:
        console.info(p.restart_reason)
    stamp = remap.apply_plan(ctx.paths, ctx.user, p, restart_cmd, progress=console.info)
    return {
        "changes": [{"path": str(c.path), "reasons": list(c.reasons)} for c in p.changes],
        "restarted": True,
        "backup": str(ctx.paths.remap_backups / stamp) if p.changes else None,
    }


def doctor_command(*, user: str | None, json_out: bool, fix: bool, verbose: bool, restart_cmd: str | None) -> Exit:
    from devbox import console, host

    paths = Paths.from_env()
    target = host.resolve_user(user)
    ctx = gather(paths, target)
    results = run_checks(CHECKS, ctx)
    fixed = None
    if fix and fixable(results, ctx.engine_error):
        _require_root(target, restart_cmd)
        if not json_out:
            render(ctx, results, False, title="devbox doctor (before --fix)")
            console.say("")
        fixed = apply_fix(ctx, restart_cmd)
        ctx = gather(paths, target)
        results = run_checks(CHECKS, ctx)
    elif fix:
        fixed = {"changes": [], "restarted": False, "backup": None}
        if not json_out:
            console.info("--fix: nothing that devbox can fix safely has failed")
    if json_out:
        console.emit_json(report_json(ctx, results, fixed))
    else:
        render(ctx, results, verbose, title="devbox doctor (after --fix)" if fixed and fixed["restarted"] else "devbox doctor")
    return Exit.PROBLEMS if worst(r.finding for r in results) == "fail" else Exit.OK
