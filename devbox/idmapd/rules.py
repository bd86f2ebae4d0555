"""What the idmap helper grants (pure): the whole security policy, in one page.

The helper runs as root and makes idmapped mounts for ordinary users.  The
caller's uid and gid come from the kernel (``SO_PEERCRED``), never from the
request.  A request names a directory, a view name and a *writer* (host uid and
gid); the map is always ``CALLER WRITER 1`` for uids and for gids.  It is
granted only when:

1. **the name** is a plain token (letters, digits, ``.``, ``_``, ``-``; no
   ``/``), so the staging path is ``<run>/mounts/<caller uid>/<name>``: a caller
   can only ever reach its own directory of views;
2. **the path** is absolute and normal: no ``..``, no ``.``, no empty component;
   the server then opens it with ``openat2(RESOLVE_NO_SYMLINKS |
   RESOLVE_NO_MAGICLINKS)``, so no component may be a symlink, and everything
   after works on that fd, not on the path again (no race between check and use);
3. **the directory is the caller's**: its owner (``fstat`` of that fd) is the
   caller's uid.  Through the view only files stored as the caller are
   writable, and only by the writer; files of other owners are seen as the
   overflow id and cannot be written or chowned, even by container root
   (the kernel denies capabilities over unmapped inodes);
4. **the writer holds no power the caller does not already have**: it is root
   (who can write the caller's files anyway), the caller, or one of the
   caller's own subordinate ids (``/etc/subuid``/``/etc/subgid``: ids the
   caller already controls through user namespaces).  A map onto another real
   account would let that account write as the caller: refused;
5. **bounded**: at most :data:`MAX_VIEWS` views per caller.

The mount itself is a non-recursive clone (mounts beneath the directory are not
carried along) with private propagation, attached in a root-owned ``0700``
directory, so only root (the engine) can reach it on the host.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

MAX_VIEWS = 256
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_PATH = 4096


class Refused(Exception):
    """A request the rules do not grant; the message is the one-line reason sent back and logged."""


def check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name) or name.endswith(".json"):
        raise Refused(f"bad view name {name!r}: letters, digits, '.', '_' and '-' only")
    return name


def check_path_text(path: object) -> str:
    """The textual rules; symlinks are refused later by ``openat2``."""
    if not isinstance(path, str) or not path.startswith("/") or len(path) > MAX_PATH or "\0" in path:
        raise Refused(f"bad path {path!r}: an absolute path is needed")
    parts = path.split("/")[1:]
    if any(p in ("", ".", "..") for p in parts):  # "/" itself too: nobody but root owns it
        raise Refused(f"path {path!r} is not normal (no '..', '.', '//' or trailing '/'): send the resolved path")
    return path


def check_owner(path: str, owner_uid: int, caller_uid: int) -> None:
    if owner_uid != caller_uid:
        raise Refused(f"{path} belongs to uid {owner_uid}, not to the caller (uid {caller_uid})")


def check_writer(caller: tuple[int, int], writer: object,
                 subuids: Sequence[tuple[int, int]], subgids: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """``writer`` must be ``[uid, gid]`` with each root, the caller's own id, or in its subordinate ranges."""
    if (not isinstance(writer, (list, tuple)) or len(writer) != 2
            or not all(isinstance(w, int) and not isinstance(w, bool) and 0 <= w < 2**32 - 1 for w in writer)):
        raise Refused(f"bad writer {writer!r}: [uid, gid] is needed")
    for i, (what, ranges) in enumerate((("uid", subuids), ("gid", subgids))):
        w = writer[i]
        if w in (0, caller[i]) or any(start <= w < start + count for start, count in ranges):
            continue
        raise Refused(f"writer {what} {w} is not root, the caller ({caller[i]}) or one of the caller's "
                      f"subordinate ids: a map onto another account is never granted")
    return int(writer[0]), int(writer[1])


def check_count(existing: int) -> None:
    if existing >= MAX_VIEWS:
        raise Refused(f"{existing} views already: the limit is {MAX_VIEWS} per user (devbox down releases them)")
