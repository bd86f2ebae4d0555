"""A stack as a Podman pod (rootless Podman with keep-id; rootful Podman with idmapped binds): pure specs.

Why a pod (checked on rootless Podman 4.3, README "Podman"):

- A pod is one network namespace: services reach each other on 127.0.0.1, and a hosts
  file naming every service as 127.0.0.1 keeps ``PGHOST=db`` working unchanged.  The
  namespace reaches out through pasta or slirp4netns (Podman's user-mode networks, no
  bridge, no root); where neither works (no usable ``/dev/net/tun``) it is ``none``, and
  the services still reach each other, but not the internet.
- ``--userns=keep-id`` is the pod's (Podman refuses ``--userns`` on a container in a
  pod), so every container of the stack shares one user namespace: your uid is your
  uid inside, container root and other users are in your subordinate range.
- A pod's network and published ports are fixed when it is made: when they change, devbox
  makes the pod again, with its containers (volumes stay).
- Services that write your files (a writable bind mount: the editor, the runtime, the
  IDE) run as you; the others (the database) as their image's user, or root when the
  image names none (its entrypoint drops privileges itself), so their files stay in
  your subordinate range, in their volumes.

On rootful Podman (the ``idmap`` strategy) the pod has no user namespace (container
root is host root, as on rootful Docker under idmap), its network is Podman's bridge,
and each bind a service writes through is an idmapped bind that crun makes
(``idmap=uids=YOU-WRITER-1;gids=…``, :func:`devbox.core.views.podman_idmap`): what the
service writes is stored as you; no other writer can create files there.  Services
run as their own ``user`` or their image's.

The specs are libpod's SpecGenerator and PodSpecGenerator JSON.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from devbox.core.containers import healthcheck_json
from devbox.core.model import Port, Service, Stack

# The pod's label.  Not devbox.project: a pod's infra container inherits the pod's labels, and
# would then be listed as one of the project's containers (an orphan to remove).
LABEL_POD = "devbox.pod"
LABEL_POD_CONFIG = "devbox.pod-config"  # pod_config(): the network and ports the pod was made with
HOME = "/tmp"  # keep-id's passwd entry makes HOME the working dir (/work): vim and pip would write there
NETWORK_NONE = "none"
NETWORK_BRIDGE = "bridge"  # rootful Podman's own network (netavark or CNI)


def writes_your_files(svc: Service) -> bool:
    """Does ``svc`` bind-mount a host directory writable (the work dir)?  Then it runs as you."""
    return any(not m.read_only for m in svc.binds)


def run_as(svc: Service, uid: int, gid: int, image_user: str = "") -> str:
    """The ``user`` of ``svc``'s container in a keep-id pod: its own ``user`` when set; you when it
    writes your files; else its image's user, or root (whose entrypoint chooses)."""
    if svc.user:
        return svc.user
    if writes_your_files(svc):
        return f"{uid}:{gid}"
    return image_user or "0:0"


def hosts_file(stack: Stack) -> str:
    """``/etc/hosts`` for every container of the pod: each service is this network namespace."""
    names = " ".join(s.name for s in stack.services)
    return f"127.0.0.1\tlocalhost {names}\n::1\tlocalhost ip6-localhost ip6-loopback\n"


def pod_ports(stack: Stack) -> tuple[Port, ...]:
    """Every port the stack's services publish: the pod publishes them (its containers cannot)."""
    return tuple(sorted({p for s in stack.services for p in s.ports}, key=lambda p: (p.container_port, p.protocol, p.host_ip)))


def refusal(stack: Stack, network: str) -> tuple[str, str] | None:
    """Why ``stack`` cannot run as a pod on ``network`` (message, fix), or ``None``."""
    seen: dict[tuple[int, str], str] = {}
    for svc in stack.services:
        if svc.ports and network == NETWORK_NONE:
            return (f"service {svc.name} publishes ports ({', '.join(str(p) for p in svc.ports)}), and the pod has no "
                    "network to publish them on: Podman has no usable pasta or slirp4netns here",
                    "install passt (pasta) or slirp4netns and make /dev/net/tun usable for you, or remove ports from "
                    f"services.{svc.name}")
        for p in svc.ports:
            other = seen.setdefault((p.container_port, p.protocol), svc.name)
            if other != svc.name:
                return (f"services {other} and {svc.name} both publish container port {p.container_port}/{p.protocol}; "
                        "in a Podman pod they share one network namespace, so only one can listen on it",
                        f"give services.{svc.name} another port, or run this profile on Docker")
        for key, value in (("network_mode", svc.network_mode), ("pid_mode", svc.pid_mode), ("userns_mode", svc.userns_mode)):
            if value is not None:
                return (f"service {svc.name} sets {key} = \"{value}\", which a container in a Podman pod cannot",
                        f"remove {key} from services.{svc.name}, or run this profile on Docker")
    return None


def pod_config(network: str, ports: tuple[Port, ...]) -> str:
    """What is fixed when a pod is made (its network, its published ports), as a label value: a pod
    whose label differs is made again, with its containers."""
    text = json.dumps([network, [str(p) for p in ports]])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def pod_network(available: tuple[str, ...], tun_usable: bool, rootful: bool = False) -> str:
    """The pod's network: rootful Podman's bridge; rootless, Podman's user-mode network (pasta, else
    slirp4netns) when it has one and ``/dev/net/tun`` opens, so services reach package indexes; else
    none (services still reach each other: the pod is one network namespace)."""
    if rootful:
        return NETWORK_BRIDGE
    if "pasta" in available and tun_usable:
        return "pasta"
    if "slirp4netns" in available and tun_usable:
        return "slirp4netns"
    return NETWORK_NONE


def pod_spec(stack: Stack, name: str, network: str = NETWORK_NONE, keep_id: bool = True) -> dict[str, Any]:
    """``POST /libpod/pods/create``: one user namespace (keep-id; the host's on rootful Podman) and one
    network namespace for the stack, publishing its services' ports (host port 0: Podman picks a free one)."""
    ports = pod_ports(stack)
    spec: dict[str, Any] = {
        "name": name, "labels": {LABEL_POD: stack.project, LABEL_POD_CONFIG: pod_config(network, ports)},
        "hostname": stack.project[:63] or "devbox", "netns": {"nsmode": network}}
    if keep_id:
        spec["userns"] = {"nsmode": "keep-id"}
    if ports:
        spec["portmappings"] = [{"host_ip": p.host_ip, "host_port": p.host_port, "container_port": p.container_port,
                                 "protocol": p.protocol} for p in ports]
    return spec


def container_spec(stack: Stack, svc: Service, config_hash: str, *, pod: str, hosts: str, user: str,
                   env: Mapping[str, str] | None = None, keep_id: bool = True,
                   idmaps: Mapping[tuple[str, str], str] | None = None) -> dict[str, Any]:
    """``POST /libpod/containers/create`` for ``svc`` in ``pod`` (what :func:`devbox.core.containers.create_body`
    is for Docker): the same labels, so observing, planning and ``ps`` do not change.  ``user``: empty for
    the image's own.  ``idmaps``: the idmap option of each bind ``(source, target)`` that has one."""
    environment = dict(env if env is not None else svc.env_dict)
    if keep_id and user.split(":", 1)[0] != "0" and "HOME" not in environment:
        environment["HOME"] = HOME
    spec: dict[str, Any] = {
        "name": stack.container_name(svc.name),
        "image": svc.image,
        "pod": pod,
        "labels": stack.labels(svc, config_hash),
        "env": environment,
        **({"user": user} if user else {}),
        "init": True,  # a PID 1 that forwards SIGTERM, as on Docker
        "terminal": svc.interactive,
        "stdin": svc.interactive,
        "mounts": [{"destination": "/etc/hosts", "source": hosts, "type": "bind", "options": ["ro"]}],
        "volumes": [],
    }
    if svc.command is not None:
        spec["command"] = list(svc.command)
    if svc.entrypoint is not None:
        spec["entrypoint"] = list(svc.entrypoint)
    if svc.working_dir is not None:
        spec["work_dir"] = svc.working_dir
    as_root = user.split(":", 1)[0] in ("0", "root")
    for m in svc.mounts:
        if m.kind == "volume":
            # "U": Podman chowns the volume to the service's user (a new volume is root's, and keep-id makes the
            # IDE you: its settings volume must be yours to write)
            options = (["ro"] if m.read_only else []) + ([] if as_root or not keep_id else ["U"])
            spec["volumes"].append({"Name": m.source, "Dest": m.target, "Options": options})
        else:
            idmap = (idmaps or {}).get((m.source, m.target))
            spec["mounts"].append({"destination": m.target, "source": m.source, "type": "bind",
                                   "options": ["rbind", "ro" if m.read_only else "rw", *([idmap] if idmap else [])]})
    if svc.healthcheck is not None:
        spec["healthconfig"] = healthcheck_json(svc.healthcheck)
    return spec
