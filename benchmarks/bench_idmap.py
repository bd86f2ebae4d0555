#!/usr/bin/env python3
"""Idmapped views: warm `devbox up -d` with views vs without, vs a chown-based start, and one view's cost.

Run as root from the repository (it starts its own private dockerd and helper, in a private mount
namespace, never touching the machine's):

    sudo .venv/bin/python benchmarks/bench_idmap.py [--runs 7] [--files 100000]

Contenders, on one dockerd without remap, the same two-service stack (editor and runtime, Debian
bookworm, the work dir bind-mounted), interleaved run by run, containers removed between runs:

* **idmap**: ``[ownership] strategy = "idmap"``: one idmapped view made (or adopted) before the
  containers start; files they write are yours;
* **plain**: ``strategy = "remap"`` with ``[remap] policy = "off"``: a plain bind mount, root-owned
  files (the baseline: what the view costs on top);
* **chown-based**: plain, plus the recursive ``lchown`` of the work dir that Podman's ``:U`` or
  fixuid do at every start to make a tree writable by the container user.

The work dir holds ``--files`` files (100,000 by default) in 1,000 directories.  devbox runs as
root here, so the views are made in-process (the same code the helper runs); the helper's socket
round trip is measured on its own at the end.  Target: idmap <= 1.05x plain.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from harness.daemon import RUN, PrivateDaemon  # noqa: E402
from harness.images import import_base_images  # noqa: E402

PROFILE = """\
description = "two services sharing the work dir"

[services.editor]
image = "debian:bookworm-slim"
command = ["sleep", "infinity"]
working_dir = "/work"

[services.runtime]
image = "debian:bookworm-slim"
command = ["sleep", "infinity"]
working_dir = "/work"
"""


def sh(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> float:
    started = time.perf_counter()
    r = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return time.perf_counter() - started


def project(base: Path, name: str, strategy: str, files: int) -> Path:
    root = base / name
    (root / ".devbox" / "profiles").mkdir(parents=True)
    policy = 'policy = "off"' if strategy == "remap" else 'policy = "require"'
    (root / "devbox.toml").write_text(f'name = "{name}"\nprofile = "p"\n[ownership]\nstrategy = "{strategy}"\n'
                                      f"[remap]\n{policy}\n")
    (root / ".devbox" / "profiles" / "p.toml").write_text(PROFILE)
    per_dir = max(1, files // 1000)
    made = 0
    d = 0
    while made < files:
        sub = root / "src" / f"d{d:04d}"
        sub.mkdir(parents=True)
        for i in range(min(per_dir, files - made)):
            (sub / f"f{i}.py").write_bytes(b"")
        made += per_dir
        d += 1
    return root


def chown_tree(root: Path, uid: int) -> float:
    """What ``:U`` does before a start: lchown every entry to the container user's host id."""
    started = time.perf_counter()
    os.lchown(root, uid, uid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, uid)
    return time.perf_counter() - started


def view_round_trips(base: Path, env: dict[str, str], n: int = 50) -> tuple[float, float]:
    """Median seconds of a mount and of an unmount request through the helper's socket."""
    from devbox.idmapd.client import socket_call

    run = base / "helper-run"
    src = base / "view-source"
    src.mkdir()
    helper = subprocess.Popen([sys.executable, "-m", "devbox", "idmap", "--serve"], env={**env, "DEVBOX_IDMAP_RUN": str(run)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not (run / "idmapd.sock").exists():
            if time.monotonic() > deadline:
                raise SystemExit("the helper did not start")
            time.sleep(0.02)
        mounts, unmounts = [], []
        for _ in range(n):
            t0 = time.perf_counter()
            r = socket_call(run, {"op": "mount", "name": "bench-0", "source": str(src), "writer": [0, 0]}, 10)
            t1 = time.perf_counter()
            assert r["ok"], r
            socket_call(run, {"op": "unmount", "name": "bench-0"}, 10)
            t2 = time.perf_counter()
            mounts.append(t1 - t0)
            unmounts.append(t2 - t1)
        return statistics.median(mounts), statistics.median(unmounts)
    finally:
        helper.terminate()
        helper.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--files", type=int, default=100_000)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_idmap: run as root (it starts a private dockerd and makes mounts)", file=sys.stderr)
        return 2
    if os.environ.get("DEVBOX_BENCH_NS") != "1":  # mounts made here must never reach the machine's namespace
        os.execvpe("unshare", ["unshare", "--mount", "--propagation", "private", sys.executable, *sys.argv],
                   {**os.environ, "DEVBOX_BENCH_NS": "1"})

    d = PrivateDaemon(f"bench-idmap-{os.getpid()}")
    d.destroy()
    d.write_config({})
    d.start()
    base = RUN / f"bench-idmap-work-{os.getpid()}"
    base.mkdir(parents=True)
    try:
        import_base_images(d, ("bookworm",))
        env = {**os.environ, **d.env, "COLUMNS": "120", "DEVBOX_IDMAP_RUN": str(base / "run")}
        env.pop("SUDO_USER", None)
        started = time.perf_counter()
        roots = {"idmap": project(base, "bidmap", "idmap", args.files),
                 "plain": project(base, "bplain", "remap", args.files),
                 "chown-based": project(base, "bchown", "remap", args.files)}
        print(f"3 work dirs of {args.files:,} files made in {time.perf_counter() - started:.1f} s")
        for root in roots.values():  # first runs: network creation, page cache
            sh([sys.executable, "-m", "devbox", "up", "-d"], env, root)
            sh([sys.executable, "-m", "devbox", "down"], env, root)

        results: dict[str, list[float]] = {k: [] for k in roots}
        chown_only: list[float] = []
        for i in range(args.runs):
            for name, root in roots.items():
                t = 0.0
                if name == "chown-based":
                    c = chown_tree(root / "src", 1000 + i % 2)  # alternate, so every run really changes every inode
                    chown_only.append(c)
                    t += c
                t += sh([sys.executable, "-m", "devbox", "up", "-d"], env, root)
                results[name].append(t)
                sh([sys.executable, "-m", "devbox", "down"], env, root)
        med = {k: statistics.median(v) for k, v in results.items()}
        print(f"\nwarm `devbox up -d`, median of {args.runs} interleaved runs ({args.files:,}-file work dir):")
        for k, v in med.items():
            print(f"  {k:<12} {v:6.3f} s   (runs: {', '.join(f'{x:.2f}' for x in results[k])})")
        print(f"\n  idmap / plain        {med['idmap'] / med['plain']:.3f}x   (target <= 1.05x)")
        print(f"  chown-based / plain  {med['chown-based'] / med['plain']:.2f}x   "
              f"(the lchown walk alone: median {statistics.median(chown_only):.2f} s)")
        print(f"  chown-based / idmap  {med['chown-based'] / med['idmap']:.2f}x")
        mount_s, unmount_s = view_round_trips(base, env)
        print(f"\none view through the helper's socket (50 runs): mount {mount_s * 1000:.2f} ms, "
              f"unmount {unmount_s * 1000:.2f} ms (median)")
    finally:
        d.destroy()
        from devbox.host.idmount import detach_view, mounted_under

        for m in sorted(mounted_under(base), key=lambda m: -len(m.target)):  # never delete through a view
            detach_view(m.target)
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
