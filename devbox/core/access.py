"""Access to a stack's web IDE (pure): generated login secrets, the terminal relay, web URLs.

A browser IDE needs a login secret that nobody typed into a file: a service lists the env
variables devbox generates for it (``generated_env = ["PASSWORD"]``), each made once per
project and kept 0600 in the user's state dir (:mod:`devbox.host.secrets`).  A value the
project sets itself (``[services.ide.env]``) wins.

An IDE's integrated terminal must reach the runtime's toolchain, not the IDE image's, and the
IDE container must survive a toolchain ``switch``.  So the IDE (``terminal = "runtime"``) and
the runtime both get a read-only mount of devbox's relay (:mod:`devbox.payload.devbox_term`):
the runtime serves shells on the stack's private network, the IDE's terminal profile is the
relay's client, and a generated token (``DEVBOX_TERM_TOKEN``) shared by the two is the
login.  Nothing outside the project's network reaches the relay: it publishes no port.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from devbox.core.model import Mount, Service, Stack

RELAY_TARGET = "/usr/local/lib/devbox/devbox-term"
RELAY_PORT = 7681
TOKEN_VARIABLE = "DEVBOX_TERM_TOKEN"
TERMINAL_VARIABLE = "DEVBOX_TERMINAL"  # HOST:PORT of the relay, in the IDE


def secret_names(stack: Stack) -> tuple[str, ...]:
    """The generated secrets ``stack`` needs, each once (a service's own env value needs none)."""
    names: dict[str, None] = {}
    for svc in stack.services:
        own = svc.env_dict
        for name in svc.generated_env:
            if name not in own:
                names[name] = None
        if svc.terminal is not None:
            names[TOKEN_VARIABLE] = None
    return tuple(names)


def terminal_servers(stack: Stack) -> set[str]:
    """The services some other service's terminals run in."""
    return {s.terminal for s in stack.services if s.terminal is not None}


def wire(stack: Stack, secrets: Mapping[str, str], relay: str | None) -> Stack:
    """The stack with generated env values set and the relay mounted where a terminal needs it.

    ``secrets`` holds every name :func:`secret_names` returned; ``relay`` is the host path of the
    relay script (``None``: terminals are not wired, and the IDE falls back to its own shell)."""
    servers = terminal_servers(stack)
    services = []
    for svc in stack.services:
        env = dict(svc.env)
        mounts = list(svc.mounts)
        for name in svc.generated_env:
            if name not in env:
                env[name] = secrets[name]
        wired = relay is not None and (svc.terminal is not None or svc.name in servers)
        if wired:
            assert relay is not None
            env.setdefault(TOKEN_VARIABLE, secrets[TOKEN_VARIABLE])
            mounts.append(Mount("bind", relay, RELAY_TARGET, read_only=True, allow_outside_project=True))
            if svc.terminal is not None:
                env[TERMINAL_VARIABLE] = f"{svc.terminal}:{RELAY_PORT}"
        services.append(dataclasses.replace(svc, env=tuple(sorted(env.items())), mounts=tuple(mounts)))
    return dataclasses.replace(stack, services=tuple(services))


def web_url(svc: Service, ports: Iterable[str]) -> str | None:
    """The URL of ``svc``'s web UI from the engine's bindings (``IP:HOSTPORT->PORT/tcp``, as ps shows
    them), or ``None`` when it has none or the port is not bound (the container is not running)."""
    if svc.web_port is None:
        return None
    for binding in ports:
        host, _, container = binding.partition("->")
        if container == f"{svc.web_port}/tcp":
            ip, _, port = host.rpartition(":")
            if ip in ("0.0.0.0", "::", "[::]", ""):
                ip = "127.0.0.1"
            return f"http://{ip if ':' not in ip else f'[{ip}]'}:{port}/"
    return None


def login_variable(svc: Service) -> str | None:
    """The generated variable that is ``svc``'s login (PASSWORD, a token), if it has one."""
    return svc.generated_env[0] if svc.generated_env else None
