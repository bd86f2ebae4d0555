"""The schema of profile files and ``devbox.toml``: one table per table kind.

A :class:`TableSchema` maps each key to a :class:`KeySpec`: its check (which
knows the key's type and, for a number, its bounds, and returns the value
normalised), its default and whether it is required.  The unknown-key check,
the type checks, the defaults and the error messages all come from these
tables; nothing here does I/O.

Tables that are merged across layers (``SERVICE``, ``BUILD``, ``HEALTHCHECK``:
see :mod:`devbox.config.merge`) are *layered*: each layer is checked on its
own, so an error points at the file that holds the mistake, but defaults and
required keys apply to the merged result (:meth:`TableSchema.complete`).

Every number is bounded, and the bound is in the error message.  Durations
are seconds: at most a day, at least Docker's 1 ms for healthcheck intervals
and timeouts, at least 1 s between two rescans of the work dirs.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import shlex
from collections.abc import Callable, Mapping
from typing import Any

from devbox.config.source import KeyPath, Source, format_path
from devbox.core.model import Healthcheck, RemapPolicy, WatchSettings
from devbox.core.ownership import STRATEGIES
from devbox.errors import ConfigError

DEFAULT_PROFILE = "python"
DEFAULT_WORKDIR_TARGET = "/work"
CONDITIONS = ("started", "healthy")

DAY_S = 86_400
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]*")
_VOLUME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
_ENV_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PORT_RE = re.compile(r"^(?:(?P<ip>\[[0-9a-fA-F:]+\]|\d{1,3}(?:\.\d{1,3}){3}):)?(?:(?P<host>\d*):)?(?P<container>\d+)(?:/(?P<proto>tcp|udp))?$")

Check = Callable[["Checker", KeyPath, Any], Any]
"""Checks one value at a key path and returns it normalised, or raises the located ConfigError."""


class _NoDefault:
    def __repr__(self) -> str:
        return "NO_DEFAULT"


NO_DEFAULT: Any = _NoDefault()


@dataclasses.dataclass(frozen=True)
class KeySpec:
    check: Check
    default: Any = NO_DEFAULT  # a TOML value, checked like one written in the file
    required: bool = False
    about: str = ""  # said when a required key is missing: "needs 'context' (a directory under images/)"


@dataclasses.dataclass(frozen=True)
class TableSchema:
    keys: Mapping[str, KeySpec]
    layered: bool = False

    def missing(self, data: Mapping[str, Any]) -> str | None:
        """The first required key ``data`` lacks, phrased for "... needs ...", or ``None``."""
        for key, spec in self.keys.items():
            if spec.required and key not in data:
                return f"'{key}'" + (f" ({spec.about})" if spec.about else "")
        return None

    def complete(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """A merged layered table with its defaults filled in (they are valid values by construction)."""
        defaults = {k: s.default for k, s in self.keys.items() if s.default is not NO_DEFAULT}
        return {**defaults, **data}


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


class Checker:
    """Checks one source against the schema, raising located ConfigErrors."""

    def __init__(self, src: Source) -> None:
        self.src = src

    def fail(self, path: KeyPath, message: str, hint: str | None = None) -> ConfigError:
        return self.src.error(path, message, hint)

    def wrong_type(self, path: KeyPath, expected: str, value: object) -> ConfigError:
        return self.fail(path, f"{format_path(path)} must be {expected}, not {_type_name(value)}")

    def unknown_keys(self, path: KeyPath, table: Mapping[str, Any], schema: TableSchema) -> None:
        for key in table:
            if key in schema.keys:
                continue
            where = f"in {format_path(path)}" if path else "at the top level"
            close = difflib.get_close_matches(key, list(schema.keys), n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else "expected one of: " + ", ".join(sorted(schema.keys))
            raise self.fail((*path, key), f"unknown key '{key}' {where}", hint)

    def table(self, path: KeyPath, value: object, schema: TableSchema) -> dict[str, Any]:
        """Unknown keys, then (unless layered) required keys, then each value; then (unless layered) defaults."""
        if not isinstance(value, dict):
            raise self.wrong_type(path, "a table", value)
        self.unknown_keys(path, value, schema)
        need = None if schema.layered else schema.missing(value)
        if need:
            raise self.fail(path, f"{format_path(path)} needs {need}")
        out = {key: schema.keys[key].check(self, (*path, key), v) for key, v in value.items()}
        if not schema.layered:
            for key, spec in schema.keys.items():
                if key not in out and spec.default is not NO_DEFAULT:
                    out[key] = spec.check(self, (*path, key), spec.default)
        return out


# --- value types ------------------------------------------------------------------


def _boolean(ck: Checker, path: KeyPath, value: object) -> bool:
    if not isinstance(value, bool):
        raise ck.wrong_type(path, "a boolean", value)
    return value


@dataclasses.dataclass(frozen=True)
class Text:
    """A string; non-empty unless ``nonempty`` is false; matching ``pattern`` if given (else: "is not ``what``")."""

    nonempty: bool = True
    pattern: re.Pattern[str] | None = None
    what: str = ""

    def __call__(self, ck: Checker, path: KeyPath, value: object) -> str:
        if not isinstance(value, str):
            raise ck.wrong_type(path, "a string", value)
        if self.nonempty and not value.strip():
            raise ck.fail(path, f"{format_path(path)} must not be empty")
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise ck.fail(path, f"{format_path(path)}: '{value}' is not {self.what}")
        return value


@dataclasses.dataclass(frozen=True)
class OneOf:
    choices: tuple[str, ...]

    def __call__(self, ck: Checker, path: KeyPath, value: object) -> str:
        text = Text()(ck, path, value)
        if text not in self.choices:
            quoted = [f"'{c}'" for c in self.choices]
            expected = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
            raise ck.fail(path, f"{format_path(path)} must be {expected}, not '{text}'")
        return text


def _bounded(ck: Checker, path: KeyPath, value: int | float, lo: int | float, hi: int | float) -> None:
    if not lo <= value <= hi:  # also refuses nan
        raise ck.fail(path, f"{format_path(path)} must be between {lo} and {hi}, not {value}")


@dataclasses.dataclass(frozen=True)
class Integer:
    lo: int
    hi: int

    def __call__(self, ck: Checker, path: KeyPath, value: object) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ck.wrong_type(path, "an integer", value)
        _bounded(ck, path, value, self.lo, self.hi)
        return value


@dataclasses.dataclass(frozen=True)
class Number:
    """An integer or a float, as a float."""

    lo: int | float
    hi: int | float

    def __call__(self, ck: Checker, path: KeyPath, value: object) -> float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ck.wrong_type(path, "a number", value)
        _bounded(ck, path, value, self.lo, self.hi)  # before float(): 10**400 does not fit one
        return float(value)


@dataclasses.dataclass(frozen=True)
class ArrayOf:
    item: Check

    def __call__(self, ck: Checker, path: KeyPath, value: object) -> list[Any]:
        if not isinstance(value, list):
            raise ck.wrong_type(path, "an array", value)
        return [self.item(ck, (*path, i), v) for i, v in enumerate(value)]


@dataclasses.dataclass(frozen=True)
class MapOf:
    """A table of free names (checked by ``key``, if given) to values."""

    value: Check
    key: Check | None = None

    def __call__(self, ck: Checker, path: KeyPath, value: object) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ck.wrong_type(path, "a table", value)
        out: dict[str, Any] = {}
        for name, val in value.items():
            if self.key is not None:
                self.key(ck, (*path, name), name)
            out[name] = self.value(ck, (*path, name), val)
        return out


@dataclasses.dataclass(frozen=True)
class Nested:
    schema: TableSchema

    def __call__(self, ck: Checker, path: KeyPath, value: object) -> dict[str, Any]:
        return ck.table(path, value, self.schema)


_strings = ArrayOf(Text(nonempty=False))


def _argv(ck: Checker, path: KeyPath, value: object) -> list[str]:
    """A command: an argument list, or a string split like a shell would (never run by one)."""
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:
            raise ck.fail(path, f"{format_path(path)}: cannot split command: {exc}") from None
    if isinstance(value, list):
        result: list[str] = _strings(ck, path, value)
        return result
    raise ck.wrong_type(path, "a string or an array of strings", value)


def _commands(ck: Checker, path: KeyPath, value: object) -> list[list[str]]:
    """Lifecycle commands: a string (run by ``/bin/sh -c``), an argument list, or an array of those.

    The string form is a shell command line as in devcontainer.json's ``postCreateCommand``, unlike
    ``command`` (split, never run by a shell): these run inside the container, never on the host.
    """
    if isinstance(value, str):
        return [["/bin/sh", "-c", Text()(ck, path, value)]]
    if not isinstance(value, list):
        raise ck.wrong_type(path, "a string, an array of strings or an array of commands", value)
    if all(isinstance(v, str) for v in value):
        if not value:
            return []
        return [_strings(ck, path, value)]
    out: list[list[str]] = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            out.append(["/bin/sh", "-c", Text()(ck, (*path, i), item)])
        elif isinstance(item, list) and item:
            out.append(_strings(ck, (*path, i), item))
        else:
            raise ck.fail((*path, i), f"{format_path((*path, i))} must be a command (a string or a non-empty array of strings)")
    return out


def _env_value(ck: Checker, path: KeyPath, value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ck.wrong_type(path, "a string", value)
    return str(value)


_env = MapOf(_env_value, key=Text(pattern=_ENV_RE, what="a valid environment variable name"))


def _absolute(ck: Checker, path: KeyPath, value: object) -> str:
    text = Text()(ck, path, value)
    if not text.startswith("/"):
        raise ck.fail(path, f"{format_path(path)} must be an absolute path inside the container, not '{text}'")
    return text


def _target(ck: Checker, path: KeyPath, value: object) -> str:
    text = Text()(ck, path, value)
    if not text.startswith("/") or text == "/":
        raise ck.fail(path, f"{format_path(path)} must be an absolute path below / inside the container, not '{text}'")
    return text


def _never_true(ck: Checker, path: KeyPath, value: object) -> bool:
    if _boolean(ck, path, value):
        raise ck.fail(path, f"{format_path(path)}: devbox never runs privileged containers", "remove this key")
    return False


def _condition(ck: Checker, path: KeyPath, value: object) -> str:
    text = Text()(ck, path, value)
    if text not in CONDITIONS:
        raise ck.fail(path, f"{format_path(path)}: unknown condition '{text}'", "expected 'started' or 'healthy'")
    return text


def _health_test(ck: Checker, path: KeyPath, value: object) -> list[str]:
    if isinstance(value, str):
        return ["CMD-SHELL", Text()(ck, path, value)]
    argv: list[str] = _strings(ck, path, value)
    if not argv:
        raise ck.fail(path, f"{format_path(path)} must not be empty")
    return argv if argv[0] in ("CMD", "CMD-SHELL") else ["CMD", *argv]


# --- the tables -------------------------------------------------------------------

PORT = TableSchema({
    "container": KeySpec(Integer(1, 65535), required=True),
    "host": KeySpec(Integer(0, 65535)),  # default: the container port (see _port); 0: any free port
    "host_ip": KeySpec(Text(), default="127.0.0.1"),  # loopback: nothing is exposed by accident
    "protocol": KeySpec(OneOf(("tcp", "udp")), default="tcp"),
})

MOUNT = TableSchema({
    "source": KeySpec(Text(), required=True),
    "target": KeySpec(_target, required=True),
    "read_only": KeySpec(_boolean, default=False),
    "allow_outside_project": KeySpec(_boolean, default=False),
})

VOLUME = TableSchema({
    "name": KeySpec(Text(pattern=_VOLUME_RE, what="a volume name (letters, digits, _ . -)"), required=True),
    "target": KeySpec(_target, required=True),
    "read_only": KeySpec(_boolean, default=False),
})

DEPENDENCY = TableSchema({"condition": KeySpec(_condition, default="started")})

_HEALTH_DEFAULTS = Healthcheck(test=())  # the defaults' one home is the model
HEALTHCHECK = TableSchema({
    "test": KeySpec(_health_test, required=True),
    "interval": KeySpec(Number(0.001, DAY_S), default=_HEALTH_DEFAULTS.interval_s),
    "timeout": KeySpec(Number(0.001, DAY_S), default=_HEALTH_DEFAULTS.timeout_s),
    "retries": KeySpec(Integer(1, 10_000), default=_HEALTH_DEFAULTS.retries),
    "start_period": KeySpec(Number(0, DAY_S), default=_HEALTH_DEFAULTS.start_period_s),
}, layered=True)

BUILD = TableSchema({
    # ``context`` (shipped images/) or ``path`` (the project's own, e.g. imported from a devcontainer.json)
    "context": KeySpec(Text(pattern=_NAME_RE, what="a directory name under images/"), required=True, about="a directory under images/"),
    "path": KeySpec(Text()),  # a build context directory, relative to the project root
    "args": KeySpec(_env, default={}),
    "dockerfile": KeySpec(Text(), default="Dockerfile"),  # relative to the context
    "target": KeySpec(Text()),
}, layered=True)


def _port(ck: Checker, path: KeyPath, value: object) -> dict[str, Any]:
    """``[IP:]HOST:CONTAINER[/tcp|udp]`` (or just the number) or a PORT table; an empty or 0 HOST
    (``127.0.0.1::8080``) lets the engine pick a free port."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str):
        m = _PORT_RE.match(value)
        if not m:
            raise ck.fail(path, f"{format_path(path)}: '{value}' is not a port ([IP:]HOST:CONTAINER[/tcp|udp])")
        table: dict[str, Any] = {"container": int(m["container"])}
        if m["host"] is not None:  # "127.0.0.1::8080" (Docker's form): any free host port
            table["host"] = int(m["host"] or 0)
        if m["ip"]:
            table["host_ip"] = m["ip"].strip("[]")
        if m["proto"]:
            table["protocol"] = m["proto"]
        value = table
    elif not isinstance(value, dict):
        raise ck.wrong_type(path, "a string or a table", value)
    out = ck.table(path, value, PORT)
    out.setdefault("host", out["container"])
    return out


def _spec(first: str, schema: TableSchema) -> Check:
    """``FIRST:TARGET[:ro]`` or a table with ``first`` and ``target``."""

    def check(ck: Checker, path: KeyPath, value: object) -> dict[str, Any]:
        if isinstance(value, str):
            parts = value.split(":")
            if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
                raise ck.fail(path, f"{format_path(path)}: '{value}' is not {first.upper()}:TARGET[:ro]")
            value = {first: parts[0], "target": parts[1], "read_only": parts[2:] == ["ro"]}
        elif not isinstance(value, dict):
            raise ck.wrong_type(path, "a string or a table", value)
        return ck.table(path, value, schema)

    return check


def _build(ck: Checker, path: KeyPath, value: object) -> dict[str, Any]:
    if isinstance(value, str):
        value = {"context": value}
    if not isinstance(value, dict):
        raise ck.wrong_type(path, "a string or a table", value)
    return ck.table(path, value, BUILD)


def _depends_on(ck: Checker, path: KeyPath, value: object) -> dict[str, str]:
    """``["db"]`` (started) or ``{ db = "healthy" }`` / ``{ db = { condition = "healthy" } }``."""
    if isinstance(value, list):
        return {name: "started" for name in _strings(ck, path, value)}
    if not isinstance(value, dict):
        raise ck.wrong_type(path, "an array or a table", value)
    out: dict[str, str] = {}
    for name, cond in value.items():
        if isinstance(cond, dict):
            ck.unknown_keys((*path, name), cond, DEPENDENCY)
            cond = cond.get("condition", DEPENDENCY.keys["condition"].default)
        out[name] = _condition(ck, (*path, name), cond)
    return out


SERVICE = TableSchema({
    "image": KeySpec(Text(pattern=re.compile(r"\S+"), what="an image reference")),
    "build": KeySpec(_build),
    "command": KeySpec(_argv),
    "entrypoint": KeySpec(_argv),
    "env": KeySpec(_env, default={}),
    "ports": KeySpec(ArrayOf(_port), default=[]),
    "volumes": KeySpec(ArrayOf(_spec("name", VOLUME)), default=[]),
    "mounts": KeySpec(ArrayOf(_spec("source", MOUNT)), default=[]),
    "depends_on": KeySpec(_depends_on, default={}),
    "healthcheck": KeySpec(Nested(HEALTHCHECK)),
    "interactive": KeySpec(_boolean, default=False),
    "working_dir": KeySpec(_absolute),
    "user": KeySpec(Text()),
    "userns_mode": KeySpec(OneOf(("host",))),
    "userns_reason": KeySpec(Text()),
    "network_mode": KeySpec(OneOf(("host", "bridge"))),
    "pid_mode": KeySpec(OneOf(("host",))),
    "post_create": KeySpec(_commands),  # run once the container is created (devcontainer's postCreateCommand)
    "post_start": KeySpec(_commands),  # run after each start (postStartCommand)
    "generated_env": KeySpec(ArrayOf(Text(pattern=_ENV_RE, what="an environment variable name"))),
    "terminal": KeySpec(Text(pattern=_NAME_RE, what="a service name")),  # checked against the profile's services
    "web_port": KeySpec(Integer(1, 65535)),  # a published container port serving a web UI
    "workdir": KeySpec(_boolean, default=True),  # mount the project's work dirs, with its mounts and env
    "enabled": KeySpec(_boolean, default=True),
    "privileged": KeySpec(_never_true),
}, layered=True)


def _service(ck: Checker, path: KeyPath, value: object) -> dict[str, Any]:
    """One layer's table for a service (so layers merge uniformly)."""
    out = ck.table(path, value, SERVICE)
    if "image" in out and "build" in out:
        raise ck.fail((*path, "build"), f"{format_path(path)} has both 'image' and 'build'", "keep one")
    return out


def _service_name(ck: Checker, path: KeyPath, name: str) -> None:
    if not _NAME_RE.fullmatch(name):
        raise ck.fail(path, f"{format_path(path[:-1])}.{name}: '{name}' is not a service name (lowercase letters, digits, _ . -)")


PROFILE = TableSchema({
    "description": KeySpec(Text(nonempty=False), default=""),
    "extends": KeySpec(Text()),
    "services": KeySpec(MapOf(_service, key=_service_name), default={}),
})

_WATCH_DEFAULTS = WatchSettings()
REMAP = TableSchema({"policy": KeySpec(OneOf(tuple(p.value for p in RemapPolicy)), default=RemapPolicy.REQUIRE.value)})
OWNERSHIP = TableSchema({"strategy": KeySpec(OneOf(STRATEGIES), default="auto")})
NETWORK = TableSchema({"ca_certificates": KeySpec(Text(), default="auto")})  # auto | host | image | a PEM file
WATCH = TableSchema({
    "ignore": KeySpec(_strings, default=list(_WATCH_DEFAULTS.ignore)),
    "busy": KeySpec(_strings, default=list(_WATCH_DEFAULTS.busy)),
    "allowed_gids": KeySpec(ArrayOf(Integer(0, 2**32 - 2)), default=list(_WATCH_DEFAULTS.allowed_gids)),
    "rescan_interval": KeySpec(Number(1, DAY_S), default=_WATCH_DEFAULTS.rescan_interval_s),
})

PROJECT = TableSchema({
    "name": KeySpec(Text(pattern=_NAME_RE, what="a project name (lowercase letters, digits, _ . -)")),  # default: the directory's slug
    "profile": KeySpec(Text(), default=DEFAULT_PROFILE),
    "workdirs": KeySpec(ArrayOf(_spec("source", MOUNT)), default=[{"source": ".", "target": DEFAULT_WORKDIR_TARGET}]),
    "mounts": KeySpec(ArrayOf(_spec("source", MOUNT)), default=[]),
    "env": KeySpec(_env, default={}),
    "ports": KeySpec(MapOf(ArrayOf(_port)), default={}),
    "services": KeySpec(MapOf(_service), default={}),
    "remap": KeySpec(Nested(REMAP), default={}),
    "watch": KeySpec(Nested(WATCH), default={}),
    "ownership": KeySpec(Nested(OWNERSHIP), default={}),
    "network": KeySpec(Nested(NETWORK), default={}),
})


# --- whole files --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RawProfile:
    """A profile file, checked on its own: one layer of an ``extends`` chain."""

    name: str
    src: Source
    description: str
    extends: str | None
    services: dict[str, dict[str, Any]]  # normalised per-layer tables


def check_profile_file(src: Source) -> RawProfile:
    ck = Checker(src)
    data = ck.table((), src.data, PROFILE)
    if not data["services"] and "extends" not in data:
        raise ck.fail((), "a profile needs at least one service under [services.NAME]")
    return RawProfile(name=src.path.stem, src=src, description=data["description"], extends=data.get("extends"), services=data["services"])


@dataclasses.dataclass(frozen=True)
class ProjectFile:
    """``devbox.toml``, checked: normalised tables, the remap policy and the watcher's settings."""

    src: Source
    name: str | None  # None: not given (the directory's slug)
    profile: str
    workdirs: list[dict[str, Any]]
    mounts: list[dict[str, Any]]
    env: dict[str, str]
    ports: dict[str, list[dict[str, Any]]]
    services: dict[str, dict[str, Any]]
    remap: RemapPolicy
    watch: WatchSettings
    strategy: str  # [ownership] strategy: "auto" or one of devbox.core.ownership.STRATEGIES
    ca_certificates: str  # [network] ca_certificates: auto, host, image or a path


def check_project_file(src: Source) -> ProjectFile:
    ck = Checker(src)
    data = ck.table((), src.data, PROJECT)
    watch = data["watch"]
    return ProjectFile(
        src=src,
        name=data.get("name"),
        profile=data["profile"],
        workdirs=data["workdirs"],
        mounts=data["mounts"],
        env=data["env"],
        ports=data["ports"],
        services=data["services"],
        remap=RemapPolicy(data["remap"]["policy"]),
        watch=WatchSettings(
            ignore=tuple(watch["ignore"]), busy=tuple(watch["busy"]), allowed_gids=tuple(watch["allowed_gids"]),
            rescan_interval_s=watch["rescan_interval"],
        ),
        strategy=data["ownership"]["strategy"],
        ca_certificates=data["network"]["ca_certificates"],
    )
