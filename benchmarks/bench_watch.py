"""Ownership-watcher figures on this machine (no Docker): run it, read the numbers.

    sudo python benchmarks/bench_watch.py [--quick] [--dir BASE] [--only scan,rss,idle,latency,container,overflow,bigoverflow,writes]

1. scan      initial scan of a 200,000-file tree vs ``find DIR ! -uid N -o ! -gid N``, same run, warm cache
2. rss       watcher RSS and watch count on 10,000 dirs / 100,000 files, and its idle CPU
3. idle      a 30 s idle run (5 s with --quick) on a 40,000-directory tree: queue overflows, new leaks caught
4. latency   host-side chown (another process) -> flagged, p50/p99 over 1,000 chowns
   container chown 5:5 inside a container on a private userns-remap dockerd (an /etc sandbox, tests/harness)
             -> flagged with container uid 5 and its service, p50/p99 over 1,000 chowns (target p99 < 50 ms)
5. overflow  reader paused while 40,000 events pile up -> forced overflow -> every leak reported
             within one fallback rescan interval
6. bigoverflow  the same on a tree with more directories than fs.inotify.max_queued_events: how many
             overflows follow the first one (watchdog 7.1's own rebuild re-overflows for ever there), and
             whether a leak in a new directory afterwards is caught by events
7. writes    the watchdog decision (devbox/watch/source.py), on a 5,000-directory watched tree, while
             another process chowns a file every 5 ms: (big) 200 MB in 4 KiB writes; (pip) a
             pip-install-like burst (12,000 modules in 4 KiB writes, 12,000 .pyc through temp + rename,
             some chmods); (paced) 10 s of 4 KiB writes at 2,000/s, a database's bind-mounted data dir,
             where the watcher keeps up and the kernel merges no IN_MODIFY.  For (a) devbox's source
             (pinned watchdog internals: IN_ATTRIB without IN_MODIFY), (b) the public-API route
             (FileModifiedEvent in the filter: IN_ATTRIB + IN_MODIFY) and the baseline (no watcher),
             interleaved in one run: events delivered, the watcher's CPU seconds, queue overflows,
             chown -> flagged latency during the writes, the writer's own time

Percentiles are nearest-rank (benchmarks/timing.py ``percentile``).

Leaks are made with ``chown`` to host uid 100004 (container uid 5), so it must run as root.
``--fix`` through the helper container is tested for real in tests/integration/test_watch_engine.py.
Trees go under ``--dir`` (default: a temp dir).  On ext4, creating files right after deleting many is
slow (the allocator skips recently deleted inodes); that affects set-up time only, not the figures.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import percentile

from devbox.core.idmap import IdRange
from devbox.watch.leaks import Attribution, HostUser, State
from devbox.watch.scan import scan
from devbox.watch.source import (
    OVERFLOW,
    InotifySource,
    Put,
    _Handler,
    event_filter,
    inotify_watch_count,
    max_user_watches,
)
from devbox.watch.watcher import Change, Watcher

LEAK_UID = 100004


def me() -> HostUser:
    return HostUser("me", os.getuid(), os.getgid())


def attribution() -> Attribution:
    user = me()
    idmap = (IdRange(0, user.uid, 1), IdRange(1, 100000, 65536))
    return Attribution(user=user, uid_map=idmap, gid_map=idmap, services_by_uid={5: ("db",)})


def make_tree(root: Path, dirs: int, files_per_dir: int, leaks: int = 0, fanout: int = 100) -> list[str]:
    """``dirs`` directories (two levels, ``fanout`` wide) holding ``files_per_dir`` files each."""
    leaked: list[str] = []
    every = max(1, (dirs * files_per_dir) // leaks) if leaks else 0
    n = 0
    for d in range(dirs):
        sub = root / f"g{d // fanout}" / f"d{d}"
        os.makedirs(sub, exist_ok=True)
        for f in range(files_per_dir):
            p = f"{sub}/f{f}"
            fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)
            n += 1
            if every and n % every == 0 and len(leaked) < leaks:
                os.fchown(fd, LEAK_UID, LEAK_UID)
                leaked.append(p)
            os.close(fd)
    return leaked


def rss_mib() -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


# --- 1. scan vs find -------------------------------------------------------------------------


def bench_scan(base: Path, quick: bool) -> dict[str, Any]:
    root = base / "scan"
    files = 200_000
    t = time.perf_counter()
    leaked = make_tree(root, dirs=10_000, files_per_dir=files // 10_000, leaks=200)
    setup = time.perf_counter() - t
    user = me()
    find_cmd = ["find", str(root), "!", "-uid", str(user.uid), "-o", "!", "-gid", str(user.gid)]
    runs = 3 if quick else 7
    times: dict[str, list[float]] = {"find": [], "scan": [], "scan_1proc": []}
    found = 0
    for _ in range(runs):  # interleaved, so cache state and noise hit all alike
        t = time.perf_counter()
        out = subprocess.run(find_cmd, stdout=subprocess.PIPE, check=True).stdout
        times["find"].append(time.perf_counter() - t)
        t = time.perf_counter()
        result = scan([root], user)
        times["scan"].append(time.perf_counter() - t)
        found = len(result.found)
        t = time.perf_counter()
        scan([root], user, workers=1)
        times["scan_1proc"].append(time.perf_counter() - t)
    assert found == len(leaked) == out.count(b"\n"), (found, len(leaked), out.count(b"\n"))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "files": files,
        "dirs": result.dirs,
        "set_up_s": round(setup, 1),
        "find_s": round(med["find"], 3),
        "scan_s": round(med["scan"], 3),
        "scan_1proc_s": round(med["scan_1proc"], 3),
        "ratio": round(med["scan"] / med["find"], 2),
        "ratio_1proc": round(med["scan_1proc"] / med["find"], 2),
        "workers": result.workers,
        "leaks_found": found,
    }


# --- 2 + 3. children: a watcher alone in its process ---------------------------------------


def child_rss(root: str, idle_s: float) -> dict[str, Any]:
    w = Watcher([root], attribution(), reconcile_interval=1e9)
    t = time.perf_counter()
    result = w.start()
    start_s = time.perf_counter() - t
    rss_after_start, hwm = rss_mib()
    c0, t0 = cpu_seconds(), time.perf_counter()
    end = time.monotonic() + idle_s
    while time.monotonic() < end:
        w.step(0.2)
    cpu = (cpu_seconds() - c0) / (time.perf_counter() - t0)
    rss_idle, hwm = rss_mib()
    out = {
        "dirs": result.dirs,
        "entries": result.entries,
        "watches": inotify_watch_count(),
        "start_s": round(start_s, 2),
        "rss_mib": round(rss_idle, 1),
        "rss_after_start_mib": round(rss_after_start, 1),
        "peak_rss_mib": round(hwm, 1),
        "idle_cpu_pct": round(100 * cpu, 2),
    }
    w.close()
    return out


def child_idle(root: str, idle_s: float, new_leaks: int) -> dict[str, Any]:
    """Idle run with a reconcile scan every 10 s (our own scans open every directory: the
    default event mask turned exactly that into overflows) and a few leaks made midway."""
    found: dict[str, float] = {}
    w = Watcher(
        [root], attribution(), reconcile_interval=10.0,
        on_change=lambda c: found.setdefault(c.leak.path, time.monotonic()) if c.state is State.LEAK else None,
    )
    result = w.start()
    made: list[str] = []
    end = time.monotonic() + idle_s
    half = time.monotonic() + idle_s / 2
    while time.monotonic() < end:
        w.step(0.2)
        if not made and time.monotonic() >= half:
            made = [f"{root}/g{i}/d{i * 100}/new-leak" for i in range(new_leaks)]
            for p in made:
                fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o644)
                os.fchown(fd, LEAK_UID, LEAK_UID)
                os.close(fd)
    w.drain(timeout=5)
    out = {
        "dirs": result.dirs,
        "watches": inotify_watch_count(),
        "seconds": idle_s,
        "overflows": w.stats.overflows,
        "full_scans": w.stats.full_scans,
        "new_leaks_made": len(made),
        "new_leaks_caught": sum(1 for p in made if p in found),
    }
    w.close()
    return out


def run_child(kind: str, *args: object) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", kind, *map(str, args)]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, check=True, timeout=600).stdout
    return json.loads(out.decode().strip().splitlines()[-1])


def bench_rss(base: Path, quick: bool) -> dict[str, Any]:
    root = base / "rss"
    t = time.perf_counter()
    make_tree(root, dirs=10_000, files_per_dir=10)
    res = run_child("rss", root, 5 if quick else 20)
    res["set_up_s"] = round(time.perf_counter() - t, 1)
    return res


def bench_idle(base: Path, quick: bool) -> dict[str, Any]:
    root = base / "idle"
    make_tree(root, dirs=40_000, files_per_dir=1, fanout=100)
    return run_child("idle", root, 5 if quick else 30, 100)


# --- 4. latency ---------------------------------------------------------------------------

CHOWNER = """
import os, sys, time, json
paths = sys.argv[2:]
gap = float(sys.argv[1])
stamps = []
for p in paths:
    stamps.append(time.monotonic())
    os.chown(p, 100004, 100004)
    time.sleep(gap)
print(json.dumps(stamps))
"""


def bench_latency(base: Path, quick: bool) -> dict[str, Any]:
    n = 200 if quick else 1000
    root = base / "latency"
    make_tree(root, dirs=100, files_per_dir=max(1, n // 100))
    paths = [f"{root}/g0/d{d}/f{f}" for d in range(100) for f in range(n // 100)]
    flagged: dict[str, float] = {}

    def on_change(c: Change) -> None:
        if c.state is State.LEAK:
            flagged.setdefault(c.leak.path, time.monotonic())

    w = Watcher([root], attribution(), on_change=on_change, reconcile_interval=1e9)
    w.start()
    stop = threading.Event()
    runner = threading.Thread(target=w.run, args=(stop, 0.2), daemon=True)
    runner.start()
    # chowns come from another process, as they would from a container
    out = subprocess.run([sys.executable, "-c", CHOWNER, "0.003", *paths], stdout=subprocess.PIPE, check=True).stdout
    stamps = json.loads(out)
    deadline = time.monotonic() + 10
    while len(flagged) < len(paths) and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    runner.join()
    w.close()
    lat = [(flagged[p] - s) * 1000 for p, s in zip(paths, stamps, strict=True) if p in flagged]
    return {
        "chowns": len(paths),
        "flagged": len(lat),
        "p50_ms": round(percentile(lat, 50), 2),
        "p99_ms": round(percentile(lat, 99), 2),
        "max_ms": round(max(lat), 2),
    }


# --- 4b. latency: chown inside a remapped container -> flagged ---------------------------------

CONTAINER_LOOP = 'for f in "$@"; do date +%s.%N; chown 5:5 "$f"; done'


def bench_container(base: Path, quick: bool) -> dict[str, Any]:
    """``chown 5:5`` by container root on a private userns-remap dockerd (in an /etc sandbox) -> flagged.

    Each chown is stamped in the container just before it runs (``date``; same kernel clock), so the
    figure includes the chown process's start (~1 ms): an upper bound on the watcher's share.
    """
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from devbox.watch.leaks import load_attribution
    from harness.ids import free_id
    from harness.images import import_base_images
    from harness.sandbox import EtcSandbox

    n = 200 if quick else 1000
    name, uid, first = "devbox-bench", free_id(1600), 300000
    root = base / "container"
    for d in range(10):
        (root / f"d{d}").mkdir(parents=True)
        for f in range(n // 10):
            (root / f"d{d}" / f"f{f}").write_bytes(b"")
    for dirpath, _, files in os.walk(root):
        os.chown(dirpath, uid, uid)
        for f in files:
            os.chown(os.path.join(dirpath, f), uid, uid)
    sb = EtcSandbox("bench-watch")
    try:
        d = sb.remapped_daemon("bench-watch", name, uid, first=first)
        import_base_images(d, ("bookworm",))
        user = HostUser(name, uid, uid)
        attr = load_attribution(user, {5: ("db",)}, subuid=sb.path("/etc/subuid"), subgid=sb.path("/etc/subgid"))
        flagged: dict[str, float] = {}

        def on_change(c: Change) -> None:
            if c.state is State.LEAK:
                flagged.setdefault(c.leak.path, time.time())

        w = Watcher([root], attr, on_change=on_change, reconcile_interval=1e9)
        w.start()
        stop = threading.Event()
        runner = threading.Thread(target=w.run, args=(stop, 0.2), daemon=True)
        runner.start()
        inside = [f"/w/d{i // (n // 10)}/f{i % (n // 10)}" for i in range(n)]
        paths = [str(root / p[len("/w/"):]) for p in inside]
        r = d.docker("run", "--rm", "-v", f"{root}:/w", "debian:bookworm-slim", "sh", "-c", CONTAINER_LOOP, "sh", *inside)
        stamps = [float(t) for t in r.stdout.split()]
        deadline = time.monotonic() + 10
        while len(flagged) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.set()
        runner.join()
        w.close()
        wrong = [p for p in paths if p in flagged and w.tracker.leaks.get(p) is not None
                 and (w.tracker.leaks[p].container_uid, w.tracker.leaks[p].service) != (5, "db")]
    finally:
        sb.close()
    lat = [(flagged[p] - s) * 1000 for p, s in zip(paths, stamps, strict=True) if p in flagged]
    return {
        "chowns": n,
        "flagged": len(lat),
        "misattributed": len(wrong),
        "p50_ms": round(percentile(lat, 50), 2),
        "p99_ms": round(percentile(lat, 99), 2),
        "max_ms": round(max(lat), 2),
        "target_p99_ms": 50,
    }


# --- 5. forced overflow --------------------------------------------------------------------

MAKER = """
import os, sys
root, n, leaks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
every = n // leaks
for i in range(n):
    d = os.path.join(root, "burst", "d%d" % (i // 200))  # made, and watched, beforehand
    fd = os.open(os.path.join(d, "f%d" % i), os.O_CREAT | os.O_WRONLY, 0o644)
    if i % every == 0:
        os.fchown(fd, 100004, 100004)
    os.close(fd)
"""


def bench_forced_overflow(base: Path, quick: bool) -> dict[str, Any]:
    root = base / "overflow"
    root.mkdir()
    events, leaks, interval = 40_000, 400, 10.0
    for i in range(events // 200):  # events must land in watched directories to fill the queue
        (root / "burst" / f"d{i}").mkdir(parents=True)
    found: dict[str, float] = {}
    w = Watcher(
        [root], attribution(), reconcile_interval=1e9, fallback_interval=interval, settle=0.5,
        on_change=lambda c: found.setdefault(c.leak.path, time.monotonic()) if c.state is State.LEAK else None,
    )
    w.start()
    assert isinstance(w.source, InotifySource)
    with w.source.paused():  # the events pile up in the kernel's queue
        subprocess.run([sys.executable, "-c", MAKER, str(root), str(events), str(leaks)], check=True)
        made_at = time.monotonic()
    deadline = made_at + interval + 30
    while len(found) < leaks and time.monotonic() < deadline:
        w.step(0.1)
    took = time.monotonic() - made_at
    w.close()
    return {
        "events_queued_while_paused": events,
        "leaks": leaks,
        "overflows": w.stats.overflows,
        "reported": len(found),
        "all_reported_within_s": round(took, 2) if len(found) == leaks else None,
        "rescan_interval_s": interval,
        "within_one_interval": len(found) == leaks and took <= interval,
    }


# --- 6. forced overflow on more directories than the queue holds ------------------------------------

SPREAD = """
import os, sys
root, ndirs, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    d = i % ndirs
    os.close(os.open(os.path.join(root, "g%d" % (d // 100), "d%d" % d, "x%d" % i), os.O_CREAT | os.O_WRONLY, 0o644))
"""


def bench_overflow_big(base: Path, quick: bool) -> dict[str, Any]:
    queued = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    ndirs = queued + 4000
    root = base / "bigoverflow"
    make_tree(root, dirs=ndirs, files_per_dir=0)
    w = Watcher([root], attribution(), reconcile_interval=1e9, fallback_interval=10.0, settle=0.5)
    w.start()
    assert isinstance(w.source, InotifySource)
    with w.source.paused():
        subprocess.run([sys.executable, "-c", SPREAD, str(root), str(ndirs), str(queued + 4000)], check=True)
    watch_s = 5.0 if quick else 20.0
    t0 = time.monotonic()
    while time.monotonic() - t0 < watch_s:
        w.step(0.1)
    overflows = w.stats.overflows
    new = root / "after" / "sub"
    new.mkdir(parents=True)
    fd = os.open(new / "leak", os.O_CREAT | os.O_WRONLY, 0o644)
    os.fchown(fd, LEAK_UID, LEAK_UID)
    os.close(fd)
    made, scans = time.monotonic(), w.stats.full_scans
    while str(new / "leak") not in w.tracker.leaks and time.monotonic() - made < 30:
        w.step(0.05)
    caught = time.monotonic() - made
    out = {
        "dirs": ndirs + ndirs // 100 + 1,
        "max_queued_events": queued,
        "overflows_in_s": [overflows, watch_s],
        "full_scans": w.stats.full_scans,
        "watches_after": inotify_watch_count(),
        "new_leak_flagged_s": round(caught, 3),
        "new_leak_by_events": w.stats.full_scans == scans and str(new / "leak") in w.tracker.leaks,
    }
    w.close()
    return out


# --- 7. the watchdog decision: write-heavy workloads -------------------------------------------------

WRITE_BIG = """
import os, sys
root, total, chunk, files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
buf = b"x" * chunk
for f in range(files):
    fd = os.open(os.path.join(root, "big%d.bin" % f), os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    for _ in range(total // files // chunk):
        os.write(fd, buf)
    os.close(fd)
"""

# A database in a container with its data dir bind-mounted: 4 KiB page writes at a steady rate, slow
# enough that the watcher keeps up — so, unlike a flat-out burst, the kernel merges none of them.
WRITE_PACED = """
import os, sys, time
root, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
buf = b"z" * 4096
fds = [os.open(os.path.join(root, "pgdata%d" % i), os.O_CREAT | os.O_WRONLY, 0o600) for i in range(8)]
start = time.monotonic()
n = 0
while n < rate * seconds:
    due = start + n / rate
    now = time.monotonic()
    if due > now:
        time.sleep(due - now)
    os.pwrite(fds[n % 8], buf, 4096 * ((n // 8) % 2048))
    n += 1
for fd in fds:
    os.close(fd)
"""

# What `pip install` of a few hundred packages does to site-packages: directories, modules written in
# 4 KiB writes, __pycache__/*.pyc through a temp file and a rename, a few chmods, a RECORD per package.
WRITE_PIP = """
import os, sys
root, packages, files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
buf = b"y" * 4096
site = os.path.join(root, "venv", "lib", "python3", "site-packages")
subs = ("", "sub", "sub/deep", "data")
n = 0
for p in range(packages):
    pkg = os.path.join(site, "pkg%d" % p)
    for sub in subs:
        os.makedirs(os.path.join(pkg, sub, "__pycache__"), exist_ok=True)
    for f in range(files):
        n += 1
        d = os.path.join(pkg, subs[f % len(subs)])
        path = os.path.join(d, "m%d.py" % f)
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        for _ in range(1 + n % 4):
            os.write(fd, buf)
        os.close(fd)
        if n % 20 == 0:
            os.chmod(path, 0o755)
        pyc = os.path.join(d, "__pycache__", "m%d.cpython-311.pyc" % f)
        fd = os.open(pyc + ".tmp", os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        os.write(fd, buf)
        os.close(fd)
        os.rename(pyc + ".tmp", pyc)
    info = pkg + "-1.0.dist-info"
    os.mkdir(info)
    with open(os.path.join(info, "RECORD.tmp"), "w") as fh:
        fh.write("x" * 2000)
    os.rename(os.path.join(info, "RECORD.tmp"), os.path.join(info, "RECORD"))
"""

# Chowns a file every `gap` seconds until `stop` exists; writes the stamps (monotonic, before each chown).
CHOWN_UNTIL = """
import json, os, sys, time
stop, gap, out, targets = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4:]
stamps = []
for p in targets:
    if os.path.exists(stop):
        break
    stamps.append(time.monotonic())
    os.chown(p, 100004, 100004)
    time.sleep(gap)
with open(out, "w") as fh:
    json.dump(stamps, fh)
"""


class _LogOverflow(logging.Handler):
    """How option (b) would learn of an overflow: watchdog's warning text (it gives handlers no event)."""

    def __init__(self, put: Put) -> None:
        super().__init__(logging.WARNING)
        self._put = put

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.endswith("inotify_c") and "overflow" in record.getMessage().lower():
            self._put((OVERFLOW, "", False))


class PublicApiSource(InotifySource):
    """Option (b): watchdog's public API only — the stock observer, ``FileModifiedEvent`` in the filter so
    that the mask holds IN_ATTRIB (and IN_MODIFY with it); modified events are counted, then dropped."""

    def start(self, roots: Any, put: Put) -> None:
        from watchdog.events import FileModifiedEvent
        from watchdog.observers import Observer

        logging.getLogger("watchdog.observers.inotify_c").addHandler(_LogOverflow(put))
        warnings.filterwarnings("ignore", message="Callback with id", category=RuntimeWarning)  # as (a) does
        observer = Observer()
        handler = _Handler(put, self.delivered)
        for root in roots:
            observer.schedule(handler, root, recursive=True, event_filter=[*event_filter(), FileModifiedEvent])
        observer.start()
        self._observer = observer


VARIANTS = ("a", "b", "none")
WORKLOADS = ("big", "pip", "paced")


def child_writes(root: str, variant: str, workload: str, quick: bool) -> dict[str, Any]:
    """One run, alone in its process: a watcher of ``variant`` (or none) while ``workload`` and the chowner run."""
    flagged: dict[str, float] = {}

    def on_change(c: Change) -> None:
        if c.state is State.LEAK:
            flagged.setdefault(c.leak.path, time.monotonic())

    w = None
    if variant != "none":
        source = InotifySource() if variant == "a" else PublicApiSource()
        w = Watcher([root], attribution(), source=source, reconcile_interval=1e9, on_change=on_change)
        w.start()
    stop, stamps_file = root + ".stop", root + ".stamps"
    targets = [f"{root}/targets/t{i}" for i in range(2000)]
    if workload == "big":
        argv = [WRITE_BIG, root, str((50 if quick else 200) << 20), "4096", "4"]
    elif workload == "paced":
        argv = [WRITE_PACED, root, "2000", str(3 if quick else 10)]
    else:
        argv = [WRITE_PIP, root, str(100 if quick else 400), "30"]
    c0, t0 = cpu_seconds(), time.perf_counter()
    writer = subprocess.Popen([sys.executable, "-c", *argv])
    chowner = subprocess.Popen([sys.executable, "-c", CHOWN_UNTIL, stop, "0.005", stamps_file, *targets])
    while True:
        if w is not None:
            w.step(0.02)
        else:
            time.sleep(0.02)
        pid, status, ru = os.wait4(writer.pid, os.WNOHANG)
        if pid:
            writer.returncode = os.waitstatus_to_exitcode(status)
            break
    writer_s = time.perf_counter() - t0
    Path(stop).touch()
    while chowner.poll() is None:
        if w is not None:
            w.step(0.02)
    stamps = json.loads(Path(stamps_file).read_text())
    chowned = targets[: len(stamps)]
    if w is not None:
        deadline = time.monotonic() + 30
        while any(p not in flagged for p in chowned) and time.monotonic() < deadline:
            w.step(0.05)
        w.drain(timeout=30, idle=0.5)  # what the burst queued is part of the watcher's bill
    cpu = cpu_seconds() - c0
    lat = [(flagged[p] - s) * 1000 for p, s in zip(chowned, stamps, strict=True) if p in flagged]
    out: dict[str, Any] = {
        "variant": variant,
        "workload": workload,
        "writer_s": round(writer_s, 3),
        "writer_cpu_s": round(ru.ru_utime + ru.ru_stime, 3),
        "chowns": len(stamps),
    }
    if w is not None:
        assert isinstance(w.source, InotifySource)
        out.update(
            watcher_cpu_s=round(cpu, 3),
            delivered=dict(w.source.delivered),
            events=sum(w.source.delivered.values()),
            overflows=w.stats.overflows,
            full_scans=w.stats.full_scans,
            flagged=len(lat),
            latency_ms=[round(x, 3) for x in lat],
            peak_rss_mib=round(rss_mib()[1], 1),
        )
        w.close()
    return out


def bench_writes(base: Path, quick: bool) -> dict[str, Any]:
    """Both watchdog options and the baseline, interleaved, ``repeats`` times each, on identical fresh trees.

    On tmpfs (/dev/shm) when there is one: inotify behaves the same there, and the writer's figures are
    not skewed by ext4 (files created within ~30 s of a mass deletion, e.g. a test run's clean-up, are
    many times slower to create)."""
    shm = Path("/dev/shm")
    on_tmpfs = shm.is_dir() and os.access(shm, os.W_OK)
    wbase = Path(tempfile.mkdtemp(prefix="devbox-bench-writes-", dir=shm)) if on_tmpfs else base
    wbase.chmod(0o755)
    repeats = 1 if quick else 3
    runs: dict[tuple[str, str], list[dict[str, Any]]] = collections.defaultdict(list)
    try:
        for r in range(repeats):
            for i in range(len(VARIANTS)):
                order = VARIANTS[(i + r) % len(VARIANTS)]  # rotate: no option always runs first or last
                for workload in WORKLOADS:
                    root = wbase / f"writes-{order}-{workload}-{r}"
                    make_tree(root, dirs=5_000, files_per_dir=2)
                    (root / "targets").mkdir()
                    for t in range(2000):
                        os.close(os.open(root / "targets" / f"t{t}", os.O_CREAT | os.O_WRONLY, 0o644))
                    os.sync()  # no writeback of earlier data during this run
                    runs[(order, workload)].append(run_child("writes", root, order, workload, int(quick)))
                    if on_tmpfs:
                        shutil.rmtree(root)
    finally:
        if on_tmpfs:
            shutil.rmtree(wbase, ignore_errors=True)
    summary: dict[str, Any] = {"fs": "tmpfs" if on_tmpfs else str(base)}
    for (variant, workload), rs in sorted(runs.items()):
        row: dict[str, Any] = {
            "runs": len(rs),
            "writer_s": statistics.median(x["writer_s"] for x in rs),
            "writer_cpu_s": statistics.median(x["writer_cpu_s"] for x in rs),
        }
        if variant != "none":
            lat = [v for x in rs for v in x["latency_ms"]]
            delivered: collections.Counter[str] = collections.Counter()
            for x in rs:
                delivered.update(x["delivered"])
            row.update(
                events=statistics.median(x["events"] for x in rs),
                delivered_total={k: v for k, v in sorted(delivered.items())},
                watcher_cpu_s=statistics.median(x["watcher_cpu_s"] for x in rs),
                overflows=[x["overflows"] for x in rs],
                chowns=sum(x["chowns"] for x in rs),
                flagged=len(lat),
                p50_ms=round(percentile(lat, 50), 2) if lat else None,
                p99_ms=round(percentile(lat, 99), 2) if lat else None,
                max_ms=round(max(lat), 2) if lat else None,
                peak_rss_mib=max(x["peak_rss_mib"] for x in rs),
            )
        summary[f"{variant}/{workload}"] = row
    return summary


# --- main -----------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="shorter idle runs, fewer chowns and repeats")
    ap.add_argument("--dir", help="where to build the trees (default: a new temp dir)")
    ap.add_argument("--only", default="scan,rss,idle,latency,container,overflow,bigoverflow,writes")
    ap.add_argument("--keep", action="store_true", help="keep the trees")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, root, *rest = args.child
        if kind == "rss":
            print(json.dumps(child_rss(root, float(rest[0]))))
        elif kind == "writes":
            print(json.dumps(child_writes(root, rest[0], rest[1], bool(int(rest[2])))))
        else:
            print(json.dumps(child_idle(root, float(rest[0]), int(rest[1]))))
        return 0
    if os.geteuid() != 0:
        print("bench_watch: run as root (it chowns files to host uid 100004 to make leaks)", file=sys.stderr)
        return 2
    base = Path(tempfile.mkdtemp(prefix="devbox-bench-watch-", dir=args.dir))
    os.chmod(base, 0o755)
    print(f"# trees under {base}; max_user_watches={max_user_watches()}; cpus={os.cpu_count()}", flush=True)
    benches = {
        "scan": bench_scan,
        "rss": bench_rss,
        "idle": bench_idle,
        "latency": bench_latency,
        "container": bench_container,
        "overflow": bench_forced_overflow,
        "bigoverflow": bench_overflow_big,
        "writes": bench_writes,
    }
    try:
        for name in args.only.split(","):
            t = time.perf_counter()
            res = benches[name](base, args.quick)
            if name == "writes":  # a row per option and workload
                for key, row in res.items():
                    print(f"{name:9} {key:11} {json.dumps(row)}", flush=True)
                print(f"{name:9} ({time.perf_counter() - t:.0f} s)", flush=True)
            else:
                print(f"{name:9} {json.dumps(res)}  ({time.perf_counter() - t:.0f} s)", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
