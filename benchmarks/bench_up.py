#!/usr/bin/env python3
"""Warm `devbox up -d` of the `python` profile vs the docker CLI vs docker-compose, and a no-op `up`.

Run as root from the repository (it starts its own private dockerd, never the machine's):

    sudo .venv/bin/python benchmarks/bench_up.py [--runs 5] [--no-compose]

"Warm": images built, containers absent, the database volume already initialised.
Every contender does the same work: a network, three containers (db, editor,
runtime) with the same images, mounts, env and healthcheck, the runtime started
only once the db is healthy.  The remap policy is "off" (a plain engine), so the
figures measure the engine work, not the probe.  Targets: devbox <= 1.15x the CLI
script; no-op up <= 0.5 s.
"""

from __future__ import annotations

import argparse
import json
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

PY = sys.executable


def sh(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> float:
    started = time.perf_counter()
    r = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return time.perf_counter() - started


def devbox(env: dict[str, str], root: Path, *args: str) -> float:
    return sh([PY, "-m", "devbox", *args], env, root)


def cli_script(d: PrivateDaemon, services: dict[str, dict[str, object]], project: str) -> list[list[str]]:
    """`docker network create` + `docker run -d` x3, the runtime after the db is healthy (what devbox does)."""
    net = f"cli-{project}"
    cmds = [["docker", "-H", d.host, "network", "create", net]]
    for name in ("db", "editor", "runtime"):
        s = services[name]
        argv = ["docker", "-H", d.host, "run", "-d", "--init", "--name", f"cli-{project}-{name}", "--network", net,
                "--network-alias", name, "--hostname", name]
        for m in s["mounts"]:  # type: ignore[attr-defined]
            src = m["source"] if m["kind"] == "bind" else m["source"].replace("devbox-", "cli-", 1)
            argv += ["--mount", f"type={m['kind']},source={src},target={m['target']}"]
        for k, v in s["env"]:  # type: ignore[attr-defined]
            argv += ["-e", f"{k}={v}"]
        if s["working_dir"]:
            argv += ["-w", str(s["working_dir"])]
        if s["interactive"]:
            argv += ["-it"]
        hc = s["healthcheck"]
        if hc:
            argv += ["--health-cmd", " ".join(hc["test"][1:]), "--health-interval", f"{hc['interval_s']}s",  # type: ignore[index]
                     "--health-retries", str(hc["retries"])]  # type: ignore[index]
        argv += [str(s["image"]), *(s["command"] or [])]  # type: ignore[misc]
        if name == "runtime":
            cmds.append(["sh", "-c", f"until [ \"$(docker -H {d.host} inspect -f '{{{{.State.Health.Status}}}}' cli-{project}-db)\" = healthy ]; do sleep 0.1; done"])
        cmds.append(argv)
    return cmds


def run_cli(cmds: list[list[str]], env: dict[str, str]) -> float:
    started = time.perf_counter()
    for c in cmds:
        r = subprocess.run(c, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise SystemExit(f"{c} failed: {r.stderr}")
    return time.perf_counter() - started


def compose_file(services: dict[str, dict[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for name, s in services.items():
        svc: dict[str, object] = {"image": s["image"], "init": True, "hostname": name}
        if s["command"]:
            svc["command"] = list(s["command"])  # type: ignore[call-overload]
        svc["environment"] = {k: v for k, v in s["env"]}  # type: ignore[attr-defined]
        if s["working_dir"]:
            svc["working_dir"] = s["working_dir"]
        vols = []
        for m in s["mounts"]:  # type: ignore[attr-defined]
            vols.append(f"{m['source']}:{m['target']}" if m["kind"] == "bind" else f"pgdata:{m['target']}")
        if vols:
            svc["volumes"] = vols
        if s["interactive"]:
            svc["tty"] = True
            svc["stdin_open"] = True
        hc = s["healthcheck"]
        if hc:
            svc["healthcheck"] = {"test": list(hc["test"]), "interval": f"{hc['interval_s']}s", "retries": hc["retries"]}  # type: ignore[index]
        if s["depends_on"]:
            svc["depends_on"] = {d["service"]: {"condition": "service_healthy"} for d in s["depends_on"]}  # type: ignore[attr-defined]
        out[name] = svc
    return {"version": "2.4", "services": out, "volumes": {"pgdata": {}}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-compose", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_up: run as root (it starts a private dockerd)", file=sys.stderr)
        return 2

    import dataclasses

    from devbox.config import resolve as config

    d = PrivateDaemon(f"bench-up-{os.getpid()}")
    d.destroy()
    d.write_config({})
    d.start()
    work = RUN / f"bench-up-{os.getpid()}"
    try:
        import_base_images(d, ("bookworm",))
        root = work / "app"
        root.mkdir(parents=True)
        (root / "devbox.toml").write_text('name = "bench"\nprofile = "python"\n[remap]\npolicy = "off"\n')
        env = {**os.environ, **d.env, "COLUMNS": "120"}
        project = config.load_project(root)
        stack = project.stack("python")
        services = {s.name: dataclasses.asdict(s) for s in stack.services}

        t = devbox(env, root, "up", "-d")
        print(f"cold up (builds 3 images): {t:.1f} s")
        devbox(env, root, "down")

        cli = cli_script(d, services, "bench")
        run_cli(cli, env)  # initialise its volume once, like devbox's

        def cli_down() -> None:
            ids = d.docker("ps", "-aq", "--filter", "name=cli-bench-").stdout.split()
            if ids:
                d.docker("rm", "-f", *ids)
            d.docker("network", "rm", "cli-bench", check=False)

        cli_down()

        compose_bin = shutil.which("docker-compose")
        if not args.no_compose and compose_bin is None:
            r = subprocess.run(["apt-get", "install", "-y", "-qq", "docker-compose"], capture_output=True, text=True)
            compose_bin = shutil.which("docker-compose")
            if compose_bin is None:
                print(f"docker-compose not installable: {r.stderr.strip()[-200:]}")
        cdir = work / "compose"
        if compose_bin and not args.no_compose:
            cdir.mkdir()
            (cdir / "docker-compose.yml").write_text(json.dumps(compose_file(services), indent=2))
            subprocess.run([compose_bin, "-p", "cbench", "up", "-d"], cwd=cdir, env=env, capture_output=True, check=True)
            subprocess.run([compose_bin, "-p", "cbench", "down"], cwd=cdir, env=env, capture_output=True, check=True)

        results: dict[str, list[float]] = {"devbox up -d": [], "docker CLI script": [], "docker-compose up -d": [], "no-op devbox up -d": []}
        for _ in range(args.runs):
            results["devbox up -d"].append(devbox(env, root, "up", "-d"))
            results["no-op devbox up -d"].append(devbox(env, root, "up", "-d"))
            devbox(env, root, "down")
            results["docker CLI script"].append(run_cli(cli, env))
            cli_down()
            if compose_bin and not args.no_compose:
                results["docker-compose up -d"].append(sh([compose_bin, "-p", "cbench", "up", "-d"], env, cdir))
                sh([compose_bin, "-p", "cbench", "down"], env, cdir)

        med = {k: statistics.median(v) for k, v in results.items() if v}
        print(f"\nmedian of {args.runs} runs (warm: images built, containers absent):")
        for k, v in med.items():
            print(f"  {k:<22} {v:6.2f} s   (runs: {', '.join(f'{x:.2f}' for x in results[k])})")
        base = med["docker CLI script"]
        print(f"\n  devbox / CLI script     {med['devbox up -d'] / base:.2f}x   (target <= 1.15x)")
        if "docker-compose up -d" in med:
            print(f"  devbox / docker-compose {med['devbox up -d'] / med['docker-compose up -d']:.2f}x")
        print(f"  no-op up                {med['no-op devbox up -d']:.2f} s  (target <= 0.5 s)")
        devbox(env, root, "down", "--volumes")
    finally:
        d.destroy()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
