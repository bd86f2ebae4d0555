"""TOML -> validated model.  Every error names the file, the key path and the line.

Layers, later wins:

1. the profile's ``extends`` chain, root first (``profiles/*.toml`` shipped,
   ``.devbox/profiles/*.toml`` of the project replacing a shipped file of the
   same name);
2. the project's ``devbox.toml``: work dirs, extra mounts and env for the
   services that mount the work dirs (``workdir = true``, the default), ports,
   and per-service overrides under ``[services.NAME]``.

Merging is per key: tables (``env``, ``build.args``, ``healthcheck``) merge
deeply, everything else (lists, strings, ``depends_on``) is replaced.  Each
layer is checked for unknown keys and types on its own, so an error points at
the file that holds the mistake.  tomllib gives no line numbers for keys; the
line is found by scanning the file text for the table header and the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import re
import shlex
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from devbox import paths
from devbox.core.hashing import image_tag
from devbox.core.model import (
    Build,
    Condition,
    DependsOn,
    Healthcheck,
    Mount,
    Port,
    Profile,
    Project,
    RemapPolicy,
    Service,
    WatchSettings,
    find_cycle,
    volume_name,
)
from devbox.errors import ConfigError
from devbox.host.user import resolve_user

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PROJECT_FILE = "devbox.toml"
PROJECT_PROFILES = Path(".devbox") / "profiles"
DEFAULT_PROFILE = "python"
DEFAULT_WORKDIR_TARGET = "/work"
DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")

KeyPath = tuple["str | int", ...]

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_VOLUME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# --- where things are: file, key path, line ----------------------------------


def format_path(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else json.dumps(part)
            out += f".{text}" if out else text
    return out


def _header_keys(line: str) -> tuple[str, ...] | None:
    stripped = line.strip()
    if not stripped.startswith("["):
        return None
    inner = stripped.lstrip("[").split("]", 1)[0]
    keys = re.findall(r'"((?:[^"\\]|\\.)*)"|\'([^\']*)\'|([A-Za-z0-9_-]+)', inner)
    return tuple(a or b or c for a, b, c in keys)


def find_line(text: str, path: Sequence[str | int]) -> int | None:
    """The 1-based line defining ``path`` in TOML ``text``, best effort.

    Finds the table header that is the longest prefix of ``path``, then each
    remaining key in turn (as ``key =``, a dotted ``key.``, or inside an
    inline table) within that table's section.
    """
    keys = [p for p in path if isinstance(p, str)]
    lines = text.splitlines()
    headers = [(i, h) for i, line in enumerate(lines) if (h := _header_keys(line)) is not None]
    best_len, start = 0, 0
    for i, h in headers:
        if len(h) > best_len and tuple(keys[: len(h)]) == h:
            best_len, start = len(h), i
    if best_len == 0:
        end = headers[0][0] if headers else len(lines)
        found: int | None = None
        search_from = 0
    else:
        end = next((i for i, _ in headers if i > start), len(lines))
        found = start
        search_from = start + 1
    for key in keys[best_len:]:
        pattern = re.compile(r'(?:^|[\s{,.])(?:"' + re.escape(key) + r'"|\'' + re.escape(key) + r"'|" + re.escape(key) + r")\s*[=.]")
        hit = next((i for i in range(search_from, end) if pattern.search(_strip_comment(lines[i]))), None)
        if hit is None:
            # ``services`` when the file only has ``[services.runtime]``: the first table below it.
            below = next((i for i, h in headers if len(h) > len(keys) and h[: len(keys)] == tuple(keys)), None)
            return below + 1 if below is not None else (None if found is None else found + 1)
        found, search_from = hit, hit
    return None if found is None else found + 1


def _strip_comment(line: str) -> str:
    # Good enough for locating keys: a '#' inside a string only hides text after it.
    return line.split("#", 1)[0] if '"' not in line and "'" not in line else line


@dataclasses.dataclass(frozen=True)
class Source:
    """One TOML file: its path (as shown to the user), its text and its parsed table."""

    path: Path
    text: str
    data: dict[str, Any]

    def error(self, keypath: Sequence[str | int], message: str, hint: str | None = None) -> ConfigError:
        line = find_line(self.text, keypath) if keypath else None
        where = f"{self.path}:{line}" if line else str(self.path)
        return ConfigError(message, where=where, hint=hint)


def read_toml(path: Path) -> Source:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", where=str(path)) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        where = f"{path}:{m.group(1)}" if m else str(path)
        raise ConfigError(f"invalid TOML: {exc}", where=where) from None
    return Source(path=path, text=text, data=data)


# --- type checks -------------------------------------------------------------


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date/time"


class _Checker:
    """Key and type checks for one source, raising located ConfigErrors."""

    def __init__(self, src: Source) -> None:
        self.src = src

    def fail(self, path: KeyPath, message: str, hint: str | None = None) -> ConfigError:
        return self.src.error(path, message, hint)

    def wrong_type(self, path: KeyPath, expected: str, value: object) -> ConfigError:
        return self.fail(path, f"{format_path(path)} must be {expected}, not {_type_name(value)}")

    def keys(self, path: KeyPath, table: Mapping[str, Any], allowed: Iterable[str]) -> None:
        allowed = list(allowed)
        for key in table:
            if key in allowed:
                continue
            where = f"in {format_path(path)}" if path else "at the top level"
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else "expected one of: " + ", ".join(sorted(allowed))
            raise self.fail((*path, key), f"unknown key '{key}' {where}", hint)

    def table(self, path: KeyPath, value: object) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.wrong_type(path, "a table", value)
        return value

    def string(self, path: KeyPath, value: object, *, nonempty: bool = True) -> str:
        if not isinstance(value, str):
            raise self.wrong_type(path, "a string", value)
        if nonempty and not value.strip():
            raise self.fail(path, f"{format_path(path)} must not be empty")
        return value

    def boolean(self, path: KeyPath, value: object) -> bool:
        if not isinstance(value, bool):
            raise self.wrong_type(path, "a boolean", value)
        return value

    def integer(self, path: KeyPath, value: object, lo: int | None = None, hi: int | None = None) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.wrong_type(path, "an integer", value)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise self.fail(path, f"{format_path(path)} must be between {lo} and {hi}, not {value}")
        return value

    def number(self, path: KeyPath, value: object, *, positive: bool = False) -> float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise self.wrong_type(path, "a number", value)
        if value < 0 or (positive and value == 0):
            raise self.fail(path, f"{format_path(path)} must be {'positive' if positive else '>= 0'}, not {value}")
        return float(value)

    def array(self, path: KeyPath, value: object) -> list[Any]:
        if not isinstance(value, list):
            raise self.wrong_type(path, "an array", value)
        return value

    def strings(self, path: KeyPath, value: object) -> list[str]:
        items = self.array(path, value)
        return [self.string((*path, i), v, nonempty=False) for i, v in enumerate(items)]

    def argv(self, path: KeyPath, value: object) -> list[str]:
        """A command: an argument list, or a string split like a shell would (never run by one)."""
        if isinstance(value, str):
            try:
                return shlex.split(value)
            except ValueError as exc:
                raise self.fail(path, f"{format_path(path)}: cannot split command: {exc}") from None
        if isinstance(value, list):
            return self.strings(path, value)
        raise self.wrong_type(path, "a string or an array of strings", value)

    def env(self, path: KeyPath, value: object) -> dict[str, str]:
        table = self.table(path, value)
        out: dict[str, str] = {}
        for key, val in table.items():
            if not _ENV_RE.match(key):
                raise self.fail((*path, key), f"{format_path((*path, key))}: '{key}' is not a valid environment variable name")
            if isinstance(val, bool) or not isinstance(val, (str, int, float)):
                raise self.wrong_type((*path, key), "a string", val)
            out[key] = str(val)
        return out


# --- services: per-layer check + normalisation -------------------------------

SERVICE_KEYS = (
    "image",
    "build",
    "command",
    "entrypoint",
    "env",
    "ports",
    "volumes",
    "mounts",
    "depends_on",
    "healthcheck",
    "interactive",
    "working_dir",
    "user",
    "userns_mode",
    "userns_reason",
    "network_mode",
    "pid_mode",
    "workdir",
    "enabled",
    "privileged",
)
BUILD_KEYS = ("context", "args", "dockerfile")
HEALTH_KEYS = ("test", "interval", "timeout", "retries", "start_period")
MOUNT_KEYS = ("source", "target", "read_only", "allow_outside_project")
VOLUME_KEYS = ("name", "target", "read_only")
PORT_KEYS = ("container", "host", "host_ip", "protocol")
CONDITIONS: tuple[Condition, ...] = ("started", "healthy")


def _check_service(ck: _Checker, path: KeyPath, raw: object) -> dict[str, Any]:
    """Check one layer's table for a service; return it normalised (so layers merge uniformly)."""
    table = ck.table(path, raw)
    ck.keys(path, table, SERVICE_KEYS)
    out: dict[str, Any] = {}
    for key, value in table.items():
        p = (*path, key)
        if key == "image":
            ref = ck.string(p, value)
            if any(c.isspace() for c in ref):
                raise ck.fail(p, f"{format_path(p)}: '{ref}' is not an image reference")
            out[key] = ref
        elif key == "build":
            out[key] = _check_build(ck, p, value)
        elif key in ("command", "entrypoint"):
            out[key] = ck.argv(p, value)
        elif key == "env":
            out[key] = ck.env(p, value)
        elif key == "ports":
            out[key] = [_check_port(ck, (*p, i), v) for i, v in enumerate(ck.array(p, value))]
        elif key == "volumes":
            out[key] = [_check_volume(ck, (*p, i), v) for i, v in enumerate(ck.array(p, value))]
        elif key == "mounts":
            out[key] = [_check_mount(ck, (*p, i), v) for i, v in enumerate(ck.array(p, value))]
        elif key == "depends_on":
            out[key] = _check_depends(ck, p, value)
        elif key == "healthcheck":
            out[key] = _check_health(ck, p, value)
        elif key in ("interactive", "workdir", "enabled"):
            out[key] = ck.boolean(p, value)
        elif key == "privileged":
            if ck.boolean(p, value):
                raise ck.fail(p, f"{format_path(p)}: devbox never runs privileged containers", "remove this key")
        elif key in ("working_dir",):
            wd = ck.string(p, value)
            if not wd.startswith("/"):
                raise ck.fail(p, f"{format_path(p)} must be an absolute path inside the container, not '{wd}'")
            out[key] = wd
        elif key in ("user", "userns_reason"):
            out[key] = ck.string(p, value)
        elif key in ("userns_mode", "network_mode", "pid_mode"):
            mode = ck.string(p, value)
            allowed = ("host",) if key != "network_mode" else ("host", "bridge")
            if mode not in allowed:
                raise ck.fail(p, f"{format_path(p)} must be " + " or ".join(f"'{a}'" for a in allowed) + f", not '{mode}'")
            out[key] = mode
    # A layer that names an image replaces an inherited build, and vice versa.
    if "image" in out and "build" in out:
        raise ck.fail((*path, "build"), f"{format_path(path)} has both 'image' and 'build'", "keep one")
    return out


def _check_build(ck: _Checker, path: KeyPath, value: object) -> dict[str, Any]:
    if isinstance(value, str):
        value = {"context": value}
    table = ck.table(path, value) if isinstance(value, dict) else None
    if table is None:
        raise ck.wrong_type(path, "a string or a table", value)
    ck.keys(path, table, BUILD_KEYS)
    out: dict[str, Any] = {}
    if "context" in table:
        ctx = ck.string((*path, "context"), table["context"])
        if not _NAME_RE.match(ctx):
            raise ck.fail((*path, "context"), f"{format_path((*path, 'context'))}: '{ctx}' is not a directory name under images/")
        out["context"] = ctx
    if "args" in table:
        out["args"] = ck.env((*path, "args"), table["args"])
    if "dockerfile" in table:
        out["dockerfile"] = ck.string((*path, "dockerfile"), table["dockerfile"])
    return out


def _check_health(ck: _Checker, path: KeyPath, value: object) -> dict[str, Any]:
    table = ck.table(path, value)
    ck.keys(path, table, HEALTH_KEYS)
    out: dict[str, Any] = {}
    for key, val in table.items():
        p = (*path, key)
        if key == "test":
            if isinstance(val, str):
                out[key] = ["CMD-SHELL", ck.string(p, val)]
            else:
                argv = ck.strings(p, val)
                if not argv:
                    raise ck.fail(p, f"{format_path(p)} must not be empty")
                out[key] = argv if argv[0] in ("CMD", "CMD-SHELL") else ["CMD", *argv]
        elif key == "retries":
            out[key] = ck.integer(p, val, 1, 10_000)
        else:
            out[key] = ck.number(p, val, positive=key != "start_period")
    return out


_PORT_RE = re.compile(r"^(?:(?P<ip>\[[0-9a-fA-F:]+\]|[0-9.]+):)?(?:(?P<host>\d+):)?(?P<container>\d+)(?:/(?P<proto>tcp|udp))?$")


def _check_port(ck: _Checker, path: KeyPath, value: object) -> dict[str, Any]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str):
        m = _PORT_RE.match(value)
        if not m:
            raise ck.fail(path, f"{format_path(path)}: '{value}' is not a port ([IP:]HOST:CONTAINER[/tcp|udp])")
        table: dict[str, Any] = {"container": int(m["container"])}
        if m["host"]:
            table["host"] = int(m["host"])
        if m["ip"]:
            table["host_ip"] = m["ip"].strip("[]")
        if m["proto"]:
            table["protocol"] = m["proto"]
    elif isinstance(value, dict):
        table = value
        ck.keys(path, table, PORT_KEYS)
        if "container" not in table:
            raise ck.fail(path, f"{format_path(path)} needs 'container'")
    else:
        raise ck.wrong_type(path, "a string or a table", value)
    container = ck.integer((*path, "container"), table["container"], 1, 65535)
    host = ck.integer((*path, "host"), table.get("host", container), 1, 65535)
    host_ip = ck.string((*path, "host_ip"), table.get("host_ip", "127.0.0.1"))
    proto = ck.string((*path, "protocol"), table.get("protocol", "tcp"))
    if proto not in ("tcp", "udp"):
        raise ck.fail((*path, "protocol"), f"{format_path((*path, 'protocol'))} must be 'tcp' or 'udp', not '{proto}'")
    return {"container": container, "host": host, "host_ip": host_ip, "protocol": proto}


def _check_target(ck: _Checker, path: KeyPath, target: object) -> str:
    text = ck.string(path, target)
    if not text.startswith("/") or text == "/":
        raise ck.fail(path, f"{format_path(path)} must be an absolute path below / inside the container, not '{text}'")
    return text


def _mount_spec(ck: _Checker, path: KeyPath, value: object, first: str, keys: Sequence[str]) -> dict[str, Any]:
    """``FIRST:TARGET[:ro]`` or a table with ``first`` and ``target``, as a table."""
    if isinstance(value, str):
        parts = value.split(":")
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
            raise ck.fail(path, f"{format_path(path)}: '{value}' is not {first.upper()}:TARGET[:ro]")
        return {first: parts[0], "target": parts[1], "read_only": parts[2:] == ["ro"]}
    if isinstance(value, dict):
        ck.keys(path, value, keys)
        for need in (first, "target"):
            if need not in value:
                raise ck.fail(path, f"{format_path(path)} needs '{need}'")
        return value
    raise ck.wrong_type(path, "a string or a table", value)


def _check_volume(ck: _Checker, path: KeyPath, value: object) -> dict[str, Any]:
    table = _mount_spec(ck, path, value, "name", VOLUME_KEYS)
    name = ck.string((*path, "name"), table["name"])
    if not _VOLUME_RE.match(name):
        raise ck.fail((*path, "name"), f"{format_path((*path, 'name'))}: '{name}' is not a volume name (letters, digits, _ . -)")
    return {
        "name": name,
        "target": _check_target(ck, (*path, "target"), table["target"]),
        "read_only": ck.boolean((*path, "read_only"), table.get("read_only", False)),
    }


def _check_mount(ck: _Checker, path: KeyPath, value: object) -> dict[str, Any]:
    table = _mount_spec(ck, path, value, "source", MOUNT_KEYS)
    return {
        "source": ck.string((*path, "source"), table["source"]),
        "target": _check_target(ck, (*path, "target"), table["target"]),
        "read_only": ck.boolean((*path, "read_only"), table.get("read_only", False)),
        "allow_outside_project": ck.boolean((*path, "allow_outside_project"), table.get("allow_outside_project", False)),
    }


def _check_depends(ck: _Checker, path: KeyPath, value: object) -> dict[str, str]:
    if isinstance(value, list):
        return {name: "started" for name in ck.strings(path, value)}
    table = ck.table(path, value) if isinstance(value, dict) else None
    if table is None:
        raise ck.wrong_type(path, "an array or a table", value)
    out: dict[str, str] = {}
    for name, cond in table.items():
        p = (*path, name)
        if isinstance(cond, dict):
            ck.keys(p, cond, ("condition",))
            cond = cond.get("condition", "started")
        text = ck.string(p, cond)
        if text not in CONDITIONS:
            raise ck.fail(p, f"{format_path(p)}: unknown condition '{text}'", "expected 'started' or 'healthy'")
        out[name] = text
    return out


# --- merging -----------------------------------------------------------------

_DEEP = ("env", "healthcheck", "build")


@dataclasses.dataclass
class _Layered:
    """A service's merged table and, per key, the source and key path that set it last."""

    data: dict[str, Any] = dataclasses.field(default_factory=dict)
    origin: dict[str, tuple[Source, KeyPath]] = dataclasses.field(default_factory=dict)

    def apply(self, src: Source, path: KeyPath, layer: Mapping[str, Any]) -> None:
        for key, value in layer.items():
            if key == "image":
                self.data.pop("build", None)
            if key == "build":
                self.data.pop("image", None)
            if key in _DEEP and isinstance(self.data.get(key), dict):
                self.data[key] = _deep_merge(self.data[key], value)
            else:
                self.data[key] = value
            self.origin[key] = (src, (*path, key))

    def fail(self, key: str, sub: KeyPath, message: str, hint: str | None = None) -> ConfigError:
        src, path = self.origin[key]
        return src.error((*path, *sub), message, hint)

    def path(self, key: str, *sub: str | int) -> str:
        return format_path((*self.origin[key][1], *sub))


def _deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


# --- profiles ----------------------------------------------------------------

PROFILE_KEYS = ("description", "extends", "services")


@dataclasses.dataclass(frozen=True)
class RawProfile:
    name: str
    src: Source
    description: str
    extends: str | None
    services: dict[str, dict[str, Any]]  # normalised per-layer tables


def load_raw_profile(path: Path) -> RawProfile:
    src = read_toml(path)
    ck = _Checker(src)
    data = src.data
    ck.keys((), data, PROFILE_KEYS)
    desc = ck.string(("description",), data.get("description", ""), nonempty=False)
    extends = ck.string(("extends",), data["extends"]) if "extends" in data else None
    services: dict[str, dict[str, Any]] = {}
    for name, raw in ck.table(("services",), data.get("services", {})).items():
        if not _NAME_RE.match(name):
            raise ck.fail(("services", name), f"services.{name}: '{name}' is not a service name (lowercase letters, digits, _ . -)")
        services[name] = _check_service(ck, ("services", name), raw)
    if not services and extends is None:
        raise ck.fail((), "a profile needs at least one service under [services.NAME]")
    return RawProfile(name=path.stem, src=src, description=desc, extends=extends, services=services)


def profile_files(shipped: Path, project_root: Path | None) -> dict[str, Path]:
    """Profile name -> file; a project's ``.devbox/profiles/NAME.toml`` replaces the shipped one."""
    found: dict[str, Path] = {}
    dirs = [shipped] + ([project_root / PROJECT_PROFILES] if project_root else [])
    for d in dirs:
        if d.is_dir():
            for f in sorted(d.glob("*.toml")):
                found[f.stem] = f
    return found


def suggest(name: str, choices: Iterable[str]) -> str:
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    return "known: " + ", ".join(choices) if choices else "none are defined"


def _extends_chain(name: str, raws: Mapping[str, RawProfile]) -> list[RawProfile]:
    """``name`` and its ancestors, root first."""
    chain: list[RawProfile] = []
    current = raws[name]
    while True:
        if any(r.name == current.name for r in chain):
            start = next(i for i, r in enumerate(chain) if r.name == current.name)
            cycle = " → ".join([r.name for r in chain[start:]] + [current.name])
            last = chain[-1]
            raise last.src.error(("extends",), f"extends cycle: {cycle}")
        chain.append(current)
        if current.extends is None:
            break
        if current.extends not in raws:
            raise current.src.error(("extends",), f"unknown profile '{current.extends}' in extends", suggest(current.extends, raws))
        current = raws[current.extends]
    return list(reversed(chain))


# --- the project file ----------------------------------------------------------

PROJECT_KEYS = ("name", "profile", "workdirs", "mounts", "env", "ports", "services", "remap", "watch")
REMAP_KEYS = ("policy",)
WATCH_KEYS = ("ignore", "allowed_gids", "rescan_interval")


@dataclasses.dataclass(frozen=True)
class _ProjectFile:
    src: Source
    name: str
    profile: str
    workdirs: list[dict[str, Any]]
    mounts: list[dict[str, Any]]
    env: dict[str, str]
    ports: dict[str, list[dict[str, Any]]]
    services: dict[str, dict[str, Any]]
    remap: RemapPolicy
    watch: WatchSettings


def project_slug(root: Path) -> str:
    """The default project name: the directory's name, lowercased, runs of other characters as ``-``."""
    return re.sub(r"[^a-z0-9_.-]+", "-", root.name.lower()).strip("-._") or "project"


def _read_project_file(root: Path, file: Path) -> _ProjectFile:
    src = read_toml(file)
    ck = _Checker(src)
    data = src.data
    ck.keys((), data, PROJECT_KEYS)
    name = ck.string(("name",), data.get("name", project_slug(root)))
    if not _NAME_RE.match(name):
        raise ck.fail(("name",), f"name: '{name}' is not a project name (lowercase letters, digits, _ . -)")
    profile = ck.string(("profile",), data.get("profile", DEFAULT_PROFILE))
    workdirs_raw = ck.array(("workdirs",), data.get("workdirs", [{"source": ".", "target": DEFAULT_WORKDIR_TARGET}]))
    workdirs = [_check_mount(ck, ("workdirs", i), v) for i, v in enumerate(workdirs_raw)]
    mounts = [_check_mount(ck, ("mounts", i), v) for i, v in enumerate(ck.array(("mounts",), data.get("mounts", [])))]
    env = ck.env(("env",), data.get("env", {}))
    ports: dict[str, list[dict[str, Any]]] = {}
    for svc, plist in ck.table(("ports",), data.get("ports", {})).items():
        ports[svc] = [_check_port(ck, ("ports", svc, i), v) for i, v in enumerate(ck.array(("ports", svc), plist))]
    services = {
        svc: _check_service(ck, ("services", svc), raw) for svc, raw in ck.table(("services",), data.get("services", {})).items()
    }
    remap_t = ck.table(("remap",), data.get("remap", {}))
    ck.keys(("remap",), remap_t, REMAP_KEYS)
    policy_text = ck.string(("remap", "policy"), remap_t.get("policy", "require"))
    try:
        policy = RemapPolicy(policy_text)
    except ValueError:
        raise ck.fail(
            ("remap", "policy"), f"remap.policy must be 'require', 'warn' or 'off', not '{policy_text}'"
        ) from None
    watch_t = ck.table(("watch",), data.get("watch", {}))
    ck.keys(("watch",), watch_t, WATCH_KEYS)
    defaults = WatchSettings()
    watch = WatchSettings(
        ignore=tuple(ck.strings(("watch", "ignore"), watch_t["ignore"])) if "ignore" in watch_t else defaults.ignore,
        allowed_gids=tuple(
            ck.integer(("watch", "allowed_gids", i), g, 0, 2**32 - 2)
            for i, g in enumerate(ck.array(("watch", "allowed_gids"), watch_t.get("allowed_gids", [])))
        ),
        rescan_interval_s=ck.number(("watch", "rescan_interval"), watch_t.get("rescan_interval", defaults.rescan_interval_s), positive=True),
    )
    return _ProjectFile(src, name, profile, workdirs, mounts, env, ports, services, policy, watch)


# --- bind-mount refusals -------------------------------------------------------


def _real(path: str | Path) -> Path:
    return Path(os.path.realpath(path))


def _within(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def check_bind_source(source: str, *, root: Path, home: Path, allow_outside_project: bool) -> tuple[Path, str | None]:
    """Resolve a bind source (relative to the project, ``~`` = home) and say why it is refused, if it is.

    Symlinks are resolved first, so a link inside the project cannot smuggle
    ``/etc`` in.  The first four refusals have no override.
    """
    expanded = str(home) + source[1:] if source == "~" or source.startswith("~/") else source
    real = _real(root / expanded)
    home_real = _real(home)
    if real == Path("/"):
        return real, "it is the host's whole filesystem"
    if _within(real, _real("/etc")) or _within(real, Path("/etc")):
        return real, "/etc holds the host's configuration (passwords, sudoers)"
    if _within(home_real, real):
        return real, f"it {'is' if real == home_real else 'contains'} your whole home directory ({home})"
    for sock in DOCKER_SOCKETS:
        for candidate in {Path(sock), _real(sock)}:
            if _within(candidate, real):
                return real, "the Docker socket gives root on the host"
    if not allow_outside_project and not _within(real, _real(root)):
        return real, f"it is outside the project ({root})"
    return real, None


# --- building services -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Ctx:
    root: Path
    home: Path
    images: Path
    project: str
    project_file: _ProjectFile | None


def _build_service(name: str, lay: _Layered, ctx: _Ctx, known_contexts: Sequence[str]) -> Service:
    d = lay.data
    build: Build | None = None
    if "build" in d:
        b = d["build"]
        if "context" not in b:
            raise lay.fail("build", (), f"{lay.path('build')} needs 'context' (a directory under images/)")
        context = b["context"]
        if context not in known_contexts:
            raise lay.fail("build", ("context",), f"{lay.path('build', 'context')}: no image '{context}' in {ctx.images}", suggest(context, known_contexts))
        build = _make_build(ctx.images / context, context, b.get("args", {}), b.get("dockerfile", "Dockerfile"))
        image = image_tag(build)
    elif "image" in d:
        image = d["image"]
    else:
        src, path = next(iter(lay.origin.values()))
        raise src.error(path[:-1], f"{format_path(path[:-1])} needs 'image' or 'build'")

    mounts: list[Mount] = []
    if d.get("workdir", True) and ctx.project_file is not None:
        pf = ctx.project_file
        for i, m in enumerate(pf.workdirs):
            mounts.append(_bind(m, ctx, pf.src, ("workdirs", i)))
        for i, m in enumerate(pf.mounts):
            mounts.append(_bind(m, ctx, pf.src, ("mounts", i)))
    if "mounts" in lay.origin:
        src, path = lay.origin["mounts"]
        for i, m in enumerate(d["mounts"]):
            mounts.append(_bind(m, ctx, src, (*path, i)))
    for v in d.get("volumes", []):
        mounts.append(Mount("volume", volume_name(ctx.project, v["name"]), v["target"], v["read_only"]))
    seen_targets: set[str] = set()
    for mount in mounts:
        if mount.target in seen_targets:
            key = "volumes" if mount.kind == "volume" else "mounts" if "mounts" in lay.origin else "volumes"
            raise lay.fail(key, (), f"services.{name}: two mounts target '{mount.target}'")
        seen_targets.add(mount.target)

    env: dict[str, str] = {}
    if d.get("workdir", True) and ctx.project_file is not None:
        env.update(ctx.project_file.env)
    env.update(d.get("env", {}))

    ports = [Port(p["container"], p["host"], p["host_ip"], p["protocol"]) for p in d.get("ports", [])]
    if ctx.project_file is not None:
        ports += [Port(p["container"], p["host"], p["host_ip"], p["protocol"]) for p in ctx.project_file.ports.get(name, [])]

    health = None
    if "healthcheck" in d:
        h = d["healthcheck"]
        if "test" not in h:
            raise lay.fail("healthcheck", (), f"{lay.path('healthcheck')} needs 'test'")
        # the defaults are Healthcheck's own: one home for them
        given = {"interval": "interval_s", "timeout": "timeout_s", "retries": "retries", "start_period": "start_period_s"}
        health = Healthcheck(test=tuple(h["test"]), **{field: h[key] for key, field in given.items() if key in h})

    userns = d.get("userns_mode")
    if userns == "host" and not d.get("userns_reason"):
        raise lay.fail(
            "userns_mode", (), f"{lay.path('userns_mode')}: 'host' turns off the user-namespace remap for this container", 'add userns_reason = "why it needs host namespaces"'
        )
    for key in ("network_mode", "pid_mode"):
        if d.get(key) == "host" and userns != "host":
            raise lay.fail(key, (), f"{lay.path(key)}: host namespaces need userns_mode = \"host\" (with a userns_reason)")

    return Service(
        name=name,
        image=image,
        build=build,
        command=tuple(d["command"]) if "command" in d else None,
        entrypoint=tuple(d["entrypoint"]) if "entrypoint" in d else None,
        env=tuple(sorted(env.items())),
        ports=tuple(ports),
        mounts=tuple(mounts),
        depends_on=tuple(DependsOn(s, cast(Condition, c)) for s, c in sorted(d.get("depends_on", {}).items())),
        healthcheck=health,
        interactive=d.get("interactive", False),
        working_dir=d.get("working_dir"),
        user=d.get("user"),
        userns_mode=userns,
        userns_reason=d.get("userns_reason"),
        network_mode=d.get("network_mode"),
        pid_mode=d.get("pid_mode"),
    )


def _bind(m: Mapping[str, Any], ctx: _Ctx, src: Source, keypath: KeyPath) -> Mount:
    real, reason = check_bind_source(m["source"], root=ctx.root, home=ctx.home, allow_outside_project=m["allow_outside_project"])
    if reason:
        hint = "set allow_outside_project = true on this mount if that is intended" if reason.startswith("it is outside") else None
        raise src.error(keypath, f"{format_path(keypath)}: refusing to bind-mount {real}: {reason}", hint)
    return Mount("bind", str(real), m["target"], m["read_only"], m["allow_outside_project"])


def _make_build(context_dir: Path, context: str, args: Mapping[str, str], dockerfile: str) -> Build:
    return Build(
        context=context,
        context_dir=str(context_dir),
        args=tuple(sorted(args.items())),
        dockerfile=dockerfile,
        digest=context_digest(context_dir),
    )


def context_digest(context_dir: Path) -> str:
    """sha256 over the build context's files (``certs/`` excluded: CA bundles must not change image tags)."""
    h = hashlib.sha256()
    for f in sorted(p for p in context_dir.rglob("*") if p.is_file()):
        rel = f.relative_to(context_dir).as_posix()
        if rel.startswith("certs/"):
            continue
        h.update(rel.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


# --- the whole thing -------------------------------------------------------------


def _resolve_profile(raw: RawProfile, raws: Mapping[str, RawProfile], ctx: _Ctx, known_contexts: Sequence[str]) -> Profile:
    layered: dict[str, _Layered] = {}
    for layer in _extends_chain(raw.name, raws):
        for svc, table in layer.services.items():
            layered.setdefault(svc, _Layered()).apply(layer.src, ("services", svc), table)
    pf = ctx.project_file
    if pf is not None:
        for svc, table in pf.services.items():
            if svc in layered:
                layered[svc].apply(pf.src, ("services", svc), table)
    enabled = {n: lay for n, lay in layered.items() if lay.data.get("enabled", True)}
    services: dict[str, Service] = {n: _build_service(n, lay, ctx, known_contexts) for n, lay in sorted(enabled.items())}
    if not services:
        raise raw.src.error((), f"profile '{raw.name}' has no enabled services")

    interactive = [n for n, s in services.items() if s.interactive]
    if len(interactive) > 1:
        raise layered[interactive[1]].fail("interactive", (), f"services.{interactive[1]}.interactive: only one service can be interactive (already: {interactive[0]})")
    for n, service in services.items():
        lay = layered[n]
        for dep in service.depends_on:
            if dep.service == n:
                raise lay.fail("depends_on", (), f"{lay.path('depends_on')}: service '{n}' depends on itself")
            if dep.service not in services:
                if dep.service in layered:
                    raise lay.fail("depends_on", (dep.service,), f"{lay.path('depends_on')}: service '{dep.service}' is disabled in profile '{raw.name}'")
                raise lay.fail("depends_on", (dep.service,), f"{lay.path('depends_on')}: unknown service '{dep.service}'", suggest(dep.service, services))
            if dep.condition == "healthy" and services[dep.service].healthcheck is None:
                raise lay.fail("depends_on", (dep.service,), f"{lay.path('depends_on')}: condition 'healthy' needs a healthcheck on service '{dep.service}'")
    cycle = find_cycle({n: [d.service for d in s.depends_on] for n, s in services.items()})
    if cycle:
        lay = layered[cycle[0]]
        raise lay.fail("depends_on", (), f"depends_on cycle: {' → '.join(cycle)}")
    return Profile(
        name=raw.name,
        source=raw.src.path,
        description=raw.description or next((r.description for r in reversed(_extends_chain(raw.name, raws)) if r.description), ""),
        extends=raw.extends,
        services=tuple(services.values()),
    )


def user_home() -> Path:
    """The home of the user devbox acts for (under sudo, SUDO_USER's): a bind mount of it is refused."""
    return Path(resolve_user().home)


def find_project(start: Path | None = None, *, home: Path | None = None) -> Project:
    """The project at or above ``start`` (default: the current directory), fully validated."""
    root = paths.project_root(start)
    if root is None:
        here = (start or Path.cwd()).resolve()
        raise ConfigError(f"no devbox.toml in {here} or any parent directory", hint="run 'devbox init'")
    return load_project(root, home=home or user_home())


def load_project(
    root: Path,
    *,
    home: Path | None = None,
    profiles_dir: Path | None = None,
    images_dir: Path | None = None,
) -> Project:
    """Load ``root/devbox.toml`` and every profile it can run; raise :class:`ConfigError` on the first problem.

    ``home`` is the *user's* home (under sudo, not root's): a bind mount of it is refused.
    """
    root = root.resolve()
    file = root / PROJECT_FILE
    if not file.is_file():
        raise ConfigError("no devbox.toml here", where=str(root), hint="run 'devbox init'")
    pf = _read_project_file(root, file)
    ctx = _Ctx(
        root=root,
        home=home or Path.home(),
        images=images_dir or paths.shipped_images(),
        project=pf.name,
        project_file=pf,
    )
    profiles = _load_profiles(profiles_dir or paths.shipped_profiles(), ctx)
    if pf.profile not in profiles:
        raise pf.src.error(("profile",), f"unknown profile '{pf.profile}'", suggest(pf.profile, profiles))
    all_services = {s for p in profiles.values() for s in p.service_names}
    for key in ("services", "ports"):
        table: Mapping[str, Any] = pf.services if key == "services" else pf.ports
        for svc in table:
            if svc not in all_services:
                raise pf.src.error((key, svc), f"{key}.{svc}: no profile has a service '{svc}'", suggest(svc, all_services))
    return Project(
        name=pf.name,
        root=root,
        file=file,
        default_profile=pf.profile,
        remap=pf.remap,
        watch=pf.watch,
        workdirs=tuple(_bind(m, ctx, pf.src, ("workdirs", i)) for i, m in enumerate(pf.workdirs)),
        profiles=profiles,
    )


def load_profiles(
    *, profiles_dir: Path | None = None, images_dir: Path | None = None, project_root: Path | None = None, home: Path | None = None, project: str = "devbox"
) -> dict[str, Profile]:
    """Every profile, validated without a project file (``devbox profiles`` outside a project, tests)."""
    root = (project_root or Path.cwd()).resolve()
    ctx = _Ctx(root=root, home=home or Path.home(), images=images_dir or paths.shipped_images(), project=project, project_file=None)
    return _load_profiles(profiles_dir or paths.shipped_profiles(), ctx)


def _load_profiles(shipped: Path, ctx: _Ctx) -> dict[str, Profile]:
    files = profile_files(shipped, ctx.root if ctx.project_file is not None else None)
    raws = {name: load_raw_profile(f) for name, f in files.items()}
    contexts = sorted(p.name for p in ctx.images.iterdir() if (p / "Dockerfile").is_file()) if ctx.images.is_dir() else []
    return {name: _resolve_profile(raw, raws, ctx, contexts) for name, raw in sorted(raws.items())}
