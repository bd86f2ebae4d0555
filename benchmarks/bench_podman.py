"""Benchmark: rootless Podman — `devbox remap` (detection, checks, the keep-id probe) vs the bare engine
work of one keep-id container of the same probe image (create, start, wait, remove over the same
socket); keep-id's first-start cost per image; and a warm `devbox up -d` of the default profile
vs the same `podman` sequence by hand.

Run as root from the repo: ``sudo .venv/bin/python benchmarks/bench_podman.py [--runs N] [--up-runs M] [--profile-up FILE]``
(``--runs``: remap rounds, default 15; ``--up-runs``: up rounds, default 5; 3 to 5 minutes in all on
2 CPUs, a third of it `devbox build` of three images).
It makes an ordinary account in an /etc sandbox (tests/harness) with its own Podman storage and
service, so the machine's /etc and any Podman of its own are untouched.  Prints medians and ratios
measured in the same run.

Keep-id's first start: Podman copies and chowns an image's layers for a new id mapping the first
time (podman#11220), unless the kernel and storage can map them (idmapped layers).  The figure is
the first `podman run --userns=keep-id` of a freshly imported image against the second run and
against a run without keep-id; then the same for the three images `devbox build --profile python`
made (editor, python, postgres), before any `devbox up`: what a user's first `up` pays once.

Warm up: images built, keep-id copies made, the database volume initialised, no pod.  Interleaved,
each round (a) `devbox up -d` as a process, end to end (then `devbox down`, volumes kept) and
(b) the same work with the podman CLI as the account: `podman pod create --userns=keep-id` with the
network devbox chose, `podman run -d --pod --init` of db (its user, its own volume, the hosts file,
the healthcheck), editor, `podman healthcheck run` of db at the healthcheck's interval until it
passes, then runtime — devbox's order (it starts editor while it waits for db) and the settings
of devbox's own containers (user, env, mounts, working dir, tty), read from `podman inspect`;
labels left out (then `podman pod rm -f`).  Target: devbox <= 1.15x the hand sequence.  Also
printed: devbox's own "up in" figure (its engine work), the start-up of python with the modules
`up` imports, and for reference two calls `up` made until this change: GET /version (the Docker
SDK's version="auto", now the ping's Api-Version header) and GET /libpod/info (full engine facts;
`up` now reads Podman's kind from the ping's headers and the socket's owner).
Nothing here waits for a container's exit (`podman rm -f -t 0`, `podman pod rm -f -t 0`): a removal
is not what is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
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

PROJECT = "pbench"
CLEAN = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


def clock(argv: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Wall time of one run of ``argv`` (a process, end to end) and what it printed; stop when it fails."""
    t0 = time.perf_counter()
    r = subprocess.run(argv, env=CLEAN, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=900)
    elapsed = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return elapsed, r


def ms(xs: list[float]) -> str:
    return f"median {statistics.median(xs) * 1000:.0f} ms, p90 {p90(xs) * 1000:.0f} ms"


def keep_id_starts(p: RootlessPodman) -> None:
    """keep-id's first start per image of the default profile: `devbox build` made them, nothing ran them."""
    refs = sorted(line for line in p.podman("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
                  if re.fullmatch(r"(.*/)?devbox/(editor|python|postgres):\w+", line))
    assert len(refs) == 3, refs

    def run(ref: str, *userns: str) -> float:
        t0 = time.perf_counter()
        cid = p.podman("run", "--rm", "-d", *userns, ref, "sleep", "60").stdout.strip()
        elapsed = time.perf_counter() - t0
        p.podman("rm", "-f", "-t", "0", cid)
        return elapsed

    for ref in refs:
        first = run(ref, "--userns=keep-id")
        second = run(ref, "--userns=keep-id")
        plain = run(ref)
        print(f"keep-id first start, {ref} (built, never run): {first:.2f} s; second {second:.2f} s; "
              f"without keep-id {plain:.2f} s  (podman run --rm -d, a process)")


def hand_sequence(p: RootlessPodman, network: str) -> tuple[list[list[str]], str, float]:
    """What devbox's running stack is, as podman CLI commands in devbox's order (db, editor, wait, runtime):
    (the commands, the service waited for, its healthcheck interval).  Read from `podman inspect` of
    devbox's containers, so that both do the same work; the hand stack has its own pod, names, volume
    and hosts file."""
    names = {s: f"devbox-{PROJECT}-{s}" for s in ("db", "editor", "runtime")}
    info = {c["Name"]: c for c in json.loads(p.podman("inspect", *names.values()).stdout)}
    hosts = p.home / "hand.hosts"
    hosts.write_text(f"127.0.0.1\tlocalhost {' '.join(names)}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    hosts.chmod(0o644)
    pod = f"hand-{PROJECT}"
    cmds = [["pod", "create", "--name", pod, "--hostname", PROJECT, "--userns=keep-id", f"--network={network}"]]
    waited, interval = "", 1.0
    for svc, name in names.items():
        c = info[name]
        cfg = c["Config"]
        image_env = set(json.loads(p.podman("image", "inspect", "--format", "{{json .Config.Env}}", c["ImageName"]).stdout)
                        or ())
        argv = ["run", "-d", "--pod", pod, "--init", "--name", f"{pod}-{svc}", "--user", cfg["User"] or "0:0"]
        if cfg.get("WorkingDir"):
            argv += ["-w", cfg["WorkingDir"]]
        if cfg.get("Tty"):
            argv.append("-t")
        if cfg.get("OpenStdin"):
            argv.append("-i")
        for e in sorted(cfg.get("Env") or ()):
            if e not in image_env and e.split("=", 1)[0] not in ("HOSTNAME", "container"):
                argv += ["-e", e]
        for m in c["Mounts"]:
            if m["Type"] == "volume":
                argv += ["-v", f"{m['Name'].replace('devbox-', 'hand-', 1)}:{m['Destination']}"]
            else:
                src = str(hosts) if m["Destination"] == "/etc/hosts" else m["Source"]
                argv += ["-v", f"{src}:{m['Destination']}" + ("" if m["RW"] else ":ro")]
        h = cfg.get("Healthcheck")
        if h:
            assert h["Test"][0] == "CMD", h
            waited, interval = svc, h["Interval"] / 1e9
            argv += ["--health-cmd", json.dumps(h["Test"][1:]), "--health-interval", f"{interval:g}s",
                     "--health-timeout", f"{h['Timeout'] / 1e9:g}s", "--health-retries", str(h["Retries"])]
        argv += [c["ImageName"], *cfg["Cmd"]]
        cmds.append(argv)
    assert waited == "db", "the default profile's runtime waits for a healthy db"
    return cmds, f"{pod}-db", interval


def hand_up(p: RootlessPodman, cmds: list[list[str]], waited: str, interval: float) -> float:
    """The hand sequence as the account: pod, db, editor, then `podman healthcheck run` of db once per
    interval (as devbox does) until it passes, then runtime.  Its wall time."""
    def podman(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(p.argv(["podman", *args]), env=CLEAN, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=300)

    t0 = time.perf_counter()
    for argv in cmds[:-1]:
        r = podman(*argv)
        if r.returncode != 0:
            raise SystemExit(f"podman {' '.join(argv)} failed ({r.returncode}):\n{r.stderr}")
    deadline = time.monotonic() + 120
    while True:
        next_check = time.monotonic() + interval
        if podman("healthcheck", "run", waited).returncode == 0:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"{waited} not healthy in 120 s")
        time.sleep(max(0.0, next_check - time.monotonic()))
    r = podman(*cmds[-1])
    if r.returncode != 0:
        raise SystemExit(f"podman {' '.join(cmds[-1])} failed ({r.returncode}):\n{r.stderr}")
    return time.perf_counter() - t0


def up_vs_hand(p: RootlessPodman, runs: int, profile: Path | None = None) -> None:
    proj = p.home / PROJECT
    proj.mkdir()
    (proj / "devbox.toml").write_text(f'name = "{PROJECT}"\n')
    subprocess.run(["chown", "-R", f"{p.uid}:{p.uid}", str(proj)], check=True)

    def devbox(*args: str) -> list[str]:
        return p.argv(["env", "-C", str(proj), f"DOCKER_HOST={p.host}", "COLUMNS=200",
                       f"DEVBOX_STATE_DIR={p.home}/.local/state/devbox", sys.executable, "-m", "devbox", *args])

    t, _ = clock(devbox("build", "--profile", "python"))
    print(f"devbox build --profile python (3 images): {t:.0f} s")
    keep_id_starts(p)

    t, r = clock(devbox("up", "-d"))
    out = r.stdout + r.stderr
    found = re.search(rf"pod devbox-{PROJECT}: created \(keep-id; network: (\w+)", out)
    assert found, out
    network = found.group(1)
    print(f"first devbox up -d (keep-id copies made above; the pod's pause image, initdb): {t:.1f} s; network {network}")
    cmds, waited, interval = hand_sequence(p, network)
    clock(devbox("down"))
    print("the hand sequence (as the account; db waited for with `podman healthcheck run` every "
          f"{interval:g} s before runtime):")
    for argv in cmds:
        print("  podman " + " ".join(a if re.fullmatch(r"[\w@%+=:,./-]+", a) else repr(a) for a in argv))

    def hand_down() -> None:
        p.podman("pod", "rm", "-f", "-t", "0", f"hand-{PROJECT}")

    hand_up(p, cmds, waited, interval)  # initialises its volume once, like devbox's first up
    hand_down()

    from devbox.engine.fastapi import Api

    api = Api(str(p.socket))
    up_in = re.compile(rf"{PROJECT} \(python\): up in ([0-9.]+)s")
    a: list[float] = []
    inner: list[float] = []
    b: list[float] = []
    version: list[float] = []
    info: list[float] = []
    startup: list[float] = []
    # what a warm up -d imports (no Docker SDK: the stdlib client does a warm up's calls; no pydantic: typer < 0.29)
    imports = ("import devbox.cli, devbox.stack.commands, devbox.stack.executor, devbox.stack.pods, devbox.stack.observe, "
               "devbox.stack.reconcile, devbox.host.network, devbox.watch.process, devbox.engine.fastapi")
    for _ in range(runs):
        t, r = clock(devbox("up", "-d"))
        a.append(t)
        seen = up_in.search(r.stdout + r.stderr)
        assert seen, r.stdout + r.stderr
        inner.append(float(seen.group(1)))
        clock(devbox("down"))
        b.append(hand_up(p, cmds, waited, interval))
        hand_down()
        for xs, path in ((version, "/version"), (info, "/v4.0.0/libpod/info")):
            t0 = time.perf_counter()
            api.call("GET", path)
            xs.append(time.perf_counter() - t0)
        startup.append(clock(p.argv([sys.executable, "-c", imports]))[0])
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"\nwarm up of the python profile, {runs} rounds (images built, keep-id copies made, volume initialised, no pod):")
    print(f"  devbox up -d (a process, end to end):     median {ma:.2f} s, p90 {p90(a):.2f} s   "
          f"(runs: {', '.join(f'{x:.2f}' for x in a)})")
    print(f"  the same podman CLI sequence by hand:     median {mb:.2f} s, p90 {p90(b):.2f} s   "
          f"(runs: {', '.join(f'{x:.2f}' for x in b)})")
    print(f"  ratio devbox / hand: {ma / mb:.2f}x   (target <= 1.15x)")
    print(f"  of devbox's: its engine work (\"up in\") median {statistics.median(inner):.1f} s; the rest (start-up, "
          f"engine checks, plan, watcher) {ma - statistics.median(inner):.1f} s")
    print(f"  where the rest goes: python and the modules up imports (a process) {ms(startup)}; "
          f"for reference, calls up no longer makes: GET /libpod/info (full engine facts; up reads the kind from "
          f"the ping and the socket's owner) {ms(info)}, GET /version (the SDK's version=auto) {ms(version)}")
    print(f"  load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    if profile is not None:  # one more warm up, under cProfile: where a person looks next
        out = p.home / "up.prof"
        clock(p.argv(["env", "-C", str(proj), f"DOCKER_HOST={p.host}", "COLUMNS=200",
                      f"DEVBOX_STATE_DIR={p.home}/.local/state/devbox",
                      sys.executable, "-m", "cProfile", "-o", str(out), "-m", "devbox", "up", "-d"]))
        clock(devbox("down"))
        profile.write_bytes(out.read_bytes())
        print(f"  a warm devbox up -d under cProfile: {profile} (python -m pstats {profile})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--up-runs", type=int, default=5)
    ap.add_argument("--profile-up", type=Path, metavar="FILE", help="also write a cProfile of one more warm up -d")
    args = ap.parse_args()
    began = time.perf_counter()
    sb = EtcSandbox("bench-podman")
    p = RootlessPodman(sb, "devbox-pbench", free_id(1820), 700000)
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
            running."""
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

        # the default profile: its images, their first keep-id starts, and a warm up vs the podman CLI
        p.podman("import", str(readable), "docker.io/library/debian:bookworm-slim")
        up_vs_hand(p, args.up_runs, args.profile_up)
    finally:
        p.destroy()
        sb.close()
    print(f"\nbenchmark took {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
