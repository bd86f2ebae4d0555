"""The package's shape, asserted by walking its imports: layers point down, no cycles, small modules.

Layers, from the ground up (README "Layout"):

    0  core/ errors paths console faults   pure logic and the ground everything stands on
       payload/                       scripts devbox mounts into containers: nothing of devbox
    1  engine/                        the engine boundary
    2  host/                          who the user is, reading and editing the host
    3  config/  remap/  idmapd/       devbox.toml -> model; the host remap; the idmap helper
    4  watch/                         the ownership watcher
    5  stack/  doctor/                the stack; the diagnosis of everything
    6  devcontainer/                  Dev Containers and Compose in and out (export asks the stack's views for users)
    7  cli                            options in, one call, an exit code out

A module may import its own package and any lower layer, never a peer package
of its own layer or anything above.  ``core/`` imports nothing of devbox
outside ``core/``.  Command modules (``*.command``, ``*.commands``) are
imported by the CLI only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "devbox"
MAX_LINES = 700

LAYERS: dict[str, int] = {
    "devbox.core": 0,
    "devbox.errors": 0,
    "devbox.paths": 0,
    "devbox.console": 0,
    "devbox.faults": 0,
    "devbox.payload": 0,  # runs inside containers: imports nothing of devbox (test below)
    "devbox": 0,  # the package's own __init__ (version only)
    "devbox.engine": 1,
    "devbox.host": 2,
    "devbox.config": 3,
    "devbox.remap": 3,
    "devbox.idmapd": 3,
    "devbox.watch": 4,
    "devbox.stack": 5,
    "devbox.doctor": 5,
    "devbox.devcontainer": 6,
    "devbox.cli": 7,
    "devbox.__main__": 8,
}


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def unit(module: str) -> str:
    """The layer unit a module belongs to: its subpackage, or itself for a top-level module."""
    parts = module.split(".")
    if len(parts) >= 2 and f"devbox.{parts[1]}" in LAYERS:
        return f"devbox.{parts[1]}"
    return module


def imports_of(module: str) -> set[str]:
    """Every devbox module ``module`` imports, anywhere in it (lazy and TYPE_CHECKING imports included)."""
    tree = ast.parse(MODULES[module].read_text())
    found: set[str] = set()
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "devbox"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] != "devbox":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    return {m for m in found if m != module}


GRAPH = {m: imports_of(m) for m in MODULES}


def test_every_module_belongs_to_a_layer() -> None:
    assert [m for m in MODULES if unit(m) not in LAYERS] == []


def test_imports_point_down() -> None:
    wrong = []
    for module, deps in GRAPH.items():
        for dep in deps:
            here, there = unit(module), unit(dep)
            if here == there:
                continue
            if LAYERS[there] >= LAYERS[here] and not (here == "devbox" or there == "devbox"):
                wrong.append(f"{module} (layer {LAYERS[here]}) imports {dep} (layer {LAYERS[there]})")
    assert wrong == []


def test_core_imports_only_core() -> None:
    wrong = [f"{m} imports {d}" for m, deps in GRAPH.items() if m.startswith("devbox.core")
             for d in deps if not d.startswith("devbox.core")]
    assert wrong == []


def test_commands_are_imported_by_the_cli_only() -> None:
    wrong = [f"{m} imports {d}" for m, deps in GRAPH.items() for d in deps
             if d.rpartition(".")[2] in ("command", "commands") and m != "devbox.cli"]
    assert wrong == []


def test_no_import_cycles() -> None:
    # Tarjan's strongly connected components over the module graph
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH.get(v, ()):
            if w not in MODULES:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in MODULES:
        if v not in index:
            visit(v)
    assert cycles == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_is_small(module: str) -> None:
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines (at most {MAX_LINES}: split it by concern)"


def test_each_top_level_name_is_defined_once() -> None:
    """One ``Plan``, one ``execute``, one ``observe``: a name means one thing in the package."""
    where: dict[str, list[str]] = {}
    for module, path in MODULES.items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                where.setdefault(node.name, []).append(module)
    # typer's commands in cli.py are named after the CLI verbs, which the command modules implement
    cli_verbs = {n.name for n in ast.parse(MODULES["devbox.cli"].read_text()).body if isinstance(n, ast.FunctionDef)}
    twice = {name: mods for name, mods in where.items() if len(mods) > 1 and not (name in cli_verbs and "devbox.cli" in mods and len(mods) == 2)}
    assert twice == {}


def test_the_graph_walker_sees_imports() -> None:
    """The walker itself: the CLI reaches the commands, and a lazy import inside a function counts."""
    assert "devbox.errors" in GRAPH["devbox.cli"]
    assert {"devbox.stack.commands", "devbox.remap.command", "devbox.watch.commands"} <= GRAPH["devbox.cli"]


def test_payload_imports_nothing_of_devbox() -> None:
    # payload/ scripts run inside containers with only the standard library
    for module in MODULES:
        if module.startswith("devbox.payload."):
            assert GRAPH[module] == set(), module
