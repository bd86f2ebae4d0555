"""A devcontainer.json's ``dockerComposeFile`` -> profile tables, for compose files within what
``devbox export compose`` writes: services with images or builds, env, ports, bind mounts and named
volumes, depends_on with health conditions, healthchecks, users.  Anything else is refused or
ignored by name, with the reason (pure).
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Mapping
from typing import Any

from devbox.devcontainer.mapper import KEEP_RUNNING, Mapper, map_build, map_common, map_workspace, ordered
from devbox.errors import ConfigError

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}

# --- dockerComposeFile ------------------------------------------------------------------------------

_COMPOSE_IGNORED = {
    "init": "devbox always runs an init process",
    "container_name": "devbox names its containers",
    "hostname": "the service name is the host name",
    "restart": "devbox up starts the stack",
    "labels": "devbox labels its containers",
    "networks": "devbox puts a stack on one network of its own",
}


def from_compose(m: Mapper, doc: Mapping[str, Any], compose: Mapping[str, Any], compose_dir: str) -> tuple[dict[str, dict[str, Any]], str]:
    main = str(doc.get("service") or "")
    services: Mapping[str, Any] = compose.get("services") or {}
    if main not in services:
        raise ConfigError(f"service: '{main}' is not a service of the compose file", hint="known: " + ", ".join(services))
    wanted = [main] + [s for s in (doc.get("runServices") or services) if s != main]
    m.report.mapped.append(("dockerComposeFile", f"services {', '.join(wanted)}"))
    for key in compose:
        if key not in ("version", "services", "volumes"):
            m.report.refused.append((f"compose: {key}", "devbox stacks have services and named volumes only"))
    # the key, not a `name:` (devbox scopes volume names by project itself: devbox-PROJECT-KEY)
    volume_names = {k: m.volume_name(k) for k in compose.get("volumes") or {}}
    workdirs: set[str] = set()
    out: dict[str, dict[str, Any]] = {}
    for name in wanted:
        if name not in services:
            raise ConfigError(f"runServices: '{name}' is not a service of the compose file")
        svc, targets = _compose_service(m, name, services[name] or {}, compose_dir, volume_names)
        workdirs |= targets
        out[name] = svc
    if len(workdirs) > 1:
        raise ConfigError(f"the compose file mounts the project at {' and '.join(sorted(workdirs))}",
                          hint="devbox mounts the project at one path in every service")
    # the compose file mounts the project; workspaceFolder only says where the tools start
    target, folder = map_workspace(m, {k: v for k, v in doc.items() if k != "workspaceMount"}, next(iter(workdirs), "/workspace"))
    target = next(iter(workdirs), target)
    main_svc = out[main]
    if "working_dir" not in main_svc and "workspaceFolder" in doc:
        main_svc["working_dir"] = folder
    if doc.get("overrideCommand") is True:
        main_svc["command"] = KEEP_RUNNING
        m.report.mapped.append(("overrideCommand", "command = [\"sleep\", \"infinity\"] for the main service"))
    map_common(m, doc, main_svc, main)
    for key in ("image", "build", "runArgs", "appPort"):
        if key in doc:
            m.report.ignored.append((key, "the compose file says how its services run"))
    return {n: ordered(s) for n, s in out.items()}, target


def _compose_service(m: Mapper, name: str, c: Mapping[str, Any], base: str,
                     volume_names: Mapping[str, str]) -> tuple[dict[str, Any], set[str]]:
    svc: dict[str, Any] = {}
    prefix = f"services.{name}"
    workdirs: set[str] = set()
    if c.get("build"):
        build = c["build"] if isinstance(c["build"], dict) else {"context": c["build"]}
        svc["build"] = map_build(m, f"{prefix}.build", build, base)
        if c.get("image"):
            m.report.ignored.append((f"{prefix}.image", "devbox tags its builds by their content"))
    elif c.get("image"):
        svc["image"] = str(c["image"])
    else:
        raise ConfigError(f"{prefix}: needs 'image' or 'build'")
    for key in ("command", "entrypoint"):
        if key in c:
            svc[key] = shlex.split(c[key]) if isinstance(c[key], str) else [str(a) for a in c[key]]
    env = c.get("environment") or {}
    if isinstance(env, list):
        listed = {}
        for item in env:
            key, eq, value = str(item).partition("=")
            if eq:
                listed[key] = value
            else:
                m.report.ignored.append((f"{prefix}.environment", f"{key}: taken from the host's environment by compose"))
        env = listed
    if env:
        svc["env"] = {k: "" if v is None else str(v) for k, v in env.items()}
    extension = c.get("x-devbox")
    if isinstance(extension, Mapping):  # what devbox export wrote: a web IDE's login, terminal and URL
        for key in ("generated_env", "terminal", "web_port"):
            if key in extension:
                svc[key] = extension[key]
        m.report.mapped.append((f"{prefix}.x-devbox", ", ".join(k for k in extension)))
    ports = [p for i, spec in enumerate(c.get("ports") or []) if (p := m.port(f"{prefix}.ports[{i}]", spec))]
    if ports:
        svc["ports"] = ports
    for i, vol in enumerate(c.get("volumes") or []):
        prop = f"{prefix}.volumes[{i}]"
        if isinstance(vol, str):
            parts = vol.split(":")
            if len(parts) == 1:
                m.report.refused.append((prop, f"an anonymous volume at {vol}: name it"))
                continue
            kind = "bind" if parts[0].startswith(("/", ".", "~", "$")) else "volume"
            spec = {"type": kind, "source": parts[0], "target": parts[1], "read_only": "ro" in parts[2:]}
        elif isinstance(vol, dict):
            spec = dict(vol)
        else:
            m.report.refused.append((prop, "not a string or a mapping"))
            continue
        source, target = str(spec.get("source", "")), str(spec.get("target", ""))
        if spec.get("type") == "bind" and m.local(source, base) == "." and not spec.get("read_only"):
            workdirs.add(target)
            continue
        if spec.get("type") == "bind":
            mount = m.bind(prop, posixpath.join(base, source) if not source.startswith("~") else source.replace("~", m.where.home, 1),
                           target, bool(spec.get("read_only")))
            if mount is not None:
                svc.setdefault("mounts", []).append(mount)
        elif spec.get("type") == "volume":
            short = volume_names.get(source) or m.volume_name(source)
            svc.setdefault("volumes", []).append(f"{short}:{target}" + (":ro" if spec.get("read_only") else ""))
        else:
            m.report.refused.append((prop, f"type {spec.get('type')}: devbox has bind mounts and named volumes only"))
    if not workdirs:
        svc["workdir"] = False
    deps = c.get("depends_on") or {}
    if isinstance(deps, list):
        deps = {d: {"condition": "service_started"} for d in deps}
    if deps:
        conditions = {"service_started": "started", "service_healthy": "healthy"}
        svc["depends_on"] = {}
        for dep, spec in deps.items():
            cond = (spec or {}).get("condition", "service_started")
            if cond not in conditions:
                m.report.refused.append((f"{prefix}.depends_on.{dep}", f"condition {cond}: devbox waits for started or healthy"))
                continue
            svc["depends_on"][dep] = conditions[cond]
    if isinstance(c.get("healthcheck"), dict) and not c["healthcheck"].get("disable"):
        h = c["healthcheck"]
        test = h.get("test")
        health: dict[str, Any] = {"test": ["CMD-SHELL", test] if isinstance(test, str) else list(test or [])}
        for key in ("interval", "timeout", "start_period"):
            if key in h:
                health[key] = _seconds(str(h[key]))
        if "retries" in h:
            health["retries"] = int(h["retries"])
        svc["healthcheck"] = health
    if c.get("stdin_open") and c.get("tty"):
        svc["interactive"] = True
    for key in ("working_dir", "user"):
        if c.get(key):
            svc[key] = str(c[key])
    for key, what in (("userns_mode", "the host's user namespace"), ("network_mode", "host networking"), ("pid_mode", "the host's PIDs")):
        if c.get(key) == "host":
            m.report.refused.append((f"{prefix}.{key}", f"{what} turns off the remap's isolation: say it in the profile by hand, "
                                                        "with userns_mode = \"host\" and a userns_reason"))
        elif c.get(key):
            m.report.ignored.append((f"{prefix}.{key}", f"{c[key]}: devbox puts services on the stack's network"))
    if c.get("privileged"):
        m.report.refused.append((f"{prefix}.privileged", "devbox never runs privileged containers"))
    handled = {"build", "image", "command", "entrypoint", "environment", "ports", "volumes", "depends_on", "healthcheck",
               "stdin_open", "tty", "working_dir", "user", "userns_mode", "network_mode", "pid_mode", "privileged"}
    for key in c:
        if key in _COMPOSE_IGNORED:
            m.report.ignored.append((f"{prefix}.{key}", _COMPOSE_IGNORED[key]))
        elif key not in handled:
            m.report.refused.append((f"{prefix}.{key}", "not something a devbox profile expresses"))
    return svc, workdirs


def _seconds(text: str) -> float:
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"'{text}' is not a duration (like 1s, 500ms, 1m30s)") from None
    return sum(float(n) * _UNITS[u] for n, u in parts)


