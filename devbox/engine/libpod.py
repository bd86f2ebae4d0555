"""Podman's own API (``/libpod/...``): where it is, and how Podman names itself.

Podman serves the Docker-compatible API devbox uses everywhere, and beside it its own:
pods, SpecGenerator container creation and on-demand healthchecks exist only there.
:meth:`devbox.engine.fastapi.Api.libpod` sends those requests, with the same typed
:class:`~devbox.errors.EngineError`\\ s.
"""

from __future__ import annotations

from collections.abc import Iterable

API = "/v4.0.0/libpod"  # Podman 4.0 and newer answer it (later versions accept older paths)


def names_podman(headers: Iterable[str]) -> bool:
    """Do these response header names (lowercased) say the engine is Podman?  It names itself in every answer."""
    names = set(headers)
    return "libpod-api-version" in names or "libpod-buildah-version" in names
