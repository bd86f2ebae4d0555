"""devcontainer.json (and the compose file it names) -> profile tables, with what was mapped, refused, ignored.

Pure: the files' data comes in parsed, paths are strings, and the one question about the host
(may this directory be bind-mounted?) is asked through ``Where.refuse_bind``, which the command
answers with :func:`devbox.config.resolve.check_bind_source`, the refusal ``up`` itself applies.

The tables are what a profile file holds, so the written profile is checked by the same schema as
any other; nothing here decides what ``up`` does.  The README ("Coming from Dev Containers / Compose") has the property table.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any

from devbox.devcontainer.compose_import import from_compose
from devbox.devcontainer.mapper import (
    DEFAULT_SERVICE,
    KEEP_RUNNING,
    Decisions,
    Imported,
    Mapper,
    Where,
    map_build,
    map_common,
    map_mount,
    map_workspace,
    ordered,
)
from devbox.errors import ConfigError

# --- devcontainer.json ------------------------------------------------------------------------------

_IGNORED = {
    "$schema": "the file's own schema",
    "customizations": "editor settings and extensions (devbox reads only customizations.devbox)",
    "hostRequirements": "devbox runs on the machine it is on",
    "shutdownAction": "devbox down stops the stack",
    "waitFor": "up waits for every lifecycle command",
    "userEnvProbe": "devbox sets the environment from the file",
    "portsAttributes": "editor display settings for ports",
    "otherPortsAttributes": "editor display settings for ports",
    "postAttachCommand": "devbox has no attach hook: run it from the editor",
    "overrideFeatureInstallOrder": "features are refused",
    "init": "devbox always runs an init process as PID 1",
    "updateRemoteUserUID": "not needed: the remap, or an idmapped view per service, makes the files the user writes yours "
                           "without changing the image's uid",
    "mounts": "",  # handled
}

_HANDLED = {"name", "image", "build", "dockerFile", "dockerfile", "context", "workspaceFolder", "workspaceMount", "mounts",
            "containerEnv", "remoteEnv", "forwardPorts", "appPort", "onCreateCommand", "updateContentCommand",
            "postCreateCommand", "postStartCommand", "overrideCommand", "runArgs", "remoteUser", "containerUser",
            "features", "dockerComposeFile", "service", "runServices", "initializeCommand", "privileged", "capAdd",
            "securityOpt"}



def import_devcontainer(doc: Mapping[str, Any], where: Where, project: str, *,
                        compose: Mapping[str, Any] | None = None, compose_dir: str | None = None) -> Imported:
    """Map ``doc`` (a parsed devcontainer.json; ``compose`` the file its ``dockerComposeFile`` names,
    parsed, in ``compose_dir``) onto profile service tables."""
    report = Decisions()
    m = Mapper(where, report, project)
    custom = (doc.get("customizations") or {}).get("devbox") or {}
    description = str(doc.get("name") or f"imported from {posixpath.basename(where.config_dir)}")
    if "name" in doc:
        report.mapped.append(("name", f"the profile's description: {description}"))

    for key in doc:
        if key in _IGNORED and _IGNORED[key]:
            report.ignored.append((key, _IGNORED[key]))
        elif key not in _HANDLED and key not in _IGNORED:
            report.ignored.append((key, "not a devcontainer.json property devbox knows"))
    for feature in doc.get("features") or {}:
        report.refused.append(("features", f"{feature}: features are installed from an OCI registry at build time; "
                                           "devbox does not fetch them — add the tools to a Dockerfile (RUN apt-get install ...)"))
    if doc.get("initializeCommand"):
        report.refused.append(("initializeCommand", "it runs on the host: devbox never runs a project file's commands outside a container"))
    if doc.get("privileged"):
        report.refused.append(("privileged", "devbox never runs privileged containers"))
    for key in ("capAdd", "securityOpt"):
        if doc.get(key):
            report.refused.append((key, f"{doc[key]}: devbox profiles grant no extra capabilities or security options"))

    if "dockerComposeFile" in doc:
        if compose is None or compose_dir is None:
            raise ConfigError("dockerComposeFile: the compose file was not read")
        services, workdir = from_compose(m, doc, compose, compose_dir)
    else:
        services, workdir = _single(m, doc, custom)
    return Imported(description=description, workdir=workdir, services=services, report=report)


def _single(m: Mapper, doc: Mapping[str, Any], custom: Mapping[str, Any]) -> tuple[dict[str, dict[str, Any]], str]:
    name = str(custom.get("service") or DEFAULT_SERVICE)
    svc: dict[str, Any] = {}
    workdir, folder = map_workspace(m, doc, f"/workspaces/{posixpath.basename(m.where.root)}")
    build = doc.get("build") or ({"dockerfile": doc.get("dockerFile") or doc.get("dockerfile"), "context": doc.get("context", ".")}
                                 if doc.get("dockerFile") or doc.get("dockerfile") else None)
    if build:
        svc["build"] = map_build(m, "build", build, m.where.config_dir)
    elif doc.get("image"):
        svc["image"] = str(doc["image"])
        m.report.mapped.append(("image", svc["image"]))
    else:
        raise ConfigError("needs 'image', 'build' or 'dockerComposeFile'", hint="devbox runs what the file builds or names")
    if "command" in custom:
        svc["command"] = list(custom["command"])
    elif doc.get("overrideCommand", True):
        svc["command"] = KEEP_RUNNING
        m.report.mapped.append(("overrideCommand", "command = [\"sleep\", \"infinity\"]: the container stays up for your tools"))
    else:
        m.report.mapped.append(("overrideCommand", "false: the image's own command runs"))
    if custom.get("interactive"):
        svc["interactive"] = True
    svc["working_dir"] = folder
    map_common(m, doc, svc, name)
    for arg_prop, item in _run_args(m, doc.get("runArgs") or []):
        _apply_run_arg(m, arg_prop, item, svc)
    return {name: ordered(svc)}, workdir


# --- runArgs: the docker run options a profile can say ------------------------------------------

_VALUE_FLAGS = {"-e", "--env", "-p", "--publish", "-v", "--volume", "--mount", "-u", "--user", "-w", "--workdir", "--name",
                "--hostname", "-h", "--label", "-l", "--network", "--net", "--pid", "--ipc", "--uts", "--userns", "--cap-add",
                "--cap-drop", "--security-opt", "--device", "--env-file", "--add-host", "--shm-size", "--ulimit", "--cgroupns",
                "--sysctl", "--dns", "--memory", "-m", "--cpus", "--platform", "--entrypoint", "--group-add"}
_HOST_NS = {"--network": "host networking", "--net": "host networking", "--pid": "the host's PID namespace",
            "--ipc": "the host's IPC namespace", "--uts": "the host's UTS namespace", "--userns": "the host's user namespace"}


def _run_args(m: Mapper, args: list[Any]) -> list[tuple[str, tuple[str, str | None]]]:
    out: list[tuple[str, tuple[str, str | None]]] = []
    i = 0
    while i < len(args):
        prop, arg = f"runArgs[{i}]", str(args[i])
        flag, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        val: str | None = value if eq else None
        if val is None and flag in _VALUE_FLAGS and i + 1 < len(args):
            i += 1
            val = str(args[i])
        out.append((prop, (flag, val)))
        i += 1
    return out


def _apply_run_arg(m: Mapper, prop: str, item: tuple[str, str | None], svc: dict[str, Any]) -> None:
    flag, val = item
    shown = flag + (f" {val}" if val is not None else "")
    if flag in ("-e", "--env") and val and "=" in val:
        key, _, value = val.partition("=")
        svc.setdefault("env", {})[key] = value
        m.report.mapped.append((prop, f"{shown}: env {key}"))
    elif flag in ("-p", "--publish") and val:
        found = m.port(prop, val)
        if found:
            svc.setdefault("ports", []).append(found)
    elif flag in ("-v", "--volume") and val:
        parts = val.split(":")
        if len(parts) in (2, 3):
            if parts[0].startswith(("/", ".", "~", "$")):
                spec = {"type": "bind", "source": parts[0], "target": parts[1], "readonly": str(parts[2:] == ["ro"])}
            else:
                spec = {"type": "volume", "source": parts[0], "target": parts[1], "readonly": str(parts[2:] == ["ro"])}
            map_mount(m, prop, spec, svc)
        else:
            m.report.refused.append((prop, f"{shown}: not SOURCE:TARGET[:ro]"))
    elif flag == "--mount" and val:
        map_mount(m, prop, val, svc)
    elif flag in ("-u", "--user") and val:
        svc["user"] = val
        m.report.mapped.append((prop, f"{shown}: user"))
    elif flag in ("-w", "--workdir") and val:
        svc["working_dir"] = val
        m.report.mapped.append((prop, f"{shown}: working_dir"))
    elif flag == "--privileged":
        m.report.refused.append((prop, f"{shown}: devbox never runs privileged containers"))
    elif flag in _HOST_NS and val == "host":
        m.report.refused.append((prop, f"{shown}: {_HOST_NS[flag]} turns off the isolation that keeps your files yours "
                                       "(a profile can say it only with userns_mode = \"host\" and a written userns_reason)"))
    elif flag in ("--cap-add", "--security-opt", "--device", "--group-add", "--sysctl", "--cgroupns"):
        m.report.refused.append((prop, f"{shown}: devbox profiles grant no extra capabilities, devices or security options"))
    elif flag == "--init":
        m.report.ignored.append((prop, f"{shown}: devbox always runs an init process"))
    elif flag in ("--name", "--hostname", "-h", "--rm", "--label", "-l", "-i", "-t", "-it", "--interactive", "--tty",
                  "--network", "--net"):
        m.report.ignored.append((prop, f"{shown}: devbox names, labels and networks its containers itself"))
    else:
        m.report.refused.append((prop, f"{shown}: not something a devbox profile expresses"))


