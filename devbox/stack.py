"""The stack commands: init, up, switch, ps, logs, exec, shell, down, profiles.

Each function is what one CLI command calls: it loads the project, asks the
engine (:mod:`devbox.observe`), plans (:mod:`devbox.plan`, pure), carries the
plan out (:mod:`devbox.executor`) and reports through :mod:`devbox.console`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Sequence

from devbox import config, console
from devbox.engine import call
from devbox.errors import ConfigError, DevboxError, Exit
from devbox.model import Profile, Project, RemapPolicy, Stack
from devbox.paths import Paths

if TYPE_CHECKING:
    import docker

    from devbox.executor import Report
    from devbox.plan import Plan

REMAP_CACHE = "remap-verified.json"
APPLY = "sudo devbox remap --apply"


# --- init --------------------------------------------------------------------------

INIT_TEMPLATE = """\
# devbox project file.  `devbox profiles` lists the profiles; `devbox switch NAME` changes `profile`.
name = "{name}"
profile = "{profile}"

# Work directories bind-mounted into the editor and runtime (default: this directory at /work):
# workdirs = [{{ source = ".", target = "/work" }}]

[remap]
# require: `up` refuses to start services that bind-mount your files unless Docker's
# user-namespace remap is proven to map container root to you (see `devbox remap`).
# warn: start anyway with a warning.  off: do not check.
policy = "require"
"""


def init(directory: Path, profile: str | None) -> Exit:
    """Write ``devbox.toml``; ask for the profile on a terminal, take the default without one."""
    root = directory.resolve()
    target = root / config.PROJECT_FILE
    if target.exists():
        raise DevboxError("devbox.toml already exists", where=str(target), hint="edit it, or change the profile with 'devbox switch PROFILE'")
    profiles = config.load_profiles(project_root=root, home=config.user_home())
    names = sorted(profiles)
    if profile is None:
        profile = console.choose("profile", names, config.DEFAULT_PROFILE if config.DEFAULT_PROFILE in profiles else names[0])
    if profile not in profiles:
        raise ConfigError(f"unknown profile '{profile}'", hint=config._suggest(profile, profiles))
    name = re.sub(r"[^a-z0-9_.-]+", "-", root.name.lower()).strip("-._") or "project"
    target.write_text(INIT_TEMPLATE.format(name=name, profile=profile))
    console.say(f"wrote {target} (profile {profile}: {profiles[profile].description})")
    console.info("next: devbox up")
    return Exit.OK


# --- loading ---------------------------------------------------------------------


def load_project(start: Path | None = None) -> Project:
    return config.load(start)


def resolve_profile(project: Project, name: str | None) -> Profile:
    name = name or project.default_profile
    if name not in project.profiles:
        raise ConfigError(f"unknown profile '{name}'", hint=config._suggest(name, project.profiles))
    return project.profiles[name]


def connect() -> docker.DockerClient:
    from devbox import engine

    return engine.connect()


def observe_stack(client: docker.DockerClient, stack: Stack) -> Any:
    from devbox import observe

    return observe.observe(client, stack.project, [ref for ref, _ in stack.images])


# --- the remap guard ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RemapVerdict:
    ok: bool
    reason: str  # why not (or how it was proven)


def remap_verdict(client: docker.DockerClient, paths: Paths) -> RemapVerdict:
    """Is container root the invoking user on this engine?  Proven by the probe, cached per daemon.

    The fast path is one ``info`` call: the cache key holds the daemon's data
    root, security options, PID and process start time, so a restarted (say,
    upgraded) or reconfigured dockerd is probed again.
    """
    from devbox import engine, host, remap

    user = host.resolve_user(None)
    info = engine.info(client, version=False)
    if info.rootless:
        return RemapVerdict(True, "rootless engine: container root is you")
    mismatch = info.root_mismatch(user.name, user.uid, user.gid)
    if mismatch is not None:
        return RemapVerdict(False, mismatch)
    pid = host.find_dockerd_pid(paths)
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
    state = remap.observe(paths, user, engine=True, probe=True)
    failed = [f for f in remap.assess_engine(state) + remap.assess_probe(state) if f.status == "fail"]
    if failed:
        return RemapVerdict(False, f"{failed[0].title}: no — {failed[0].evidence[-1] if failed[0].evidence else ''}".rstrip(" —"))
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"key": key}) + "\n")
    except OSError:
        pass
    return RemapVerdict(True, "probe-verified")


def guard_remap(client: docker.DockerClient, project: Project, plan: Plan) -> None:
    """``[remap] policy``: refuse (require) or warn before starting services that bind-mount host dirs."""
    from devbox.plan import Action

    if project.remap is RemapPolicy.OFF:
        return
    starting = sorted(
        {op.service.name for op in plan.operations if op.action in (Action.CREATE, Action.RECREATE, Action.START)
         and op.service is not None and op.service.binds and op.service.userns_mode != "host"}
    )
    if not starting:
        return
    verdict = remap_verdict(client, Paths.from_env())
    if verdict.ok:
        return
    what = f"services that bind-mount your files ({', '.join(starting)})"
    if project.remap is RemapPolicy.REQUIRE:
        raise DevboxError(
            f"refusing to start {what}: {verdict.reason}; files they write would not be yours",
            hint=f"run '{APPLY}' (or set [remap] policy = \"warn\" in devbox.toml)",
        )
    console.warn(f"starting {what} without a working remap: {verdict.reason}; files they write may not be yours — fix: {APPLY}")


# --- up / switch ------------------------------------------------------------------


def up(*, profile: str | None, detach: bool, dry_run: bool, start: Path | None = None) -> Exit:
    project = load_project(start)
    prof = resolve_profile(project, profile)
    report = converge(project, prof.name, dry_run=dry_run)
    if dry_run or report is None:
        return Exit.OK
    interactive = prof.interactive
    if detach or interactive is None:
        return Exit.OK
    name = project.stack(prof.name).container_name(interactive.name)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        console.info(f"no terminal here: the {interactive.name} runs detached in container {name}; "
                     f"attach from a terminal with 'devbox up' (or 'docker attach {name}', detach with Ctrl-P Ctrl-Q)")
        return Exit.OK
    cid = report.containers.get(interactive.name) or name
    return attach(cid)


def converge(project: Project, profile: str, *, dry_run: bool) -> Report | None:
    """Observe, plan, guard, execute; the ownership watcher follows the stack (``up`` and ``switch``)."""
    from devbox import executor, watcher_proc
    from devbox.plan import reconcile

    stack = project.stack(profile)
    client = connect()
    plan = reconcile(stack, observe_stack(client, stack))
    if dry_run:
        console.say(str(plan))
        return None
    if plan.is_noop:
        console.info(f"{project.name} ({profile}): up to date, nothing to do")
        watcher = watcher_proc.on_up(project, profile)
        if watcher is not None:
            watcher.wait()
        return executor.Report(containers={op.name: op.container_id or "" for op in plan.operations if op.service is not None})
    guard_remap(client, project, plan)
    # The watcher imports and scans while the engine works; its ready signal is collected at the end.
    watcher = watcher_proc.on_up(project, profile)
    try:
        report = executor.execute(client, plan)
    except BaseException:
        if watcher is not None:
            watcher.cancel()
        raise
    console.info(f"{project.name} ({profile}): up in {report.seconds:.1f}s")
    if watcher is not None:
        watcher.wait()
    return report


_PROFILE_LINE = re.compile(r'^(\s*profile\s*=\s*)("[^"]*"|\'[^\']*\')(.*)$', re.MULTILINE)


def set_profile(file: Path, profile: str) -> None:
    """Rewrite the top-level ``profile = "..."`` of devbox.toml in place, keeping every comment."""
    text = file.read_text()
    head = text.split("\n[", 1)[0] if not text.startswith("[") else ""
    m = _PROFILE_LINE.search(head)
    if m:
        text = text[: m.start()] + f'{m.group(1)}"{profile}"{m.group(3)}' + text[m.end():]
    else:
        text = f'profile = "{profile}"\n' + text
    tmp = file.with_name(file.name + ".devbox-tmp")
    tmp.write_text(text)
    os.replace(tmp, file)


def switch(profile: str, *, start: Path | None = None) -> Exit:
    """Make ``profile`` the project's profile and converge to it: only changed services are recreated."""
    project = load_project(start)
    prof = resolve_profile(project, profile)
    if project.default_profile != prof.name:
        set_profile(project.file, prof.name)
        console.info(f"{project.file.name}: profile = \"{prof.name}\"")
    converge(project, prof.name, dry_run=False)
    return Exit.OK


# --- attach / exec / shell -----------------------------------------------------------


def attach(container: str) -> Exit:
    from devbox import terminal

    client = connect()
    params = {"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1, "detachKeys": "ctrl-p,ctrl-q"}
    sock = call(lambda: client.api.attach_socket(container, params=params))
    console.info("attached (detach: Ctrl-P Ctrl-Q)")
    terminal.pump(sock, lambda h, w: client.api.resize(container, height=h, width=w))
    return Exit.OK


def _running_container(client: docker.DockerClient, project: Project, service: str) -> str:
    from devbox import observe

    found = [c for c in observe.containers(client, project.name) if c.service == service]
    if not found:
        known = sorted({s for p in project.profiles.values() for s in p.service_names})
        if service not in known:
            raise DevboxError(f"no service '{service}' in project {project.name}", hint=config._suggest(service, known))
        raise DevboxError(f"service {service} has no container", hint="run 'devbox up'")
    running = [c for c in found if c.status == "running"]
    if not running:
        raise DevboxError(f"service {service} is not running ({found[0].status})", hint="run 'devbox up'")
    return running[0].id


def exec_(service: str, command: Sequence[str], *, start: Path | None = None, tty: bool | None = None) -> int:
    """Run ``command`` in the service's container as container root (the host user under remap); its exit code."""
    if command and command[0] == "--":  # click keeps the separator once interspersed args are off
        command = command[1:]
    if not command:
        raise DevboxError("no command given", hint=f"devbox exec {service} -- COMMAND [ARGS...]")
    project = load_project(start)
    client = connect()
    cid = _running_container(client, project, service)
    use_tty = sys.stdin.isatty() and sys.stdout.isatty() if tty is None else tty
    exec_id = call(lambda: client.api.exec_create(cid, list(command), stdin=use_tty, tty=use_tty, environment={"TERM": os.environ.get("TERM", "xterm")} if use_tty else None))["Id"]
    if use_tty:
        from devbox import terminal

        sock = call(lambda: client.api.exec_start(exec_id, tty=True, socket=True))
        terminal.pump(sock, lambda h, w: client.api.exec_resize(exec_id, height=h, width=w))
    else:
        stream = call(lambda: client.api.exec_start(exec_id, stream=True, demux=True))

        def relay() -> None:
            for out, err in stream:
                if out:
                    console.raw(out)
                if err:
                    console.raw(err, err=True)

        call(relay)
    code = call(lambda: client.api.exec_inspect(exec_id)).get("ExitCode")
    return int(code) if code is not None else 0


def shell(service: str, *, start: Path | None = None) -> int:
    if not sys.stdin.isatty():
        raise DevboxError("devbox shell needs a terminal", hint=f"use 'devbox exec {service} -- COMMAND' without one")
    return exec_(service, ["sh", "-c", "if command -v bash >/dev/null; then exec bash; else exec sh; fi"], start=start, tty=True)


# --- ps / logs / down / profiles ----------------------------------------------------------


def ps(*, json_out: bool, start: Path | None = None) -> Exit:
    from devbox import observe
    from devbox.config import config_hash

    project = load_project(start)
    client = connect()
    desired = project.stack()
    found = observe.containers(client, project.name)
    rows: list[dict[str, Any]] = []
    for c in found:
        d = observe.detail(client, c.id)
        try:
            want = config_hash(desired.service(c.service))
            current = "yes" if want == c.config_hash else "changed"
        except KeyError:
            current = "not in profile"
        rows.append({
            "service": c.service,
            "container": c.name,
            "id": c.id[:12],
            "state": c.status,
            "health": c.health,
            "exit_code": d.exit_code,
            "image": d.image_ref,
            "toolchain": d.toolchain,
            "version": d.exact,
            "profile": c.profile,
            "up_to_date": current,
            "ports": list(d.ports),
            "userns_mode": d.userns_mode or "remapped",
            "userns_host": d.userns_mode == "host",
        })
    from devbox import watcher_proc  # the ownership watcher: running, not running or crashed

    watcher = watcher_proc.status(project.name)
    if json_out:
        console.emit_json({"schema": "devbox.ps/1", "project": project.name, "profile": project.default_profile, "services": rows,
                           "watcher": watcher.to_json()})
        return Exit.OK
    if not rows:
        console.info(f"{project.name}: no containers (devbox up starts them)")
        watcher_proc.show(watcher)
        return Exit.OK
    table_rows = []
    for r in rows:
        state = r["state"] + (f" ({r['health']})" if r["health"] else "") + (f" [{r['exit_code']}]" if r["exit_code"] is not None else "")
        userns = "HOST (no remap!)" if r["userns_host"] else r["userns_mode"]
        table_rows.append([r["service"], state, r["version"] or r["toolchain"] or "", ", ".join(r["ports"]), userns, r["up_to_date"]])
    console.table(["service", "state", "toolchain", "ports", "userns", "current"], table_rows, title=f"{project.name} ({project.default_profile})")
    if any(r["userns_host"] for r in rows):
        console.warn("services with userns_mode=host run as real root on the host: files they write are not yours")
    watcher_proc.show(watcher)
    return Exit.OK


def logs(service: str, *, follow: bool, tail: str = "all", start: Path | None = None) -> Exit:
    from devbox import observe

    project = load_project(start)
    client = connect()
    found = [c for c in observe.containers(client, project.name) if c.service == service]
    if not found:
        raise DevboxError(f"service {service} has no container", hint="run 'devbox up'")
    cid = found[0].id
    lines: int | Literal["all"] = "all"
    if tail != "all":
        if not tail.isdigit():
            raise DevboxError(f"--tail {tail!r} is not a number of lines", hint="give a number, or 'all'")
        lines = int(tail)  # the SDK quietly turns a string into 'all'
    if follow:
        stream = call(lambda: client.api.logs(cid, stream=True, follow=True, tail=lines))

        def relay() -> None:
            for chunk in stream:
                console.raw(chunk)

        call(relay)
    else:
        console.raw(call(lambda: client.api.logs(cid, tail=lines)))
    return Exit.OK


def down(*, volumes: bool, start: Path | None = None) -> Exit:
    from devbox import executor, observe
    from devbox.plan import teardown

    project = load_project(start)
    from devbox import watcher_proc  # stopped first: it needs no engine

    watcher_proc.stop(project.name)
    client = connect()
    plan = teardown(project.name, observe.observe(client, project.name), volumes=volumes)
    if plan.is_noop:
        console.info(f"{project.name}: nothing to remove")
        return Exit.OK
    executor.execute(client, plan)
    if not volumes:
        kept = sorted(observe.volumes(client, project.name))
        if kept:
            console.info(f"kept volumes {', '.join(kept)} (devbox down --volumes removes them)")
    return Exit.OK


def profiles(*, json_out: bool, start: Path | None = None) -> Exit:
    from devbox import paths as paths_mod

    root = paths_mod.project_root(start)
    current = None
    if root is not None:
        project = load_project(root)
        found = dict(project.profiles)
        current = project.default_profile
    else:
        found = config.load_profiles(home=config.user_home())
    data = []
    for name, prof in sorted(found.items()):
        services = []
        for s in prof.services:
            services.append({
                "name": s.name,
                "image": s.image,
                "toolchain": s.build.args_dict.get("TOOLCHAIN") if s.build else None,
                "debian": s.build.args_dict.get("DEBIAN_RELEASE") if s.build else None,
                "interactive": s.interactive,
                "ports": [str(p) for p in s.ports],
                "volumes": list(s.volumes),
            })
        data.append({"name": name, "description": prof.description, "extends": prof.extends,
                     "source": str(prof.source), "current": name == current, "services": services})
    if json_out:
        console.emit_json({"schema": "devbox.profiles/1", "current": current, "profiles": data})
        return Exit.OK
    rows = []
    for name, prof in sorted(found.items()):
        tools = ", ".join(
            f"{s.name}: {(s.build.args_dict.get('TOOLCHAIN') if s.build else None) or s.image}" for s in prof.services
        )
        rows.append([("* " if name == current else "  ") + name, tools, prof.description])
    console.table(["profile", "services", "description"], rows)
    return Exit.OK
