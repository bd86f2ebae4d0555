"""Layers, later wins: a profile's ``extends`` chain, root first, then ``devbox.toml``.

Merging is per key: tables (``env``, ``build`` with its ``args``,
``healthcheck``) merge deeply, everything else (lists, strings,
``depends_on``) is replaced.  A layer naming an ``image`` drops an inherited
``build`` and vice versa.  Each key remembers the file and key path that set
it last, so an error about the merged service points at that layer.  Pure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from devbox.config.schema import ProjectFile, RawProfile
from devbox.config.source import KeyPath, Source, format_path, suggest
from devbox.errors import ConfigError

DEEP = ("env", "healthcheck", "build")


@dataclasses.dataclass
class Layered:
    """A service's merged table and, per key, the source and key path that set it last."""

    data: dict[str, Any] = dataclasses.field(default_factory=dict)
    origin: dict[str, tuple[Source, KeyPath]] = dataclasses.field(default_factory=dict)
    declared: tuple[Source, KeyPath] | None = None  # where the service's table first appears (it may be empty)

    def apply(self, src: Source, path: KeyPath, layer: Mapping[str, Any]) -> None:
        if self.declared is None:
            self.declared = (src, path)
        for key, value in layer.items():
            if key == "image":
                self.data.pop("build", None)
            if key == "build":
                self.data.pop("image", None)
            if key in DEEP and isinstance(self.data.get(key), dict):
                self.data[key] = deep_merge(self.data[key], value)
            else:
                self.data[key] = value
            self.origin[key] = (src, (*path, key))

    def fail(self, key: str, sub: KeyPath, message: str, hint: str | None = None) -> ConfigError:
        src, path = self.origin[key]
        return src.error((*path, *sub), message, hint)

    def path(self, key: str, *sub: str | int) -> str:
        return format_path((*self.origin[key][1], *sub))


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def extends_chain(name: str, raws: Mapping[str, RawProfile]) -> list[RawProfile]:
    """``name`` and its ancestors, root first; an unknown parent or a cycle is an error in the file naming it."""
    chain: list[RawProfile] = []
    current = raws[name]
    while True:
        if any(r.name == current.name for r in chain):
            start = next(i for i, r in enumerate(chain) if r.name == current.name)
            cycle = " → ".join([r.name for r in chain[start:]] + [current.name])
            raise chain[-1].src.error(("extends",), f"extends cycle: {cycle}")
        chain.append(current)
        if current.extends is None:
            break
        if current.extends not in raws:
            raise current.src.error(("extends",), f"unknown profile '{current.extends}' in extends", suggest(current.extends, raws))
        current = raws[current.extends]
    return list(reversed(chain))


def merge_services(chain: list[RawProfile], project: ProjectFile | None) -> dict[str, Layered]:
    """Each service of the chain, merged through its layers; the project file overrides only services the chain has."""
    layered: dict[str, Layered] = {}
    for layer in chain:
        for svc, table in layer.services.items():
            layered.setdefault(svc, Layered()).apply(layer.src, ("services", svc), table)
    if project is not None:
        for svc, table in project.services.items():
            if svc in layered:
                layered[svc].apply(project.src, ("services", svc), table)
    return layered
