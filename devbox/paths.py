"""Every location devbox reads or writes, in one overridable place.

Tests and unusual hosts redirect locations with ``DEVBOX_*`` environment
variables; code takes a :class:`Paths` instead of hard-coding a path.
``/etc/subuid`` and ``/etc/subgid`` are fixed: dockerd reads them there and
nowhere else, so pretending otherwise would check a file the daemon ignores.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path


def _env_path(name: str, default: str | Path) -> Path:
    value = os.environ.get(name)
    return Path(value) if value else Path(default)


def _user_state_home(home: Path | None = None) -> Path:
    """``$XDG_STATE_HOME``, else ``~/.local/state``; for another user (``home``), theirs."""
    if home is not None:
        return home / ".local" / "state"
    xdg = os.environ.get("XDG_STATE_HOME")
    return Path(xdg) if xdg else Path.home() / ".local" / "state"


@dataclasses.dataclass(frozen=True)
class Paths:
    subuid: Path = Path("/etc/subuid")
    subgid: Path = Path("/etc/subgid")
    login_defs: Path = Path("/etc/login.defs")
    daemon_json: Path = Path("/etc/docker/daemon.json")
    docker_pidfile: Path = Path("/var/run/docker.pid")
    docker_default: Path = Path("/etc/default/docker")
    systemd_unit_dirs: tuple[Path, ...] = (
        Path("/etc/systemd/system"),
        Path("/run/systemd/system"),
        Path("/lib/systemd/system"),
        Path("/usr/lib/systemd/system"),
    )
    systemd_running: Path = Path("/run/systemd/system")
    proc: Path = Path("/proc")
    kernel_config_dir: Path = Path("/boot")
    # Host-wide devbox state (remap journal and backups); written as root only.
    system_state: Path = Path("/var/lib/devbox")
    # Per-user state (watcher pidfile and leak records, logs).
    user_state: Path = dataclasses.field(default_factory=lambda: _user_state_home() / "devbox")

    @classmethod
    def from_env(cls, home: Path | None = None) -> Paths:
        """The locations, with ``DEVBOX_*`` overrides.  ``home``: the user devbox acts for, when that is
        not the caller (root under sudo: see :func:`devbox.host.user.paths_for`)."""
        return cls(
            daemon_json=_env_path("DEVBOX_DAEMON_JSON", "/etc/docker/daemon.json"),
            docker_pidfile=_env_path("DEVBOX_DOCKER_PIDFILE", "/var/run/docker.pid"),
            system_state=_env_path("DEVBOX_SYSTEM_STATE_DIR", "/var/lib/devbox"),
            systemd_running=_env_path("DEVBOX_SYSTEMD_RUNNING", "/run/systemd/system"),
            user_state=_env_path("DEVBOX_STATE_DIR", _user_state_home(home) / "devbox"),
        )

    @property
    def remap_journal(self) -> Path:
        return self.system_state / "remap" / "journal.json"

    @property
    def remap_backups(self) -> Path:
        return self.system_state / "remap" / "backups"

    @property
    def error_log(self) -> Path:
        return self.user_state / "error.log"

    # The background watcher's files, per project (contract shared by devbox.watch,
    # `devbox up`/`down` and devbox.doctor): the pidfile holds the watcher's PID as
    # decimal text; the records are devbox.watch.leaks' JSON-lines file.
    def watcher_pidfile(self, project: str) -> Path:
        return self.user_state / "watch" / f"{project}.pid"

    def watcher_log(self, project: str) -> Path:
        return self.user_state / "watch" / f"{project}.log"

    def secrets(self, project: str) -> Path:
        """Generated login secrets of a project's services, one 0600 file per variable."""
        return self.user_state / "secrets" / project

    def leak_records(self, project: str) -> Path:
        return self.user_state / "watch" / f"{project}.leaks.jsonl"


def project_root(start: Path | None = None) -> Path | None:
    """The nearest directory at or above ``start`` holding a ``devbox.toml``."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "devbox.toml").is_file():
            return candidate
    return None


def _shipped(kind: str, env: str) -> Path:
    """``profiles/`` or ``images/``: env override, source checkout, else the wheel's share/devbox/."""
    override = os.environ.get(env)
    if override:
        return Path(override)
    checkout = Path(__file__).resolve().parent.parent / kind
    if checkout.is_dir():
        return checkout
    return Path(sys.prefix) / "share" / "devbox" / kind


def shipped_profiles() -> Path:
    return _shipped("profiles", "DEVBOX_PROFILES_DIR")


def shipped_images() -> Path:
    return _shipped("images", "DEVBOX_IMAGES_DIR")
