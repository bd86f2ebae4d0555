"""The command line as a user meets it: option letters, line endings, one-line errors."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import typer.core
import typer.main

from devbox.cli import app

REPO = Path(__file__).resolve().parents[1]


def _commands() -> dict[str, typer.core.TyperCommand]:
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    return dict(group.commands)


def test_each_short_option_means_one_thing_across_the_cli() -> None:
    meaning: dict[str, set[str]] = {}
    for command in _commands().values():
        for param in command.params:
            if not isinstance(param, typer.core.TyperOption):
                continue
            longs = [o for o in param.opts if o.startswith("--")]
            for short in (o for o in param.opts if len(o) == 2 and o.startswith("-")):
                meaning.setdefault(short, set()).update(longs)
    assert {s: sorted(m) for s, m in meaning.items() if len(m) > 1} == {}
    assert meaning["-v"] == {"--volumes"}  # compose's `down -v`, the convention users know


def test_every_inspection_command_has_json() -> None:
    commands = _commands()
    for name in ("remap", "ps", "profiles", "doctor", "watch", "leaks"):
        assert any("--json" in p.opts for p in commands[name].params if isinstance(p, typer.core.TyperOption)), name


def _devbox(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "devbox", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})}, timeout=60)


def test_init_ends_every_line_on_pipes(tmp_path: Path) -> None:
    r = _devbox("init", "--profile", "python", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith("\n") and r.stderr.endswith("next: devbox up\n")


def test_init_ends_every_line_on_a_terminal(tmp_path: Path) -> None:
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(tmp_path)
        os.environ["PYTHONPATH"] = str(REPO)
        os.execv(sys.executable, [sys.executable, "-m", "devbox", "init", "--profile", "python"])
    out = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert out.endswith(b"next: devbox up\r\n"), out


def test_outside_a_project_up_is_one_line_exit_2(tmp_path: Path) -> None:
    r = _devbox("up", "-d", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr == f"devbox: error: no devbox.toml in {tmp_path} or any parent directory — run 'devbox init'\n"


def test_a_usage_error_is_one_line_exit_2(tmp_path: Path) -> None:
    r = _devbox("down", "--no-such-flag", cwd=tmp_path)
    assert r.returncode == 2
    assert "No such option: --no-such-flag" in r.stderr and "Traceback" not in r.stderr
