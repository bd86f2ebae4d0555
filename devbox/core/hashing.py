"""Content hashes: the ``devbox.config-hash`` label, image tags, file digests (pure).

A changed hash means "recreate"; an unchanged one means "leave it running"
(compose's ``hash.go`` idea).  Build contexts are hashed by
:func:`devbox.config.resolve.context_digest`, which reads the files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only types: sha256_hex is on the remap's fast path, which needs no model
    from devbox.core.model import Build, Service

HASH_VERSION = "devbox-config-v1"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def image_tag(build: Build) -> str:
    """A tag derived from the context's content and the build args: same inputs, same tag, shared across projects."""
    inputs: list[object] = [build.digest, build.dockerfile, list(build.args)]
    if build.target is not None:  # only then: the tags of builds without a target stay as they were
        inputs.append(build.target)
    h = sha256_hex(json.dumps(inputs).encode())
    return f"devbox/{build.context}:{h[:12]}"


def config_hash(service: Service) -> str:
    """Stable sha256 of everything that shapes the container (the ``devbox.config-hash`` label).

    The image enters as its reference (for built images a content-derived
    tag), the placeholder for the image id; the plan compares image ids
    separately.  ``build`` itself is left out: its ``context_dir`` differs
    between checkouts, and its content is already in the tag.
    """
    spec = dataclasses.asdict(service)
    spec.pop("build")
    spec.pop("userns_reason")  # documentation, not configuration
    for key in ("post_create", "post_start", "web_port"):  # added later: absent when empty, so existing hashes stay
        if not spec[key]:
            spec.pop(key)
    for key in ("generated_env", "terminal"):  # their effect is in env and mounts (devbox.core.access)
        spec.pop(key)
    return sha256_hex(json.dumps([HASH_VERSION, spec], sort_keys=True).encode())
