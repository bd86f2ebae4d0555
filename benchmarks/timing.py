"""Shared by the benchmark scripts: time one command, summarise a sample."""

from __future__ import annotations

import subprocess
import time


def timed(argv: list[str], env: dict[str, str], ok: tuple[int, ...] = (0,)) -> tuple[float, str]:
    """Wall time of one run of ``argv`` and its stdout; stop the benchmark when it fails."""
    start = time.perf_counter()
    r = subprocess.run(argv, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if r.returncode not in ok:
        raise SystemExit(f"{' '.join(argv)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return elapsed, r.stdout


def p90(xs: list[float]) -> float:
    return sorted(xs)[max(0, int(0.9 * len(xs)) - 1)]
