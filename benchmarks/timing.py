"""Shared by the benchmark scripts: time one command, summarise a sample."""

from __future__ import annotations

import math
import subprocess
import time
from collections.abc import Sequence


def timed(argv: list[str], env: dict[str, str], ok: tuple[int, ...] = (0,)) -> tuple[float, str]:
    """Wall time of one run of ``argv`` and its stdout; stop the benchmark when it fails."""
    start = time.perf_counter()
    r = subprocess.run(argv, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if r.returncode not in ok:
        raise SystemExit(f"{' '.join(argv)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return elapsed, r.stdout


def percentile(xs: Sequence[float], q: float) -> float:
    """The ``q``-th percentile by **nearest rank**: the smallest sample value with at least ``q`` % of the
    sample at or below it (always a measured value, never interpolated).  ``q`` in (0, 100]."""
    if not xs:
        raise ValueError("percentile of an empty sample")
    if not 0 < q <= 100:
        raise ValueError(f"percentile {q} outside (0, 100]")
    ordered = sorted(xs)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def p90(xs: Sequence[float]) -> float:
    """:func:`percentile` at 90 (the name bench_doctor.py and bench_remap.py import)."""
    return percentile(xs, 90)
