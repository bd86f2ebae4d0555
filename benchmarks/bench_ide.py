#!/usr/bin/env python3
"""The ide-code profile: cold build of the IDE image, warm `up -d`, time to the first rendered workbench.

Run as root from the repository (it starts its own private dockerd, never the machine's):

    sudo .venv/bin/python benchmarks/bench_ide.py [--runs 3] [--no-cold]

Baselines, measured in the same run on the same daemon:
- cold build: `devbox build -p ide-code` on a daemon with only the base images, against
  `docker build --no-cache` of the same code-server context by the docker CLI afterwards;
- warm `up -d` (images built, containers absent, volumes kept): ide-code against the vim
  `python` profile (the same runtime and database; the IDE replaces vim);
- first workbench: from `up -d` to the Explorer listing the work dir in headless Chromium
  (login included), split into up, health and browser; Chromium's own start is shown apart.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from harness import vscode  # noqa: E402
from harness.browser import Browser  # noqa: E402
from harness.daemon import RUN, PrivateDaemon  # noqa: E402
from harness.images import import_base_images  # noqa: E402

PY = sys.executable
TOML = 'name = "{name}"\nprofile = "{profile}"\n[ownership]\nstrategy = "remap"\n[remap]\npolicy = "off"\n'


def run(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[float, str]:
    started = time.perf_counter()
    r = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({r.returncode}):\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
    return time.perf_counter() - started, r.stdout + r.stderr


def project(work: Path, name: str, profile: str) -> Path:
    root = work / name
    root.mkdir(parents=True, exist_ok=True)
    (root / "devbox.toml").write_text(TOML.format(name=name, profile=profile))
    (root / "hello.py").write_text("print('hi')\n")
    return root


def wait_healthy(d: PrivateDaemon, container: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if d.docker("inspect", "-f", "{{.State.Health.Status}}", container, check=False).stdout.strip() == "healthy":
            return
        time.sleep(0.1)
    raise SystemExit(f"{container} not healthy in {timeout}s")


def med(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f} s (min {min(xs):.2f}, max {max(xs):.2f}, n={len(xs)})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-cold", action="store_true", help="skip the cold builds (minutes each)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_ide: run as root (it starts a private dockerd)", file=sys.stderr)
        return 2
    reuse = os.environ.get("BENCH_DAEMON")  # a harness daemon left running, with the images built
    d = PrivateDaemon(reuse or f"bench-ide-{os.getpid()}")
    if not reuse:
        d.destroy()
        d.write_config({})
    d.start()
    work = RUN / f"bench-ide-{os.getpid()}"
    env = {**os.environ, **d.env, "COLUMNS": "200", "DEVBOX_STATE_DIR": str(work / "state")}
    try:
        import_base_images(d, ("bookworm",))
        ide = project(work, "benchide", "ide-code")
        vim = project(work, "benchvim", "python")
        if not args.no_cold:
            seconds, out = run([PY, "-m", "devbox", "build"], env, ide)
            per = dict(re.findall(r"image (devbox/[\w.-]+):[0-9a-f]+: built in ([\d.]+)s", out))
            print(f"cold `devbox build -p ide-code` (3 images in parallel): {seconds:.1f} s; per image: "
                  + ", ".join(f"{k} {v} s" for k, v in sorted(per.items())))
            with tempfile.TemporaryDirectory() as tmp:
                ctx = Path(tmp) / "ctx"
                shutil.copytree(REPO / "images" / "code-server", ctx)
                shutil.copyfile("/etc/ssl/certs/ca-certificates.crt", ctx / "certs" / "host-ca.crt")
                cli, _ = run(["docker", "-H", d.host, "build", "--no-cache", "-t", "bench/code-server-cli", str(ctx)], env)
            cs = float(per.get("devbox/code-server", "nan"))
            print(f"  baseline: `docker build --no-cache` of the same code-server context: {cli:.1f} s "
                  f"(devbox's code-server build / CLI = {cs / cli:.2f}x, the other images building beside it)")
        else:
            run([PY, "-m", "devbox", "build"], env, ide)
        run([PY, "-m", "devbox", "build"], env, vim)
        ups: dict[str, list[float]] = {"ide-code": [], "python": []}
        firsts: list[tuple[float, float, float]] = []
        chromium: list[float] = []
        for _ in range(args.runs):
            for name, root in (("python", vim), ("ide-code", ide)):
                run([PY, "-m", "devbox", "down"], env, root)
                t, _ = run([PY, "-m", "devbox", "up", "-d"], env, root)
                ups[name].append(t)
            # the first rendered workbench, from a stopped stack
            run([PY, "-m", "devbox", "down"], env, ide)
            with Browser(artifacts=work / "artifacts") as b:
                chromium.append(b.start_seconds or 0.0)
                started = time.perf_counter()
                t_up, out = run([PY, "-m", "devbox", "up", "-d"], env, ide)
                url = re.search(r"ide: (http://\S+)", out)
                assert url, out
                wait_healthy(d, "devbox-benchide-ide")
                t_health = time.perf_counter() - started
                _, opened = run([PY, "-m", "devbox", "open", "ide"], env, ide)
                password = opened.split("password: ", 1)[1].split()[0]
                vscode.login(b, url.group(1), password)
                assert "hello.py" in vscode.explorer_names(b)
                firsts.append((t_up, t_health, time.perf_counter() - started))
        print(f"warm `up -d` ide-code: {med(ups['ide-code'])}")
        print(f"  baseline: warm `up -d` python (vim): {med(ups['python'])} "
              f"= {statistics.median(ups['ide-code']) / statistics.median(ups['python']):.2f}x")
        print("first rendered workbench (Explorer lists the work dir), from `up -d`: "
              + med([f[2] for f in firsts]) + f"; of which up -d {med([f[0] for f in firsts])}, "
              f"healthy at {med([f[1] for f in firsts])}; Chromium's own start {med(chromium)}")
        for root in (ide, vim):
            run([PY, "-m", "devbox", "down", "--volumes"], env, root)
    finally:
        if not reuse:
            d.destroy()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
