"""A service as Docker's ``POST /containers/create`` request: a pure spec.

What :mod:`devbox.core.pods` is for Podman's pods, this is for Docker (and Podman's
Docker-compatible API outside a pod): the body ``up`` sends, built from the
:class:`~devbox.core.model.Service` alone.  It is the body the Docker SDK's
``create_container(…, host_config=create_host_config(…))`` sent for the same
arguments, key for key (``tests/test_containers.py`` holds the two side by side),
so containers made before and after compare equal; the config hash label, not the
body, decides when a container is made again.
"""

from __future__ import annotations

from typing import Any

from devbox.core.model import Healthcheck, Service, Stack


def healthcheck_json(h: Healthcheck) -> dict[str, Any]:
    """A healthcheck as the engines take it: Docker's ``Healthcheck``, libpod's ``healthconfig``
    (durations in nanoseconds)."""
    return {"Test": list(h.test), "Interval": int(h.interval_s * 1e9), "Timeout": int(h.timeout_s * 1e9),
            "Retries": h.retries, "StartPeriod": int(h.start_period_s * 1e9)}


def create_body(stack: Stack, svc: Service, config_hash: str) -> dict[str, Any]:
    """The JSON body creating ``svc``'s container (its name goes in the query: :meth:`Stack.container_name`)."""
    network = svc.network_mode or stack.network
    host_config: dict[str, Any] = {
        "NetworkMode": network,
        "Mounts": [{"Target": m.target, "Source": m.source, "Type": m.kind, "ReadOnly": m.read_only}
                   for m in svc.mounts],
        "Init": True,  # a PID 1 that forwards SIGTERM: `sleep infinity` and vim stop at once
    }
    bindings: dict[str, list[dict[str, str]]] = {}
    for p in svc.ports:
        bindings.setdefault(f"{p.container_port}/{p.protocol}", []).append(
            {"HostIp": p.host_ip, "HostPort": str(p.host_port) if p.host_port else ""})
    if bindings:
        host_config["PortBindings"] = bindings
    if svc.userns_mode:
        host_config["UsernsMode"] = svc.userns_mode
    if svc.pid_mode:
        host_config["PidMode"] = svc.pid_mode
    body: dict[str, Any] = {
        "Tty": svc.interactive,
        "OpenStdin": svc.interactive,
        # created attached, as `docker run -it` does: `devbox up` attaches to the editor
        "StdinOnce": svc.interactive,
        "AttachStdin": svc.interactive,
        "AttachStdout": True,
        "AttachStderr": True,
        "Env": [f"{k}={v}" for k, v in svc.env_dict.items()],
        "NetworkDisabled": False,
        "Image": svc.image,
        "Labels": stack.labels(svc, config_hash),
        "HostConfig": host_config,
    }
    if svc.network_mode is None:
        body["Hostname"] = svc.name
        body["NetworkingConfig"] = {"EndpointsConfig": {network: {"Aliases": [svc.name]}}}
    if svc.ports:
        body["ExposedPorts"] = {f"{p.container_port}/{p.protocol}": {} for p in svc.ports}
    if svc.user is not None:
        body["User"] = svc.user
    if svc.command is not None:
        body["Cmd"] = list(svc.command)
    if svc.entrypoint is not None:
        body["Entrypoint"] = list(svc.entrypoint)
    if svc.working_dir is not None:
        body["WorkingDir"] = svc.working_dir
    if svc.healthcheck is not None:
        body["Healthcheck"] = healthcheck_json(svc.healthcheck)
    return body
