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


def wait_until_up(timeout: float, interval: float = 0.25) -> docker.DockerClient | None:
    """Poll until the daemon answers, or ``None`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return connect(timeout=10)
        except EngineError:
            if time.monotonic() >= deadline:
                return None
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

    def remap_ids(self) -> tuple[int, int] | None:
        """``(uid, gid)`` from a remapped data root ``…/UID.GID``."""
        tail = os.path.basename(self.data_root.rstrip("/"))
        uid, sep, gid = tail.partition(".")
        if sep and uid.isdigit() and gid.isdigit():
            return int(uid), int(gid)
        return None


def info(client: docker.DockerClient) -> EngineInfo:
    raw: dict[str, Any] = call(client.info)
    version: dict[str, Any] = call(client.version)
    opts = tuple(raw.get("SecurityOptions") or ())
    return EngineInfo(
        host=describe_host(),
        version=str(version.get("Version", "?")),
        api_version=str(version.get("ApiVersion", "?")),
        security_options=opts,
        data_root=str(raw.get("DockerRootDir", "")),
        images=int(raw.get("Images", 0)),
        containers=int(raw.get("Containers", 0)),
        rootless=any("rootless" in o for o in opts),
    )
