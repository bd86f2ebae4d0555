"""A resolved profile -> a compose file, or a devcontainer.json (with a compose file for a stack) (pure).

The compose file is format 2.4, which Docker Compose v1.29 and v2 both run: ``depends_on`` with
health conditions, ``init``, named volumes with their devbox names (so compose and devbox share the
database's data).  Paths inside the project are written relative to the file; images devbox builds
keep their content-derived tag, so compose reuses what ``devbox up`` built.

What neither format can say is returned as notes, which the command writes as a comment at the top
and prints: the idmap strategy and per-service idmapped views, the ownership watcher, devbox's CA
bundle and proxy settings, lifecycle commands of services other than the devcontainer's own.
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

from devbox.core.model import Mount, Service
from devbox.devcontainer.mapper import KEEP_RUNNING

COMPOSE_VERSION = "2.4"
COMPOSE_FILE = "compose.yaml"
_CONDITIONS = {"started": "service_started", "healthy": "service_healthy"}


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the exported files go and what they point at (absolute POSIX paths)."""

    project: str
    root: str  # the project directory
    out_dir: str  # the directory the file is written in: relative paths start there
    images: str  # devbox's shipped images/ (outside the project: written as absolute paths)


@dataclasses.dataclass(frozen=True)
class Exported:
    data: dict[str, Any]
    notes: tuple[str, ...]


def _duration(seconds: float) -> str:
    return f"{seconds:g}s" if float(seconds).is_integer() else f"{round(seconds * 1000)}ms"


def _path(lay: Layout, source: str) -> str:
    """A host path as the file writes it: relative to the file when it is in the project."""
    if source == lay.root or source.startswith(lay.root + "/"):
        rel = posixpath.relpath(source, lay.out_dir)
        return rel if rel.startswith(".") else f"./{rel}"
    return source


def _volume_short(lay: Layout, source: str) -> str:
    prefix = f"devbox-{lay.project}-"
    return source[len(prefix):] if source.startswith(prefix) else source


def _mount_line(lay: Layout, m: Mount) -> str:
    source = _path(lay, m.source) if m.kind == "bind" else _volume_short(lay, m.source)
    return f"{source}:{m.target}" + (":ro" if m.read_only else "")


DEVBOX_KEYS = ("generated_env", "terminal", "web_port")  # devbox's own service keys, carried in x-devbox


def devbox_extension(svc: Service) -> dict[str, Any]:
    """A service's devbox-only keys (a web IDE's login, terminal and URL), for an ``x-devbox``
    extension that compose ignores and ``devbox import`` reads back."""
    out: dict[str, Any] = {}
    for key in DEVBOX_KEYS:
        value = getattr(svc, key)
        if value:
            out[key] = list(value) if isinstance(value, tuple) else value
    return out


def compose_service(svc: Service, lay: Layout, user: str | None) -> dict[str, Any]:
    """One compose service; ``user`` as it should run under compose (see :func:`to_compose`)."""
    out: dict[str, Any] = {}
    if devbox_extension(svc):
        out["x-devbox"] = devbox_extension(svc)
    if svc.build is not None:
        b = svc.build
        build: dict[str, Any] = {"context": _path(lay, b.context_dir), "dockerfile": b.dockerfile}
        if b.args:
            build["args"] = dict(b.args)
        if b.target:
            build["target"] = b.target
        out["build"] = build
    out["image"] = svc.image
    for key in ("command", "entrypoint"):
        value = getattr(svc, key)
        if value is not None:
            out[key] = list(value)
    if svc.interactive:
        out["stdin_open"] = True
        out["tty"] = True
    if svc.working_dir:
        out["working_dir"] = svc.working_dir
    if user:
        out["user"] = user
    if svc.env:
        out["environment"] = dict(svc.env)
    if svc.ports:
        out["ports"] = [f"{p.host_ip}:{p.host_port or ''}:{p.container_port}/{p.protocol}" for p in svc.ports]
    if svc.mounts:
        out["volumes"] = [_mount_line(lay, m) for m in svc.mounts]
    if svc.depends_on:
        out["depends_on"] = {d.service: {"condition": _CONDITIONS[d.condition]} for d in svc.depends_on}
    if svc.healthcheck is not None:
        h = svc.healthcheck
        out["healthcheck"] = {"test": list(h.test), "interval": _duration(h.interval_s), "timeout": _duration(h.timeout_s),
                              "retries": h.retries, "start_period": _duration(h.start_period_s)}
    for key in ("userns_mode", "network_mode", "pid_mode"):
        if getattr(svc, key):
            out[key] = getattr(svc, key)
    out["init"] = True  # devbox runs every container with an init process
    return out


def to_compose(services: Sequence[Service], lay: Layout, users: Mapping[str, str | None] | None = None) -> Exported:
    """The compose file for ``services``; ``users`` overrides a service's ``user`` (numbers resolved at
    export time, so the file needs no ``$UID`` variable); missing services keep their own."""
    notes: list[str] = []
    data: dict[str, Any] = {"version": COMPOSE_VERSION, "services": {}}
    volumes: dict[str, dict[str, str]] = {}
    for svc in services:
        user = (users or {}).get(svc.name, svc.user)
        data["services"][svc.name] = compose_service(svc, lay, user)
        for m in svc.mounts:
            if m.kind == "volume":
                volumes[_volume_short(lay, m.source)] = {"name": m.source}
        if svc.post_create or svc.post_start:
            notes.append(f"service {svc.name}: its post_create/post_start commands run only under devbox up "
                         "(compose has no lifecycle commands)")
    if volumes:
        data["volumes"] = volumes
    return Exported(data, tuple(notes))


def _command_json(cmds: tuple[tuple[str, ...], ...]) -> Any:
    """The spec's forms: a string for one shell line, an array for one command, an object for several."""
    def one(argv: tuple[str, ...]) -> Any:
        return argv[2] if len(argv) == 3 and argv[:2] == ("/bin/sh", "-c") else list(argv)
    if len(cmds) == 1:
        return one(cmds[0])
    return {f"{i + 1}": one(c) for i, c in enumerate(cmds)}


def main_service(services: Sequence[Service], workdir: str) -> Service:
    """The service an editor attaches to: the interactive one, else the first that mounts the project."""
    return next((s for s in services if s.interactive), None) or next(
        (s for s in services if any(m.kind == "bind" and m.target == workdir for m in s.mounts)), services[0])


def to_devcontainer(services: Sequence[Service], lay: Layout, name: str, workdir: str, workdir_source: str) -> tuple[Exported, Exported | None]:
    """A devcontainer.json, and for a stack the compose file it names (``compose.yaml`` beside it).

    ``workdir``/``workdir_source``: the project's first work dir (container path, host path); it becomes
    ``workspaceMount``/``workspaceFolder``.
    """
    main = main_service(services, workdir)
    notes: list[str] = []
    doc: dict[str, Any] = {"name": name}
    if len(services) > 1:
        compose = to_compose(services, lay)
        doc |= {"dockerComposeFile": COMPOSE_FILE, "service": main.name, "runServices": [s.name for s in services],
                "workspaceFolder": main.working_dir or workdir, "overrideCommand": False}
        notes += [n for n in compose.notes if not n.startswith(f"service {main.name}:")]
    else:
        compose = None
        doc |= _single(main, lay, workdir, workdir_source, notes)
    if main.post_create:
        doc["postCreateCommand"] = _command_json(main.post_create)
    if main.post_start:
        doc["postStartCommand"] = _command_json(main.post_start)
    return Exported(doc, tuple(notes)), compose


def _single(svc: Service, lay: Layout, workdir: str, workdir_source: str, notes: list[str]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    devbox: dict[str, Any] = {"service": svc.name}
    if svc.build is not None:
        b = svc.build
        build: dict[str, Any] = {"dockerfile": posixpath.relpath(posixpath.join(b.context_dir, b.dockerfile), lay.out_dir),
                                 "context": posixpath.relpath(b.context_dir, lay.out_dir)}
        if b.context_dir.startswith(lay.images + "/"):  # devbox's own images live outside the project
            build = {"dockerfile": posixpath.join(b.context_dir, b.dockerfile), "context": b.context_dir}
        if b.args:
            build["args"] = dict(b.args)
        if b.target:
            build["target"] = b.target
        doc["build"] = build
    else:
        doc["image"] = svc.image
    source = "${localWorkspaceFolder}" + ("" if workdir_source == lay.root else "/" + posixpath.relpath(workdir_source, lay.root))
    doc["workspaceMount"] = f"source={source},target={workdir},type=bind"
    doc["workspaceFolder"] = svc.working_dir or workdir
    mounts = []
    for m in svc.mounts:
        if m.kind == "bind" and m.target == workdir and m.source == workdir_source:
            continue
        src = m.source if m.kind == "volume" else _local_var(lay, m.source)
        if m.kind == "volume":
            src = _volume_short(lay, m.source)
        mounts.append(f"source={src},target={m.target},type={m.kind}" + (",readonly" if m.read_only else ""))
    if mounts:
        doc["mounts"] = mounts
    if svc.env:
        doc["containerEnv"] = dict(svc.env)
    if svc.ports:
        simple = [p for p in svc.ports if p.host_port == p.container_port and p.protocol == "tcp" and p.host_ip == "127.0.0.1"]
        if simple:
            doc["forwardPorts"] = [p.container_port for p in simple]
        rest = [f"{p.host_ip}:{p.host_port or ''}:{p.container_port}/{p.protocol}" for p in svc.ports if p not in simple]
        if rest:
            doc["appPort"] = rest
    if svc.command is None:
        doc["overrideCommand"] = False
    elif list(svc.command) != KEEP_RUNNING:
        doc["overrideCommand"] = False
        devbox["command"] = list(svc.command)
    if svc.interactive:
        devbox["interactive"] = True
    if svc.user:
        doc["containerUser"] = svc.user
    for what, present in (("entrypoint", svc.entrypoint is not None), ("healthcheck", svc.healthcheck is not None),
                          ("userns_mode", svc.userns_mode), ("network_mode", svc.network_mode), ("pid_mode", svc.pid_mode)):
        if present:
            notes.append(f"service {svc.name}: its {what} has no devcontainer.json property and is not exported")
    doc["customizations"] = {"devbox": devbox}
    return doc


def _local_var(lay: Layout, source: str) -> str:
    if source == lay.root or source.startswith(lay.root + "/"):
        return "${localWorkspaceFolder}" + source[len(lay.root):]
    return source
