"""Ownership leaks: who owns a stray file, the one-line story, the JSON-lines records, the fix.

A *leak* is a path under a watched directory whose uid or gid is not the host
user's.  Classification is pure: the host ids, the id maps dockerd builds
(:func:`devbox.core.idmap.predict_map`) and the services' container uids come in as
data.  The only side effects here are the records file (append one JSON object
per line, read back as "latest state per path") and :func:`fix`, which is
handed the callable that runs a helper container.

Nothing here imports watchdog or rich: the scanner's worker processes import
this module and must start fast.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import fcntl
import json
import os
import shlex
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from devbox.core.idmap import IdMap, parse_subid, predict_map, to_container
from devbox.core.model import Service
from devbox.host.files import open_private, write_atomic
from devbox.host.user import User, refuse_root, resolve_user


class Kind(str, enum.Enum):
    ROOT = "root"  # host uid/gid 0: remap off, or a userns_mode=host service
    SUBORDINATE = "subordinate"  # inside the user's subordinate range: a container user
    OTHER_USER = "other-user"  # a real account (or group) on the host
    UNMAPPED = "unmapped"  # an id nobody on this host accounts for


class State(str, enum.Enum):
    LEAK = "leak"
    FIXED = "fixed"  # the path is owned by the user again
    GONE = "gone"  # the path no longer exists


@dataclasses.dataclass(frozen=True)
class HostUser:
    """Whose files these should be: the uid, the primary gid and the shared groups allowed."""

    name: str
    uid: int
    gid: int
    extra_gids: frozenset[int] = frozenset()

    @classmethod
    def of(cls, user: User, allowed_gids: Iterable[int] = ()) -> HostUser:
        """``user`` (from :func:`devbox.host.user.resolve_user`) with the shared groups a project allows."""
        return cls(user.name, user.uid, user.gid, frozenset(allowed_gids))

    @property
    def gids(self) -> frozenset[int]:
        return self.extra_gids | {self.gid}

    def owns(self, uid: int, gid: int) -> bool:
        return uid == self.uid and (gid == self.gid or gid in self.extra_gids)


@dataclasses.dataclass(frozen=True)
class Attribution:
    """Everything needed to say who wrote a file: maps, services, host accounts.

    ``services_by_uid`` maps a *container* uid to the services running as it;
    ``host_ns_services`` are services started with ``userns_mode=host`` (their
    root is the host's root).
    """

    user: HostUser
    uid_map: IdMap = ()
    gid_map: IdMap = ()
    services_by_uid: Mapping[int, Sequence[str]] = dataclasses.field(default_factory=dict)
    accounts: Mapping[int, str] = dataclasses.field(default_factory=dict)  # host uid -> login name
    groups: Mapping[int, str] = dataclasses.field(default_factory=dict)  # host gid -> group name
    host_ns_services: tuple[str, ...] = ()

    def classify(self, path: str, uid: int, gid: int, *, is_dir: bool = False, now: float = 0.0) -> Leak:
        cuid = to_container(self.uid_map, uid)
        cgid = to_container(self.gid_map, gid)
        # The uid decides the story when it is wrong; a wrong group alone is told by the gid.
        by_gid = uid == self.user.uid
        host_id = gid if by_gid else uid
        container_id = cgid if by_gid else cuid
        names = self.groups if by_gid else self.accounts
        services: tuple[str, ...] = ()
        account = names.get(host_id)
        if host_id == 0:
            kind = Kind.ROOT
            services = tuple(self.host_ns_services)
            account = names.get(0, "root")
        elif container_id is not None:
            kind = Kind.SUBORDINATE
            if not by_gid:
                services = tuple(self.services_by_uid.get(container_id, ()))
        elif account is not None:
            kind = Kind.OTHER_USER
        else:
            kind = Kind.UNMAPPED
        return Leak(
            path=path,
            uid=uid,
            gid=gid,
            kind=kind,
            container_uid=cuid,
            container_gid=cgid,
            services=services,
            account=account,
            by_gid=by_gid,
            is_dir=is_dir,
            first_seen=now,
        )


@dataclasses.dataclass(frozen=True)
class Leak:
    path: str  # absolute
    uid: int
    gid: int
    kind: Kind
    container_uid: int | None  # None: the host uid is not mapped into the containers
    container_gid: int | None
    services: tuple[str, ...] = ()
    account: str | None = None  # the host account or group name behind the offending id
    by_gid: bool = False  # the uid is the user's; only the group is wrong
    is_dir: bool = False
    first_seen: float = 0.0  # epoch seconds

    @property
    def service(self) -> str | None:
        return ", ".join(self.services) if self.services else None

    @property
    def fixable(self) -> bool:
        """A helper container can chown it: both ids are mapped into the user namespace."""
        return self.container_uid is not None and self.container_gid is not None

    @property
    def owner_key(self) -> tuple[int, int]:
        return (self.uid, self.gid)

    def owner_text(self, *, host: bool = True) -> str:
        """``container uid 1000 (service runtime)``, ``root (uid 0)``, ``user alice (uid 1001)``.

        ``host`` adds the host id of a container id: precise for one line,
        noise in a summary.
        """
        what, host_id, cid = ("gid", self.gid, self.container_gid) if self.by_gid else ("uid", self.uid, self.container_uid)
        who = "group" if self.by_gid else "user"
        notes = [f"host {what} {host_id}"] if host and self.kind is Kind.SUBORDINATE else []
        if self.services:
            notes.append(f"service {self.service}")
        note = f" ({', '.join(notes)})" if notes else ""
        if self.kind is Kind.ROOT:
            return f"root ({', '.join([f'{what} 0', *notes])})"
        if self.kind is Kind.SUBORDINATE:
            return f"container {what} {cid}{note}"
        if self.kind is Kind.OTHER_USER:
            return f"{who} {self.account} ({what} {host_id})"
        return f"unmapped {what} {host_id}"

    def describe(self, shown_path: str | None = None) -> str:
        """One line: the path, who owns it, and what it means."""
        path = shown_path if shown_path is not None else self.path
        if self.is_dir and not path.endswith("/"):
            path += "/"
        why = {
            Kind.ROOT: "remap off or a userns_mode=host service",
            Kind.SUBORDINATE: "a container user wrote it",
            Kind.OTHER_USER: "another host account",
            Kind.UNMAPPED: "no account or container map has this id",
        }[self.kind]
        return f"{path}: owned by {self.owner_text()} — {why}"

    def to_record(self, state: State = State.LEAK, at: float | None = None) -> dict[str, Any]:
        return {
            "path": self.path,
            "uid": self.uid,
            "gid": self.gid,
            "kind": self.kind.value,
            "container_uid": self.container_uid,
            "container_gid": self.container_gid,
            "service": self.service,
            "services": list(self.services),
            "account": self.account,
            "by_gid": self.by_gid,
            "is_dir": self.is_dir,
            "fixable": self.fixable,
            "first_seen": iso(self.first_seen),
            "state": state.value,
            "at": iso(self.first_seen if at is None else at),
        }

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> Leak:
        services = rec.get("services")
        if services is None:
            services = [s.strip() for s in (rec.get("service") or "").split(",") if s.strip()]
        return cls(
            path=str(rec["path"]),
            uid=int(rec["uid"]),
            gid=int(rec["gid"]),
            kind=Kind(rec["kind"]),
            container_uid=rec.get("container_uid"),
            container_gid=rec.get("container_gid"),
            services=tuple(services),
            account=rec.get("account"),
            by_gid=bool(rec.get("by_gid", False)),
            is_dir=bool(rec.get("is_dir", False)),
            first_seen=from_iso(rec.get("first_seen")),
        )


def iso(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def from_iso(text: object) -> float:
    if isinstance(text, (int, float)):
        return float(text)
    if not isinstance(text, str) or not text:
        return 0.0
    return _dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# --- gathering the attribution (reads the host's databases) -----------------


def watch_user() -> User:
    """Whose files these are (:func:`devbox.host.user.resolve_user`); never root, for whom every file is his own."""
    return refuse_root(resolve_user(), "as root every file is yours: there is nothing to watch for",
                       "run devbox as your own user (or with sudo, which sets SUDO_USER)")


def service_uids(services: Iterable[Service]) -> tuple[dict[int, tuple[str, ...]], tuple[str, ...]]:
    """Who runs as which container uid (:attr:`Service.container_uid`), and the services in the
    host's user namespace (``userns_mode = "host"``: their root is real root)."""
    by_uid: dict[int, list[str]] = {}
    host_ns: list[str] = []
    for svc in services:
        cuid = svc.container_uid
        if cuid is not None and svc.name not in by_uid.setdefault(cuid, []):
            by_uid[cuid].append(svc.name)
        if svc.userns_mode == "host" and svc.name not in host_ns:
            host_ns.append(svc.name)
    return {k: tuple(v) for k, v in by_uid.items()}, tuple(host_ns)


def load_attribution(
    user: HostUser,
    services_by_uid: Mapping[int, Sequence[str]] | None = None,
    *,
    subuid: Path = Path("/etc/subuid"),
    subgid: Path = Path("/etc/subgid"),
    host_ns_services: Sequence[str] = (),
) -> Attribution:
    """The predicted id maps from /etc/subuid and /etc/subgid plus the host's accounts and groups."""
    import grp
    import pwd

    def map_of(path: Path) -> IdMap:
        try:
            text = path.read_text()
        except OSError:
            return ()
        return predict_map(parse_subid(text, str(path)).owned_by(user.name))

    return Attribution(
        user=user,
        uid_map=map_of(subuid),
        gid_map=map_of(subgid),
        services_by_uid={int(k): tuple(v) for k, v in (services_by_uid or {}).items()},
        accounts={p.pw_uid: p.pw_name for p in pwd.getpwall()},
        groups={g.gr_gid: g.gr_name for g in grp.getgrall()},
        host_ns_services=tuple(host_ns_services),
    )


# --- records: one JSON object per line, appended as found --------------------


class RecordLog:
    """Append-only JSON-lines file; each line is a leak's state at one moment.

    :meth:`compact` rewrites it with only the current leaks (atomically, under an
    exclusive ``flock`` of the old file).  Each :meth:`write` takes a shared lock
    and checks that its handle is still the file at ``path``: a line is never
    appended to a file a compaction (in this process or another) has replaced.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fh: IO[str] | None = None
        self.appended = 0  # lines written since the last compaction
        self.kept: int | None = None  # lines the last compaction kept (None: not compacted yet)

    @property
    def unreadable_path(self) -> Path:
        """Beside the records: the directories the watcher could not read (:func:`load_unreadable`)."""
        return self.path.with_name(self.path.name + ".unreadable.json")

    def _open(self) -> IO[str]:
        while True:
            if self._fh is None:
                self._fh = open(open_private(self.path), "a", encoding="utf-8", errors="surrogateescape")
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_SH)
            try:
                if os.path.samestat(os.fstat(self._fh.fileno()), os.stat(self.path)):
                    return self._fh  # locked, and still the file at path
            except FileNotFoundError:
                pass
            self.close()  # compacted (or removed) meanwhile: append to the new file

    def write(self, leak: Leak, state: State = State.LEAK, at: float | None = None) -> None:
        fh = self._open()
        try:
            # One write per line so a reader never sees half a record (O_APPEND, line < PIPE_BUF mostly).
            fh.write(json.dumps(leak.to_record(state, at), sort_keys=True) + "\n")
            fh.flush()
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        self.appended += 1

    def compact(self) -> int:
        """Keep only the current leaks; returns how many.  The append handle is reopened on the next write."""
        self.close()
        self.kept = compact_records(self.path)
        self.appended = 0
        return self.kept

    def compaction_due(self, floor: int = 1) -> bool:
        """Worth compacting: at least ``floor`` lines appended, and as many as the last compaction kept
        (so the file stays under about twice the current leaks, and rewriting it costs O(1) per line)."""
        return self.appended >= max(floor, self.kept or 0)

    def write_unreadable(self, paths: Iterable[str], at: float) -> None:
        data = {"unreadable": sorted(paths), "at": iso(at)}
        write_atomic(self.unreadable_path, (json.dumps(data, sort_keys=True) + "\n").encode(), mode=0o600)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def load_unreadable(records: Path) -> list[str]:
    """The directories the watcher last could not read (written beside its records)."""
    try:
        data = json.loads(RecordLog(records).unreadable_path.read_text())
    except (OSError, ValueError):
        return []
    paths = data.get("unreadable") if isinstance(data, dict) else None
    return [p for p in paths if isinstance(p, str)] if isinstance(paths, list) else []


def unreadable_line(paths: Sequence[str], shown: Callable[[str], str], most: int = 5) -> str:
    """One line about directories whose contents could not be checked."""
    names = [shown(p).rstrip("/") + "/" for p in sorted(paths)]
    if len(names) == 1:
        return f"{names[0]}: cannot be read, so what is inside it is not checked"
    more = f" and {len(names) - most:,} more" if len(names) > most else ""
    return f"{len(names):,} directories cannot be read, so what is inside them is not checked: {', '.join(names[:most])}{more}"


def iter_records(path: Path) -> Iterator[dict[str, Any]]:
    """Every well-formed record, in file order; a torn or garbled line is skipped."""
    try:
        fh = open(path, encoding="utf-8", errors="surrogateescape")
    except FileNotFoundError:
        return
    with fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and "path" in rec and "uid" in rec and "kind" in rec:
                yield rec


def latest_records(path: Path) -> dict[str, dict[str, Any]]:
    """The last record for each path (whatever its state)."""
    latest: dict[str, dict[str, Any]] = {}
    for rec in iter_records(path):
        latest[rec["path"]] = rec
    return latest


def load_records(path: Path, *, under: Sequence[str] = (), include_resolved: bool = False) -> list[dict[str, Any]]:
    """Current leaks (latest state per path), sorted by path: what ``devbox leaks`` and ``doctor`` show.

    ``under`` keeps only paths below those directories.
    """
    prefixes = tuple(p.rstrip("/") + "/" for p in under)
    out = []
    for p, rec in sorted(latest_records(path).items()):
        if prefixes and not (p + "/").startswith(prefixes):
            continue
        if include_resolved or rec.get("state", State.LEAK.value) == State.LEAK.value:
            out.append(rec)
    return out


def load_leaks(path: Path, *, under: Sequence[str] = ()) -> list[Leak]:
    return [Leak.from_record(r) for r in load_records(path, under=under)]


def compact_records(path: Path) -> int:
    """Rewrite the file keeping only current leaks (atomically); returns how many remain.

    The old file is locked (``flock``, exclusive) from the read to the rename, so a
    :class:`RecordLog` appending meanwhile either lands before the read or sees the new file.
    """
    while True:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return 0
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                current = load_records(path)
                text = "".join(json.dumps(rec, sort_keys=True) + "\n" for rec in current)
                write_atomic(path, text.encode("utf-8", errors="surrogateescape"), mode=0o600)
                return len(current)
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)
        # replaced by another compaction between the open and the lock: again, on the new file


# --- fixing ------------------------------------------------------------------

# Runs a short-lived helper container as container root that sees the work dirs, and chowns each
# (work dir, path) to container 0:0 (= the host user).  See devbox.watch.contain for containment.
HelperRunner = Callable[[Sequence[tuple[str, str]]], None]

# What devbox prints for files only root can give back: devbox itself, run as root, which chows
# beneath the work dir only (a printed `sudo chown PATH` would follow a link a container planted).
ROOT_FIX_COMMAND = ("sudo", "devbox", "leaks", "--fix")


@dataclasses.dataclass(frozen=True)
class FixPlan:
    by_helper: tuple[Leak, ...]  # mapped ids: the helper container can chown them
    needs_root: tuple[Leak, ...]  # unmapped ids (real root, other accounts): only root can
    root_command: tuple[str, ...]  # the exact command to print for needs_root, or ()


def plan_fix(leaks: Iterable[Leak], user: HostUser, *, as_root: bool = False) -> FixPlan:
    """Who can give each leak back: the helper container (mapped ids), or root; as root, root does it all."""
    helper: list[Leak] = []
    root: list[Leak] = []
    for leak in leaks:
        (helper if leak.fixable and not as_root else root).append(leak)
    return FixPlan(tuple(helper), tuple(root), ROOT_FIX_COMMAND if root and not as_root else ())


@dataclasses.dataclass(frozen=True)
class FixResult:
    fixed: tuple[str, ...]
    failed: tuple[str, ...]  # still not the user's after the helper ran
    vanished: tuple[str, ...]
    needs_root: tuple[str, ...]
    root_command: str  # shell-quoted, empty when nothing needs root
    skipped: tuple[tuple[str, str], ...] = ()  # (path, why): it no longer stays inside the work dir


def fix(
    leaks: Iterable[Leak],
    user: HostUser,
    roots: Sequence[str],
    run_helper: HelperRunner,
    *,
    as_root: bool = False,
) -> FixResult:
    """Give leaks back, never reaching outside the work dirs (:mod:`devbox.watch.contain`).

    Each path is first looked at beneath its work dir; one that would leave it
    (a directory swapped for a link) is skipped with the reason.  As root,
    devbox chowns the rest itself; otherwise a helper container chowns the
    mapped ones.  Every result is verified the same careful way.
    """
    from devbox.watch.contain import Escape, chown_beneath, lstat_beneath, root_of

    skipped: list[tuple[str, str]] = []
    vanished: list[str] = []
    fixed: list[str] = []
    todo: list[tuple[str, Leak]] = []
    for leak in leaks:
        root = root_of(leak.path, roots)
        if root is None:
            skipped.append((leak.path, "it is not beneath the watched work dirs"))
            continue
        try:
            st = lstat_beneath(root, leak.path)
        except Escape as exc:
            skipped.append((leak.path, exc.reason))
            continue
        except (FileNotFoundError, NotADirectoryError):
            vanished.append(leak.path)
            continue
        if user.owns(st.st_uid, st.st_gid):
            fixed.append(leak.path)
            continue
        todo.append((root, leak))
    plan = plan_fix([leak for _, leak in todo], user, as_root=as_root)
    attempted = [(root, leak.path) for root, leak in todo if leak in plan.by_helper or as_root]
    if as_root:
        for root, path in attempted:
            try:
                chown_beneath(root, path, user.uid, user.gid)
            except (Escape, OSError):
                pass  # the check below says what became of it
    elif attempted:
        run_helper(attempted)
    failed: list[str] = []
    for root, path in attempted:
        try:
            st = lstat_beneath(root, path)
        except Escape as exc:
            skipped.append((path, exc.reason))
            continue
        except (FileNotFoundError, NotADirectoryError):
            vanished.append(path)
            continue
        (fixed if user.owns(st.st_uid, st.st_gid) else failed).append(path)
    return FixResult(
        tuple(fixed), tuple(failed), tuple(vanished),
        tuple(leak.path for leak in plan.needs_root) if not as_root else (),
        shlex.join(plan.root_command) if plan.root_command else "",
        tuple(skipped),
    )
