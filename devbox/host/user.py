"""Who the user is: the one answer every command uses.

devbox acts for a person: the files in their work dirs should be theirs, the
remap maps container root to them, the watcher and doctor keep their state in
their state directory.  Run through ``sudo``, that person is ``SUDO_USER``, not
root; a ``SUDO_USER`` left in a user's own shell means nothing.
"""

from __future__ import annotations

import dataclasses
import grp
import os
import pwd
from pathlib import Path

from devbox.errors import DevboxError
from devbox.paths import Paths


@dataclasses.dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    group: str  # primary group name: dockerd keys /etc/subgid lines by it
    home: str

    @property
    def is_root(self) -> bool:
        return self.uid == 0


def _from_passwd(entry: pwd.struct_passwd) -> User:
    try:
        group = grp.getgrgid(entry.pw_gid).gr_name
    except KeyError:
        group = entry.pw_name
    return User(entry.pw_name, entry.pw_uid, entry.pw_gid, group, entry.pw_dir)


def lookup(name: str) -> User:
    """An account by name, or by uid when ``name`` is all digits and no such name exists."""
    try:
        return _from_passwd(pwd.getpwnam(name))
    except KeyError:
        pass
    if name.isdigit():
        try:
            return _from_passwd(pwd.getpwuid(int(name)))
        except KeyError:
            raise DevboxError(f"no user with uid {name}", hint="pass --user NAME of an existing account") from None
    raise DevboxError(f"unknown user {name!r}", hint="pass --user NAME of an existing account")


def resolve_user(name: str | None = None) -> User:
    """The user devbox acts for: ``name``; else, as root, ``SUDO_USER``; else whoever runs devbox.

    May be root (root running devbox without sudo): commands that cannot act for
    root say so with :func:`refuse_root`.
    """
    if name is None and os.geteuid() == 0:
        sudo_user = os.environ.get("SUDO_USER")
        name = sudo_user if sudo_user and sudo_user != "root" else None
    if name is not None:
        return lookup(name)
    try:
        return _from_passwd(pwd.getpwuid(os.getuid()))
    except KeyError:
        raise DevboxError(f"uid {os.getuid()} has no passwd entry", hint="run devbox as an account that exists") from None


def refuse_root(user: User, why: str, hint: str) -> User:
    """``user``, unless it is root: then one line saying why this command cannot act for root."""
    if user.is_root:
        raise DevboxError(why, hint=hint)
    return user


def acting_for_other(user: User) -> bool:
    """Is devbox running as root on behalf of ``user`` (under sudo)?"""
    return os.geteuid() == 0 and user.uid != 0


def paths_for(user: User) -> Paths:
    """Every location, with the per-user state in ``user``'s state directory (not root's under sudo)."""
    return Paths.from_env(home=Path(user.home) if acting_for_other(user) else None)
