"""Text out: profile TOML, compose YAML, devcontainer.json (pure).

TOML is written by hand (the standard library reads TOML but does not write it): the values
imports produce are strings, numbers, booleans, arrays and small tables, and each one fits an
inline value, so a service is one ``[services.NAME]`` table of ``key = value`` lines.  Strings
are JSON-quoted, which TOML's basic strings read the same way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

_BARE = re.compile(r"[A-Za-z0-9_-]+")


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML for {type(value).__name__}")


def toml_key(key: str) -> str:
    return key if _BARE.fullmatch(key) else json.dumps(key, ensure_ascii=False)


def comment(lines: Iterable[str]) -> str:
    return "".join(f"# {line}\n" if line else "#\n" for line in lines)


def profile_toml(header: Iterable[str], description: str, services: Mapping[str, Mapping[str, Any]]) -> str:
    out = comment(header) + f"description = {toml_value(description)}\n"
    for name, table in services.items():
        out += f"\n[services.{toml_key(name)}]\n"
        out += "".join(f"{toml_key(k)} = {toml_value(v)}\n" for k, v in table.items())
    return out


def project_toml(header: Iterable[str], name: str, profile: str, workdirs: list[dict[str, Any]]) -> str:
    return (comment(header) + f"name = {toml_value(name)}\nprofile = {toml_value(profile)}\n"
            f"workdirs = {toml_value(workdirs)}\n\n[remap]\n"
            "# require: `up` refuses to start services that bind-mount your files until their files are provably yours\n"
            'policy = "require"\n')


def compose_yaml(header: Iterable[str], data: Mapping[str, Any]) -> str:
    return comment(header) + yaml.safe_dump(dict(data), sort_keys=False, default_flow_style=False, allow_unicode=True, width=1000)


def devcontainer_json(data: Mapping[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
