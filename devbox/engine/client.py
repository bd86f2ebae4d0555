"""Connecting to the engine, typed engine errors, and what the engine says about itself.

Every other module gets a ready client from :func:`connect` (the Docker SDK) or
:func:`fast_api` (the standard-library client of :mod:`devbox.engine.fastapi`)
and never sees a raw ``requests``/``docker``/``OSError`` it must decode: those
become an :class:`~devbox.errors.EngineError` whose ``kind`` comes from the
exception's type, its ``errno`` or the HTTP status, never from its text.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import time
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from devbox.errors import EngineError
from devbox.errors import EngineErrorKind as Kind

if TYPE_CHECKING:
    import docker

    from devbox.engine.fastapi import Api

T = TypeVar("T")

DEFAULT_HOST = "unix:///var/run/docker.sock"
# Docker 19.03's API.  Older engines lack what devbox asks for (healthcheck start periods, init).
MIN_API_VERSION = (1, 40)


def describe_host() -> str:
    return os.environ.get("DOCKER_HOST") or DEFAULT_HOST


def socket_path(host: str) -> str | None:
    return host[len("unix://") :] if host.startswith("unix://") else None


# --- typed errors ------------------------------------------------------------------


def root_os_error(exc: BaseException) -> OSError | None:
    """The ``OSError`` with an errno at the bottom of a docker/requests/urllib3 chain, if any.

    requests and urllib3 wrap the socket's error in ``args``, ``reason``,
    ``__cause__`` or ``__context__``; their own classes derive from ``OSError``
    without an errno, so those are looked through.
    """
    return next((e for e in _chain(exc) if isinstance(e, OSError) and e.errno is not None), None)


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop(0)
        if any(e is seen for seen in out):
            continue
        out.append(e)
        nested = [e.__cause__, e.__context__, getattr(e, "reason", None), *getattr(e, "args", ())]
        todo += [n for n in nested if isinstance(n, BaseException)]
    return out


def _timeout_types(chain: list[BaseException]) -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [TimeoutError]
    if any(type(e).__module__.split(".")[0] in ("requests", "urllib3", "docker") for e in chain):
        import requests.exceptions
        import urllib3.exceptions

        types += [requests.exceptions.Timeout, urllib3.exceptions.TimeoutError]
    return tuple(types)


def _is_timeout(exc: BaseException) -> bool:
    chain = _chain(exc)
    types = _timeout_types(chain)
    return any(isinstance(e, types) for e in chain)


_STATUS_KIND = {400: Kind.BAD_REQUEST, 404: Kind.NOT_FOUND, 409: Kind.CONFLICT}


def kind_of_status(status: int) -> Kind:
    return _STATUS_KIND.get(status, Kind.SERVER)


def from_os_error(exc: BaseException, host: str | None = None) -> EngineError:
    """A connection-level failure (no HTTP answer) as one line naming the socket and what to do."""
    host = host or describe_host()
    sock = socket_path(host) or host
    if _is_timeout(exc):
        return EngineError(f"the Docker daemon at {host} did not answer in time", kind=Kind.TIMEOUT,
                           hint="check `docker info`")
    os_error = root_os_error(exc)
    code = os_error.errno if os_error is not None else None
    if code in (errno.EACCES, errno.EPERM):
        return EngineError(
            f"permission denied on {sock}", kind=Kind.PERMISSION,
            hint="add your user to the 'docker' group (root-equivalent) and log in again, or run with sudo",
        )
    if code in (errno.ENOENT, errno.ENOTDIR):
        return EngineError(f"no Docker daemon socket at {sock}", kind=Kind.UNREACHABLE,
                           hint="start the engine (sudo systemctl start docker) or set DOCKER_HOST")
    if code in (errno.ECONNREFUSED, errno.ECONNRESET, errno.EPIPE):
        return EngineError(f"the Docker daemon at {host} refused the connection (not running?)", kind=Kind.UNREACHABLE,
                           hint="start the engine (sudo systemctl start docker)")
    if code == errno.ETIMEDOUT:
        return EngineError(f"the Docker daemon at {host} did not answer in time", kind=Kind.TIMEOUT,
                           hint="check `docker info`")
    detail = os_error.strerror if os_error is not None and os_error.strerror else type(exc).__name__
    return EngineError(f"cannot reach the Docker daemon at {host}: {detail}", kind=Kind.UNREACHABLE,
                       hint="check `docker info`")


def from_status(status: int, explanation: str, what: str = "") -> EngineError:
    """An HTTP error answer from the engine."""
    prefix = f"{what}: " if what else "Docker engine error: "
    return EngineError(f"{prefix}{explanation}".strip(), kind=kind_of_status(status), status=status)


def translate(exc: BaseException, host: str | None = None) -> EngineError:
    """Any docker SDK / requests / OS exception as a typed :class:`EngineError`."""
    import docker.errors

    if isinstance(exc, EngineError):
        return exc
    if isinstance(exc, docker.errors.InvalidVersion):
        return EngineError(f"the engine's API is too old for this request: {exc}", kind=Kind.API_TOO_OLD,
                           hint="upgrade the engine (Docker 19.03 or newer)")
    if isinstance(exc, docker.errors.APIError) and exc.response is not None:
        return from_status(int(exc.response.status_code), str(exc.explanation or exc))
    return from_os_error(exc, host)


def call(fn: Callable[[], T], host: str | None = None) -> T:
    """Run one Docker SDK call, translating its errors."""
    import docker.errors
    import requests.exceptions

    try:
        return fn()
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        raise translate(exc, host) from None


# --- clients ---------------------------------------------------------------------


def connect(timeout: int = 120) -> docker.DockerClient:
    """A Docker SDK client for DOCKER_HOST (or the default socket) that has answered a ping."""
    import docker

    host = describe_host()
    client = call(lambda: docker.from_env(timeout=timeout), host)
    call(client.ping, host)
    return client


def fast_api(timeout: float = 60) -> Api:
    """The stdlib client (:mod:`devbox.engine.fastapi`) for a local unix-socket engine, pinged."""
    from devbox.engine.fastapi import Api

    host = describe_host()
    sock = socket_path(host)
    if sock is None:
        raise EngineError(
            f"DOCKER_HOST={host} is not a local unix socket: a remote engine cannot bind-mount this host's files",
            kind=Kind.REMOTE, hint="run devbox on the engine's host, or point DOCKER_HOST at a local socket",
        )
    api = Api(sock, timeout, host=host)
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


def info(api: Api | docker.DockerClient, *, version: bool = True) -> EngineInfo:
    """Engine facts from the fast client or an SDK client (both answer info() and version()).

    ``version=False`` spares the second call (version and API version read "?").
    Raises ``EngineError(kind=API_TOO_OLD)`` for an engine older than devbox supports.
    """
    from devbox.engine.fastapi import Api

    run: Callable[[Callable[[], Any]], Any] = (lambda fn: fn()) if isinstance(api, Api) else call
    raw: dict[str, Any] = run(api.info)
    versions: dict[str, Any] = run(api.version) if version else {}
    opts = tuple(raw.get("SecurityOptions") or ())
    result = EngineInfo(
        host=describe_host(),
        version=str(versions.get("Version", "?")),
        api_version=str(versions.get("ApiVersion", "?")),
        security_options=opts,
        data_root=str(raw.get("DockerRootDir", "")),
        images=int(raw.get("Images", 0)),
        containers=int(raw.get("Containers", 0)),
        rootless=any(o.split(",")[0] == "name=rootless" for o in opts),
    )
    api_version = parse_api_version(result.api_version)
    if api_version is not None and api_version < MIN_API_VERSION:
        raise EngineError(
            f"the engine at {result.host} speaks API {result.api_version} (Docker {result.version}); devbox needs "
            f"{MIN_API_VERSION[0]}.{MIN_API_VERSION[1]} or newer", kind=Kind.API_TOO_OLD,
            hint="upgrade the engine (Docker 19.03 or newer)",
        )
    return result
