"""Kernel idmapped mounts, made with the new mount API through ctypes (Linux >= 5.12).

An idmapped mount shows a directory through an id map: a file stored on disk
as uid ``S`` is seen through the mount as the uid the map's user namespace
sends ``S`` to, and whatever a process with fsuid ``W`` creates through it is
stored as the ``S`` that maps to ``W``.  A uid outside the map can neither
create nor chown there (``EOVERFLOW``).  Docker's bind mount of such a mount
keeps the map, so no engine support is needed (``../shared/ENVIRONMENT.md``).

Steps (each a syscall; only root, or CAP_SYS_ADMIN over the source's user
namespace, may make one):

1. a user namespace carrying the map: a forked child ``unshare(CLONE_NEWUSER)``s,
   the parent writes its ``uid_map``/``gid_map`` and keeps ``/proc/PID/ns/user``;
2. ``open_tree(fd, "", OPEN_TREE_CLONE | AT_EMPTY_PATH)``: a detached copy of the
   source's mount, not recursive (mounts below the source are not carried along);
3. ``mount_setattr(..., MOUNT_ATTR_IDMAP, userns_fd)`` with private propagation;
4. ``move_mount`` onto the staging path.

Everything here is mechanism; who may ask for what is :mod:`devbox.idmapd.rules`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import errno
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_OPENAT2 = 437
SYS_MOUNT_SETATTR = 442

AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_IDMAP = 0x00100000
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8
CLONE_NEWUSER = 0x10000000
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04

MIN_KERNEL = (5, 12)

# statfs f_type -> (name, first kernel whose filesystem supports idmapped mounts, or None: never)
FILESYSTEMS: dict[int, tuple[str, tuple[int, int] | None]] = {
    0xEF53: ("ext4", (5, 12)),
    0x58465342: ("xfs", (5, 12)),
    0x9123683E: ("btrfs", (5, 15)),
    0x4D44: ("vfat", (5, 12)),
    0xF2F52010: ("f2fs", (5, 18)),
    0x01021994: ("tmpfs", (6, 3)),
    0x794C7630: ("overlayfs", (5, 19)),
    0x2FC12FC1: ("zfs", (6, 0)),  # OpenZFS 2.2 on a recent kernel
    0x6969: ("nfs", None),
    0xFF534D42: ("cifs", None),
    0x65735546: ("fuse", None),  # virtiofs and other FUSE filesystems: the syscall may work, writes may not
    0x01021997: ("9p", None),
}


class MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


class OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


class StatFs(ctypes.Structure):
    _fields_ = [("f_type", ctypes.c_long), ("f_bsize", ctypes.c_long), ("rest", ctypes.c_byte * 120)]


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _check(rc: int, what: str, path: str | None = None) -> int:
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)
    return rc


# --- the user namespace that carries a map ----------------------------------------------------

Line = tuple[int, int, int]  # (on disk, seen as, count): a uid_map / gid_map row


def userns_fd(uid_lines: Sequence[Line], gid_lines: Sequence[Line]) -> int:
    """An fd of a new user namespace with these maps (the child that made it is gone)."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child: no Python beyond these calls
        try:
            os.close(ready_r)
            os.close(go_w)
            ok = _libc.unshare(CLONE_NEWUSER) == 0
            os.write(ready_w, b"1" if ok else b"0")
            os.read(go_r, 1)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(go_r)
    try:
        if os.read(ready_r, 1) != b"1":
            raise OSError(errno.EPERM, "unshare(CLONE_NEWUSER) failed: user namespaces are disabled or exhausted")
        proc = Path(f"/proc/{pid}")
        (proc / "uid_map").write_text("".join(f"{a} {b} {n}\n" for a, b, n in uid_lines))
        (proc / "gid_map").write_text("".join(f"{a} {b} {n}\n" for a, b, n in gid_lines))
        return os.open(proc / "ns" / "user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready_r)
        os.close(go_w)
        os.waitpid(pid, 0)


# --- opening a source without following anything --------------------------------------------


def open_dir_strict(path: str) -> int:
    """An ``O_PATH`` fd of the directory ``path``, resolved with no symlink and no magic link
    anywhere along it (``openat2`` with ``RESOLVE_NO_SYMLINKS``): what the fd names is what the
    path said, not what a link pointed to."""
    how = OpenHow(os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, 0, RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)
    rc = _libc.syscall(SYS_OPENAT2, AT_FDCWD, os.fsencode(path), ctypes.byref(how), ctypes.sizeof(how))
    return _check(rc, "openat2", path)


# --- making and removing the mount -----------------------------------------------------------


def attach_view(source_fd: int, target: str, ns_fd: int) -> None:
    """Clone the mount at ``source_fd`` (an ``O_PATH`` fd), idmap it through ``ns_fd`` and attach
    it at ``target`` (an existing empty directory)."""
    tree = _check(_libc.syscall(SYS_OPEN_TREE, source_fd, b"", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH),
                  "open_tree")
    try:
        attr = MountAttr(MOUNT_ATTR_IDMAP, 0, MS_PRIVATE, ns_fd)
        _check(_libc.syscall(SYS_MOUNT_SETATTR, tree, b"", AT_EMPTY_PATH, ctypes.byref(attr), ctypes.sizeof(attr)),
               "mount_setattr")
        _check(_libc.syscall(SYS_MOVE_MOUNT, tree, b"", AT_FDCWD, os.fsencode(target), MOVE_MOUNT_F_EMPTY_PATH),
               "move_mount", target)
    finally:
        os.close(tree)


def detach_view(target: str) -> None:
    """Lazily unmount ``target`` (``MNT_DETACH``: containers holding a copy keep theirs)."""
    if _libc.umount2(os.fsencode(target), MNT_DETACH | UMOUNT_NOFOLLOW) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):  # not a mount point (any more)
            raise OSError(err, f"umount {target}: {os.strerror(err)}", target)


# --- what is mounted --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MountEntry:
    mount_id: int
    root: str  # the path within its filesystem that is mounted
    target: str
    options: tuple[str, ...]
    fstype: str

    @property
    def idmapped(self) -> bool:
        return "idmapped" in self.options


def _unescape(field: str) -> str:
    return field.encode().decode("unicode_escape").encode("latin-1").decode(errors="surrogateescape") \
        if "\\" in field else field


def parse_mountinfo(text: str) -> list[MountEntry]:
    out = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        f = left.split()
        if not sep or len(f) < 6:
            continue
        out.append(MountEntry(int(f[0]), _unescape(f[3]), _unescape(f[4]), tuple(f[5].split(",")),
                              right.split()[0] if right else ""))
    return out


def mounts(proc: Path = Path("/proc/self")) -> list[MountEntry]:
    return parse_mountinfo((proc / "mountinfo").read_text())


def mounted_under(root: Path, proc: Path = Path("/proc/self")) -> Iterator[MountEntry]:
    prefix = str(root).rstrip("/") + "/"
    return (m for m in mounts(proc) if m.target.startswith(prefix))


# --- what the kernel and the filesystem support ------------------------------------------------


def kernel_version(release: str | None = None) -> tuple[int, int]:
    release = release or os.uname().release
    parts = release.split("-", 1)[0].split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return 0, 0


def fs_type(path: str) -> int:
    buf = StatFs()
    _check(_libc.statfs(os.fsencode(path), ctypes.byref(buf)), "statfs", path)
    return int(buf.f_type) & 0xFFFFFFFF


def fs_support(path: str, kernel: tuple[int, int] | None = None) -> tuple[bool | None, str]:
    """Does ``path``'s filesystem support idmapped mounts on this kernel?  ``None``: unknown
    (only a real write through a mount tells)."""
    kernel = kernel or kernel_version()
    magic = fs_type(path)
    known = FILESYSTEMS.get(magic)
    if known is None:
        return None, f"filesystem 0x{magic:x} is not one devbox knows; only a real write through a mount tells"
    name, since = known
    if since is None:
        return False, f"{name} does not support idmapped mounts"
    if kernel < since:
        return False, f"{name} supports idmapped mounts from Linux {since[0]}.{since[1]}; this is {kernel[0]}.{kernel[1]}"
    return True, f"{name} (idmapped mounts since Linux {since[0]}.{since[1]})"
