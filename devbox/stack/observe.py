"""Read-only engine queries -> the plain :mod:`devbox.core.model` ``Observed*`` dataclasses.

Everything is found by the ``devbox.project`` label (never by name), with the
list endpoints, so a no-op ``up`` costs three list calls and one image inspect
per distinct image.
"""

from __future__ import annotations

import dataclasses
import io
import re
import tarfile
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from devbox.core.model import (
    LABEL_CONFIG_HASH,
    LABEL_PROFILE,
    LABEL_PROJECT,
    LABEL_SERVICE,
    LABEL_TOOLCHAIN,
    Observed,
    ObservedContainer,
    ObservedImage,
)
from devbox.errors import EngineError, EngineErrorKind

if TYPE_CHECKING:
    from devbox.engine.client import Engine

_HEALTH_RE = re.compile(r"\((healthy|unhealthy|health: starting)\)")


def _health(status_text: str) -> str | None:
    """The health in the list endpoint's human ``Status`` ("Up 3 seconds (healthy)")."""
    m = _HEALTH_RE.search(status_text or "")
    if not m:
        return None
    return "starting" if m.group(1) == "health: starting" else m.group(1)


def container_from_list(raw: dict[str, Any]) -> ObservedContainer:
    labels = raw.get("Labels") or {}
    names = raw.get("Names") or [""]
    return ObservedContainer(
        id=raw["Id"],
        name=names[0].lstrip("/"),
        project=labels.get(LABEL_PROJECT, ""),
        service=labels.get(LABEL_SERVICE, ""),
        profile=labels.get(LABEL_PROFILE, ""),
        config_hash=labels.get(LABEL_CONFIG_HASH, ""),
        image_id=raw.get("ImageID", ""),
        status=raw.get("State", ""),
        health=_health(raw.get("Status", "")),
    )


def containers(client: Engine, project: str) -> tuple[ObservedContainer, ...]:
    raw = client.api.containers(all=True, filters={"label": f"{LABEL_PROJECT}={project}"})
    return tuple(sorted((container_from_list(c) for c in raw), key=lambda c: (c.service, c.name)))


def networks(client: Engine, project: str) -> frozenset[str]:
    raw = client.api.networks(filters={"label": f"{LABEL_PROJECT}={project}"})
    return frozenset(n["Name"] for n in raw)


def volumes(client: Engine, project: str) -> frozenset[str]:
    raw = client.api.volumes(filters={"label": f"{LABEL_PROJECT}={project}"})
    return frozenset(v["Name"] for v in (raw.get("Volumes") or []))


def image(client: Engine, ref: str) -> ObservedImage | None:
    try:
        raw = client.api.inspect_image(ref)
    except EngineError as exc:
        if exc.kind is EngineErrorKind.NOT_FOUND:
            return None
        raise
    config = raw.get("Config") or {}
    labels = config.get("Labels") or {}
    return ObservedImage(ref=ref, id=raw["Id"], toolchain=labels.get(LABEL_TOOLCHAIN), user=str(config.get("User") or ""))


def observe_project(client: Engine, project: str, image_refs: Iterable[str] = (),
                    podman: bool = False) -> Observed:
    """Everything carrying ``devbox.project=project``, plus the images named by ``image_refs`` that exist.
    On Podman the project's network is its pod (:mod:`devbox.stack.pods`)."""
    from devbox.stack import pods

    found = tuple(i for i in (image(client, ref) for ref in dict.fromkeys(image_refs)) if i is not None)
    return Observed(
        containers=containers(client, project),
        networks=pods.pods(client, project) if podman else networks(client, project),
        volumes=volumes(client, project),
        images=found,
    )


@dataclasses.dataclass(frozen=True)
class ContainerDetail:
    """What ``ps`` shows beyond :class:`ObservedContainer` (one inspect per container)."""

    userns_mode: str
    ports: tuple[str, ...]
    image_ref: str
    toolchain: str | None  # the image label, e.g. "python 3.11"
    exact: str | None  # /etc/devbox-toolchain inside the container, e.g. "Python 3.11.2"
    exit_code: int | None


def _ports(raw: dict[str, Any]) -> list[str]:
    """``IP:HOSTPORT->PORT/PROTO`` for each binding of an inspected container."""
    ports: list[str] = []
    for cport, binds in sorted(((raw.get("NetworkSettings") or {}).get("Ports") or {}).items()):
        for b in binds or []:
            ports.append(f"{b.get('HostIp') or '0.0.0.0'}:{b.get('HostPort')}->{cport}")
    return ports


def ports(client: Engine, container_id: str) -> list[str]:
    """The published ports of a container (one inspect; :func:`detail` reads much more)."""
    return _ports(client.api.inspect_container(container_id))


def detail(client: Engine, container_id: str) -> ContainerDetail:
    raw = client.api.inspect_container(container_id)
    host_config = raw.get("HostConfig") or {}
    cfg = raw.get("Config") or {}
    state = raw.get("State") or {}
    ports = _ports(raw)
    image_ref = cfg.get("Image", "")
    img = image(client, image_ref) if image_ref else None
    return ContainerDetail(
        userns_mode=host_config.get("UsernsMode") or "",
        ports=tuple(ports),
        image_ref=image_ref,
        toolchain=img.toolchain if img else None,
        exact=toolchain_file(client, container_id),
        exit_code=state.get("ExitCode") if state.get("Status") == "exited" else None,
    )


def toolchain_file(client: Engine, container_id: str) -> str | None:
    """``/etc/devbox-toolchain`` (written by images/*/Dockerfile), read without starting anything."""
    try:
        data = client.api.get_archive(container_id, "/etc/devbox-toolchain")
    except EngineError as exc:
        if exc.kind in (EngineErrorKind.NOT_FOUND, EngineErrorKind.CONFLICT):
            return None  # no such file, or a container being removed
        raise
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = next((m for m in tar.getmembers() if m.isfile()), None)
        fh = tar.extractfile(member) if member else None
        return fh.read().decode(errors="replace").strip() if fh else None
