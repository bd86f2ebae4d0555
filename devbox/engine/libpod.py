"""Podman's own API (``/libpod/...``) through the Docker SDK client's session.

Podman serves the Docker-compatible API devbox uses everywhere, and beside it its own:
pods, SpecGenerator container creation and on-demand healthchecks exist only there.
Errors come back as the same typed :class:`~devbox.errors.EngineError`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from devbox.engine.errors import call

if TYPE_CHECKING:
    import docker

API = "/v4.0.0/libpod"  # Podman 4.0 and newer answer it (later versions accept older paths)


def request(client: docker.DockerClient, method: str, path: str, *, json: Any = None,
            params: dict[str, Any] | None = None) -> Any:
    """``METHOD /libpod/PATH``; the decoded JSON answer (``None`` when empty)."""
    low: Any = client.api  # a requests.Session underneath
    url = low.base_url + API + path
    response = call(lambda: low.request(method, url, json=json, params=params, timeout=low.timeout))
    call(lambda: low._raise_for_status(response))  # the SDK's own status -> APIError, typed by call()
    if not response.content:
        return None
    return response.json()


def names_podman(headers: Iterable[str]) -> bool:
    """Do these response header names (lowercased) say the engine is Podman?  It names itself in every answer."""
    names = set(headers)
    return "libpod-api-version" in names or "libpod-buildah-version" in names


def is_podman(client: docker.DockerClient) -> bool:
    """Is the engine Podman?  One ``/_ping``."""
    low: Any = client.api
    response = call(lambda: low.get(low.base_url + "/_ping", timeout=low.timeout))
    return names_podman(k.lower() for k in response.headers)
