"""Doctor's report: rows for people (:func:`render_lines`, pure; :func:`render` prints them) and the
``devbox.doctor/1`` JSON object (:func:`doctor_report_json`; the schema is in :mod:`devbox.doctor`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from devbox import console
from devbox.core.findings import worst
from devbox.doctor.context import Context
from devbox.doctor.runner import Result, counts
from devbox.errors import ConfigError

SCHEMA = "devbox.doctor/1"


def doctor_report_json(ctx: Context, results: Sequence[Result], fixed: dict[str, Any] | None) -> dict[str, Any]:
    u = ctx.user
    project = ctx.project_or_error
    status = worst(r.finding for r in results)
    return {
        "schema": SCHEMA,
        "ok": status != "fail",
        "status": status,
        "user": {"name": u.name, "uid": u.uid, "gid": u.gid, "group": u.group},
        "project": None if project is None or isinstance(project, ConfigError)
        else {"name": project.name, "root": str(project.root), "profile": project.default_profile},
        "counts": counts(results),
        "findings": [r.to_json() for r in results],
        "probe": ctx.state.probe.to_json() if ctx.state.probe else None,
        "fixed": fixed,
    }


def render_lines(results: Sequence[Result], verbose: bool) -> list[tuple[str, str, str, str]]:
    """What people see, as ``(kind, status, text, style)`` rows (pure, so it is tested without a terminal).

    kinds: ``group`` header, ``check`` (one per finding; a skip carries its reason),
    ``detail`` (evidence: failures and warnings, or everything with ``verbose``), ``fix``.
    """
    rows: list[tuple[str, str, str, str]] = []
    group = None
    for r in results:
        f = r.finding
        if r.group != group:
            group = r.group
            rows.append(("group", "", group, "bold"))
        rows.append(("check", f.status, f"{f.title}  [{f.id}]", ""))
        if f.status == "skip" and not verbose:
            rows += [("detail", "", e, "dim") for e in f.evidence[:1]]
        elif verbose or f.status in ("fail", "warn"):
            rows += [("detail", "", e, "dim") for e in f.evidence]
        if f.fix and f.status in ("fail", "warn"):
            rows.append(("fix", "", f"fix: {f.fix}", "cyan"))
    return rows


def summary_line(results: Sequence[Result]) -> str:
    c = counts(results)
    return f"{c['fail']} failed, {c['warn']} warning(s), {c['ok']} ok, {c['skip']} skipped"


def render(ctx: Context, results: Sequence[Result], verbose: bool, title: str = "devbox doctor") -> None:
    u = ctx.user
    console.say(f"{title} — {u.name} (uid {u.uid}, gid {u.gid})", style="bold")
    for kind, status, text, style in render_lines(results, verbose):
        if kind == "group":
            console.say("")
            console.say(text, style=style)
        elif kind == "check":
            console.status_line(status, text)
        else:
            console.indented([text], style=style)
    status = worst(r.finding for r in results)
    console.say("")
    console.say(summary_line(results), style={"ok": "green", "warn": "yellow", "fail": "red"}[status])
