"""Benchmark: rootless Podman — `devbox remap` (detection, checks, the keep-id probe) vs the bare engine
work of one keep-id container of the same probe image (create, start, wait, remove over the same
socket); and keep-id's first-start cost per image.

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

        clean = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        remap = p.argv(["env", f"DOCKER_HOST={p.host}", sys.executable, "-m", "devbox", "remap", "--json"])
        from devbox.engine.fastapi import Api

        api = Api(str(p.socket))

        def started(image: str, userns: str | None) -> float:
            """Create and start a container that blocks (as the probe does), then force-remove it: the time to
            running.  (Waiting for an exit costs ~20 s here: rootless Podman on this machine reports a
            container's exit that late, so nothing here waits for one.)"""
            t0 = time.perf_counter()
            cid = api.create_container({"Image": image, "Cmd": ["/bin/sh", "-c", "read x"], "OpenStdin": True,
                                        "HostConfig": {"NetworkMode": "none",
                                                       **({"UsernsMode": userns} if userns else {})}})
            api.start(cid)
            elapsed = time.perf_counter() - t0
            api.remove_container(cid, force=True)
            return elapsed

        def bare() -> float:
            return started(probe, "keep-id")

        # interleaved, so drift hits both alike
        a: list[float] = []
        b: list[float] = []
        for _ in range(args.runs):
            a.append(timed(remap, clean)[0])
            b.append(bare())
        ma, mb = statistics.median(a), statistics.median(b)
        print(f"devbox remap (rootless Podman, keep-id probe): median {ma * 1000:.0f} ms, p90 {p90(a) * 1000:.0f} ms")
        print(f"create+start a keep-id probe over the API:       median {mb * 1000:.0f} ms, p90 {p90(b) * 1000:.0f} ms")
        print(f"ratio: {ma / mb:.2f}x")

        # keep-id's first start per image: a freshly imported bookworm under new names each round
        src = tarball("bookworm")
        readable = p.base / "bookworm.tar"
        readable.write_bytes(src.read_bytes())
        readable.chmod(0o644)
        for n in range(3):
            ref = f"localhost/bench-keepid:{n}-{int(time.time())}"
            p.podman("import", "--change", f"LABEL round={n}-{time.time()}", str(readable), ref)
            first = started(ref, "keep-id")
            second = started(ref, "keep-id")
            plain = started(ref, None)
            driver = p.podman("info", "--format", "{{.Store.GraphDriverName}}").stdout.strip()
            print(f"keep-id first start, fresh image {n} ({driver}): {first:.2f} s; second {second:.2f} s; "
                  f"without keep-id {plain:.2f} s")
    finally:
        p.destroy()
        sb.close()


if __name__ == "__main__":
    main()
