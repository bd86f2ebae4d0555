"""Benchmark: `devbox remap` (full check, probe included) vs one bare `docker run --rm`; `devbox --help`.

Run as root from the repo: ``sudo .venv/bin/python benchmarks/bench_remap.py [--runs N]``.
It starts its own remapped dockerd inside an /etc sandbox (tests/harness), so the
machine's daemon and /etc are untouched.  Prints medians and the ratio measured in
the same run.  Targets: remap ≤ 1.3× docker run --rm; --help ≤ 0.25 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from timing import p90, timed  # noqa: E402

from harness.ids import free_id  # noqa: E402
from harness.sandbox import EtcSandbox  # noqa: E402

USER, UID = "devbox-bench", free_id(1600)  # an id the machine has not given anyone


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (it starts a private dockerd in an /etc sandbox)")

    sb = EtcSandbox("bench")
    try:
        d = sb.remapped_daemon("bench", USER, UID)
        env = {**os.environ, **d.env, "DEVBOX_DAEMON_JSON": "/etc/docker/daemon.json", "SUDO_USER": USER}
        devbox = sb.argv([sys.executable, "-m", "devbox", "remap", "--user", USER])
        timed(devbox, env)  # warm: imports the probe image once, as a first real run would
        image = d.docker("images", "--format", "{{.Repository}}:{{.Tag}}", "devbox/probe").stdout.split()[0]
        bare = sb.argv(["docker", "-H", d.host, "run", "--rm", image, "/bin/sh", "-c", ":"])
        timed(bare, env)
        t_devbox, t_bare = [], []
        for _ in range(args.runs):  # interleaved, so drift hits both alike
            t_devbox.append(timed(devbox, env)[0])
            t_bare.append(timed(bare, env)[0])
        help_argv = [sys.executable, "-m", "devbox", "--help"]
        timed(help_argv, env)
        t_help = [timed(help_argv, env)[0] for _ in range(args.runs)]
    finally:
        sb.close()

    md, mb, mh = statistics.median(t_devbox), statistics.median(t_bare), statistics.median(t_help)
    print(f"runs: {args.runs} each, interleaved; daemon: private dockerd with userns-remap")
    print(f"devbox remap (check + probe)   median {md * 1000:7.1f} ms   p90 {p90(t_devbox) * 1000:7.1f} ms")
    print(f"docker run --rm (same image)   median {mb * 1000:7.1f} ms   p90 {p90(t_bare) * 1000:7.1f} ms")
    print(f"ratio devbox/docker            {md / mb:5.2f}x   (target <= 1.30x)")
    print(f"devbox --help                  median {mh * 1000:7.1f} ms   (target <= 250 ms)")


if __name__ == "__main__":
    main()
