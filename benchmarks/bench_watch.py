"""Ownership-watcher figures on this machine (no Docker): run it, read the numbers.

    sudo python benchmarks/bench_watch.py [--quick] [--dir BASE] [--only scan,rss,idle,latency,overflow]

1. scan      initial scan of a 200,000-file tree vs ``find DIR ! -uid N -o ! -gid N``, same run, warm cache
2. rss       watcher RSS and watch count on 10,000 dirs / 100,000 files, and its idle CPU
3. idle      a 30 s idle run (5 s with --quick) on a 40,000-directory tree: queue overflows, new leaks caught
4. latency   host-side chown (another process) -> flagged, p50/p99 over 1,000 chowns
   container chown 5:5 inside a container on a private userns-remap dockerd (an /etc sandbox, tests/harness)
             -> flagged with container uid 5 and its service, p50/p99 over 1,000 chowns (target p99 < 50 ms)
5. overflow  reader paused while 40,000 events pile up -> forced overflow -> every leak reported
             within one fallback rescan interval

Leaks are made with ``chown`` to host uid 100004 (container uid 5), so it must run as root.
``--fix`` through the helper container is tested for real in tests/integration/test_watch_engine.py.
Trees go under ``--dir`` (default: a temp dir).  On ext4, creating files right after deleting many is
slow (the allocator skips recently deleted inodes); that affects set-up time only, not the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devbox.idmap import IdRange
from devbox.leaks import Attribution, HostUser, State
from devbox.watch import Change, Watcher, inotify_watch_count, max_user_watches, scan

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


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


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
        "p50_ms": round(pct(lat, 50), 2),
        "p99_ms": round(pct(lat, 99), 2),
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
    from devbox.leaks import load_attribution
    from harness.images import import_base_images
    from harness.sandbox import EtcSandbox

    n = 200 if quick else 1000
    name, uid, first = "devbox-bench", 1600, 300000
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
        "p50_ms": round(pct(lat, 50), 2),
        "p99_ms": round(pct(lat, 99), 2),
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
    # Pause the reader: watchdog's inotify thread takes this lock between reads.
    fd_thread = w._observer._inotify_fd
    fd_thread._lock.acquire()
    try:
        subprocess.run([sys.executable, "-c", MAKER, str(root), str(events), str(leaks)], check=True)
        made_at = time.monotonic()
    finally:
        fd_thread._lock.release()
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


# --- main -----------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="shorter idle runs, fewer chowns and repeats")
    ap.add_argument("--dir", help="where to build the trees (default: a new temp dir)")
    ap.add_argument("--only", default="scan,rss,idle,latency,container,overflow")
    ap.add_argument("--keep", action="store_true", help="keep the trees")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, root, *rest = args.child
        if kind == "rss":
            print(json.dumps(child_rss(root, float(rest[0]))))
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
    }
    try:
        for name in args.only.split(","):
            t = time.perf_counter()
            res = benches[name](base, args.quick)
            print(f"{name:9} {json.dumps(res)}  ({time.perf_counter() - t:.0f} s)", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
