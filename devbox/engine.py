"""The Docker engine boundary: connecting, and turning library errors into DevboxErrors.

Every other module gets a ready ``docker.DockerClient`` from :func:`connect`
and never sees a raw ``requests``/``docker`` exception it must decode.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from devbox.errors import EngineError

if TYPE_CHECKING:
    import docker

    from devbox.dockerapi import Api

T = TypeVar("T")


def describe_host() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def _socket_path(host: str) -> str | None:
    return host[len("unix://") :] if host.startswith("unix://") else None


def translate(exc: BaseException, host: str | None = None) -> EngineError:
    """A docker/requests/OS error as one line naming the socket and what to do."""
    host = host or describe_host()
    text = str(exc)
    sock = _socket_path(host)
    if isinstance(exc, PermissionError) or "Permission denied" in text or "PermissionError" in text:
        return EngineError(
            f"permission denied on {sock or host}",
            hint="add your user to the 'docker' group (root-equivalent) and log in again, or run with sudo",
        )
    if "FileNotFoundError" in text or "No such file or directory" in text:
        return EngineError(
            f"no Docker daemon socket at {sock or host}",
            hint="start the engine (sudo systemctl start docker) or set DOCKER_HOST",
        )
    if "Connection refused" in text or "ConnectionRefused" in text:
        return EngineError(
            f"the Docker daemon at {host} refused the connection (not running?)",
            hint="start the engine (sudo systemctl start docker)",
        )
    if "timed out" in text.lower() or "Timeout" in type(exc).__name__:
        return EngineError(f"the Docker daemon at {host} did not answer in time", hint="check `docker info`")
    explanation = getattr(exc, "explanation", None)
    return EngineError(f"Docker engine error: {explanation or text}".strip())


def call(fn: Callable[[], T], host: str | None = None) -> T:
    """Run one engine call, translating its errors."""
    import docker.errors
    import requests.exceptions

    try:
        return fn()
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        raise translate(exc, host) from None


def connect(timeout: int = 120) -> docker.DockerClient:
    """A client for DOCKER_HOST (or the default socket) that has answered a ping."""
    import docker

    host = describe_host()
    client = call(lambda: docker.from_env(timeout=timeout), host)
    call(client.ping, host)
    return client


def fast_api(timeout: float = 60) -> Api:
    """The stdlib client (:mod:`devbox.dockerapi`) for a local unix-socket engine, pinged."""
    from devbox.dockerapi import Api

    host = describe_host()
    sock = _socket_path(host)
    if sock is None:
        raise EngineError(
            f"DOCKER_HOST={host} is not a local unix socket: a remote engine cannot bind-mount this host's files",
            hint="run devbox on the engine's host, or point DOCKER_HOST at a local socket",
        )
    api = Api(sock, timeout)
    fast_call(api.ping, host)
    return api


def fast_call(fn: Callable[[], T], host: str | None = None) -> T:
    """Run one :class:`~devbox.dockerapi.Api` call, translating its errors."""
    from devbox.dockerapi import ApiError

    try:
        return fn()
    except ApiError as exc:
        raise EngineError(f"Docker engine error: {exc.explanation}") from None
    except OSError as exc:
        raise translate(exc, host) from None


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

    @property
    def userns(self) -> bool:
        return any(opt.split(",")[0] == "name=userns" for opt in self.security_options)

    def root_mismatch(self, name: str, uid: int, gid: int) -> str | None:
        """Why container root on this engine is *not* host ``uid:gid`` — or ``None`` when it is."""
        if self.rootless:
            return None  # rootless: container root is whoever runs the engine
        if not self.userns:
            return f"the engine at {self.host} runs containers as real root (no userns-remap)"
        ids = self.remap_ids()
        if ids != (uid, gid):
            got = f"{ids[0]}:{ids[1]}" if ids else "another user"
            return f"the engine at {self.host} remaps container root to {got}, not to {name} ({uid}:{gid})"
        return None

    def remap_ids(self) -> tuple[int, int] | None:
        """``(uid, gid)`` from a remapped data root ``…/UID.GID``."""
        tail = os.path.basename(self.data_root.rstrip("/"))
        uid, sep, gid = tail.partition(".")
        if sep and uid.isdigit() and gid.isdigit():
            return int(uid), int(gid)
        return None


def info(api: Api | docker.DockerClient, *, version: bool = True) -> EngineInfo:
    """Engine facts from the fast client or an SDK client (both answer info() and version()).

    ``version=False`` spares the second call (version and API version read "?").
    """
    from devbox.dockerapi import Api

    run = fast_call if isinstance(api, Api) else call
    raw: dict[str, Any] = run(api.info)
    versions: dict[str, Any] = run(api.version) if version else {}
    opts = tuple(raw.get("SecurityOptions") or ())
    return EngineInfo(
        host=describe_host(),
        version=str(versions.get("Version", "?")),
        api_version=str(versions.get("ApiVersion", "?")),
        security_options=opts,
        data_root=str(raw.get("DockerRootDir", "")),
        images=int(raw.get("Images", 0)),
        containers=int(raw.get("Containers", 0)),
        rootless=any("rootless" in o for o in opts),
    )
