"""The only module that prints.

Data goes to stdout (tables, ``--json``), diagnostics to stderr.  Rich renders
for people; :func:`emit_json` renders for scripts with a stable, sorted shape.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Iterable, Sequence

from rich.console import Console
from rich.table import Table

stdout = Console(highlight=False, soft_wrap=False)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)

STATUS_STYLE = {"ok": "green", "warn": "yellow", "fail": "red", "skip": "dim"}
STATUS_MARK = {"ok": "✓", "warn": "!", "fail": "✗", "skip": "-"}


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def error(line: str) -> None:
    stderr.print(f"[bold red]devbox: error:[/] {escape(line)}")


def warn(line: str) -> None:
    stderr.print(f"[yellow]devbox: warning:[/] {escape(line)}")


def info(line: str) -> None:
    """A quiet progress or status line, on stderr so stdout stays data."""
    stderr.print(escape(line))


def say(line: str, style: str | None = None) -> None:
    stdout.print(escape(line), style=style)


def status_line(status: str, title: str, detail: str = "") -> None:
    style = STATUS_STYLE.get(status, "")
    mark = STATUS_MARK.get(status, "?")
    text = f"[{style}]{mark} {status:<4}[/] {escape(title)}"
    if detail:
        text += f"  [dim]{escape(detail)}[/]"
    stdout.print(text)


def indented(lines: Iterable[str], style: str = "dim", prefix: str = "       ") -> None:
    for line in lines:
        stdout.print(f"{prefix}{escape(line)}", style=style)


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> None:
    t = Table(title=title, show_edge=False, header_style="bold", pad_edge=False)
    for col in columns:
        t.add_column(col)
    for row in rows:
        t.add_row(*(escape(str(c)) for c in row))
    stdout.print(t)


def diff(text: str) -> None:
    for line in text.splitlines():
        style = None
        if line.startswith("+") and not line.startswith("+++"):
            style = "green"
        elif line.startswith("-") and not line.startswith("---"):
            style = "red"
        elif line.startswith("@@"):
            style = "cyan"
        stdout.print(escape(line), style=style)


def confirm(question: str) -> bool:
    """Ask on the terminal; no TTY means no."""
    if not sys.stdin.isatty():
        return False
    answer = stderr.input(f"{escape(question)} [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def escape(text: str) -> str:
    from rich.markup import escape as _escape

    return _escape(text)
