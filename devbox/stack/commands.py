"""The stack commands: init, up, switch, ps, logs, exec, shell, down, profiles.

Each function is what one CLI command calls: it loads the project, asks the
engine (:mod:`devbox.stack.observe`), plans (:mod:`devbox.stack.reconcile`,
pure), carries the plan out (:mod:`devbox.stack.executor`) and reports through
:mod:`devbox.console`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from devbox import console
from devbox.config import resolve as config
from devbox.core import network
from devbox.core.model import Observed, Profile, Project, Service, Stack
from devbox.core.network import NetworkFacts
from devbox.engine.client import connect
from devbox.engine.errors import call
from devbox.errors import ConfigError, DevboxError, Exit
from devbox.host.files import write_atomic
from devbox.host.user import paths_for, resolve_user

if TYPE_CHECKING:
    from devbox.engine.client import Engine
    from devbox.host.user import User
    from devbox.paths import Paths
    from devbox.stack.executor import Report
    from devbox.stack.pods import Pod
    from devbox.stack.views import Views


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
        raise ConfigError(f"unknown profile '{profile}'", hint=config.suggest(profile, profiles))
    write_atomic(target, INIT_TEMPLATE.format(name=config.project_slug(root), profile=profile).encode())
    console.say(f"wrote {target} (profile {profile}: {profiles[profile].description})")
    console.info("next: devbox up")
    return Exit.OK


# --- loading ---------------------------------------------------------------------


def resolve_profile(project: Project, name: str | None) -> Profile:
    name = name or project.default_profile
    if name not in project.profiles:
        raise ConfigError(f"unknown profile '{name}'", hint=config.suggest(name, project.profiles))
    return project.profiles[name]


# --- up / switch ------------------------------------------------------------------


def up(*, profile: str | None, detach: bool, dry_run: bool, start: Path | None = None) -> Exit:
    project = config.find_project(start)
    prof = resolve_profile(project, profile)
    report = converge(project, prof.name, dry_run=dry_run)
    if dry_run or report is None:
        return Exit.OK
    if any(s.web_port is not None for s in prof.services):
        # the URLs only: the profile's own stack, without reading the host's facts and secrets again
        for web in web_endpoints(connect(), project, stack=project.stack(prof.name)):
            console.say(web.line(with_secret=False))
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


@dataclasses.dataclass(frozen=True)
class WebEndpoint:
    """A running service's web UI: where it is and how to log in (``up``, ``ps``, ``open``)."""

    service: str
    url: str | None  # None: not running, so no port is bound
    login: str | None  # the generated variable that is its login (PASSWORD)
    secret: str | None

    def line(self, *, with_secret: bool) -> str:
        where = self.url or "not running (devbox up starts it)"
        if self.login is None:
            return f"{self.service}: {where}"
        shown = self.secret if with_secret else f"devbox open {self.service} prints it"
        return f"{self.service}: {where}  ({self.login.lower()}: {shown})"

    def to_json(self) -> dict[str, Any]:
        return {"service": self.service, "url": self.url, "login": self.login, "secret": self.secret}


def web_endpoints(client: Engine, project: Project, profile: str | None = None,
                  stack: Stack | None = None) -> list[WebEndpoint]:
    """The web UIs of the profile's services (``web_port``), with the URL the engine bound."""
    from devbox.core import access
    from devbox.stack import observe

    wanted = stack if stack is not None else desired(project, profile)[0]
    running = {c.service: c for c in observe.containers(client, project.name) if c.status == "running"}
    out = []
    for svc in wanted.services:
        if svc.web_port is None:
            continue
        c = running.get(svc.name)
        url = access.web_url(svc, observe.ports(client, c.id)) if c is not None else None
        login = access.login_variable(svc)
        out.append(WebEndpoint(svc.name, url, login, svc.env_dict.get(login) if login else None))
    return out


def open_(service: str | None, *, json_out: bool, browser: bool, start: Path | None = None) -> Exit:
    """Print (or open) the URL of a service's web UI, with its login."""
    project = config.find_project(start)
    client = connect()
    webs = web_endpoints(client, project)
    if not webs:
        raise DevboxError(f"profile {project.default_profile} has no service with a web UI",
                          hint="the ide-code and ide-python profiles have one (devbox profiles)")
    if service is None:
        web = webs[0]
    else:
        found = [w for w in webs if w.service == service]
        if not found:
            raise DevboxError(f"service '{service}' has no web UI in profile {project.default_profile}",
                              hint="services with one: " + ", ".join(w.service for w in webs))
        web = found[0]
    if json_out:
        console.emit_json({"schema": "devbox.open/1", "project": project.name, **web.to_json()})
        return Exit.OK if web.url else Exit.PROBLEMS
    if web.url is None:
        raise DevboxError(f"service {web.service} is not running", hint="run 'devbox up -d'")
    console.say(web.url)
    if web.login is not None:
        console.say(f"{web.login.lower()}: {web.secret}")
    if browser:
        import webbrowser

        if not webbrowser.open(web.url):
            console.warn("no browser to open here: open the URL above yourself")
    return Exit.OK


def desired(project: Project, profile: str | None = None) -> tuple[Stack, NetworkFacts]:
    """The stack ``profile`` asks for on this host: the profile's services, plus the host's extra CA
    bundle and proxy settings (``[network]``; :mod:`devbox.core.network`), and the generated login
    secrets and terminal relay of a web IDE (:mod:`devbox.core.access`)."""
    from devbox.core import access
    from devbox.host import secrets
    from devbox.host.network import network_facts
    from devbox.host.user import acting_for_other
    from devbox.payload import relay_script

    user = resolve_user()
    facts = network_facts(project.ca_certificates, user.home, project_root=project.root)
    stack = project.stack(profile)
    names = access.secret_names(stack)
    if names:
        values = secrets.load(paths_for(user).secrets(project.name), names, user if acting_for_other(user) else None)
        stack = access.wire(stack, values, str(relay_script()))
    return network.apply(stack, facts), facts


def converge(project: Project, profile: str, *, dry_run: bool) -> Report | None:
    """Observe, plan, guard, execute; the ownership watcher follows the stack (``up`` and ``switch``)."""
    from devbox.core.views import needs_user
    from devbox.stack import executor
    from devbox.stack import views as stack_views
    from devbox.stack.guard import guard_engine, guard_remap
    from devbox.stack.observe import observe_project
    from devbox.stack.reconcile import reconcile
    from devbox.watch import process as watcher

    stack, facts = desired(project, profile)
    client = connect()
    info, strategy = guard_engine(client, project)
    podman = info.product == "podman"
    if podman:
        from devbox.core.pods import refusal
        from devbox.stack import pods

        pod_network = pods.network(info.podman_networks, rootful=not info.rootless)
        refused = refusal(stack, pod_network)
        if refused is not None:
            raise DevboxError(f"{project.file.name}: profile {profile}: {refused[0]}", hint=refused[1])
    user = resolve_user()
    paths = paths_for(user)
    refs = [ref for ref, _ in stack.images]
    observed = observe_project(client, stack.project, refs, podman=podman)
    views = stack_views.plan_stack_views(client, stack, strategy, user, paths, observed.image_present, info.kind)
    if views.plan.views or views.plan.refused:
        stack_views.guard_views(views, project)
    if any(needs_user(s, strategy) and not observed.image_present.get(s.image) for s in stack.services):
        # a service's user is a name: its image is needed to know the uid, so images come first
        images_only = reconcile(stack, observed)
        if not dry_run:
            if strategy == "remap":
                guard_remap(client, project, images_only, user, paths, info)
            executor.execute(client, images_only.images_only(), network.build_args(facts))
            observed = observe_project(client, stack.project, refs)
            views = stack_views.plan_stack_views(client, stack, strategy, user, paths, observed.image_present, info.kind)
            stack_views.guard_views(views, project)
    if podman and not dry_run and not all(observed.image_present.get(ref) for ref in refs):
        # the users of services that do not write your files come from their images: images first
        executor.execute(client, reconcile(stack, observed).images_only(), network.build_args(facts), podman=True)
        observed = observe_project(client, stack.project, refs, podman=True)
    pod = None
    if podman and not dry_run:
        pod = _pod(stack, observed, user, paths, pod_network, views)
        if pods.renew(client, stack, pod.network):
            observed = observe_project(client, stack.project, refs, podman=True)
    plan = reconcile(views.stack, observed)
    if dry_run:
        console.say(str(plan))
        for v in views.plan.views:
            console.say(f"view {v.name}: {v.source} -> {v.service}:{v.target} "
                        f"(stored as {v.owner[0]}:{v.owner[1]}, written by host {v.writer[0]}:{v.writer[1]})")
        return None
    if plan.is_noop:
        stack_views.ensure_views(views)  # after a reboot or a crash the containers may stand while their views are gone
        console.info(f"{project.name} ({profile}): up to date, nothing to do")
        launch = watcher.on_up(project, profile)
        if launch is not None:
            launch.wait()
        return executor.Report(containers={op.name: op.container_id or "" for op in plan.operations if op.service is not None})
    if strategy == "remap":
        guard_remap(client, project, plan, user, paths, info)
    # The watcher imports and scans while the engine works; its ready signal is collected at the end.
    launch = watcher.on_up(project, profile)
    try:
        report = executor.execute(client, plan, network.build_args(facts), before_services=lambda: stack_views.ensure_views(views),
                                  pod=pod)
        if not views.engine_made:
            stack_views.release_project_views(project.name, user, keep=views)
    except BaseException:
        if launch is not None:
            launch.cancel()
        raise
    console.info(f"{project.name} ({profile}): up in {report.seconds:.1f}s")
    if launch is not None:
        launch.wait()
    return report


def _pod(stack: Stack, observed: Observed, user: User, paths: Paths, network: str, views: Views) -> Pod:
    """The pod's hosts file and its services' users: under keep-id, an image's own user (as observed) for
    those that do not write your files; under idmap (rootful Podman), the idmapped binds of those that do."""
    from devbox.core.pods import writes_your_files
    from devbox.stack import pods

    if views.engine_made:
        return pods.prepare(paths, stack, user.uid, user.gid, {}, network, keep_id=False, idmaps=views.podman_idmaps())
    images = {s.image for s in stack.services if not s.user and not writes_your_files(s)}
    users = {i.ref: i.user for i in observed.images if i.ref in images}
    return pods.prepare(paths, stack, user.uid, user.gid, users, network)


def _own_ports(ports: Sequence[str], svc: Service | None) -> list[str]:
    """On Podman every container of a pod reports the pod's ports: those its service publishes."""
    mine = {f"{p.container_port}/{p.protocol}" for p in svc.ports} if svc is not None else set()
    return [p for p in ports if p.rsplit("->", 1)[-1] in mine]


def _podman_health(client: Engine, cid: str, status: str, svc: Service | None) -> str | None:
    """Rootless Podman runs healthchecks from systemd timers, which a machine without a user systemd
    lacks, and its list does not show health: ``ps`` runs the check now (what ``up`` does while it waits)."""
    if svc is None or svc.healthcheck is None or status != "running":
        return None
    try:
        result = client.api.libpod("GET", f"/containers/{cid}/healthcheck")
    except DevboxError:
        return None
    return str((result or {}).get("Status") or "") or None


NICE_CPU_SHARES = 2  # the smallest weight: a --nice build runs on the CPU time nothing else wants


def build(*, profile: str | None, services: Sequence[str] = (), nice: bool = False, start: Path | None = None) -> Exit:
    """Build (or pull) the images a profile needs (or only ``services``'), start nothing: what ``up``
    would build first.  ``nice``: the builds yield the CPU to everything else."""
    from devbox.stack import executor
    from devbox.stack.observe import observe_project
    from devbox.stack.reconcile import reconcile

    project = config.find_project(start)
    prof = resolve_profile(project, profile)
    stack, facts = desired(project, prof.name)
    unknown = [s for s in services if s not in prof.service_names]
    if unknown:
        raise ConfigError(f"profile {prof.name} has no service '{unknown[0]}'",
                          hint=config.suggest(unknown[0], prof.service_names) or f"its services: {', '.join(prof.service_names)}")
    client = connect()
    observed = observe_project(client, stack.project, [ref for ref, _ in stack.images])
    plan = reconcile(stack, observed).images_only()
    if services:
        refs = {s.image for s in stack.services if s.name in services}
        plan = dataclasses.replace(plan, operations=tuple(op for op in plan.operations if op.name in refs))
    if plan.is_noop:
        console.info(f"{project.name} ({prof.name}): every image is built")
        return Exit.OK
    report = executor.execute(client, plan, network.build_args(facts), cpu_shares=NICE_CPU_SHARES if nice else None)
    console.info(f"{project.name} ({prof.name}): images ready in {report.seconds:.1f}s")
    return Exit.OK


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
    write_atomic(file, text.encode())


def switch(profile: str, *, start: Path | None = None) -> Exit:
    """Make ``profile`` the project's profile and converge to it: only changed services are recreated."""
    project = config.find_project(start)
    prof = resolve_profile(project, profile)
    if project.default_profile != prof.name:
        set_profile(project.file, prof.name)
        console.info(f"{project.file.name}: profile = \"{prof.name}\"")
    converge(project, prof.name, dry_run=False)
    return Exit.OK


# --- attach / exec / shell -----------------------------------------------------------


def attach(container: str) -> Exit:
    from devbox.stack import terminal

    client = connect()
    params = {"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1, "detachKeys": "ctrl-p,ctrl-q"}
    sock = call(lambda: client.docker.api.attach_socket(container, params=params))
    console.info("attached (detach: Ctrl-P Ctrl-Q)")
    terminal.pump(sock, lambda h, w: client.docker.api.resize(container, height=h, width=w))
    return Exit.OK


def _running_container(client: Engine, project: Project, service: str) -> str:
    from devbox.stack import observe

    found = [c for c in observe.containers(client, project.name) if c.service == service]
    if not found:
        known = sorted({s for p in project.profiles.values() for s in p.service_names})
        if service not in known:
            raise DevboxError(f"no service '{service}' in project {project.name}", hint=config.suggest(service, known))
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
    project = config.find_project(start)
    client = connect()
    cid = _running_container(client, project, service)
    use_tty = sys.stdin.isatty() and sys.stdout.isatty() if tty is None else tty
    exec_id = call(lambda: client.docker.api.exec_create(cid, list(command), stdin=use_tty, tty=use_tty, environment={"TERM": os.environ.get("TERM", "xterm")} if use_tty else None))["Id"]
    if use_tty:
        from devbox.stack import terminal

        sock = call(lambda: client.docker.api.exec_start(exec_id, tty=True, socket=True))
        terminal.pump(sock, lambda h, w: client.docker.api.exec_resize(exec_id, height=h, width=w))
    else:
        stream = call(lambda: client.docker.api.exec_start(exec_id, stream=True, demux=True))

        def relay() -> None:
            for out, err in stream:
                if out:
                    console.raw(out)
                if err:
                    console.raw(err, err=True)

        call(relay)
    code = call(lambda: client.docker.api.exec_inspect(exec_id)).get("ExitCode")
    return int(code) if code is not None else 0


def shell(service: str, *, start: Path | None = None) -> int:
    if not sys.stdin.isatty():
        raise DevboxError("devbox shell needs a terminal", hint=f"use 'devbox exec {service} -- COMMAND' without one")
    return exec_(service, ["sh", "-c", "if command -v bash >/dev/null; then exec bash; else exec sh; fi"], start=start, tty=True)


# --- ps / logs / down / profiles ----------------------------------------------------------


def ps(*, json_out: bool, start: Path | None = None) -> Exit:
    from devbox.core import access
    from devbox.core.hashing import config_hash
    from devbox.engine.client import inspect_engine
    from devbox.stack import observe

    project = config.find_project(start)
    client = connect()
    wanted, facts = desired(project)
    from devbox.core.ownership import Choice
    from devbox.core.views import needs_user
    from devbox.stack import views as stack_views

    found = observe.containers(client, project.name)
    engine = inspect_engine(client)
    choice = stack_views.choose_for_engine(engine, project)
    strategy = choice.strategy if isinstance(choice, Choice) else None
    views = None
    if strategy is not None:
        user = resolve_user()
        present = ({ref: observe.image(client, ref) is not None for ref, _ in wanted.images}
                   if any(needs_user(s, strategy) for s in wanted.services) else {})
        views = stack_views.plan_stack_views(client, wanted, strategy, user, paths_for(user), present, engine.kind)
        if views.missing_helper is None:
            wanted = views.stack
    engine_json = {"kind": engine.kind, "product": engine.product, "version": engine.version,
                   "api_version": engine.api_version, "host": engine.host,
                   "strategy": strategy, "strategy_refused": None if isinstance(choice, Choice) else choice.message,
                   # idmap fixes ownership only: the processes are host root, as without devbox
                   "processes_run_as": ("host root" if strategy == "idmap" else "you or your subordinate ids"
                                        if strategy else None),
                   "views": views.to_json() if views is not None else [],
                   "views_missing": views.missing_helper if views is not None else None}
    # what an empty UsernsMode means depends on the daemon: remapped only where the daemon remaps
    default_userns = "remapped" if engine.userns else "rootless" if engine.rootless else "none"
    rows: list[dict[str, Any]] = []
    for c in found:
        d = observe.detail(client, c.id)
        svc = None
        try:
            svc = wanted.service(c.service)
            want = config_hash(svc)
            current = "yes" if want == c.config_hash else "changed"
        except KeyError:
            current = "not in profile"
        url = access.web_url(svc, d.ports) if svc is not None and c.status == "running" else None
        login = access.login_variable(svc) if svc is not None else None
        rows.append({
            "service": c.service,
            "container": c.name,
            "id": c.id[:12],
            "state": c.status,
            "health": c.health if engine.product != "podman" else _podman_health(client, c.id, c.status, svc),
            "exit_code": d.exit_code,
            "image": d.image_ref,
            "toolchain": d.toolchain,
            "version": d.exact,
            "profile": c.profile,
            "up_to_date": current,
            "ports": _own_ports(d.ports, svc) if engine.product == "podman" else list(d.ports),
            # a pod's containers join its user namespace ("container:INFRA"): keep-id, the pod's
            "userns_mode": ("keep-id (pod)" if engine.product == "podman" and strategy == "keep-id" else
                            "host (pod; idmapped binds)" if engine.kind == "podman-rootful" else d.userns_mode or default_userns),
            "userns_host": d.userns_mode == "host",
            # container root is host root: files it writes in a bind mount are root's
            "root_is_host_root": d.userns_mode == "host" or default_userns == "none",
            "url": url,  # a web UI (web_port), on the port the engine picked
            "login": {"variable": login, "secret": svc.env_dict.get(login)} if svc is not None and login else None,
        })
    from devbox.watch import process as watcher_process  # the ownership watcher: running, not running or crashed

    watcher = watcher_process.status(project.name)
    if json_out:
        console.emit_json({"schema": "devbox.ps/1", "project": project.name, "profile": project.default_profile,
                           "engine": engine_json, "network": network.to_json(facts), "services": rows,
                           "watcher": watcher.to_json()})
        return Exit.OK
    console.info(f"engine: {engine.label} at {engine.host}; ownership strategy: "
                 + (strategy or f"none ({engine_json['strategy_refused']})"))
    if strategy == "idmap":
        console.info("idmap: idmapped views make the files services write in your work dirs yours; their processes "
                     "still run as host root (remap isolates them, idmap only fixes ownership)")
    if views is not None and views.plan.views:
        console.info(f"idmapped {'binds (made by Podman)' if views.engine_made else 'views'}: {len(views.plan.views)} ("
                     + ", ".join(f"{v.service}:{v.target} as {v.container_user[0]}" for v in views.plan.views) + ")"
                     + (f" — not made: {views.missing_helper}" if views.missing_helper else ""))
    for line in network.describe(facts):
        console.info(f"network: {line}")
    if not rows:
        console.info(f"{project.name}: no containers (devbox up starts them)")
        watcher_process.show(watcher)
        return Exit.OK
    table_rows = []
    for r in rows:
        state = r["state"] + (f" ({r['health']})" if r["health"] else "") + (f" [{r['exit_code']}]" if r["exit_code"] is not None else "")
        userns = "HOST (no remap!)" if r["userns_host"] else "none (root is root!)" if r["root_is_host_root"] else r["userns_mode"]
        table_rows.append([r["service"], state, r["version"] or r["toolchain"] or "", ", ".join(r["ports"]), userns, r["up_to_date"]])
    console.table(["service", "state", "toolchain", "ports", "userns", "current"], table_rows, title=f"{project.name} ({project.default_profile})")
    for r in rows:
        if r["url"]:
            web = WebEndpoint(r["service"], r["url"], *((r["login"]["variable"], r["login"]["secret"]) if r["login"] else (None, None)))
            console.say(web.line(with_secret=True))
    if any(r["userns_host"] for r in rows):
        console.warn("services with userns_mode=host run as real root on the host: files they write are not yours")
    elif any(r["root_is_host_root"] for r in rows) and strategy != "idmap":
        console.warn("this engine does not remap: container root is real root, so files written to your work dirs "
                     "are root's — see devbox remap")
    watcher_process.show(watcher)
    return Exit.OK


def logs(service: str, *, follow: bool, tail: str = "all", start: Path | None = None) -> Exit:
    from devbox.stack import observe

    project = config.find_project(start)
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
        stream = call(lambda: client.docker.api.logs(cid, stream=True, follow=True, tail=lines))

        def relay() -> None:
            for chunk in stream:
                console.raw(chunk)

        call(relay)
    else:
        console.raw(call(lambda: client.docker.api.logs(cid, tail=lines)))
    return Exit.OK


def down(*, volumes: bool, start: Path | None = None) -> Exit:
    from devbox.stack import executor, observe
    from devbox.stack.reconcile import teardown

    project = config.find_project(start)
    from devbox.watch import process as watcher_process  # stopped first: it needs no engine

    watcher_process.stop(project.name)
    client = connect()
    podman = client.is_podman()
    plan = teardown(project.name, observe.observe_project(client, project.name, podman=podman), volumes=volumes)
    if plan.is_noop:
        console.info(f"{project.name}: nothing to remove")
        return Exit.OK
    executor.execute(client, plan, podman=podman)
    from devbox.stack import views as stack_views

    released = stack_views.release_project_views(project.name, resolve_user())
    if released:
        console.info(f"idmapped views: {len(released)} released")
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
        project = config.find_project(root)
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
