"""Running checks in dependency order (pure).

A :class:`Check` names the finding ids it reports (their titles come from
:data:`devbox.core.findings.TITLES`), the ids it needs, and how it decides.
:func:`run_checks` runs them in order: a check whose prerequisite failed or was
skipped reports each of its ids as ``skip``, naming that prerequisite; a check
raising :class:`~devbox.errors.DevboxError` reports each of its ids as ``fail``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from devbox.core.findings import Finding
from devbox.errors import DevboxError


@dataclasses.dataclass(frozen=True)
class Check:
    """One check: the finding ids it reports, the ids it needs, and how it decides."""

    group: str
    ids: tuple[str, ...]
    needs: tuple[str, ...]
    run: Callable[[Any], list[Finding]]


@dataclasses.dataclass(frozen=True)
class Result:
    group: str
    finding: Finding
    needs: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {**self.finding.to_json(), "group": self.group, "needs": list(self.needs)}


def skip_reason(need: Finding) -> str:
    verb = "failed" if need.status == "fail" else "was skipped"
    return f"skipped: {need.id} ({need.title}) {verb}"


def run_checks(checks: Sequence[Check], ctx: Any) -> list[Result]:
    """Run ``checks`` in order.  A check whose prerequisite failed or was skipped reports
    each of its ids as ``skip``; a check raising :class:`DevboxError` reports them as ``fail``."""
    seen: dict[str, Finding] = {}
    out: list[Result] = []
    for check in checks:
        for need in check.needs:
            if need not in seen:
                raise ValueError(f"check {check.ids[0]} needs {need}, which no earlier check reports")
        blocked = [seen[n] for n in check.needs if seen[n].status in ("fail", "skip")]
        if blocked:
            found = [Finding(i, "skip", tuple(skip_reason(b) for b in blocked)) for i in check.ids]
        else:
            try:
                found = check.run(ctx)
            except DevboxError as exc:
                found = [Finding(i, "fail", (exc.one_line(),)) for i in check.ids]
        for f in found:
            seen[f.id] = f
            out.append(Result(check.group, f, check.needs))
    return out


def counts(results: Iterable[Result]) -> dict[str, int]:
    out = {"ok": 0, "warn": 0, "fail": 0, "skip": 0}
    for r in results:
        out[r.finding.status] += 1
    return out
