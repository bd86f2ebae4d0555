"""devcontainer.json (JSON with comments and trailing commas) and compose YAML -> plain data.

JSONC is parsed with ``json5`` (a superset: comments, trailing commas, and more), whose errors
say ``<string>:LINE ... at column COL``; they become one :class:`ConfigError` naming
``file:line:column``, as tomllib's do for devbox.toml.  Pure: the caller reads the files.
"""

from __future__ import annotations

import re
from typing import Any

import json5
import yaml

from devbox.errors import ConfigError

_JSON5_AT = re.compile(r"^<string>:(\d+)\s+(.*?)\s+at column (\d+)$", re.DOTALL)


def parse_jsonc(text: str, where: str) -> dict[str, Any]:
    """The top-level object of a devcontainer.json; ``where`` names the file in errors."""
    try:
        data = json5.loads(text)
    except ValueError as exc:
        m = _JSON5_AT.match(str(exc).strip())
        if m:
            raise ConfigError(f"not valid JSON with comments: {m.group(2)}", where=f"{where}:{m.group(1)}:{m.group(3)}") from None
        raise ConfigError(f"not valid JSON with comments: {exc}", where=where) from None
    if not isinstance(data, dict):
        raise ConfigError(f"the top level must be an object, not {type(data).__name__}", where=f"{where}:1:1")
    return data


def parse_compose(text: str, where: str) -> dict[str, Any]:
    """A compose file's top-level mapping (``safe_load``: no tags, no code)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark is not None else where
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"not valid YAML: {problem}", where=at) from None
    if not isinstance(data, dict) or not isinstance(data.get("services"), dict):
        raise ConfigError("not a compose file: no 'services' mapping at the top level", where=where)
    return data
