"""What a devbox stack *is*: frozen dataclasses, no I/O.

:mod:`devbox.config` builds these from TOML; :mod:`devbox.stack.reconcile`
compares a desired :class:`Stack` with what :mod:`devbox.stack.observe` found
(the ``Observed*`` classes at the bottom) and the executor carries the plan out.

Every resource devbox creates carries the labels below; devbox recognises its
own containers, networks and volumes by them, never by guessing from names.
"""

from __future__ import annotations

import dataclasses
import enum
import graphlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

LABEL_PROJECT = "devbox.project"
LABEL_SERVICE = "devbox.service"
LABEL_CONFIG_HASH = "devbox.config-hash"
LABEL_PROFILE = "devbox.profile"  # the profile that created the container (not updated by switch)
LABEL_VOLUME = "devbox.volume"
LABEL_TOOLCHAIN = "org.devbox.toolchain"  # set by the Dockerfiles in images/

MountKind = Literal["bind", "volume"]
Condition = Literal["started", "healthy"]


class RemapPolicy(enum.Enum):
    """What ``up`` does when the probe-verified userns remap is missing."""

    REQUIRE = "require"  # refuse to start services that bind-mount host directories
    WARN = "warn"
    OFF = "off"


@dataclasses.dataclass(frozen=True)
class Port:
    """A published port.  ``host_ip`` defaults to loopback: nothing is exposed to the network by accident."""

    container_port: int
    host_port: int  # 0: a free port the engine picks when the container starts (ps and open tell it)
    host_ip: str = "127.0.0.1"
    protocol: Literal["tcp", "udp"] = "tcp"

    def __str__(self) -> str:
        return f"{self.host_ip}:{self.host_port or 'any'}->{self.container_port}/{self.protocol}"


@dataclasses.dataclass(frozen=True)
class Mount:
    """A bind mount (``source`` is an absolute host path) or a named volume (``source`` is the full volume name)."""

    kind: MountKind
    source: str
    target: str
    read_only: bool = False
    allow_outside_project: bool = False


@dataclasses.dataclass(frozen=True)
class Healthcheck:
    """Docker's healthcheck; ``test`` starts with ``CMD`` (argument list) or ``CMD-SHELL``."""

    test: tuple[str, ...]
    interval_s: float = 2.0
    timeout_s: float = 5.0
    retries: int = 30
    start_period_s: float = 0.0


@dataclasses.dataclass(frozen=True)
class Build:
    """An image devbox builds from ``images/<context>``, or from a directory of the project (``path``).

    ``digest`` covers the context's files, so editing a Dockerfile yields a new
    tag (and therefore a new config hash for the services using it).
    """

    context: str  # name under images/ (for a project directory: its name, for the image tag)
    context_dir: str  # absolute path of the build context
    args: tuple[tuple[str, str], ...] = ()
    dockerfile: str = "Dockerfile"  # relative to the context
    digest: str = ""
    target: str | None = None  # a multi-stage Dockerfile's stage
    in_project: bool = False  # built in place from the project (no copy, no CA bundle in certs/)

    @property
    def args_dict(self) -> dict[str, str]:
        return dict(self.args)


@dataclasses.dataclass(frozen=True)
class DependsOn:
    service: str
    condition: Condition = "started"


@dataclasses.dataclass(frozen=True)
class Service:
    """One fully resolved service: profile + extends + project settings + overrides."""

    name: str
    image: str  # the reference containers run: a registry reference or the tag devbox builds
    build: Build | None = None
    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    env: tuple[tuple[str, str], ...] = ()
    ports: tuple[Port, ...] = ()
    mounts: tuple[Mount, ...] = ()
    depends_on: tuple[DependsOn, ...] = ()
    healthcheck: Healthcheck | None = None
    interactive: bool = False
    working_dir: str | None = None
    user: str | None = None
    # "host" disables the remap for this container (needed for host network/PID);
    # only accepted together with a written reason, and flagged by ``ps``.
    userns_mode: str | None = None
    userns_reason: str | None = None
    network_mode: str | None = None
    pid_mode: str | None = None
    # run by ``up`` in the container (as ``user``, in ``working_dir``): after it is created, after each start
    post_create: tuple[tuple[str, ...], ...] = ()
    post_start: tuple[tuple[str, ...], ...] = ()
    # env variables whose values devbox generates once per project and keeps 0600 in your state
    # dir (a login password); applied by :mod:`devbox.core.access`, which also wires ``terminal``:
    # the service whose toolchain this one's terminals run in (the IDE's integrated terminal)
    generated_env: tuple[str, ...] = ()
    terminal: str | None = None
    web_port: int | None = None  # the container port that serves a web UI (up, ps and open print its URL)

    @property
    def env_dict(self) -> dict[str, str]:
        return dict(self.env)

    @property
    def volumes(self) -> tuple[str, ...]:
        return tuple(m.source for m in self.mounts if m.kind == "volume")

    @property
    def binds(self) -> tuple[Mount, ...]:
        return tuple(m for m in self.mounts if m.kind == "bind")

    @property
    def container_uid(self) -> int | None:
        """The container uid the service runs as: its numeric ``user``, 0 (root) without one,
        ``None`` for a name (resolved inside the image, unknown here)."""
        if self.user is None:
            return 0
        name = self.user.split(":", 1)[0]
        return int(name) if name.isdigit() else None


@dataclasses.dataclass(frozen=True)
class Profile:
    """A validated profile with ``extends`` applied and the project's settings merged in."""

    name: str
    source: Path  # the file it came from (a project profile overrides a shipped one)
    description: str
    extends: str | None
    services: tuple[Service, ...]

    @property
    def service_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.services)

    def service(self, name: str) -> Service:
        for svc in self.services:
            if svc.name == name:
                return svc
        raise KeyError(name)

    @property
    def interactive(self) -> Service | None:
        return next((s for s in self.services if s.interactive), None)


@dataclasses.dataclass(frozen=True)
class WatchSettings:
    # nothing is ignored by default: node_modules, .venv, .git and __pycache__ are where containers leave the
    # files people cannot delete; they are "busy" trees instead (devbox.watch.busy): rescanned, not followed per event
    ignore: tuple[str, ...] = ()
    busy: tuple[str, ...] = ("node_modules", ".venv", ".git", "__pycache__")
    allowed_gids: tuple[int, ...] = ()
    rescan_interval_s: float = 300.0


@dataclasses.dataclass(frozen=True)
class Project:
    """``devbox.toml`` plus every profile it can run, all validated."""

    name: str
    root: Path
    file: Path
    default_profile: str
    remap: RemapPolicy
    watch: WatchSettings
    workdirs: tuple[Mount, ...]
    profiles: Mapping[str, Profile]
    strategy: str = "auto"  # [ownership] strategy (devbox.core.ownership)
    ca_certificates: str = "auto"  # [network] ca_certificates (devbox.core.network)

    def profile(self, name: str | None = None) -> Profile:
        return self.profiles[name or self.default_profile]

    def stack(self, profile: str | None = None) -> Stack:
        """The desired state for ``profile`` (default: the project's)."""
        prof = self.profile(profile)
        return Stack(project=self.name, profile=prof.name, services=prof.services)


@dataclasses.dataclass(frozen=True)
class Stack:
    """The desired state :func:`devbox.plan.reconcile` converges to."""

    project: str
    profile: str
    services: tuple[Service, ...]

    @property
    def network(self) -> str:
        return network_name(self.project)

    @property
    def volumes(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for svc in self.services:
            for vol in svc.volumes:
                seen[vol] = None
        return tuple(seen)

    @property
    def images(self) -> tuple[tuple[str, Build | None], ...]:
        """Each distinct image reference once, with how to build it (``None``: pull)."""
        seen: dict[str, Build | None] = {}
        for svc in self.services:
            seen.setdefault(svc.image, svc.build)
        return tuple(seen.items())

    def service(self, name: str) -> Service:
        for svc in self.services:
            if svc.name == name:
                return svc
        raise KeyError(name)

    def container_name(self, service: str) -> str:
        return container_name(self.project, service)

    def labels(self, service: Service, config_hash: str) -> dict[str, str]:
        return {
            LABEL_PROJECT: self.project,
            LABEL_SERVICE: service.name,
            LABEL_PROFILE: self.profile,
            LABEL_CONFIG_HASH: config_hash,
        }

    def levels(self) -> tuple[tuple[str, ...], ...]:
        """Service names in dependency levels (see :func:`dependency_levels`)."""
        return dependency_levels({s.name: [d.service for d in s.depends_on] for s in self.services})


def dependency_levels(graph: Mapping[str, Sequence[str]]) -> tuple[tuple[str, ...], ...]:
    """Names in levels: level N depends only on levels < N, so each level may start in parallel.

    Raises :class:`graphlib.CycleError` (its ``args[1]`` is the cycle, first node repeated last).
    """
    sorter = graphlib.TopologicalSorter(graph)
    sorter.prepare()
    levels: list[tuple[str, ...]] = []
    while sorter.is_active():
        ready = tuple(sorted(sorter.get_ready()))
        levels.append(ready)
        sorter.done(*ready)
    return tuple(levels)


def find_cycle(graph: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A dependency cycle as ``[a, b, ..., a]`` (a depends on b ...), or ``None``."""
    try:
        graphlib.TopologicalSorter({n: graph[n] for n in sorted(graph)}).prepare()
    except graphlib.CycleError as exc:
        cycle: list[str] = list(exc.args[1])
        return cycle[::-1]  # graphlib lists it along reversed edges
    return None


def network_name(project: str) -> str:
    return f"devbox-{project}"


def container_name(project: str, service: str) -> str:
    return f"devbox-{project}-{service}"


def volume_name(project: str, volume: str) -> str:
    return f"devbox-{project}-{volume}"


# --- observed state: what exists, found by labels (filled by devbox.observe) ---


@dataclasses.dataclass(frozen=True)
class ObservedContainer:
    id: str
    name: str
    project: str
    service: str
    profile: str
    config_hash: str
    image_id: str
    status: str  # docker's State.Status: created, running, paused, restarting, removing, exited, dead
    health: str | None = None  # starting, healthy, unhealthy; None without a healthcheck


@dataclasses.dataclass(frozen=True)
class ObservedImage:
    ref: str
    id: str
    toolchain: str | None = None  # the org.devbox.toolchain label
    user: str = ""  # its Config.User ("": root, or whoever its entrypoint becomes)


@dataclasses.dataclass(frozen=True)
class Observed:
    """What exists on the engine for one project: containers, networks and volumes carrying its
    ``devbox.project`` label, plus the images (by reference) its stack names."""

    containers: tuple[ObservedContainer, ...] = ()
    networks: frozenset[str] = frozenset()
    volumes: frozenset[str] = frozenset()
    images: tuple[ObservedImage, ...] = ()

    @property
    def image_present(self) -> dict[str, bool]:
        """Image reference -> whether the engine has it."""
        return {i.ref: bool(i.id) for i in self.images}

    def image(self, ref: str) -> ObservedImage | None:
        return next((i for i in self.images if i.ref == ref), None)

    def containers_of(self, service: str) -> tuple[ObservedContainer, ...]:
        return tuple(c for c in self.containers if c.service == service)
