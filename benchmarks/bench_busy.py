"""Benchmark: a real ``node_modules`` arriving in a watched work dir, three ways.

    sudo .venv/bin/python benchmarks/bench_busy.py --node-modules DIR [--runs 3] [--dir BASE]

``DIR`` is a real ``node_modules`` (``npm install`` of a few big packages: the
figures in the README came from one of 118,639 files in 11,439 directories).
Each run copies it into a fresh watched work dir (``cp -a``: one create event
per entry, as an install makes them) while a chowner changes the owner of
files in ``src/`` every 5 ms; after the copy, 5 packages inside are chowned to
a container uid.  Variants, interleaved, each in a fresh process:

* ``busy``    — the default: ``node_modules`` is a busy tree (devbox.watch.busy);
* ``perfile`` — no busy trees: every event in it is looked at;
* ``ignored`` — the old default, ``ignore = ["node_modules"]``: cheapest, and
  blind to the leak inside (the baseline).

Figures: the copy's time, the watcher's CPU, overflows, chown->flagged latency
outside ``node_modules`` during the copy (p50/p99), how long until the leak
inside is reported, peak RSS, and the initial scan of a work dir that already
holds it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_watch import CHOWN_UNTIL, LEAK_UID, attribution, cpu_seconds, rss_mib
from timing import percentile

from devbox.watch.leaks import State
from devbox.watch.source import InotifySource
from devbox.watch.watcher import Change, Watcher

VARIANTS = ("busy", "perfile", "ignored")
PACKAGES_LEAKED = 5


def child(root: str, node_modules: str, variant: str) -> dict[str, Any]:
    flagged: dict[str, float] = {}

    def on_change(c: Change) -> None:
        if c.state is State.LEAK:
            flagged.setdefault(c.leak.path, time.monotonic())

    src = Path(root) / "src"
    targets = [str(src / f"f{i}") for i in range(2000)]
    w = Watcher([root], attribution(), source=InotifySource(), reconcile_interval=1e9, on_change=on_change,
                busy=("node_modules",) if variant == "busy" else (),
                ignore=("node_modules",) if variant == "ignored" else ())
    w.start()
    c0 = cpu_seconds()
    stop, stamps_file = root + ".stop", root + ".stamps"
    t0 = time.perf_counter()
    copy = subprocess.Popen(["cp", "-a", node_modules, f"{root}/node_modules"])
    chowner = subprocess.Popen([sys.executable, "-c", CHOWN_UNTIL, stop, "0.005", stamps_file, *targets])
    while copy.poll() is None:
        w.step(0.02)
    copy_s = time.perf_counter() - t0
    Path(stop).touch()
    while chowner.poll() is None:
        w.step(0.02)
    stamps = json.loads(Path(stamps_file).read_text())
    chowned = targets[: len(stamps)]
    packages = sorted(p for p in Path(root, "node_modules").iterdir() if p.is_dir())[:PACKAGES_LEAKED]
    t_leak = time.monotonic()
    for p in packages:  # a postinstall run as container uid 5, say
        subprocess.run(["chown", "-R", f"{LEAK_UID}:{LEAK_UID}", str(p)], check=True)
    inside = {str(p) for p in packages}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (any(p not in flagged for p in chowned)
                                           or (variant != "ignored" and not inside <= set(flagged))):
        w.step(0.05)
    reported = max((flagged[p] for p in inside if p in flagged), default=None)
    w.drain(timeout=60, idle=1.0)
    cpu = cpu_seconds() - c0
    lat = [(flagged[p] - s) * 1000 for p, s in zip(chowned, stamps, strict=True) if p in flagged]
    assert isinstance(w.source, InotifySource)
    out = {
        "variant": variant,
        "copy_s": round(copy_s, 2),
        "watcher_cpu_s": round(cpu, 2),
        "events": sum(w.source.delivered.values()),
        "overflows": w.stats.overflows,
        "busy_rescans": w.stats.busy_rescans,
        "chowns": len(stamps),
        "flagged": len(lat),
        "p50_ms": round(percentile(lat, 50), 2) if lat else None,
        "p99_ms": round(percentile(lat, 99), 2) if lat else None,
        "inside_leak_reported_s": None if reported is None else round(reported - t_leak, 2),
        "peak_rss_mib": round(rss_mib()[1], 1),
    }
    w.close()
    return out


def scan_with(root: str, variant: str) -> float:
    w = Watcher([root], attribution(), source=InotifySource(), reconcile_interval=1e9,
                busy=("node_modules",) if variant == "busy" else (),
                ignore=("node_modules",) if variant == "ignored" else ())
    t = time.perf_counter()
    w.start()
    took = time.perf_counter() - t
    w.close()
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--node-modules", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0
    if os.geteuid() != 0:
        print("bench_busy: run as root (it chowns files to make leaks)", file=sys.stderr)
        return 2
    nm = os.path.abspath(args.node_modules)
    files = sum(len(f) for _, _, f in os.walk(nm))
    print(f"# node_modules: {nm}, {files:,} files")
    base = Path(tempfile.mkdtemp(prefix="devbox-bench-busy-", dir=args.dir))
    base.chmod(0o755)
    rows: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    try:
        for r in range(args.runs):
            for i in range(len(VARIANTS)):
                variant = VARIANTS[(i + r) % len(VARIANTS)]
                root = base / f"{variant}-{r}"
                (root / "src").mkdir(parents=True)
                for n in range(2000):
                    (root / "src" / f"f{n}").touch()
                os.sync()
                out = subprocess.run([sys.executable, __file__, "--node-modules", nm, "--child", str(root), nm, variant],
                                     stdout=subprocess.PIPE, check=True, timeout=900).stdout
                rows[variant].append(json.loads(out.decode().splitlines()[-1]))
                print(f"  run {r + 1} {json.dumps(rows[variant][-1])}", flush=True)
                if r == args.runs - 1:
                    rows[variant][-1]["initial_scan_s"] = round(scan_with(str(root), variant), 2)
                shutil.rmtree(root)
                subprocess.run(["rm", "-f", f"{root}.stop", f"{root}.stamps"])
    finally:
        shutil.rmtree(base, ignore_errors=True)
    for variant, rs in rows.items():
        med = {k: statistics.median(x[k] for x in rs) for k in ("copy_s", "watcher_cpu_s", "events")}
        p99 = [x["p99_ms"] for x in rs if x["p99_ms"] is not None]
        inside = [x["inside_leak_reported_s"] for x in rs]
        print(f"{variant:8} copy {med['copy_s']:.1f} s, watcher CPU {med['watcher_cpu_s']:.1f} s, "
              f"{med['events']:,.0f} events, overflows {[x['overflows'] for x in rs]}, "
              f"p99 chown->flagged outside {p99} ms, leak inside reported after {inside} s, "
              f"peak RSS {max(x['peak_rss_mib'] for x in rs)} MiB, initial scan {rs[-1].get('initial_scan_s')} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
