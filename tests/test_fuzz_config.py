"""Fuzzing devbox.toml and profiles with Hypothesis: nothing but a one-line ConfigError ever comes out.

Documents are generated from the schema's own tables (devbox/config/schema.py)
— right keys with values of every type, unknown keys, huge and negative
numbers, unicode — then mutated as text (a BOM, a duplicated table, a cut).
Project profiles extend each other (cycles included) and mount sources use
``..`` and symlinks.  Properties: loading returns a Project or raises
ConfigError; the error names a file that exists, with a line inside it when it
gives one; a project that loads has only bind sources inside the project.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import event, given
from hypothesis import strategies as st

from devbox.config import resolve, schema
from devbox.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]

scalar = st.one_of(
    st.booleans(), st.integers(-(2**70), 2**70), st.sampled_from([0, 1, -1, 65535, 65536, 2**31, 86400, 86401]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["", ".", "..", "/", "/etc", "~", "../..", "/work", "python", "host", "healthy", "ro", "é", "\u202e"]),
)
value = st.recursive(scalar, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                     st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                     max_leaves=6)


def table_for(s: schema.TableSchema, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    keys = list(s.keys)
    known = st.dictionaries(st.sampled_from(keys), value, max_size=len(keys)) if keys else st.just({})
    unknown = st.dictionaries(st.text(min_size=1, max_size=8), value, max_size=1)
    return st.builds(lambda a, b: {**b, **a}, known, unknown)


service = st.one_of(
    table_for(schema.SERVICE),
    st.fixed_dictionaries({"image": st.sampled_from(["debian:bookworm-slim", "x y"])}, optional={
        "command": value, "env": value, "ports": value, "mounts": value, "volumes": value, "depends_on": value,
        "healthcheck": table_for(schema.HEALTHCHECK), "user": value, "workdir": value, "build": value,
    }),
)
project = st.builds(
    lambda top, services, watch, remap: {**top, **({"services": services} if services else {}),
                                         **({"watch": watch} if watch else {}), **({"remap": remap} if remap else {})},
    table_for(schema.PROJECT), st.dictionaries(st.sampled_from(["runtime", "db", "editor", "nope"]), service, max_size=2),
    table_for(schema.WATCH), table_for(schema.REMAP),
)
# mostly right documents, so that loading succeeds often enough for the bind-mount property to bite
source = st.sampled_from([".", "sub", "sub/etc-link", "sub/etc-link/..", "sub/up", "sub/up/proj", "../x", "/etc",
                          "/", "~", "~/x", "sub/../sub", "/var/run/docker.sock", "nonexistent"])
mount = st.one_of(
    st.builds(lambda s, t, ro: {"source": s, "target": t, "read_only": ro}, source,
              st.sampled_from(["/work", "/data", "/w/x", "relative", "/"]), st.booleans()),
    st.builds(lambda s, t: f"{s}:{t}", source, st.sampled_from(["/work", "/data", "/x:ro"])),
)
right_project = st.fixed_dictionaries({"name": st.sampled_from(["p", "my-app", "P"])}, optional={
    "profile": st.sampled_from(["python", "node", "a", "b"]),
    "workdirs": st.lists(mount, max_size=2),
    "mounts": st.lists(mount, max_size=2),
    "ports": st.dictionaries(st.sampled_from(["runtime", "db"]),
                             st.lists(st.sampled_from(["8000", "8080:80", "127.0.0.1:9000:90", "70000", "[::1]:1:2"]),
                                      max_size=2), max_size=1),
    "watch": st.fixed_dictionaries({}, optional={"rescan_interval": st.sampled_from([0, 1, 30, 86400, 86401, 1e30]),
                                                 "ignore": st.lists(st.sampled_from([".git", "node_modules", "a/b"]))}),
})

profile = st.builds(
    lambda desc, extends, services: {"description": desc, **({"extends": extends} if extends else {}), "services": services},
    st.text(max_size=10), st.sampled_from([None, "a", "b", "python", "nowhere"]),
    st.dictionaries(st.sampled_from(["runtime", "db", "x"]), service, max_size=2),
)


def toml_key(k: str) -> str:
    return json.dumps(k)


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + "}"


def to_toml(doc: dict[str, Any]) -> str:
    lines = [f"{toml_key(k)} = {toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for k, v in doc.items():
        if isinstance(v, dict):
            lines.append(f"[{toml_key(k)}]")
            lines += [f"{toml_key(kk)} = {toml_value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


mutation = st.sampled_from(["none", "bom", "dup-table", "cut", "crlf", "nul"])


def mutate(text: str, how: str, cut: int) -> str:
    if how == "bom":
        return "\ufeff" + text
    if how == "dup-table":
        return text + "[watch]\n[watch]\n"
    if how == "cut":
        return text[: cut % (len(text) + 1)]
    if how == "crlf":
        return text.replace("\n", "\r\n")
    if how == "nul":
        return text + "\x00"
    return text


def _check_error(exc: ConfigError, root: Path) -> None:
    line = exc.one_line()
    assert "\n" not in line and exc.where, line
    file, _, number = exc.where.partition(":")
    assert Path(file).exists(), line
    if number:
        first = number.split(":")[0].split(" ")[0]
        assert first.isdigit(), line
        text = Path(file).read_text(encoding="utf-8", errors="replace")
        assert 1 <= int(first) <= max(1, len(text.splitlines())), line


@given(st.one_of(project, right_project), st.dictionaries(st.sampled_from(["a", "b", "c"]), profile, max_size=3), mutation,
       st.integers(0, 10_000))
def test_loading_any_project_is_a_project_or_one_config_error(doc: dict[str, Any], profiles: dict[str, Any],
                                                               how: str, cut: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "proj"
        (root / ".devbox" / "profiles").mkdir(parents=True)
        (root / "sub").mkdir()
        os.symlink("/etc", root / "sub" / "etc-link")  # a source through it must be refused
        os.symlink("..", root / "sub" / "up")
        (root / "devbox.toml").write_bytes(mutate(to_toml(doc), how, cut).encode("utf-8", errors="surrogatepass"))
        for name, prof in profiles.items():
            (root / ".devbox" / "profiles" / f"{name}.toml").write_text(to_toml(prof))
        try:
            loaded = resolve.load_project(root, home=Path(d) / "home", profiles_dir=REPO / "profiles",
                                          images_dir=REPO / "images")
        except ConfigError as exc:
            event("ConfigError")
            _check_error(exc, root)
            return
        event("loaded")
        real_root = root.resolve()
        for prof in loaded.profiles.values():
            for svc in prof.services:
                for m in svc.binds:
                    assert m.allow_outside_project or Path(m.source) == real_root or real_root in Path(m.source).parents


@given(st.lists(st.sampled_from(["a", "b", "c", "python"]), min_size=1, max_size=4))
def test_extends_chains_and_cycles_are_said_in_one_line(chain: list[str]) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "proj"
        (root / ".devbox" / "profiles").mkdir(parents=True)
        (root / "devbox.toml").write_text('name = "p"\nprofile = "a"\n')
        names = ["a", *chain]
        for here, parent in zip(names, names[1:], strict=False):
            (root / ".devbox" / "profiles" / f"{here}.toml").write_text(
                f'extends = "{parent}"\n[services.runtime]\nimage = "debian:bookworm-slim"\n')
        try:
            resolve.load_project(root, home=Path(d) / "home", profiles_dir=REPO / "profiles", images_dir=REPO / "images")
        except ConfigError as exc:
            _check_error(exc, root)
