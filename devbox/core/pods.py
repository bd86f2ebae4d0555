"""A stack as a Podman pod (rootless Podman, the keep-id strategy): pure specs, no engine.

Why a pod (checked on rootless Podman 4.3, README "Podman"):

- A pod is one network namespace: services reach each other on 127.0.0.1, and a hosts
  file naming every service as 127.0.0.1 keeps ``PGHOST=db`` working unchanged.  The
  namespace reaches out through pasta or slirp4netns (Podman's user-mode networks, no
  bridge, no root); where neither works (no usable ``/dev/net/tun``) it is ``none``, and
  the services still reach each other, but not the internet.
- ``--userns=keep-id`` is the pod's (Podman refuses ``--userns`` on a container in a
  pod), so every container of the stack shares one user namespace: your uid is your
  uid inside, container root and other users are in your subordinate range.
- Services that write your files (a writable bind mount: the editor, the runtime, the
  IDE) run as you; the others (the database) as their image's user, or root when the
  image names none (its entrypoint drops privileges itself), so their files stay in
  your subordinate range, in their volumes.

The specs are libpod's SpecGenerator and PodSpecGenerator JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from devbox.core.model import Service, Stack

# The pod's label.  Not devbox.project: a pod's infra container inherits the pod's labels, and
# would then be listed as one of the project's containers (an orphan to remove).
LABEL_POD = "devbox.pod"
HOME = "/tmp"  # keep-id's passwd entry makes HOME the working dir (/work): vim and pip would write there
NETWORK_NONE = "none"


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


def refusal(stack: Stack) -> tuple[str, str] | None:
    """Why ``stack`` cannot run as a pod without a network of its own (message, fix), or ``None``."""
    for svc in stack.services:
        if svc.ports:
            return (f"service {svc.name} publishes ports ({', '.join(str(p) for p in svc.ports)}); devbox runs a "
                    "Podman stack as one pod and does not publish a pod's ports yet",
                    f"remove ports from services.{svc.name} (services reach each other by name inside the pod), "
                    "or run this profile on Docker")
        for key, value in (("network_mode", svc.network_mode), ("pid_mode", svc.pid_mode), ("userns_mode", svc.userns_mode)):
            if value is not None:
                return (f"service {svc.name} sets {key} = \"{value}\", which a container in a Podman pod cannot",
                        f"remove {key} from services.{svc.name}, or run this profile on Docker")
    return None


def pod_network(available: tuple[str, ...], tun_usable: bool) -> str:
    """The pod's network: Podman's user-mode network (pasta, else slirp4netns) when it has one and
    ``/dev/net/tun`` opens, so services reach package indexes; else none (services still reach each
    other: the pod is one network namespace)."""
    if "pasta" in available and tun_usable:
        return "pasta"
    if "slirp4netns" in available and tun_usable:
        return "slirp4netns"
    return NETWORK_NONE


def pod_spec(stack: Stack, name: str, network: str = NETWORK_NONE) -> dict[str, Any]:
    """``POST /libpod/pods/create``: one user namespace (keep-id) and one network namespace for the stack."""
    return {"name": name, "labels": {LABEL_POD: stack.project}, "hostname": stack.project[:63] or "devbox",
            "userns": {"nsmode": "keep-id"}, "netns": {"nsmode": network}}


def _nanoseconds(seconds: float) -> int:
    return int(seconds * 1e9)


def container_spec(stack: Stack, svc: Service, config_hash: str, *, pod: str, hosts: str, user: str,
                   env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``POST /libpod/containers/create`` for ``svc`` in ``pod`` (what :func:`devbox.stack.executor.create_args`
    is for Docker): the same labels, so observing, planning and ``ps`` do not change."""
    environment = dict(env if env is not None else svc.env_dict)
    if user.split(":", 1)[0] != "0" and "HOME" not in environment:
        environment["HOME"] = HOME
    spec: dict[str, Any] = {
        "name": stack.container_name(svc.name),
        "image": svc.image,
        "pod": pod,
        "labels": stack.labels(svc, config_hash),
        "env": environment,
        "user": user,
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
    for m in svc.mounts:
        if m.kind == "volume":
            spec["volumes"].append({"Name": m.source, "Dest": m.target, "Options": ["ro"] if m.read_only else []})
        else:
            spec["mounts"].append({"destination": m.target, "source": m.source, "type": "bind",
                                   "options": ["rbind", "ro" if m.read_only else "rw"]})
    if svc.healthcheck is not None:
        h = svc.healthcheck
        spec["healthconfig"] = {"Test": list(h.test), "Interval": _nanoseconds(h.interval_s),
                                "Timeout": _nanoseconds(h.timeout_s), "Retries": h.retries,
                                "StartPeriod": _nanoseconds(h.start_period_s)}
    return spec
