"""Staying inside the work dirs: every path a fix looks at or touches is resolved beneath its root.

A container writes the work dir; it can turn any directory in it into a
symbolic link at any moment, to anywhere on the host.  So a leak's recorded
path is a string that may no longer lead where it did, and ``os.lstat`` or
``chown -h`` follow symbolic links in every component but the last.  Here a
path is opened one component at a time from its work dir (``openat`` with
``O_NOFOLLOW | O_DIRECTORY``): no component may be a symbolic link, ``.`` or
``..``, or on another filesystem; the last one is looked at and changed
relative to its parent's open descriptor without following it
(``fstatat``/``fchownat`` with ``AT_SYMLINK_NOFOLLOW``).  A directory swapped
for a link after we opened it does not matter: we hold the directory itself.

The security argument, for the three places that change ownership:

* devbox run as root (``sudo devbox leaks --fix``, the command it prints for
  files only root can give back) chowns with :func:`chown_beneath`: it can
  only reach entries beneath the work dir, on its filesystem.
* the helper container (:mod:`devbox.watch.fixhelper`) sees only the work
  dirs, bind-mounted non-recursively: whatever a symbolic link in them says,
  inside the helper it can only lead into the work dirs or into the helper's
  own throwaway root filesystem, never to the host's other files.
* paths are first checked here, on the host, so that what would leave the
  work dir is skipped and reported, not attempted.
"""

from __future__ import annotations

import os
import stat as _stat
from collections.abc import Sequence

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Escape(Exception):
    """The path does not stay beneath its work dir (``reason`` says where it leaves)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def root_of(path: str, roots: Sequence[str]) -> str | None:
    """The work dir ``path`` lies beneath (as text), or ``None``."""
    for root in sorted(roots, key=len, reverse=True):
        prefix = root.rstrip("/") + "/"
        if path.startswith(prefix):
            return root
    return None


def _components(root: str, path: str) -> list[str]:
    prefix = root.rstrip("/") + "/"
    if not path.startswith(prefix):
        raise Escape(path, f"not beneath the work dir {root}")
    parts = path[len(prefix):].split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise Escape(path, f"'{part or '//'}' in the path")
    return parts


def _open_parent(root: str, path: str) -> tuple[int, str, int]:
    """An fd of ``path``'s parent, reached from ``root`` without following any link; (fd, name, root's st_dev)."""
    parts = _components(root, path)
    fd = os.open(root, _DIR)
    try:
        dev = os.fstat(fd).st_dev
        walked = root.rstrip("/")
        for part in parts[:-1]:
            walked += "/" + part
            st = os.stat(part, dir_fd=fd, follow_symlinks=False)
            if _stat.S_ISLNK(st.st_mode):
                raise Escape(path, f"{walked} is a symbolic link now")
            if not _stat.S_ISDIR(st.st_mode):
                raise Escape(path, f"{walked} is not a directory now")
            if st.st_dev != dev:
                raise Escape(path, f"{walked} is on another filesystem")
            try:
                nxt = os.open(part, _DIR, dir_fd=fd)
            except OSError as exc:  # swapped for a link between the stat and the open (ELOOP/ENOTDIR)
                raise Escape(path, f"{walked} changed while it was looked at ({exc.strerror})") from None
            os.close(fd)
            fd = nxt
        return fd, parts[-1], dev
    except BaseException:
        os.close(fd)
        raise


def lstat_beneath(root: str, path: str) -> os.stat_result:
    """``lstat`` of ``path`` reached from ``root`` without following links.  Raises :class:`Escape`,
    or ``FileNotFoundError`` when it is gone."""
    fd, name, dev = _open_parent(root, path)
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
    finally:
        os.close(fd)
    if st.st_dev != dev and not _stat.S_ISLNK(st.st_mode):
        raise Escape(path, "it is on another filesystem")
    return st


def chown_beneath(root: str, path: str, uid: int, gid: int) -> None:
    """``chown -h uid:gid`` of ``path``, reached from ``root`` without following links (see the module)."""
    fd, name, dev = _open_parent(root, path)
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        if st.st_dev != dev and not _stat.S_ISLNK(st.st_mode):
            raise Escape(path, "it is on another filesystem")
        os.chown(name, uid, gid, dir_fd=fd, follow_symlinks=False)
    finally:
        os.close(fd)
