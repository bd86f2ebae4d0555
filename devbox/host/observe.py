"""Read-only observation of the host: accounts, subordinate ids, kernel, dockerd's configuration.

Everything returns plain data; nothing here writes.  A file that cannot be read
is a one-line :class:`~devbox.errors.DevboxError` naming it; callers that must
report rather than stop (:func:`devbox.remap.assess.observe_host`) keep it as data.
"""

from __future__ import annotations

import dataclasses
import grp
import json
import os
import pwd
import re
from pathlib import Path

from devbox.core.idmap import Account, SubidFile, parse_login_defs, parse_subid
from devbox.errors import ConfigError, DevboxError, HostError
from devbox.paths import Paths


def accounts() -> list[Account]:
    return [Account(p.pw_name, p.pw_uid) for p in pwd.getpwall()]


def groups() -> list[Account]:
    return [Account(g.gr_name, g.gr_gid) for g in grp.getgrall()]


# --- files ------------------------------------------------------------------


def read_text(path: Path) -> str | None:
    """File text, ``None`` when it does not exist; unreadable is an error naming the file."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except PermissionError:
        raise HostError(f"cannot read {path}: permission denied", hint=f"check its mode (ls -l {path}) or run with sudo") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start})", hint="repair or restore the file") from None
    except OSError as exc:
        raise HostError(f"cannot read {path}: {exc.strerror}") from None


def read_subid(path: Path) -> SubidFile:
    return parse_subid(read_text(path) or "", str(path))


def login_defs(paths: Paths) -> dict[str, str]:
    try:
        return parse_login_defs(read_text(paths.login_defs) or "")
    except DevboxError:
        return {}


@dataclasses.dataclass(frozen=True)
class DaemonJson:
    path: str
    exists: bool
    text: str
    data: dict[str, object]


def read_daemon_json(path: Path) -> DaemonJson:
    """daemon.json parsed; invalid JSON is refused with its line, never guessed at."""
    text = read_text(path)
    if text is None:
        return DaemonJson(str(path), False, "", {})
    if not text.strip():
        return DaemonJson(str(path), True, text, {})
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"not valid JSON: {exc.msg} (at line {exc.lineno}, column {exc.colno})",
            where=f"{path}:{exc.lineno}",
            hint="fix the file first; devbox will not rewrite a file it cannot read",
        ) from None
    if not isinstance(data, dict):
        raise ConfigError("top level is not a JSON object", where=f"{path}:1", hint="daemon.json must be {...}")
    return DaemonJson(str(path), True, text, data)


# --- dockerd flags ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Flag:
    """A ``--userns-remap`` given on a dockerd command line, and where."""

    where: str  # "/etc/systemd/system/docker.service.d/x.conf:3" or "running dockerd (pid 42)"
    value: str
    editable: bool  # a file devbox could point the user at (a running cmdline is not)


_FLAG = re.compile(r"--userns-remap(?:=|\s+)(\S+)")


def flags_in_argv(argv: list[str]) -> list[str]:
    values = []
    for i, arg in enumerate(argv):
        if arg.startswith("--userns-remap="):
            values.append(arg.split("=", 1)[1])
        elif arg == "--userns-remap" and i + 1 < len(argv):
            values.append(argv[i + 1])
    return values


def find_dockerd_pid(paths: Paths) -> int | None:
    """The running dockerd: from its pidfile, else the only dockerd process."""
    try:
        pid = int(paths.docker_pidfile.read_text().strip())
        if (paths.proc / str(pid)).exists():
            return pid
    except (OSError, ValueError):
        pass
    found = []
    try:
        entries = list(paths.proc.iterdir())
    except OSError:
        return None
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() == "dockerd":
                found.append(int(entry.name))
        except OSError:
            continue
    return found[0] if len(found) == 1 else None


def dockerd_argv(paths: Paths, pid: int) -> list[str]:
    try:
        raw = (paths.proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def userns_flags(paths: Paths) -> list[Flag]:
    """Every place a ``--userns-remap`` flag is given: running daemon, systemd units and drop-ins, /etc/default/docker."""
    found: list[Flag] = []
    pid = find_dockerd_pid(paths)
    if pid is not None:
        for value in flags_in_argv(dockerd_argv(paths, pid)):
            found.append(Flag(f"running dockerd (pid {pid})", value, False))
    for unit_dir in paths.systemd_unit_dirs:
        candidates = [unit_dir / "docker.service"]
        dropins = unit_dir / "docker.service.d"
        if dropins.is_dir():
            candidates += sorted(dropins.glob("*.conf"))
        for unit in candidates:
            found += _flags_in_file(unit, exec_only=True)
    found += _flags_in_file(paths.docker_default, exec_only=False)
    return found


def _flags_in_file(path: Path, exec_only: bool) -> list[Flag]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("#"):
            continue
        if exec_only and not stripped.startswith("ExecStart="):
            continue
        for match in _FLAG.finditer(stripped):
            value = match.group(1).strip("\"'")
            found.append(Flag(f"{path}:{number}", value, True))
    return found


# --- kernel -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Kernel:
    release: str
    userns_supported: bool  # /proc/self/ns/user exists => CONFIG_USER_NS=y
    config_user_ns: str | None  # "y"/"n"/None from the kernel config, when readable
    config_source: str | None
    max_user_namespaces: int | None
    apparmor_restrict_unprivileged: int | None


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def kernel(paths: Paths) -> Kernel:
    release = os.uname().release
    config_value = None
    source = None
    candidates = [paths.kernel_config_dir / f"config-{release}"]
    for path in candidates:
        text = None
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        source = str(path)
        match = re.search(r"^CONFIG_USER_NS=(\w)", text, re.M)
        config_value = match.group(1) if match else "n"
        break
    if source is None:
        try:
            import gzip

            with gzip.open(paths.proc / "config.gz", "rt") as fh:
                text = fh.read()
            source = str(paths.proc / "config.gz")
            match = re.search(r"^CONFIG_USER_NS=(\w)", text, re.M)
            config_value = match.group(1) if match else "n"
        except OSError:
            pass
    return Kernel(
        release=release,
        userns_supported=(paths.proc / "self" / "ns" / "user").exists(),
        config_user_ns=config_value,
        config_source=source,
        max_user_namespaces=_read_int(paths.proc / "sys" / "user" / "max_user_namespaces"),
        apparmor_restrict_unprivileged=_read_int(paths.proc / "sys" / "kernel" / "apparmor_restrict_unprivileged_userns"),
    )


# --- the rootless helpers -----------------------------------------------------------

ID_HELPERS = ("/usr/bin/newuidmap", "/usr/bin/newgidmap")


@dataclasses.dataclass(frozen=True)
class IdHelper:
    """newuidmap or newgidmap: a rootless engine writes its user namespace's maps through them."""

    path: str
    exists: bool
    setuid_root: bool
    file_caps: bool

    @property
    def usable(self) -> bool:
        return self.exists and (self.setuid_root or self.file_caps)


def id_helpers(paths: tuple[str, ...] = ID_HELPERS) -> tuple[IdHelper, ...]:
    out = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append(IdHelper(path, False, False, False))
            continue
        setuid = bool(st.st_mode & 0o4000) and st.st_uid == 0
        try:
            caps = bool(os.getxattr(path, "security.capability"))
        except OSError:
            caps = False
        out.append(IdHelper(path, True, setuid, caps))
    return tuple(out)
