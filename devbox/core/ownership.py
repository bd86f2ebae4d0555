"""Ownership strategies (pure): which one an engine gets, and what each predicts.

A *strategy* is how files written in the bind-mounted work dir end up yours:

=============  ==============================  =================================================
strategy       engine                          how
=============  ==============================  =================================================
``remap``      Docker, rootful                 dockerd's ``userns-remap``: container root = you
``keep-id``    Podman, rootless                ``--userns=keep-id``: your uid inside = you
``rootless``   Docker or Podman, rootless      the engine's own user namespace: container root = you
``idmap``      Docker, rootful, no remap;      kernel idmapped views of the work dirs: you on disk =
               Podman, rootful                 container root (:mod:`devbox.core.views`); processes
                                               still run as host root: it fixes ownership, it does
                                               not isolate.  On Docker the views are made by devbox's
                                               root helper; rootful Podman makes them itself (crun's
                                               ``idmap=uids=…;gids=…`` bind option)
=============  ==============================  =================================================

``auto`` on rootful Docker picks ``remap`` where the daemon already remaps, else
``idmap`` where the kernel makes idmapped mounts, else ``remap`` (and ``up``
says what to run).  ``auto`` on rootful Podman is ``idmap`` (the kernel must
make idmapped mounts: 5.12 or newer).

Each strategy predicts the map from container ids to host ids, and the probe
(:mod:`devbox.engine.probe`) proves it: the file owner, the process's uid and
``/proc/PID/uid_map`` as the host sees it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from devbox.core.idmap import IdMap, IdRange, SubidEntry, predict_map

KINDS = ("docker-rootful", "docker-rootless", "podman-rootless", "podman-rootful")
STRATEGIES = ("auto", "remap", "keep-id", "rootless", "idmap")

AUTO = {
    "docker-rootful": "remap",
    "docker-rootless": "rootless",
    "podman-rootless": "keep-id",
    "podman-rootful": "idmap",
}

# what each strategy can do on which engine; anything else is refused with the reason
WORKS_ON = {
    "remap": ("docker-rootful",),
    "keep-id": ("podman-rootless",),
    "rootless": ("docker-rootless", "podman-rootless"),
    "idmap": ("docker-rootful", "podman-rootful"),
}

WHY_NOT = {
    ("remap", "docker-rootless"): "rootless dockerd fails to start with userns-remap set (moby#48521); "
                                  "container root is already you there",
    ("remap", "podman-rootless"): "userns-remap is a dockerd setting; Podman maps ids per container",
    ("remap", "podman-rootful"): "userns-remap is a dockerd setting; Podman maps ids per container",
    ("keep-id", "docker-rootful"): "--userns=keep-id is Podman's; Docker has no per-container user namespace",
    ("keep-id", "docker-rootless"): "--userns=keep-id is Podman's; Docker has no per-container user namespace",
    ("keep-id", "podman-rootful"): "keep-id maps the uid of whoever runs Podman, and rootful Podman runs as root",
    ("rootless", "docker-rootful"): "this dockerd runs as root: container root is host root",
    ("rootless", "podman-rootful"): "this Podman runs as root: container root is host root",
}

WHY_NOT.update({
    ("idmap", "docker-rootless"): "a rootless dockerd cannot use views made by the root helper; container root is already you",
    ("idmap", "podman-rootless"): "keep-id already makes your uid inside you; the root helper's views are for rootful engines",
})


def probe_binds_idmapped(kind: str, strategy: str) -> bool:
    """Does the probe run through an idmapped bind of its directory, as ``up``'s services do?  Under
    idmap on rootful Podman, yes: that is the proof.  Under idmap on Docker the engine maps nothing and
    the helper's views are proven apart (``devbox idmap``, doctor's ``idmap.proof``)."""
    return kind == "podman-rootful" and strategy == "idmap"


def idmap_runtime_refusal(kind: str, strategy: str, runtime: str) -> Refusal | None:
    """On rootful Podman, idmap needs crun: runc before 1.2 *ignores* the ``idmap=`` bind option, and
    container root then writes root's files (seen on runc 1.1.5).  ``runtime`` "" (not known): None."""
    if kind != "podman-rootful" or strategy != "idmap" or not runtime or runtime.startswith("crun"):
        return None
    return Refusal(f"rootful Podman here runs containers with {runtime}, which ignores idmapped binds (runc before "
                   "1.2 does so silently): files services write would be root's",
                   'install crun and set runtime = "crun" under [engine] in /etc/containers/containers.conf')


@dataclasses.dataclass(frozen=True)
class Choice:
    strategy: str
    why: str


@dataclasses.dataclass(frozen=True)
class Refusal:
    message: str
    fix: str


def choose_strategy(kind: str, setting: str = "auto", *, remapped: bool = True, idmap_ok: bool = False) -> Choice | Refusal:
    """The strategy for an engine ``kind`` under the ``[ownership] strategy`` setting.

    ``remapped``: a rootful dockerd already runs with userns-remap; ``idmap_ok``: the kernel makes
    idmapped mounts.  The defaults (what ``devbox remap`` asks about) keep ``auto`` at ``remap``."""
    if kind not in KINDS:
        return Refusal(f"unknown engine kind {kind!r}", "report this: devbox knows " + ", ".join(KINDS))
    if setting not in STRATEGIES:
        return Refusal(f"unknown strategy {setting!r}", "choose one of " + ", ".join(STRATEGIES))
    strategy = AUTO[kind] if setting == "auto" else setting
    how = "chosen for this engine (auto)" if setting == "auto" else "set in devbox.toml [ownership]"
    if setting == "auto" and kind == "docker-rootful" and not remapped and idmap_ok:
        strategy, how = "idmap", "chosen for this engine (auto: no userns-remap, the kernel makes idmapped mounts)"
    if kind == "podman-rootful" and strategy == "idmap" and not idmap_ok:
        return Refusal(f"{kind}: strategy idmap needs idmapped mounts, which this kernel does not make (5.12 or newer)",
                       "run Podman rootless (`podman system service` as your user: keep-id), or use a newer kernel")
    if kind not in WORKS_ON[strategy]:
        why = WHY_NOT.get((strategy, kind), f"{strategy} does not apply to {kind}")
        return Refusal(f"strategy \"{strategy}\" cannot work on {kind}: {why}",
                       f"use strategy = \"auto\" ({AUTO[kind]} on this engine)")
    return Choice(strategy, how)


# --- predictions -------------------------------------------------------------------------------


def stack(ranges: Sequence[tuple[int, int]], first_container: int = 0) -> IdMap:
    """Host ranges ``(start, count)`` stacked from ``first_container`` up, in order."""
    out: list[IdRange] = []
    at = first_container
    for start, count in ranges:
        out.append(IdRange(at, start, count))
        at += count
    return tuple(out)


def rootless_map(own_id: int, entries: Sequence[SubidEntry]) -> IdMap:
    """A rootless engine's user namespace: 0 is you, then your subordinate ranges in file order
    (what newuidmap is asked for).  An ``OWN:ID:1`` line is not a subordinate range: Podman
    refuses it ("the specified mapping … includes the user UID")."""
    subs = [(e.start, e.count) for e in entries if not (e.start <= own_id < e.start + e.count)]
    return (IdRange(0, own_id, 1), *stack(subs, 1))


def size(idmap: IdMap) -> int:
    return sum(r.count for r in idmap)


def compose(inner: Sequence[tuple[int, int, int]], outer: IdMap) -> IdMap:
    """``inner`` rows ``(container, parent, count)`` mapped through ``outer`` (parent -> host), split where needed."""
    out: list[IdRange] = []
    for container, parent, count in inner:
        done = 0
        while done < count:
            p = parent + done
            r = next((r for r in outer if r.container <= p < r.container + r.count), None)
            if r is None:
                break
            n = min(count - done, r.container + r.count - p)
            out.append(IdRange(container + done, r.host + (p - r.container), n))
            done += n
    merged: list[IdRange] = []
    for r in out:
        last = merged[-1] if merged else None
        if last and last.container + last.count == r.container and last.host + last.count == r.host:
            merged[-1] = IdRange(last.container, last.host, last.count + r.count)
        else:
            merged.append(r)
    return tuple(merged)


def keep_id_map(own_id: int, rootless: IdMap) -> IdMap:
    """Podman's ``--userns=keep-id``, as host ids: your uid inside is you; 0..uid-1 and uid+1.. are
    your subordinate ids in order (Podman 4: ``0 1 uid``, ``uid 0 1``, ``uid+1 uid+1 n-uid``)."""
    n = size(rootless) - 1  # subordinate ids
    if own_id > n:  # too few subordinate ids for keep-id's layout: Podman refuses to start
        return ()
    inner = [(0, 1, own_id), (own_id, 0, 1), (own_id + 1, own_id + 1, n - own_id)]
    return compose([row for row in inner if row[2] > 0], rootless)


@dataclasses.dataclass(frozen=True)
class Expectation:
    """What the probe must see under a strategy."""

    userns: str | None  # the container's UsernsMode ("keep-id"), None for the engine's default
    runs_as: str  # who the probe's process is inside, for people
    uid_map: IdMap  # container -> host, as /proc/PID/uid_map reads from the host
    gid_map: IdMap


def expect(strategy: str, uid: int, gid: int, subuid: Sequence[SubidEntry], subgid: Sequence[SubidEntry]) -> Expectation:
    """The probe's prediction for ``strategy``, from the user's /etc/subuid and /etc/subgid lines."""
    if strategy == "remap":
        return Expectation(None, "container root", predict_map(subuid), predict_map(subgid))
    uids, gids = rootless_map(uid, subuid), rootless_map(gid, subgid)
    if strategy == "rootless":
        return Expectation(None, "container root", uids, gids)
    if strategy == "keep-id":
        return Expectation("keep-id", f"uid {uid} (your own)", keep_id_map(uid, uids), keep_id_map(gid, gids))
    if strategy == "idmap":  # no user namespace: the views, not the engine, make files yours
        return Expectation(None, "container root (host root)", ((IdRange(0, 0, 4294967295)),), ((IdRange(0, 0, 4294967295)),))
    raise ValueError(f"no prediction for strategy {strategy!r}")
