"""Engine failures as typed :class:`~devbox.errors.EngineError`\\ s.

The ``kind`` comes from the exception's type, the ``errno`` of the socket error
at the bottom of a docker/requests/urllib3 chain, or the HTTP status: never
from message text.  Both clients (the SDK through :func:`call`, the stdlib
:mod:`devbox.engine.fastapi`) report through here.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import TypeVar

from devbox.engine.endpoint import find_endpoint
from devbox.errors import EngineError
from devbox.errors import EngineErrorKind as Kind

T = TypeVar("T")



def timeout_s(default: float) -> float:
    """How long one engine request may take: ``DEVBOX_ENGINE_TIMEOUT`` seconds, else ``default``.
    A daemon that accepts and never answers then costs that long, not forever."""
    try:
        value = float(os.environ.get("DEVBOX_ENGINE_TIMEOUT") or default)
    except ValueError:
        return default
    return value if 0 < value < 86400 else default


def describe_host() -> str:
    """The engine's address (:func:`devbox.engine.endpoint.find_endpoint`)."""
    return find_endpoint().host


def socket_path(host: str) -> str | None:
    return host[len("unix://") :] if host.startswith("unix://") else None


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


def from_os_error(exc: BaseException, host: str | None = None, what: str | None = None,
                  timeout: float | None = None) -> EngineError:
    """A connection-level failure (no HTTP answer) as one line naming the socket, the request and what to do."""
    host = host or describe_host()
    sock = socket_path(host) or host
    if _is_timeout(exc):
        request = f" {what}" if what else ""
        within = f" within {timeout:g} s" if timeout else " in time"
        return EngineError(f"the Docker daemon at {host} did not answer{request}{within}", kind=Kind.TIMEOUT,
                           hint="it accepts connections but does not reply: check `docker info` and the daemon's "
                                "log; DEVBOX_ENGINE_TIMEOUT sets how long devbox waits")
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


def translate(exc: BaseException, host: str | None = None, what: str | None = None,
              timeout: float | None = None) -> EngineError:
    """Any docker SDK / requests / OS exception as a typed :class:`EngineError`."""
    import docker.errors

    if isinstance(exc, EngineError):
        return exc
    if isinstance(exc, docker.errors.InvalidVersion):
        return EngineError(f"the engine's API is too old for this request: {exc}", kind=Kind.API_TOO_OLD,
                           hint="upgrade the engine (Docker 19.03 or newer)")
    if isinstance(exc, docker.errors.APIError) and exc.response is not None:
        return from_status(int(exc.response.status_code), str(exc.explanation or exc))
    return from_os_error(exc, host, what, timeout)


def call(fn: Callable[[], T], host: str | None = None, what: str | None = None, timeout: float | None = None) -> T:
    """Run one Docker SDK call, translating its errors (``what``: the request, named if it times out)."""
    import docker.errors
    import requests.exceptions

    try:
        return fn()
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        raise translate(exc, host, what, timeout) from None
