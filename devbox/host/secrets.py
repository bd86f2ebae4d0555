"""Generated secrets (a web IDE's password, the terminal relay's token), one file per variable.

A secret is made once per project and variable, with :func:`secrets.token_urlsafe`, and kept
in ``~/.local/state/devbox/secrets/PROJECT/NAME`` (0600, in 0700 directories, the user's own
even when devbox runs under sudo).  It is created with ``O_EXCL`` under its final name after
being written to a temporary one, so two ``up`` racing agree on one value and a crash never
leaves an empty secret.  Deleting the file makes a new secret at the next ``up`` (which then
recreates the services that use it: the value is in their config hash).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterable
from pathlib import Path

from devbox.errors import DevboxError
from devbox.host.files import private_dir
from devbox.host.user import User

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_VALUE_RE = re.compile(r"[A-Za-z0-9_-]{16,}")


def load(directory: Path, names: Iterable[str], owner: User | None = None) -> dict[str, str]:
    """Each of ``names``' secret, made when missing; ``owner``: root acting for that user."""
    out: dict[str, str] = {}
    names = list(names)
    if not names:
        return out
    private_dir(directory, owner)
    for name in names:
        if not _NAME_RE.fullmatch(name):
            raise ValueError(f"not a variable name: {name!r}")
        out[name] = _read(directory / name) or _create(directory / name, owner)
    return out


def _read(path: Path) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DevboxError(f"cannot read the secret {path}: {exc.strerror}", hint="remove it; devbox makes a new one") from None
    with os.fdopen(fd, "rb") as f:
        value = f.read(4096).decode("ascii", "replace").strip()
    if not _VALUE_RE.fullmatch(value):
        raise DevboxError(f"{path}: not a secret devbox made (16+ letters, digits, _ or -)",
                          hint="remove the file; devbox makes a new one at the next up")
    return value


def _create(path: Path, owner: User | None) -> str:
    value = secrets.token_urlsafe(18)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, f"{value}\n".encode())
        os.fsync(fd)
        if owner is not None:
            os.fchown(fd, owner.uid, owner.gid)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if another up got there first: its value is the one
    except FileExistsError:
        pass
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return _read(path) or value
