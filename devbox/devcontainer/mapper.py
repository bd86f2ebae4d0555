"""The mapping's shared parts: variables, host paths, ports, mounts, builds, lifecycle commands (pure).

:mod:`.importer` (devcontainer.json) and :mod:`.compose_import` (its ``dockerComposeFile``) both map
onto profile tables through a :class:`Mapper`, which records every decision in a :class:`Decisions`.
The one question about the host (may this directory be bind-mounted?) is asked through
``Where.refuse_bind``, which the command answers with :func:`devbox.config.resolve.check_bind_source`.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
from collections.abc import Callable, Mapping
from typing import Any

from devbox.errors import ConfigError

DEFAULT_SERVICE = "dev"
KEEP_RUNNING = ["sleep", "infinity"]  # overrideCommand: the devcontainer CLI's "while sleep 1000" loop, as devbox says it

_VAR = re.compile(r"\$\{([A-Za-z]+)(?::([^}:]*))?(?::([^}]*))?\}")
_PORT = re.compile(r"^(?:(?P<ip>\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):)?(?:(?P<host>\d*):)?(?P<container>\d+)(?:/(?P<proto>tcp|udp))?$")


@dataclasses.dataclass
class Decisions:
    """One ``(property, what)`` line per decision, in the order they were made."""

    mapped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    refused: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    ignored: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, list[dict[str, str]]]:
        return {kind: [{"property": p, "why": w} for p, w in getattr(self, kind)] for kind in ("mapped", "refused", "ignored")}


@dataclasses.dataclass(frozen=True)
class Where:
    """Where the import happens: absolute POSIX paths, the environment, and the bind-mount refusal."""

    root: str  # the project: devbox.toml is written here
    config_dir: str  # the devcontainer.json's directory (its relative paths start here)
    images: str  # devbox's shipped images/: a build context there maps back to `context = NAME`
    home: str
    env: Mapping[str, str]
    refuse_bind: Callable[[str], str | None]  # a profile mount source -> why devbox refuses it, or None


@dataclasses.dataclass(frozen=True)
class Imported:
    description: str
    workdir: str  # where the project is mounted in the containers (devbox.toml workdirs)
    services: dict[str, dict[str, Any]]  # profile tables
    report: Decisions


class Mapper:
    def __init__(self, where: Where, report: Decisions, project: str) -> None:
        self.where = where
        self.report = report
        self.project = project
        self.workspace = ""

    # --- ${...} variables ---------------------------------------------------------------------------

    def subst(self, prop: str, text: str) -> str | None:
        """``text`` with the spec's variables replaced; ``None`` when one is only known inside the container."""
        unknown: list[str] = []

        def one(m: re.Match[str]) -> str:
            kind, arg, default = m.group(1), m.group(2), m.group(3)
            root = self.where.root
            if kind == "localWorkspaceFolder":
                return root
            if kind == "localWorkspaceFolderBasename":
                return posixpath.basename(root)
            if kind == "containerWorkspaceFolder":
                return self.workspace
            if kind == "containerWorkspaceFolderBasename":
                return posixpath.basename(self.workspace)
            if kind == "devcontainerId":
                return ""  # it scopes names to the project, which devbox's volume names already are
            if kind in ("localEnv", "env") and arg:
                if arg in ("HOME", "USERPROFILE"):
                    return self.where.home
                value = self.where.env.get(arg, default or "")
                self.report.mapped.append((prop, f"${{{kind}:{arg}}} is {value!r} now, written as that"))
                return value
            unknown.append(m.group(0))
            return m.group(0)

        out = _VAR.sub(one, text)
        if unknown:
            self.report.ignored.append((prop, f"{unknown[0]} is only known inside a running container"))
            return None
        return out

    # --- paths ------------------------------------------------------------------------------------

    def local(self, path: str, base: str | None = None) -> str:
        """A host path as a profile writes it: relative to the project (``.``), ``~/...``, else absolute."""
        full = posixpath.normpath(posixpath.join(base or self.where.config_dir, path))
        root, home = self.where.root, self.where.home
        if full == root or full.startswith(root + "/"):
            return posixpath.relpath(full, root)
        if full.startswith(home + "/"):
            return "~/" + posixpath.relpath(full, home)
        return full

    def bind(self, prop: str, source: str, target: str, read_only: bool) -> dict[str, Any] | None:
        src = self.local(source)
        why = self.where.refuse_bind(src)
        if why is not None and not why.startswith("it is outside"):
            self.report.refused.append((prop, f"{source}: {why}"))
            return None
        mount: dict[str, Any] = {"source": src, "target": target}
        if read_only:
            mount["read_only"] = True
        if why is not None:
            mount["allow_outside_project"] = True
            self.report.mapped.append((prop, f"{src} -> {target} (outside the project: allowed because the file asks for it)"))
        else:
            self.report.mapped.append((prop, f"{src} -> {target}" + (" (read-only)" if read_only else "")))
        return mount

    def volume_name(self, name: str) -> str:
        # devbox already scopes volumes by project (devbox-PROJECT-NAME)
        cleaned = re.sub(r"[^a-zA-Z0-9_.-]+", "-", name).strip("-_.")
        return cleaned or "data"

    # --- values -------------------------------------------------------------------------------------

    def port(self, prop: str, spec: object) -> str | None:
        text = str(spec) if isinstance(spec, int) and not isinstance(spec, bool) else spec
        m = _PORT.match(text) if isinstance(text, str) else None
        if m is None:
            self.report.refused.append((prop, f"{spec!r} is not [IP:]HOST:CONTAINER or a port number"))
            return None
        ip, host, container = m["ip"], m["container"] if m["host"] is None else m["host"], m["container"]
        if ip not in (None, "127.0.0.1"):
            self.report.mapped.append((prop, f"{spec}: published on 127.0.0.1, not {ip}: nothing is exposed to the network by accident"))
        else:
            self.report.mapped.append((prop, f"127.0.0.1:{host or 'any free port'} -> {container}"))
        return f"127.0.0.1:{host}:{container}" + (f"/{m['proto']}" if m["proto"] else "")

    def commands(self, prop: str, value: object) -> list[Any] | str | None:
        """A lifecycle command in the spec's three forms -> the profile's ``post_*`` value."""
        if isinstance(value, str):
            self.report.mapped.append((prop, f"run by /bin/sh -c: {value}"))
            return value
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            self.report.mapped.append((prop, f"run as {value}"))
            return list(value)
        if isinstance(value, dict) and value:
            out: list[list[str]] = []
            for name, cmd in value.items():
                if isinstance(cmd, str):
                    out.append(["/bin/sh", "-c", cmd])
                elif isinstance(cmd, list) and cmd and all(isinstance(v, str) for v in cmd):
                    out.append(list(cmd))
                else:
                    self.report.refused.append((f"{prop}.{name}", "not a string or an array of strings"))
            self.report.mapped.append((prop, f"{len(out)} commands ({', '.join(value)}), run one after the other, "
                                             "not in parallel"))
            return out or None
        self.report.refused.append((prop, "not a string, an array of strings or an object of those"))
        return None

    def env(self, prop: str, table: object, into: dict[str, str]) -> None:
        if not isinstance(table, dict):
            self.report.refused.append((prop, "not an object"))
            return
        for key, value in table.items():
            if value is None:
                self.report.ignored.append((f"{prop}.{key}", "null (unset) has no meaning in a new container"))
                continue
            text = self.subst(f"{prop}.{key}", str(value))
            if text is not None:
                into[key] = text
        self.report.mapped.append((prop, "environment: " + (", ".join(into) or "none")))


_LIFECYCLE_CREATE = ("onCreateCommand", "updateContentCommand", "postCreateCommand")


def map_workspace(m: Mapper, doc: Mapping[str, Any], default_target: str) -> tuple[str, str]:
    """(the project's container path, workspaceFolder)."""
    target = default_target
    if "workspaceMount" in doc:
        spec = m.subst("workspaceMount", str(doc["workspaceMount"]))
        parsed = mount_spec(spec) if spec else None
        if parsed and parsed.get("target") and m.local(parsed.get("source", "")) == ".":
            target = parsed["target"]
            m.report.mapped.append(("workspaceMount", f"the project at {target} (devbox.toml workdirs)"))
        else:
            m.report.refused.append(("workspaceMount", f"{doc['workspaceMount']!r}: devbox mounts the project directory "
                                                       f"itself; it stays at {target}"))
    folder = str(doc.get("workspaceFolder") or target)
    m.workspace = folder
    folder = m.subst("workspaceFolder", folder) or target
    if "workspaceFolder" in doc:
        if "workspaceMount" not in doc:
            target = folder  # the CLI mounts the project at workspaceFolder then
        m.report.mapped.append(("workspaceFolder", f"working_dir {folder}"))
    return target, folder


def map_common(m: Mapper, doc: Mapping[str, Any], svc: dict[str, Any], name: str) -> None:
    """The properties the main service gets in both modes: env, mounts, ports, lifecycle, user."""
    env: dict[str, str] = dict(svc.get("env", {}))
    for prop in ("containerEnv", "remoteEnv"):
        if prop in doc:
            m.env(prop, doc[prop], env)
    if "remoteEnv" in doc:
        m.report.mapped.append(("remoteEnv", "set in the container's environment: devbox has one environment per service"))
    if env:
        svc["env"] = env
    for i, spec in enumerate(doc.get("mounts") or []):
        map_mount(m, f"mounts[{i}]", spec, svc)
    ports = list(svc.get("ports", []))
    for i, p in enumerate(doc.get("forwardPorts") or []):
        if isinstance(p, str) and ":" in p and not p.split(":", 1)[0].isdigit():
            other, _, port = p.partition(":")
            if other != name:
                m.report.ignored.append((f"forwardPorts[{i}]", f"{p}: a port of service {other}, reachable there by name"))
                continue
            p = port
        found = m.port(f"forwardPorts[{i}]", p)
        if found:
            ports.append(found)
    app = doc.get("appPort")
    for i, p in enumerate(app if isinstance(app, list) else [app] if app is not None else []):
        found = m.port(f"appPort[{i}]", p)
        if found:
            ports.append(found)
    if ports:
        svc["ports"] = ports
    creates: list[Any] = []
    for prop in _LIFECYCLE_CREATE:
        if doc.get(prop):
            cmds = m.commands(prop, doc[prop])
            creates += [cmds] if isinstance(cmds, str) or (cmds and isinstance(cmds[0], str)) else (cmds or [])
    if creates:
        svc["post_create"] = one_or_many(creates)
    if doc.get("postStartCommand"):
        cmds = m.commands("postStartCommand", doc["postStartCommand"])
        if cmds:
            svc["post_start"] = cmds
    user = doc.get("remoteUser") or doc.get("containerUser")
    if doc.get("remoteUser") and doc.get("containerUser") and doc["remoteUser"] != doc["containerUser"]:
        m.report.ignored.append(("containerUser", f"{doc['containerUser']}: devbox runs the service and the tools in it as "
                                                  f"one user, remoteUser ({doc['remoteUser']})"))
    if user:
        prop = "remoteUser" if doc.get("remoteUser") else "containerUser"
        if str(user) in ("root", "0"):
            svc.pop("user", None)
            m.report.mapped.append((prop, "root: container root, which is you on a remapped engine"))
        else:
            svc["user"] = str(user)
            m.report.mapped.append((prop, f"user = \"{user}\": under remap it writes through its own idmapped view, "
                                          "so its files in the project are yours"))


def one_or_many(cmds: list[Any]) -> Any:
    """The profile's ``post_*`` value for several commands: one as written, several as argument lists."""
    if len(cmds) == 1:
        return cmds[0]
    return [["/bin/sh", "-c", c] if isinstance(c, str) else c for c in cmds]


def map_build(m: Mapper, prop: str, build: Mapping[str, Any], base: str) -> dict[str, Any]:
    context = posixpath.normpath(posixpath.join(base, str(build.get("context") or ".")))
    dockerfile = posixpath.normpath(posixpath.join(base if prop == "build" else context, str(build.get("dockerfile") or "Dockerfile")))
    out: dict[str, Any] = {}
    if posixpath.dirname(context) == m.where.images:
        out["context"] = posixpath.basename(context)
    else:
        rel = m.local(context)
        if rel.startswith(("/", "~", "..")):
            raise ConfigError(f"{prop}.context: {context} is outside the project ({m.where.root})",
                              hint="devbox builds from the project's own directories only")
        out["path"] = rel
    rel_df = posixpath.relpath(dockerfile, context)
    if rel_df != "Dockerfile":
        out["dockerfile"] = rel_df
    args = build.get("args") or {}
    if isinstance(args, list):  # compose's ["K=V"]
        args = dict(a.split("=", 1) for a in args if "=" in a)
    if args:
        out["args"] = {k: (m.subst(f"{prop}.args.{k}", str(v)) or "") for k, v in args.items()}
    if build.get("target"):
        out["target"] = str(build["target"])
    for key in build:
        if key not in ("context", "dockerfile", "args", "target"):
            m.report.ignored.append((f"{prop}.{key}", "devbox's builds use the engine's own cache and options"))
    m.report.mapped.append((prop, ", ".join(f"{k} {v}" for k, v in out.items())))
    return out


def mount_spec(spec: str) -> dict[str, str]:
    """``source=X,target=Y,type=bind,readonly`` (docker's --mount syntax)."""
    out: dict[str, str] = {}
    for part in spec.split(","):
        key, eq, value = part.partition("=")
        key = {"src": "source", "destination": "target", "dst": "target", "ro": "readonly"}.get(key.strip(), key.strip())
        out[key] = value.strip() if eq else "true"
    return out


def map_mount(m: Mapper, prop: str, spec: object, svc: dict[str, Any]) -> None:
    if isinstance(spec, str):
        text = m.subst(prop, spec)
        if text is None:
            return
        fields = mount_spec(text)
    elif isinstance(spec, dict):
        fields = {k: str(v) for k, v in spec.items()}
        for key in ("source", "target"):
            if key in fields:
                found = m.subst(prop, fields[key])
                if found is None:
                    return
                fields[key] = found
    else:
        m.report.refused.append((prop, "not a string or an object"))
        return
    kind, target = fields.get("type", "volume"), fields.get("target")
    read_only = fields.get("readonly", fields.get("read_only", "false")).lower() in ("true", "1")
    if not target:
        m.report.refused.append((prop, "no target"))
        return
    if kind == "bind":
        mount = m.bind(prop, fields.get("source", ""), target, read_only)
        if mount is not None:
            svc.setdefault("mounts", []).append(mount)
    elif kind == "volume":
        if not fields.get("source"):
            m.report.refused.append((prop, f"an anonymous volume at {target}: name it (source=NAME)"))
            return
        name = m.volume_name(fields["source"])
        svc.setdefault("volumes", []).append(f"{name}:{target}" + (":ro" if read_only else ""))
        m.report.mapped.append((prop, f"volume {name} -> {target} (devbox-PROJECT-{name})"))
    else:
        m.report.refused.append((prop, f"type {kind}: devbox profiles have bind mounts and named volumes only"))


_ORDER = ("image", "build", "command", "entrypoint", "interactive", "working_dir", "user", "workdir", "env", "ports", "mounts",
          "volumes", "depends_on", "healthcheck", "post_create", "post_start", "generated_env", "terminal", "web_port")


def ordered(svc: dict[str, Any]) -> dict[str, Any]:
    """A stable key order, so an import written twice is the same file."""
    return {k: svc[k] for k in _ORDER if k in svc} | {k: v for k, v in svc.items() if k not in _ORDER}
