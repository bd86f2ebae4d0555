"""Benchmark: rootless Podman — `devbox remap` (detection, checks, the keep-id probe) vs one bare
`podman run --rm --userns=keep-id` of the same probe image; and keep-id's first-start cost per image.

Run as root from the repo: ``sudo .venv/bin/python benchmarks/bench_podman.py [--runs N]``.
It makes an ordinary account in an /etc sandbox (tests/harness) with its own Podman storage and
service, so the machine's /etc and any Podman of its own are untouched.  Prints medians and ratios
measured in the same run.

Keep-id's first start: Podman copies and chowns an image's layers for a new id mapping the first
time (podman#11220), unless the kernel and storage can map them (idmapped layers).  The figure is
the first `podman run --userns=keep-id` of a freshly imported image against the second run and
against a run without keep-id.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from timing import p90, timed  # noqa: E402

from harness.ids import free_id  # noqa: E402
from harness.images import tarball  # noqa: E402
from harness.podman import RootlessPodman  # noqa: E402
from harness.sandbox import EtcSandbox  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    sb = EtcSandbox("bench-podman")
    p = RootlessPodman(sb, "devbox-pbench", free_id(1650))
    try:
        p.start()
        env = {"DOCKER_HOST": p.host}
        r = p.run(sys.executable, "-m", "devbox", "remap", "--json", env=env)  # imports the probe image
        assert r.returncode == 0, r.stdout + r.stderr
        probe = next(line.split()[0] for line in p.podman("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.splitlines()
                     if "devbox/probe" in line)

        def remap() -> None:
            out = p.run(sys.executable, "-m", "devbox", "remap", "--json", env=env)
            assert out.returncode == 0, out.stderr

        def bare() -> None:
            p.podman("run", "--rm", "--userns=keep-id", "--network=none", probe, "/bin/sh", "-c", "cat /proc/self/uid_map")

        # interleaved, so drift hits both alike
        a: list[float] = []
        b: list[float] = []
        for _ in range(args.runs):
            a.append(timed(remap))
            b.append(timed(bare))
        ma, mb = statistics.median(a), statistics.median(b)
        print(f"devbox remap (rootless Podman, keep-id probe): median {ma * 1000:.0f} ms, p90 {p90(a) * 1000:.0f} ms")
        print(f"podman run --rm --userns=keep-id (same image):  median {mb * 1000:.0f} ms, p90 {p90(b) * 1000:.0f} ms")
        print(f"ratio: {ma / mb:.2f}x")

        # keep-id's first start per image: a freshly imported bookworm under new names each round
        src = tarball("bookworm")
        readable = p.base / "bookworm.tar"
        readable.write_bytes(src.read_bytes())
        readable.chmod(0o644)
        for n in range(3):
            ref = f"localhost/bench-keepid:{n}-{int(time.time())}"
            p.podman("import", "--change", f"LABEL round={n}-{time.time()}", str(readable), ref)
            t0 = time.monotonic()
            p.podman("run", "--rm", "--userns=keep-id", "--network=none", ref, "true")
            first = time.monotonic() - t0
            t0 = time.monotonic()
            p.podman("run", "--rm", "--userns=keep-id", "--network=none", ref, "true")
            second = time.monotonic() - t0
            t0 = time.monotonic()
            p.podman("run", "--rm", "--network=none", ref, "true")
            plain = time.monotonic() - t0
            driver = p.podman("info", "--format", "{{.Store.GraphDriverName}}").stdout.strip()
            print(f"keep-id first start, fresh image {n} ({driver}): {first:.2f} s; second {second:.2f} s; "
                  f"without keep-id {plain:.2f} s")
    finally:
        p.destroy()
        sb.close()


if __name__ == "__main__":
    main()
