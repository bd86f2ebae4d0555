"""Connecting to the engine, and what the engine says about itself.

Every other module gets a ready :class:`Engine` from :func:`connect` (the
standard-library client of :mod:`devbox.engine.fastapi`, and the Docker SDK made on
first use) or the bare stdlib client from :func:`fast_api`, and never sees a raw ``requests``/``docker``/``OSError`` it must decode: those
become a typed :class:`~devbox.errors.EngineError` (:mod:`devbox.engine.errors`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import TYPE_CHECKING, Any

from devbox.core.idmap import IdMap, IdRange
from devbox.engine.endpoint import find_endpoint
from devbox.engine.errors import call, describe_host, socket_path, timeout_s
from devbox.engine.libpod import names_podman
from devbox.errors import EngineError
from devbox.errors import EngineErrorKind as Kind

if TYPE_CHECKING:
    import docker

    from devbox.engine.fastapi import Api

# Docker 19.03's API.  Older engines lack what devbox asks for (healthcheck start periods, init).
MIN_API_VERSION = (1, 40)


# --- clients ---------------------------------------------------------------------


class Engine:
    """A connected local engine.

    ``api`` is the stdlib client (:mod:`devbox.engine.fastapi`): every list, inspect, create, start,
    stop and remove devbox makes, and Podman's own API.  ``docker`` is the Docker SDK client, imported
    and made on first use, for what streams or takes over the connection: builds, pulls, attach, exec,
    events and followed logs (a warm ``devbox up -d`` on Podman never imports it)."""

    def __init__(self, api: Api, ping_headers: dict[str, str], api_version: str, timeout: float) -> None:
        self.api = api
        self.ping_headers = ping_headers  # connect's ping's, names lowercased: Podman names itself there
        self.api_version = api_version  # the engine's, from the ping
        self.timeout = timeout

    @property
    def host(self) -> str:
        return self.api.host

    def is_podman(self) -> bool:
        return names_podman(self.ping_headers)

    @functools.cached_property
    def docker(self) -> docker.DockerClient:
        """The SDK client for the same socket, speaking the engine's API version (no ``GET /version``)."""
        import docker

        found = find_endpoint()
        seconds = int(max(1, self.timeout))

        def make() -> docker.DockerClient:
            if found.source == "DOCKER_HOST":  # from_env also reads DOCKER_TLS_VERIFY and DOCKER_CERT_PATH
                return docker.from_env(timeout=seconds, version=self.api_version)
            return docker.DockerClient(base_url=self.host, timeout=seconds, version=self.api_version)

        return call(make, self.host, "GET /_ping", self.timeout)


def connect(timeout: float | None = None) -> Engine:
    """The engine at DOCKER_HOST (or the docker context's, or the default socket), pinged: a local
    unix socket (a remote engine cannot bind-mount this host's files).

    Every request times out after ``timeout`` seconds (default 120, or ``DEVBOX_ENGINE_TIMEOUT``).
    The engine's API version comes from the ping's ``Api-Version`` header (the SDK's ``version="auto"``
    costs a ``GET /version``, which Podman answers slowly: it asks conmon and the OCI runtime for theirs)."""
    seconds = timeout_s(120) if timeout is None else timeout
    api = fast_api(seconds, ping=False)
    headers = api.ping_headers()
    version = headers.get("api-version", "")
    if not parse_api_version(version):
        version = str(api.version().get("ApiVersion", ""))
    if not parse_api_version(version):
        version = f"{MIN_API_VERSION[0]}.{MIN_API_VERSION[1]}"
    return Engine(api, headers, version, seconds)


def fast_api(timeout: float | None = None, *, ping: bool = True) -> Api:
    """The stdlib client (:mod:`devbox.engine.fastapi`) for a local unix-socket engine, pinged."""
    from devbox.engine.fastapi import Api

    host = describe_host()
    sock = socket_path(host)
    if sock is None:
        raise EngineError(
            f"DOCKER_HOST={host} is not a local unix socket: a remote engine cannot bind-mount this host's files",
            kind=Kind.REMOTE, hint="run devbox on the engine's host, or point DOCKER_HOST at a local socket",
        )
    api = Api(sock, timeout_s(60) if timeout is None else timeout, host=host)
    if ping:
        api.ping()
    return api


def wait_until_up(timeout: float, interval: float = 0.25) -> bool:
    """Poll until the daemon answers; ``False`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fast_api(timeout=10).close()
            return True
        except EngineError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)


# --- what the engine says about itself ----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RootVerdict:
    """Does container root write files as a given host user on this engine?  ``reason`` says how or why not."""

    ok: bool
    reason: str


@dataclasses.dataclass(frozen=True)
class EngineInfo:
    host: str
    version: str
    api_version: str
    security_options: tuple[str, ...]
    data_root: str
    images: int
    containers: int
    rootless: bool
    product: str = "docker"  # "docker" or "podman" (Podman's docker-compatible API)
    components: tuple[str, ...] = ()
    platform: str = ""
    # Podman only: the rootless user namespace's maps as Podman reads them (container = its id inside)
    podman_uid_map: IdMap = ()
    podman_gid_map: IdMap = ()
    image_store: str = "graphdriver"  # or "containerd" (the containerd image store, Docker 24+; default in 29)
    # Podman only: the user-mode networks it can give a rootless pod ("pasta", "slirp4netns"), best first
    podman_networks: tuple[str, ...] = ()
    oci_runtime: str = ""  # Podman's OCI runtime (crun, runc), from /libpod/info; "" when not asked

    @property
    def major(self) -> int | None:
        """The engine's major version (``26`` from ``26.1.5+dfsg1``), None when unknown."""
        head = self.version.split(".", 1)[0]
        return int(head) if head.isdigit() else None

    @property
    def kind(self) -> str:
        """``docker-rootful``, ``docker-rootless``, ``podman-rootless`` or ``podman-rootful``."""
        return f"{self.product}-{'rootless' if self.rootless else 'rootful'}"

    @property
    def label(self) -> str:
        """``Docker 26.1.5 (API 1.45), rootful`` for people."""
        name = "Podman" if self.product == "podman" else "Docker"
        return f"{name} {self.version} (API {self.api_version}), {'rootless' if self.rootless else 'rootful'}"

    @property
    def userns(self) -> bool:
        return any(opt.split(",")[0] == "name=userns" for opt in self.security_options)

    def remap_ids(self) -> tuple[int, int] | None:
        """``(uid, gid)`` from a remapped data root ``…/UID.GID``."""
        tail = os.path.basename(self.data_root.rstrip("/"))
        uid, sep, gid = tail.partition(".")
        if sep and uid.isdigit() and gid.isdigit():
            return int(uid), int(gid)
        return None

    def root_is(self, name: str, uid: int, gid: int) -> RootVerdict:
        """The one answer to "does container root map to this user here?" (``up``'s guard, remap, the fix helper)."""
        if self.rootless:
            return RootVerdict(True, f"rootless engine at {self.host}: container root is whoever runs it")
        if self.product == "podman":
            return RootVerdict(False, f"rootful Podman at {self.host} runs containers as real root")
        if not self.userns:
            return RootVerdict(False, f"the engine at {self.host} runs containers as real root (no userns-remap)")
        ids = self.remap_ids()
        if ids != (uid, gid):
            got = f"{ids[0]}:{ids[1]}" if ids else "another user"
            return RootVerdict(False, f"the engine at {self.host} remaps container root to {got}, not to {name} ({uid}:{gid})")
        return RootVerdict(True, f"the engine at {self.host} remaps container root to {name}")


def parse_api_version(text: str) -> tuple[int, int] | None:
    major, _, minor = text.partition(".")
    return (int(major), int(minor)) if major.isdigit() and minor.isdigit() else None


PODMAN_COMPONENT = "Podman Engine"


def _libpod_info(api: Api) -> dict[str, Any]:
    """Podman's own ``/libpod/info`` (rootless or not, its id mappings): the compatible ``/info`` lacks both."""
    result: dict[str, Any] = api.libpod("GET", "/info")
    return result


def _podman_map(rows: Any) -> IdMap:
    try:
        return tuple(IdRange(int(r["container_id"]), int(r["host_id"]), int(r["size"])) for r in rows or ())
    except (KeyError, TypeError, ValueError):
        return ()


def _podman_info(host_api_version: str, libpod: dict[str, Any]) -> EngineInfo:
    """Everything from Podman's one ``/libpod/info`` (its compatible ``/version`` asks conmon and the OCI
    runtime for their versions: 0.38 s on rootless Podman 4.3, most of what detection cost)."""
    host = libpod.get("host") or {}
    security = host.get("security") or {}
    store = libpod.get("store") or {}
    version = libpod.get("version") or {}
    rootless = bool(security.get("rootless"))
    opts = tuple(o for o, on in (("name=seccomp,profile=default", security.get("seccompEnabled")),
                                 ("name=apparmor", security.get("apparmorEnabled")),
                                 ("name=selinux", security.get("selinuxEnabled")),
                                 ("name=rootless", rootless)) if on)
    runtime = (host.get("ociRuntime") or {}).get("name")
    components = (PODMAN_COMPONENT, "Conmon", *([f"OCI Runtime ({runtime})"] if runtime else []))
    dist = host.get("distribution") or {}
    platform = "/".join(str(x) for x in (host.get("os"), host.get("arch")) if x)
    named = " ".join(str(x) for x in (dist.get("distribution"), dist.get("version")) if x)
    if named:
        platform += f" ({named})"
    maps = host.get("idMappings") or {}
    return EngineInfo(
        host=describe_host(),
        version=str(version.get("Version", "?")),
        api_version=host_api_version or "?",
        security_options=opts,
        data_root=str(store.get("graphRoot", "")),
        images=int((store.get("imageStore") or {}).get("number", 0)),
        containers=int((store.get("containerStore") or {}).get("number", 0)),
        rootless=rootless,
        product="podman",
        components=components,
        platform=platform,
        podman_uid_map=_podman_map(maps.get("uidmap")),
        podman_gid_map=_podman_map(maps.get("gidmap")),
        podman_networks=tuple(n for n in ("pasta", "slirp4netns") if (host.get(n) or {}).get("executable")),
        oci_runtime=str(runtime or ""),
    )


def _podman_brief(headers: dict[str, str]) -> EngineInfo | None:
    """What ``up`` needs of a local Podman, without ``/libpod/info`` (0.35-0.45 s on rootless Podman 4.3):
    it is Podman (the ping's headers, with its version), rootless when its socket is not root's (a rootful
    Podman's socket is), and the user-mode networks it can run (pasta, slirp4netns) found as Podman finds
    them, on this host's PATH.  ``None`` for a socket that is not a local file: then ask the engine."""
    import shutil

    host = describe_host()
    sock = socket_path(host)
    try:
        owner = os.stat(sock).st_uid if sock is not None else None
    except OSError:
        owner = None
    if owner is None:
        return None
    rootless = owner != 0
    return EngineInfo(
        host=host, version=headers.get("libpod-api-version", "?"), api_version=headers.get("api-version", "?"),
        security_options=("name=rootless",) if rootless else (), data_root="", images=0, containers=0,
        rootless=rootless, product="podman", components=(PODMAN_COMPONENT,),
        podman_networks=tuple(n for n in ("pasta", "slirp4netns") if shutil.which(n)),
    )


def inspect_engine(engine: Api | Engine, brief: bool = False) -> EngineInfo:
    """Engine facts.

    ``/_ping`` first (an :class:`Engine`'s own, from :func:`connect`): Podman names itself in its headers (``Libpod-Api-Version``) and is then asked
    its own ``/libpod/info`` alone (``brief``: not even that, :func:`_podman_brief`); Docker answers
    ``/info`` and ``/version``.  Raises
    ``EngineError(kind=API_TOO_OLD)`` for an engine older than devbox supports.
    """
    api = engine.api if isinstance(engine, Engine) else engine
    headers = engine.ping_headers if isinstance(engine, Engine) else api.ping_headers()
    podman = names_podman(headers)
    brief_info = _podman_brief(headers) if podman and brief else None
    if brief_info is not None:
        result = brief_info
    elif podman:
        result = _podman_info(headers.get("api-version", ""), _libpod_info(api))
    else:
        raw = api.info()
        versions = api.version()
        opts = tuple(raw.get("SecurityOptions") or ())
        components = tuple(str(c.get("Name", "")) for c in versions.get("Components") or ())
        if PODMAN_COMPONENT in components:  # a Podman whose /_ping did not say so (a proxy in between)
            result = _podman_info(str(versions.get("ApiVersion", "")), _libpod_info(api))
        else:
            result = EngineInfo(
                host=describe_host(),
                version=str(versions.get("Version", "?")),
                api_version=str(versions.get("ApiVersion", "?")),
                security_options=opts,
                data_root=str(raw.get("DockerRootDir", "")),
                images=int(raw.get("Images", 0)),
                containers=int(raw.get("Containers", 0)),
                rootless=any(o.split(",")[0] == "name=rootless" for o in opts),
                components=components,
                platform=str((versions.get("Platform") or {}).get("Name", "")),
                image_store="containerd" if any(list(pair)[:2] == ["driver-type", "io.containerd.snapshotter.v1"]
                                                for pair in raw.get("DriverStatus") or ()) else "graphdriver",
            )
    api_version = parse_api_version(result.api_version)
    if api_version is not None and api_version < MIN_API_VERSION:
        raise EngineError(
            f"the engine at {result.host} speaks API {result.api_version} (Docker {result.version}); devbox needs "
            f"{MIN_API_VERSION[0]}.{MIN_API_VERSION[1]} or newer", kind=Kind.API_TOO_OLD,
            hint="upgrade the engine (Docker 19.03 or newer)",
        )
    return result
