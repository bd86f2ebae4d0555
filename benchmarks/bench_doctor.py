"""Benchmark: `devbox doctor` on a healthy setup (probe container included), and its probe vs a bare `docker run --rm`.

Run as root from the repo: ``sudo .venv/bin/python benchmarks/bench_doctor.py [--runs N]``.
It starts its own remapped dockerd inside an /etc sandbox (tests/harness), so the
machine's daemon and /etc are untouched, and runs doctor inside a small project
(a devbox.toml and a 200-directory work dir owned by the benchmark user).
Targets: doctor wall time ≤ 2 s; its probe ≤ 1.3× one bare `docker run --rm` of the same image.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from timing import p90, timed  # noqa: E402

from harness.daemon import RUN  # noqa: E402
from harness.ids import free_id  # noqa: E402
from harness.sandbox import EtcSandbox  # noqa: E402

USER, UID = "devbox-bench", free_id(1600)  # an id the machine has not given anyone


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (it starts a private dockerd in an /etc sandbox)")

    project = RUN / f"bench-doctor-project-{os.getpid()}"
    sb = EtcSandbox("bench-doctor")
    try:
        d = sb.remapped_daemon("bench-doctor", USER, UID)
        for i in range(200):
            (project / "src" / f"d{i}").mkdir(parents=True)
            (project / "src" / f"d{i}" / "f.py").write_text("x = 1\n")
        (project / "devbox.toml").write_text('name = "bench"\n')
        for p in (project, *project.rglob("*")):
            os.chown(p, UID, UID)
        project.chmod(0o755)
        env = {**os.environ, **d.env, "DEVBOX_DAEMON_JSON": "/etc/docker/daemon.json", "SUDO_USER": USER,
               "DEVBOX_STATE_DIR": str(project / ".state")}
        doctor = sb.argv(["env", "-C", str(project), sys.executable, "-m", "devbox", "doctor", "--json", "--user", USER])
        _, out = timed(doctor, env)  # warm: imports the probe image once, as a first real run would
        report = json.loads(out)
        bad = [f"{f['id']}: {f['status']}" for f in report["findings"] if f["status"] == "fail"]
        if bad:
            raise SystemExit(f"the benchmark setup is not healthy: {bad}")
        image = d.docker("images", "--format", "{{.Repository}}:{{.Tag}}", "devbox/probe").stdout.split()[0]
        bare = sb.argv(["docker", "-H", d.host, "run", "--rm", image, "/bin/sh", "-c", ":"])
        timed(bare, env)
        t_doctor, t_probe, t_bare = [], [], []
        for _ in range(args.runs):  # interleaved, so drift hits both alike
            wall, out = timed(doctor, env)
            t_doctor.append(wall)
            t_probe.append(float(json.loads(out)["probe"]["seconds"]))
            t_bare.append(timed(bare, env)[0])
    finally:
        sb.close()
        shutil.rmtree(project, ignore_errors=True)

    md, mp, mb = statistics.median(t_doctor), statistics.median(t_probe), statistics.median(t_bare)
    counts = report["counts"]
    print(f"runs: {args.runs} each, interleaved; daemon: private dockerd with userns-remap; "
          f"{sum(counts.values())} findings ({counts})")
    print(f"devbox doctor (all checks + probe)  median {md * 1000:7.1f} ms   p90 {p90(t_doctor) * 1000:7.1f} ms   (target <= 2000 ms)")
    print(f"  its probe container               median {mp * 1000:7.1f} ms   p90 {p90(t_probe) * 1000:7.1f} ms")
    print(f"docker run --rm (same image)        median {mb * 1000:7.1f} ms   p90 {p90(t_bare) * 1000:7.1f} ms")
    print(f"ratio probe/docker run              {mp / mb:5.2f}x   (target <= 1.30x)")
    print(f"ratio doctor/docker run             {md / mb:5.2f}x")


if __name__ == "__main__":
    main()
