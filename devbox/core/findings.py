"""Findings: what a check saw, how bad it is, and the exact fix; and the one registry of their titles.

``devbox remap`` and ``devbox doctor`` both report lists of findings, with the
same ids and, from :data:`TITLES`, the same wording.  The ``--json`` shape
(:meth:`Finding.to_json`) is stable: ``id``, ``status``, ``title``,
``evidence`` (list of strings), ``fix`` (string or null).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, Literal

Status = Literal["ok", "warn", "fail", "skip"]


def _subid_titles(name: str, kind: str) -> dict[str, str]:
    path = f"/etc/{name}"
    return {
        f"{name}.syntax": f"{path} syntax",
        f"{name}.own-line": f"{path} maps container root to you",
        f"{name}.accounts": f"{path} ranges stay clear of real accounts",
        f"{name}.overlap": f"{path} ranges are yours alone",
        f"{name}.range": f"{path} gives you at least 65,536 subordinate {kind}s",
        f"{name}.map-lines": f"{path} map fits old kernels",
    }


# Every finding id devbox reports, in report order, with its one title.
TITLES: dict[str, str] = {
    "engine.socket": "Docker engine reachable",
    "engine.context": "the docker CLI and devbox use the same engine",
    "engine.access": "who can use the Docker socket",
    "engine.kind": "the engine, and how it makes your files yours (the ownership strategy)",
    "kernel.userns": "kernel user namespaces",
    "kernel.apparmor": "AppArmor's unprivileged user-namespace restriction",
    **_subid_titles("subuid", "uid"),
    **_subid_titles("subgid", "gid"),
    "host.newuidmap": "newuidmap and newgidmap can set up a rootless user namespace",
    "daemon.json": "daemon.json sets userns-remap",
    "daemon.flags": "userns-remap set once (flag or daemon.json, not both)",
    "daemon.live": "running dockerd uses the remap",
    "daemon.parents": "the data root's parents let the remapped root through (o+x)",
    "daemon.old-images": "images from before the remap",
    "probe.file-owner": "a file created in the container is yours",
    "probe.process": "the container's process runs as you on the host",
    "probe.uid-map": "/proc/self/uid_map is what /etc/subuid predicts",
    "idmap.kernel": "the kernel makes idmapped mounts (Linux 5.12 or newer)",
    "idmap.filesystem": "the work dir's filesystem supports idmapped mounts",
    "idmap.helper": "the idmap helper answers (views without sudo)",
    "idmap.proof": "a container writes your files through an idmapped view, and cannot chown them away",
    "project.config": "devbox.toml and its profiles load",
    "project.by-design": "no service is set up to write files you will not own",
    "project.containers": "no project container runs privileged or in host namespaces",
    "project.leaks": "the work dirs hold only your files",
    "project.inotify": "inotify can watch every work dir directory",
    "network.proxy": "proxy settings given to builds and services",
    "network.tls": "a service can reach its package index over HTTPS",
    "watcher.running": "the ownership watcher runs for the running stack",
}


@dataclasses.dataclass(frozen=True)
class Finding:
    id: str
    status: Status
    evidence: tuple[str, ...] = ()
    fix: str | None = None

    def __post_init__(self) -> None:
        if self.id not in TITLES:
            raise KeyError(f"finding id {self.id!r} is not in devbox.core.findings.TITLES")

    @property
    def title(self) -> str:
        return TITLES[self.id]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "title": self.title,
            "evidence": list(self.evidence),
            "fix": self.fix,
        }


def worst(findings: Iterable[Finding]) -> Status:
    order = {"ok": 0, "skip": 0, "warn": 1, "fail": 2}
    result: Status = "ok"
    for f in findings:
        if order[f.status] > order[result]:
            result = f.status
    return result
