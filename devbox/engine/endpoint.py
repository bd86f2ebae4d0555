"""Which engine devbox talks to: the one answer, with where it came from.

In order, as the docker CLI and Podman's docker-compatible socket would have it:

1. ``DOCKER_HOST`` (the environment wins, for the CLI and for devbox alike);
2. the docker CLI's current context (``DOCKER_CONTEXT``, else ``currentContext`` in
   ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``), unless it is ``default``;
3. Docker's default socket, ``/var/run/docker.sock``, when it exists (with
   podman-docker installed it is Podman's: the engine itself says which it is);
4. the rootless Podman socket, ``$XDG_RUNTIME_DIR/podman/podman.sock`` (under sudo:
   the invoking user's ``/run/user/UID/podman/podman.sock``);
5. the rootful Podman socket, ``/run/podman/podman.sock``.

Nothing found means Docker's default socket, and the error says it is not there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

DOCKER_SOCKET = "/var/run/docker.sock"
DEFAULT_HOST = f"unix://{DOCKER_SOCKET}"
PODMAN_ROOTFUL_SOCKET = "/run/podman/podman.sock"


@dataclasses.dataclass(frozen=True)
class Endpoint:
    host: str  # unix:///…, tcp://…, ssh://…
    source: str  # how it was chosen, for people: "DOCKER_HOST", "docker context NAME", …

    @property
    def socket(self) -> str | None:
        return self.host[len("unix://"):] if self.host.startswith("unix://") else None


def docker_config_dir(environ: Mapping[str, str], home: str | None = None) -> Path:
    if environ.get("DOCKER_CONFIG"):
        return Path(environ["DOCKER_CONFIG"])
    return Path(home or environ.get("HOME") or os.path.expanduser("~")) / ".docker"


def docker_context(config_dir: Path, name: str | None = None) -> tuple[str | None, str | None]:
    """The docker CLI's current context (or ``name``) and its endpoint; ``(None, None)`` for the default one.

    Contexts live in ``contexts/meta/SHA256(NAME)/meta.json`` (``Endpoints.docker.Host``)."""
    if name is None:
        try:
            name = json.loads((config_dir / "config.json").read_text()).get("currentContext")
        except (OSError, ValueError, AttributeError):
            return None, None
    if not name or name == "default":
        return None, None
    meta = config_dir / "contexts" / "meta" / hashlib.sha256(str(name).encode()).hexdigest() / "meta.json"
    try:
        endpoint = json.loads(meta.read_text())["Endpoints"]["docker"]["Host"]
    except (OSError, ValueError, KeyError, TypeError):
        return str(name), None
    return str(name), str(endpoint)


def _is_socket(path: str) -> bool:
    try:
        import stat

        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def rootless_podman_sockets(environ: Mapping[str, str]) -> list[str]:
    out = []
    if environ.get("XDG_RUNTIME_DIR"):
        out.append(os.path.join(environ["XDG_RUNTIME_DIR"], "podman", "podman.sock"))
    uid = environ.get("SUDO_UID") if os.geteuid() == 0 else str(os.getuid())
    if uid and uid.isdigit() and uid != "0":
        out.append(f"/run/user/{uid}/podman/podman.sock")
    return list(dict.fromkeys(out))


def find_endpoint(environ: Mapping[str, str] | None = None) -> Endpoint:
    env = os.environ if environ is None else environ
    if env.get("DOCKER_HOST"):
        return Endpoint(env["DOCKER_HOST"], "DOCKER_HOST")
    name, host = docker_context(docker_config_dir(env), env.get("DOCKER_CONTEXT") or None)
    if name is not None and host:
        return Endpoint(host, f"docker context {name}")
    if _is_socket(DOCKER_SOCKET):
        return Endpoint(DEFAULT_HOST, "Docker's default socket")
    for sock in rootless_podman_sockets(env):
        if _is_socket(sock):
            return Endpoint(f"unix://{sock}", "the rootless Podman socket")
    if _is_socket(PODMAN_ROOTFUL_SOCKET):
        return Endpoint(f"unix://{PODMAN_ROOTFUL_SOCKET}", "the rootful Podman socket")
    return Endpoint(DEFAULT_HOST, "Docker's default socket (none of Docker's or Podman's sockets exists)")


def guess_kind(host: str) -> str:
    """The engine kind an address suggests, for when the engine does not answer: a Podman socket
    (``…/podman/podman.sock``) under a user's runtime dir is rootless Podman, elsewhere rootful;
    anything else is taken for rootful Docker.  When the engine answers, it says itself."""
    if not host.endswith("/podman/podman.sock"):
        return "docker-rootful"
    path = host[len("unix://"):] if host.startswith("unix://") else host
    return "podman-rootful" if path == PODMAN_ROOTFUL_SOCKET else "podman-rootless"
