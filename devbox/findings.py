"""Findings: what a check saw, how bad it is, and the exact fix.

``devbox remap`` and ``devbox doctor`` both report lists of findings; the
``--json`` shape (:meth:`Finding.to_json`) is stable: ``id``, ``status``,
``title``, ``evidence`` (list of strings), ``fix`` (string or null).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Literal

Status = Literal["ok", "warn", "fail", "skip"]


@dataclasses.dataclass(frozen=True)
class Finding:
    id: str
    status: Status
    title: str
    evidence: tuple[str, ...] = ()
    fix: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "title": self.title,
            "evidence": list(self.evidence),
            "fix": self.fix,
        }


def worst(findings: Iterable[Finding]) -> Status:
    order = {"ok": 0, "skip": 0, "warn": 1, "fail": 2}
    result: Status = "ok"
    for f in findings:
        if order[f.status] > order[result]:
            result = f.status
    return result
