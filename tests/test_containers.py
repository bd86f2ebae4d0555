"""Docker's create-container request (devbox.core.containers): pure, no engine.

The body is compared with what the Docker SDK sent for the same service until
``up`` stopped importing it: a reference built here with the SDK's own helpers
(``create_host_config``, ``create_container_config``), which make no request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import docker
import pytest
from docker.types import Mount as DockerMount

from devbox.config.resolve import load_profiles
from devbox.core.containers import create_body
from devbox.core.model import Healthcheck, Mount, Port, Service, Stack

WORK = Mount("bind", "/home/me/app", "/work")


def sdk_body(stack: Stack, svc: Service, config_hash: str) -> dict[str, Any]:
    """What ``executor.create_args`` gave the SDK's ``create_container``, as the JSON it posted."""
    low = docker.APIClient(base_url="unix:///nonexistent/docker.sock", version="1.41")
    port_bindings: dict[int | str, Any] = {}
    for p in svc.ports:
        port_bindings.setdefault(f"{p.container_port}/{p.protocol}", []).append((p.host_ip, p.host_port or None))
    network = svc.network_mode or stack.network
    host_config = low.create_host_config(
        mounts=[DockerMount(m.target, m.source, type=m.kind, read_only=m.read_only) for m in svc.mounts],
        port_bindings=port_bindings or None, network_mode=network, userns_mode=svc.userns_mode,
        pid_mode=svc.pid_mode, init=True)
    networking = None
    if svc.network_mode is None:
        networking = low.create_networking_config(
            {stack.network: low.create_endpoint_config(aliases=[svc.name])})  # type: ignore[arg-type]
    health = None
    if svc.healthcheck is not None:
        h = svc.healthcheck
        health = {"test": list(h.test), "interval": int(h.interval_s * 1e9), "timeout": int(h.timeout_s * 1e9),
                  "retries": h.retries, "start_period": int(h.start_period_s * 1e9)}
    config = low.create_container_config(
        image=svc.image, command=list(svc.command) if svc.command is not None else None,
        entrypoint=list(svc.entrypoint) if svc.entrypoint is not None else None,
        hostname=svc.name if svc.network_mode is None else None, labels=stack.labels(svc, config_hash),
        environment=svc.env_dict, working_dir=svc.working_dir, user=svc.user, healthcheck=health,
        ports=[(p.container_port, p.protocol) for p in svc.ports] or None, tty=svc.interactive,
        stdin_open=svc.interactive, host_config=host_config, networking_config=networking)
    return {k: v for k, v in config.items() if v is not None}  # what _post_json sends


def shipped_stacks(tmp_path: Path) -> list[Stack]:
    profiles = load_profiles(project_root=tmp_path, home=tmp_path, project="app")
    return [Stack(project="app", profile=name, services=p.services) for name, p in sorted(profiles.items())]


def test_every_shipped_service_gets_the_body_the_sdk_sent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))  # the SDK adds proxies from there
    stacks = shipped_stacks(tmp_path)
    assert len(stacks) >= 5
    for stack in stacks:
        for svc in stack.services:
            assert create_body(stack, svc, "h1") == sdk_body(stack, svc, "h1"), (stack.profile, svc.name)


@pytest.mark.parametrize("svc", [
    Service(name="web", image="i", ports=(Port(8080, 0), Port(9000, 9001, "0.0.0.0", "udp"), Port(8080, 18080))),
    Service(name="tool", image="i", user="1000:1000", userns_mode="host", pid_mode="host", network_mode="host",
            mounts=(WORK, Mount("bind", "/etc/ssl/certs", "/certs", read_only=True))),
    Service(name="db", image="i", command=(), entrypoint=("/init",), working_dir="/",
            mounts=(Mount("volume", "devbox-app-pgdata", "/var/lib/postgresql/data"),),
            healthcheck=Healthcheck(("CMD-SHELL", "pg_isready"), interval_s=0.5, timeout_s=5, retries=3, start_period_s=2.5)),
    Service(name="editor", image="i", interactive=True, command=("vim", "."), working_dir="/work", mounts=(WORK,),
            env=(("TERM", "xterm"), ("A", "b=c"))),
])
def test_every_field_a_service_sets_reaches_the_body_as_the_sdk_sent_it(svc: Service, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
    stack = Stack(project="app", profile="p", services=(svc,))
    assert create_body(stack, svc, "h2") == sdk_body(stack, svc, "h2")


def test_a_port_without_a_host_port_lets_the_engine_pick_one() -> None:
    svc = Service(name="web", image="i", ports=(Port(8080, 0),))
    body = create_body(Stack(project="app", profile="p", services=(svc,)), svc, "h")
    assert body["HostConfig"]["PortBindings"] == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}
    assert body["ExposedPorts"] == {"8080/tcp": {}}
