"""Running a stack on rootless Podman: the pod, its hosts file, its containers, and waiting on them.

The specs are :mod:`devbox.core.pods`' (pure); this module sends them.  Everything else
(build, start, stop, inspect, logs, exec, archive, volumes) goes through the Docker-compatible
API as on Docker, so :mod:`devbox.stack.executor` only asks this module at four points:
the project's network (a pod here), a container's creation, waiting on a dependency, and
the build network.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devbox import console
from devbox.core import pods as spec
from devbox.core.model import DependsOn, Service, Stack
from devbox.errors import DevboxError, EngineError, EngineErrorKind
from devbox.host.files import private_dir, write_atomic
from devbox.paths import Paths

if TYPE_CHECKING:
    from devbox.engine.client import Engine

BUILD_NETWORK = "host"  # builds reach the mirrors without slirp4netns or pasta (the user's own network namespace)
POLL_S = 0.25


@dataclasses.dataclass(frozen=True)
class Pod:
    """What creating a stack's containers in a pod needs: the hosts file, the user, the images' users."""

    hosts: Path
    uid: int
    gid: int
    network: str = spec.NETWORK_NONE  # the pod's network when it is created (devbox.core.pods.pod_network)
    image_users: Mapping[str, str] = dataclasses.field(default_factory=dict)  # image ref -> its Config.User
    keep_id: bool = True  # rootless Podman; False: rootful Podman, idmapped binds
    # rootful: (service, source, target) -> the bind's idmap option (devbox.core.views.podman_idmap)
    idmaps: Mapping[tuple[str, str, str], str] = dataclasses.field(default_factory=dict)

    def user_of(self, svc: Service) -> str:
        """Who ``svc`` runs as: keep-id's choice (:func:`devbox.core.pods.run_as`); on rootful Podman its
        own ``user`` or its image's (empty)."""
        if not self.keep_id:
            return svc.user or ""
        return spec.run_as(svc, self.uid, self.gid, self.image_users.get(svc.image, ""))

    def idmaps_of(self, svc: Service) -> dict[tuple[str, str], str]:
        return {(source, target): option for (name, source, target), option in self.idmaps.items() if name == svc.name}


def hosts_path(paths: Paths, project: str) -> Path:
    return paths.user_state / "pods" / f"{project}.hosts"


TUN = "/dev/net/tun"


def tun_usable() -> bool:
    """Can this user open ``/dev/net/tun``?  pasta and slirp4netns need it (a root-only 0600 node
    on some machines)."""
    try:
        os.close(os.open(TUN, os.O_RDWR))
    except OSError:
        return False
    return True


def network(available: tuple[str, ...], rootful: bool = False) -> str:
    """The network a pod made now gets (``available``: what the engine reports, best first)."""
    return spec.pod_network(available, not rootful and tun_usable(), rootful)


def prepare(paths: Paths, stack: Stack, uid: int, gid: int, image_users: Mapping[str, str],
            network: str = spec.NETWORK_NONE, *, keep_id: bool = True,
            idmaps: Mapping[tuple[str, str, str], str] | None = None) -> Pod:
    """Write the stack's hosts file (0644: every container user reads it; its directory is yours, 0700)."""
    hosts = hosts_path(paths, stack.project)
    private_dir(hosts.parent)
    text = spec.hosts_file(stack).encode()
    try:
        current = hosts.read_bytes()
    except OSError:
        current = None
    if current != text:
        write_atomic(hosts, text, mode=0o644)
    return Pod(hosts, uid, gid, network, dict(image_users), keep_id, dict(idmaps or {}))


def _listed(client: Engine, project: str) -> dict[str, str]:
    """The project's pods: name -> the config label they were made with."""
    raw = client.api.libpod("GET", "/pods/json", query={"filters": json.dumps({"label": [f"{spec.LABEL_POD}={project}"]})})
    return {p["Name"]: (p.get("Labels") or {}).get(spec.LABEL_POD_CONFIG, "") for p in raw or ()}


def pods(client: Engine, project: str) -> frozenset[str]:
    """The project's pods (what a network is on Docker)."""
    return frozenset(_listed(client, project))


def renew(client: Engine, stack: Stack, network: str) -> bool:
    """Remove the project's pod, with its containers, when the network or the ports it was made with
    are not the stack's any more (both are fixed at creation).  Volumes stay.  ``True`` if removed."""
    want = spec.pod_config(network, spec.pod_ports(stack))
    have = _listed(client, stack.project).get(stack.network)
    if have is None or have == want:
        return False
    console.info(f"pod {stack.network}: its network or published ports changed; making it again, with its containers "
                 "(volumes stay)")
    remove_pod(client, stack.network)
    return True


def create_pod(client: Engine, stack: Stack, name: str, pod: Pod | None) -> str:
    network = pod.network if pod is not None else spec.NETWORK_NONE
    keep_id = pod is None or pod.keep_id
    client.api.libpod("POST", "/pods/create", body=spec.pod_spec(stack, name, network, keep_id))
    how = "keep-id" if keep_id else "idmapped binds"
    if network == spec.NETWORK_NONE:
        return f"{how}; network: none (no usable pasta or slirp4netns: services reach each other, not the internet)"
    return f"{how}; network: {network}"


def remove_pod(client: Engine, name: str) -> None:
    try:
        client.api.libpod("DELETE", f"/pods/{name}", query={"force": "true"})
    except EngineError as exc:
        if exc.kind is not EngineErrorKind.NOT_FOUND:
            raise EngineError(f"cannot remove pod {name}: {exc.message}", kind=exc.kind, status=exc.status) from None


def create_container(client: Engine, pod: Pod, stack: Stack, svc: Service, config_hash: str) -> str:
    body = spec.container_spec(stack, svc, config_hash, pod=stack.network, hosts=str(pod.hosts), user=pod.user_of(svc),
                               keep_id=pod.keep_id, idmaps=pod.idmaps_of(svc))
    created: dict[str, Any] = client.api.libpod("POST", "/containers/create", body=body)
    return str(created["Id"])


def wait_for(client: Engine, stack: Stack, dep: DependsOn, target: str, waiter: str,
             reached: Callable[[dict[str, Any]], bool]) -> None:
    """Poll until ``dep`` is reached.  Rootless Podman runs healthchecks from systemd timers, which a
    machine without a user systemd lacks: devbox runs each check itself at the service's interval
    (``/libpod/containers/ID/healthcheck``, which records the result as Podman's own timer would)."""
    svc = stack.service(dep.service)
    h = svc.healthcheck
    limit = 120.0 if h is None else h.start_period_s + h.retries * (h.interval_s + h.timeout_s) + 10
    deadline = time.monotonic() + limit
    next_check = 0.0
    while True:
        state = client.api.inspect_container(target)["State"]
        if reached(state):
            return
        now = time.monotonic()
        if now >= deadline:
            raise DevboxError(f"service {dep.service} did not become {dep.condition} in {limit:.0f}s",
                              hint=f"see devbox logs {dep.service}")
        if h is not None and dep.condition == "healthy" and state.get("Status") == "running" and now >= next_check:
            next_check = now + h.interval_s
            try:
                client.api.libpod("GET", f"/containers/{target}/healthcheck")
            except EngineError as exc:
                if exc.kind is not EngineErrorKind.CONFLICT:  # 409: not running (yet), looked at again
                    raise
            continue
        time.sleep(POLL_S)


SLOW_START_S = 1.5


def start(client: Engine, svc: Service, cid: str, keep_id: bool = True) -> float:
    """Start ``cid``, saying so when it takes long: the first keep-id start of an image makes Podman copy
    and chown its layers (podman#11220), seconds for a big image, once.  Returns the seconds taken."""
    started = time.monotonic()
    why = f"Podman prepares {svc.image} for keep-id on its first start (once per image)" if keep_id else "slow"
    timer = threading.Timer(SLOW_START_S, lambda: console.info(f"service {svc.name}: starting; {why} …"))
    timer.daemon = True
    timer.start()
    try:
        client.api.start(cid)
    finally:
        timer.cancel()
    seconds = time.monotonic() - started
    if seconds >= SLOW_START_S:
        console.info(f"service {svc.name}: started in {seconds:.1f}s")
    return seconds
