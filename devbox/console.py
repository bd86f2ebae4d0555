"""The only module that prints.

Data goes to stdout (tables, ``--json``), diagnostics to stderr.  Rich renders
for people; :func:`emit_json` renders for scripts with a stable, sorted shape.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)

STATUS_STYLE = {"ok": "green", "warn": "yellow", "fail": "red", "skip": "dim"}
STATUS_MARK = {"ok": "✓", "warn": "!", "fail": "✗", "skip": "-"}


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def json_line(data: Any) -> None:
    """One compact JSON object per line (a stream: ``devbox watch --json``)."""
    sys.stdout.write(json.dumps(data, sort_keys=True, default=str) + "\n")
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


def leak(line: str) -> None:
    """One ownership-leak line or burst summary from the watcher (data: stdout)."""
    stdout.print(escape(line), style="yellow")


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


def findings(items: Iterable[Any], verbose: bool = False) -> None:
    """:class:`devbox.core.findings.Finding` lines: evidence and fix for what is not ok (all with ``verbose``)."""
    for f in items:
        status_line(f.status, f.title)
        if verbose or f.status in ("fail", "warn"):
            indented(f.evidence)
        if f.fix and f.status in ("fail", "warn"):
            indented([f"fix: {f.fix}"], style="cyan")


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


# --- the stack (devbox.stack): raw streams, build progress, choices ------------------


def raw(data: bytes, err: bool = False) -> None:
    """Pass bytes through untouched (container logs and exec output, an attached terminal)."""
    stream = sys.stderr if err else sys.stdout
    stream.buffer.write(data)
    stream.flush()


def choose(question: str, choices: Sequence[str], default: str) -> str:
    """Pick one of ``choices`` on the terminal; no TTY means ``default`` without asking."""
    if not sys.stdin.isatty():
        return default
    for i, c in enumerate(choices, 1):
        stderr.print(f"  {i}) {escape(c)}" + (" [dim](default)[/]" if c == default else ""))
    while True:
        answer = stderr.input(f"{escape(question)} [{escape(default)}] ").strip()
        if not answer:
            return default
        if answer.isdigit() and 1 <= int(answer) <= len(choices):
            return choices[int(answer) - 1]
        if answer in choices:
            return answer
        stderr.print(f"[yellow]pick a number 1-{len(choices)} or a name[/]")


class Activity:
    """One long step: a spinner with a changing line on a terminal; its first line only, otherwise."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._status: Any = None

    def __enter__(self) -> Activity:
        if stderr.is_terminal:
            self._status = stderr.status(escape(self._text))
            self._status.__enter__()
        else:
            info(self._text + " …")
        return self

    def update(self, text: str) -> None:
        if self._status is not None:
            self._status.update(escape(text))

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.__exit__(None, None, None)


class BuildProgress:
    """Image builds: a live bar per image on a terminal, one line per build step otherwise.

    Thread-safe: the executor builds several images at once.
    """

    def __init__(self) -> None:
        import threading

        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self._lock = threading.Lock()
        self._live = stderr.is_terminal
        self._progress = Progress(
            SpinnerColumn(), TextColumn("{task.fields[ref]}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("[dim]{task.description}"), console=stderr, transient=False,
        )
        self._tasks: dict[str, Any] = {}
        self._steps: dict[str, str] = {}  # ref -> the current step's text
        self._said: dict[str, float] = {}  # ref -> when its last output line was shown (no terminal)

    def __enter__(self) -> BuildProgress:
        if self._live:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live:
            self._progress.stop()

    def start(self, ref: str) -> None:
        with self._lock:
            if self._live:
                self._tasks[ref] = self._progress.add_task("starting", ref=ref, total=None)
            else:
                info(f"building {ref}")

    def step(self, ref: str, number: int, total: int, text: str) -> None:
        import time

        with self._lock:
            self._steps[ref] = text
            self._said[ref] = time.monotonic()
            if self._live:
                self._progress.update(self._tasks[ref], completed=number - 1, total=total, description=text[:60])
            else:
                info(f"  {ref}: step {number}/{total}: {text}")

    def output(self, ref: str, line: str, every_s: float = 30.0) -> None:
        """A line a build step printed: shown beside the step on a terminal; without one, the latest
        line every ``every_s`` seconds, so a long step (an npm install) still shows it is alive."""
        import time

        line = " ".join(line.split())
        if not line:
            return
        with self._lock:
            if self._live:
                if ref in self._tasks:
                    step = self._steps.get(ref, "")
                    self._progress.update(self._tasks[ref], description=f"{step[:30]} · {line[:70]}")
            elif time.monotonic() - self._said.get(ref, 0.0) >= every_s:
                self._said[ref] = time.monotonic()
                info(f"  {ref}: … {line[:120]}")

    def done(self, ref: str, seconds: float) -> None:
        with self._lock:
            if self._live:
                task = self._tasks[ref]
                total = self._progress.tasks[task].total or 1
                self._progress.update(task, completed=total, total=total, description=f"built in {seconds:.0f}s")
            else:
                info(f"built {ref} in {seconds:.1f}s")

    def failed(self, ref: str, step: str, tail: Sequence[str]) -> None:
        with self._lock:
            if self._live:
                self._progress.update(self._tasks[ref], description="[red]failed")
            stderr.print(f"[red]build of {escape(ref)} failed at {escape(step)}[/]; last lines of its log:")
            for line in tail:
                stderr.print(f"  {escape(line)}", style="dim")
