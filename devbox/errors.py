"""The one error type users see, and the exit codes devbox uses.

Every expected failure is a :class:`DevboxError` carrying *where* it happened
(a file and line, a key path, a socket) and *what to do*.  The CLI's error
boundary (:func:`devbox.cli.main`) turns it into a single line on stderr.
"""

from __future__ import annotations

import enum


class Exit(enum.IntEnum):
    OK = 0
    PROBLEMS = 1  # a check ran and found something wrong
    ERROR = 2  # bad input or environment: a DevboxError
    INTERNAL = 3  # a bug: traceback saved to the log
    INTERRUPTED = 130


class DevboxError(Exception):
    """An expected failure, explained in one line.

    ``where`` names the place (``/etc/subuid:3``, ``devbox.toml: services.db``),
    ``hint`` says what the user should do next.
    """

    exit_code: Exit = Exit.ERROR

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.where = where
        self.hint = hint

    def one_line(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f" — {self.hint}"
        return " ".join(text.split("\n"))


class ConfigError(DevboxError):
    """A project file, profile or host configuration file is invalid."""


class EngineErrorKind(str, enum.Enum):
    """What went wrong with an engine request, decided from exception types and HTTP status codes.

    Callers branch on this, never on message text (doctor's fix for ``UNREACHABLE``
    is to start the daemon; for ``PERMISSION`` it is the socket's group).
    """

    UNREACHABLE = "unreachable"  # no socket, or nothing listening on it: start the engine
    PERMISSION = "permission"  # the socket exists but this user may not use it
    TIMEOUT = "timeout"  # the engine did not answer in time
    NOT_FOUND = "not-found"  # 404: no such container, image, network, volume
    CONFLICT = "conflict"  # 409: a name in use, a container already being removed
    API_TOO_OLD = "api-too-old"  # the engine's API is older than the client asked for
    BAD_REQUEST = "bad-request"  # 400: the engine refused the request as given
    REMOTE = "remote"  # DOCKER_HOST is not a local socket
    PULL_FAILED = "pull-failed"  # a registry could not be reached or refused an image
    SERVER = "server"  # 5xx or anything else the engine reported


class EngineError(DevboxError):
    """The engine is unreachable or refused a request; ``kind`` says which way."""

    def __init__(
        self, message: str, *, kind: EngineErrorKind = EngineErrorKind.SERVER, status: int | None = None,
        where: str | None = None, hint: str | None = None,
    ) -> None:
        super().__init__(message, where=where, hint=hint)
        self.kind = kind
        self.status = status


class HostError(DevboxError):
    """The host cannot be inspected or changed as asked (permissions, kernel, locks)."""


class RollbackError(HostError):
    """A change failed *and* undoing it failed: the message says what state remains."""
