"""`devbox up` and friends against a real remapped dockerd, run as the test user the way a person would.

Images are built once per session (the remap engine is session-scoped and image
tags are content-derived, so every later `up` reuses them).  The python stack
test walks the whole story in order; the other tests share its images.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.daemon import DOCKERS, RUN, SESSION, PrivateDaemon
from harness.ids import OTHER_UID, TEST_UID
from harness.images import import_base_images
from harness.proxy import Proxy, bridge_address

from .conftest import SAYS_SDK

USER = "devbox-tester"
UID = TEST_UID
HOME = f"/run/devbox-test/home/{USER}"
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts"

APP = '''\
import sys
import psycopg2

conn = psycopg2.connect()  # PGHOST, PGUSER, ... come from the profile
with conn, conn.cursor() as cur:
    cur.execute("CREATE TABLE IF NOT EXISTS notes (id serial PRIMARY KEY, body text)")
    cur.execute("INSERT INTO notes (body) VALUES (%s)", (sys.argv[1],))
    cur.execute("SELECT count(*) FROM notes")
    rows = cur.fetchone()[0]
print("python %d.%d rows %d" % (sys.version_info[0], sys.version_info[1], rows))
'''


# --- helpers -----------------------------------------------------------------------------


def projects_dir() -> Path:
    base = RUN / f"projects-{SESSION}"
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)
    return base


def make_project(name: str, toml: str) -> Path:
    root = projects_dir() / name
    if root.exists():
        shutil.rmtree(root)
    root.mkdir()
    (root / "devbox.toml").write_text(toml)
    for p in (root, root / "devbox.toml"):
        os.chown(p, UID, UID)
    return root


def make_profile_project(name: str, profile: str, extra_toml: str = "") -> Path:
    """A project whose profile ``p`` is ``profile`` (in its ``.devbox/profiles``), all the test user's."""
    root = make_project(name, f'name = "{name}"\nprofile = "p"\n{extra_toml}')
    prof = root / ".devbox" / "profiles"
    prof.mkdir(parents=True)
    (prof / "p.toml").write_text(profile)
    for d in (root / ".devbox", prof, prof / "p.toml"):
        os.chown(d, UID, UID)
    return root


def devbox(engine: PrivateDaemon, cwd: Path, *args: str, as_user: str | None = USER, timeout: float = 1200,
           env: dict[str, str] | None = None, says_sdk: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the CLI as the test user (setpriv), or as root with SUDO_USER when ``as_user`` is None
    (``says_sdk``: and say at its exit whether it imported the Docker SDK)."""
    full_env = {"PATH": os.environ["PATH"], "HOME": HOME, "COLUMNS": "200", "LANG": "C.UTF-8", **engine.env, **(env or {})}
    argv = [sys.executable, *(("-c", SAYS_SDK) if says_sdk else ("-m", "devbox")), *args]
    if as_user is not None:
        argv = ["setpriv", "--reuid", as_user, "--regid", as_user, "--init-groups", "--", *argv]
    return subprocess.run(argv, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def ok(r: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert r.returncode == 0, f"rc={r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    assert "Traceback" not in r.stderr
    return r


def container_ids(engine: PrivateDaemon, project: str) -> dict[str, str]:
    out = engine.docker("ps", "-a", "--no-trunc", "--filter", f"label=devbox.project={project}",
                        "--format", '{{.ID}} {{.Label "devbox.service"}}').stdout
    pairs = [line.split() for line in out.splitlines() if line.strip()]
    services = [s for _, s in pairs]
    assert len(services) == len(set(services)), f"duplicate containers: {out}"
    return {s: cid for cid, s in pairs}


def ps(engine: PrivateDaemon, cwd: Path) -> dict[str, dict[str, object]]:
    report = json.loads(ok(devbox(engine, cwd, "ps", "--json")).stdout)
    assert report["engine"]["kind"] == "docker-rootful" and report["engine"]["strategy"] == "remap"
    assert report["engine"]["host"] == engine.host
    return {s["service"]: s for s in report["services"]}


def owners(root: Path) -> dict[str, tuple[int, int]]:
    """Every entry under ``root`` (lstat, no symlink following) that is not owned by the test user."""
    bad: dict[str, tuple[int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if (st.st_uid, st.st_gid) != (UID, UID):
                bad[os.path.relpath(os.path.join(dirpath, name), root)] = (st.st_uid, st.st_gid)
    return bad


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _remove_project_containers(d: PrivateDaemon) -> None:
    # leave no containers behind for the next module (images stay: they are the session's build cache)
    for cid in d.docker("ps", "-aq", "--filter", "label=devbox.project").stdout.split():
        d.docker("rm", "-f", cid, check=False)


@pytest.fixture(scope="module", params=DOCKERS)
def engine(request: pytest.FixtureRequest) -> Iterator[PrivateDaemon]:
    """The remapped engine, on each Docker of the matrix (Debian 12's 20.10, trixie's 26.1)."""
    d: PrivateDaemon = request.getfixturevalue("remap_engine" if request.param == DOCKERS[0] else "remap_engine_26")
    yield d
    _remove_project_containers(d)


@pytest.fixture(scope="module")
def host_engine(remap_engine: PrivateDaemon) -> Iterator[PrivateDaemon]:
    """Only the host's Docker: for tests of a profile's contents (node, the IDE), which the engine's
    version does not change, so the slow image builds run once (README: the test matrix)."""
    yield remap_engine
    _remove_project_containers(remap_engine)


# --- refusals --------------------------------------------------------------------------------


def test_up_refuses_bind_mounts_without_remap_or_idmap_helper(plain_engine: PrivateDaemon, test_user: dict[str, object]) -> None:
    # auto on a dockerd without remap means idmapped views (kernel 5.12+); with no helper to make them, up
    # says both ways out; with strategy = "remap" it asks for the remap alone
    root = make_project("norefuse", 'name = "norefuse"\nprofile = "python"\n')
    r = devbox(plain_engine, root, "up", "-d")
    assert r.returncode == 2, r.stdout + r.stderr
    run = plain_engine.env["DEVBOX_IDMAP_RUN"]
    assert r.stderr == (
        "devbox: error: refusing to start: services that bind-mount your files (editor, runtime) need idmapped views "
        f"and the idmap helper does not answer at {run}/idmapd.sock (No such file or directory); files they write "
        "would not be yours — run 'sudo devbox idmap --install' (idmapped views, this engine unchanged) or "
        "'sudo devbox remap --apply' (remap the whole daemon) (or set [remap] policy = \"warn\" in devbox.toml)\n"
    )
    (root / "devbox.toml").write_text('name = "norefuse"\nprofile = "python"\n[ownership]\nstrategy = "remap"\n')
    r = devbox(plain_engine, root, "up", "-d")
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr == (
        "devbox: error: refusing to start services that bind-mount your files (editor, runtime): "
        f"the engine at {plain_engine.host} runs containers as real root (no userns-remap); files they write would not be yours "
        "— run 'sudo devbox remap --apply' (or set [remap] policy = \"warn\" in devbox.toml)\n"
    )
    # nothing was built or created before the refusal
    assert plain_engine.docker("ps", "-aq", "--filter", "label=devbox.project=norefuse").stdout == ""
    built = plain_engine.docker("images", "--format", "{{.Repository}}").stdout.split()
    assert [r for r in built if r.startswith("devbox/") and r not in ("devbox/probe", "devbox/idmap-probe")] == []


def test_up_refuses_when_root_maps_to_someone_else(engine: PrivateDaemon) -> None:
    root = make_project("otheruser", 'name = "otheruser"\n')
    r = devbox(engine, root, "up", "-d", as_user=None, env={"SUDO_USER": "devbox-other"})
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr == (
        "devbox: error: refusing to start services that bind-mount your files (editor, runtime): "
        f"the engine at {engine.host} remaps container root to {UID}:{UID}, not to devbox-other ({OTHER_UID}:{OTHER_UID}); files they write would not be yours "
        "— run 'sudo devbox remap --apply' (or set [remap] policy = \"warn\" in devbox.toml)\n"
    )


# --- the python stack, start to finish ----------------------------------------------------------


def test_python_stack_lifecycle(engine: PrivateDaemon) -> None:
    root = make_project("app", 'name = "app"\nprofile = "python"\n')

    r = ok(devbox(engine, root, "up", "--dry-run"))
    lines = r.stdout.splitlines()
    assert lines[0] == "#1 network:devbox-app, CreateNetwork, not found"
    assert lines[1] == "#2 volume:devbox-app-pgdata-15, CreateVolume, not found"
    assert [ln.split(",")[1].strip() for ln in lines[2:5]] == ["BuildImage"] * 3
    assert lines[5:] == [
        "level 1:",
        "#6 service:db, CreateContainer, not found",
        "#7 service:editor, CreateContainer, not found",
        "level 2 (after db healthy):",
        "#8 service:runtime, CreateContainer, not found",
    ]

    started = time.monotonic()
    r = ok(devbox(engine, root, "up", "-d"))
    print(f"first up (builds editor, python 3.11, postgres 15): {time.monotonic() - started:.1f}s\n{r.stderr}")
    assert "service db: created and started (not found)" in r.stderr
    assert "service runtime: created and started (not found)" in r.stderr
    first = container_ids(engine, "app")
    assert set(first) == {"db", "editor", "runtime"}

    # Without a terminal, `up` converges (nothing to do) and says how to attach instead of attaching.
    r = ok(devbox(engine, root, "up"))
    assert r.stderr == (
        "app (python): up to date, nothing to do\n"
        "no terminal here: the editor runs detached in container devbox-app-editor; attach from a terminal with "
        "'devbox up' (or 'docker attach devbox-app-editor', detach with Ctrl-P Ctrl-Q)\n"
    )

    # The editor writes the program, the runtime runs it against PostgreSQL.
    vim_script = "call setline(1, " + json.dumps(APP.splitlines()) + ")"
    ok(devbox(engine, root, "exec", "editor", "--", "vim", "-Nes", "-c", vim_script, "-c", "wq", "/work/app.py"))
    assert (root / "app.py").read_text() == APP
    r = ok(devbox(engine, root, "exec", "runtime", "--", "python3", "app.py", "first"))
    assert r.stdout == "python 3.11 rows 1\n"
    ok(devbox(engine, root, "exec", "runtime", "--", "sh", "-c",
              "python3 -m venv --without-pip .venv && mkdir -p out/deep && echo x > out/deep/f && ln -s app.py out/link"))
    assert owners(root) == {}
    assert (root / ".venv" / "bin" / "python3").is_symlink()

    r = devbox(engine, root, "exec", "runtime", "--", "sh", "-c", "exit 7")
    assert r.returncode == 7

    services = ps(engine, root)
    assert {s: (v["state"], v["health"]) for s, v in services.items()} == {
        "db": ("running", "healthy"), "editor": ("running", None), "runtime": ("running", None),
    }
    assert services["runtime"]["toolchain"] == "python 3.11"
    assert str(services["runtime"]["version"]).startswith("Python 3.11.")
    assert str(services["db"]["version"]).startswith("postgres (PostgreSQL) 15.")
    assert all(v["userns_host"] is False and v["userns_mode"] == "remapped" for v in services.values())

    # A no-op up changes nothing on the engine: the plan is all Leave, and no engine events happen.
    r = ok(devbox(engine, root, "up", "--dry-run"))
    assert r.stdout.splitlines()[-1] == "nothing to do"
    assert all(", Leave, up to date" in ln for ln in r.stdout.splitlines() if ln.startswith("#"))
    since = f"{time.time():.3f}"
    r = ok(devbox(engine, root, "up", "-d"))
    assert r.stderr == "app (python): up to date, nothing to do\n"
    until = f"{time.time():.3f}"
    events = engine.docker("events", "--since", since, "--until", until, "--format", "{{.Type}} {{.Action}}").stdout
    # (the db's healthcheck execs keep running on their own; everything else would be devbox's doing)
    assert [e for e in events.splitlines() if not e.startswith("container exec_")] == []
    assert container_ids(engine, "app") == first

    # switch: only the runtime changes; the editor container and the database rows survive.
    r = ok(devbox(engine, root, "switch", "python-3.13"))
    assert "service runtime: recreated (config changed" in r.stderr
    assert "service editor" not in r.stderr and "service db" not in r.stderr
    assert 'profile = "python-3.13"' in (root / "devbox.toml").read_text()
    after = container_ids(engine, "app")
    assert after["editor"] == first["editor"]
    assert after["db"] == first["db"]
    assert after["runtime"] != first["runtime"]
    r = ok(devbox(engine, root, "exec", "runtime", "--", "python3", "app.py", "second"))
    assert r.stdout == "python 3.13 rows 2\n"
    assert ps(engine, root)["runtime"]["toolchain"] == "python 3.13"

    # down keeps the volume; up brings the same rows back.
    r = ok(devbox(engine, root, "down"))
    assert "kept volumes devbox-app-pgdata-15 (devbox down --volumes removes them)" in r.stderr
    assert container_ids(engine, "app") == {}
    assert engine.docker("network", "ls", "-q", "--filter", "label=devbox.project=app").stdout == ""
    r = ok(devbox(engine, root, "up", "-d", says_sdk=True))
    # a network, three containers, the wait for db's health (its events): all on the stdlib client
    assert "service runtime: created and started" in r.stderr and "docker SDK imported: False" in r.stderr, r.stderr
    r = ok(devbox(engine, root, "exec", "runtime", "--", "python3", "app.py", "third"))
    assert r.stdout == "python 3.13 rows 3\n"
    r = ok(devbox(engine, root, "logs", "db"))
    assert "database system is ready to accept connections" in r.stdout + r.stderr
    everything = (r.stdout + r.stderr).splitlines()
    r = ok(devbox(engine, root, "logs", "db", "--tail", "2"))
    assert (r.stdout + r.stderr).splitlines() == everything[-2:]
    r = devbox(engine, root, "logs", "db", "--tail", "ten")
    assert (r.returncode, r.stderr) == (2, "devbox: error: --tail 'ten' is not a number of lines — give a number, or 'all'\n")
    assert owners(root) == {}

    ok(devbox(engine, root, "down", "--volumes"))
    assert engine.docker("volume", "ls", "-q", "--filter", "label=devbox.project=app").stdout == ""


def test_errors_are_one_line(engine: PrivateDaemon) -> None:
    root = make_project("errs", 'name = "errs"\n')
    r = devbox(engine, root, "exec", "runtime", "--", "true")
    assert (r.returncode, r.stderr) == (2, "devbox: error: service runtime has no container — run 'devbox up'\n")
    r = devbox(engine, root, "logs", "nosuch")
    assert (r.returncode, r.stderr) == (2, "devbox: error: service nosuch has no container — run 'devbox up'\n")
    r = devbox(engine, root, "switch", "pyhton")
    assert (r.returncode, r.stderr) == (2, "devbox: error: unknown profile 'pyhton' — did you mean 'python'?\n")
    r = devbox(engine, root, "init")
    assert (r.returncode, r.stderr) == (
        2, f"devbox: error: {root}/devbox.toml: devbox.toml already exists — edit it, or change the profile with 'devbox switch PROFILE'\n")


def test_init_without_a_terminal_takes_the_default(engine: PrivateDaemon) -> None:
    root = projects_dir() / "fresh"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    os.chown(root, UID, UID)
    r = ok(devbox(engine, root, "init"))
    text = (root / "devbox.toml").read_text()
    assert 'name = "fresh"\nprofile = "python"\n' in text
    assert os.lstat(root / "devbox.toml").st_uid == UID
    assert r.stdout.startswith(f"wrote {root}/devbox.toml (profile python: ")


# --- crash recovery -------------------------------------------------------------------------------


def _engine_pids(d: PrivateDaemon, names: tuple[str, ...]) -> list[int]:
    """PIDs of ``names`` processes (containerd, shims) belonging to ``d`` (their command line names its exec root)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if comm in names and str(d.exec_root) in cmdline:
            pids.append(int(entry.name))
    return pids


@pytest.fixture(params=DOCKERS)
def crash_engine(test_user: dict[str, object], request: pytest.FixtureRequest) -> Iterator[PrivateDaemon]:
    """A dedicated remapped dockerd (each Docker of the matrix): this test kills it, and the shared one must stay up."""
    d = PrivateDaemon(f"crash-{SESSION}", version=request.param)
    d.destroy()
    d.write_config({"userns-remap": USER})
    d.start()
    import_base_images(d, ("bookworm",))
    yield d
    d.destroy()
    for pid in _engine_pids(d, ("containerd", "containerd-shim", "containerd-shim-runc-v2")):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


CRASH_PROFILE = """\
description = "three tiny services: what matters here is convergence, not toolchains"
[services.editor]
image = "debian:bookworm-slim"
command = ["sleep", "infinity"]
interactive = true
[services.runtime]
image = "debian:bookworm-slim"
command = ["sleep", "infinity"]
depends_on = { db = "healthy" }
[services.db]
image = "debian:bookworm-slim"
command = ["sh", "-c", "sleep 4; touch /tmp/ready; exec sleep infinity"]
workdir = false
healthcheck = { test = ["test", "-e", "/tmp/ready"], interval = 1, timeout = 5, retries = 60 }
"""


def test_killing_the_daemon_mid_up_then_rerunning_converges(crash_engine: PrivateDaemon) -> None:
    engine = crash_engine
    root = make_project("crash", 'name = "crash"\nprofile = "crash"\n')
    (root / ".devbox" / "profiles").mkdir(parents=True)
    (root / ".devbox" / "profiles" / "crash.toml").write_text(CRASH_PROFILE)
    env = {"PATH": os.environ["PATH"], "HOME": HOME, "COLUMNS": "200", **engine.env}
    proc = subprocess.Popen(
        ["setpriv", "--reuid", USER, "--regid", USER, "--init-groups", "--", sys.executable, "-m", "devbox", "up", "-d"],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while "db" not in container_ids(engine, "crash"):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # Kill the engine under devbox's feet once the db exists but before the runtime (which waits
    # for db healthy) is created: dockerd, its containerd and the shims all go, as in a crash.
    pid = engine.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith("devbox: error: ")
    assert "runtime" not in container_ids_after_restart(engine)

    ok(devbox(engine, root, "up", "-d"))
    ids = container_ids(engine, "crash")
    assert set(ids) == {"db", "editor", "runtime"}
    states = {s: (v["state"], v["health"]) for s, v in ps(engine, root).items()}
    assert states == {"db": ("running", "healthy"), "editor": ("running", None), "runtime": ("running", None)}
    r = ok(devbox(engine, root, "up", "--dry-run"))
    assert r.stdout.splitlines()[-1] == "nothing to do"
    ok(devbox(engine, root, "down", "--volumes"))


def container_ids_after_restart(engine: PrivateDaemon) -> dict[str, str]:
    """Finish the crash as a reboot would, then start the engine again.

    A crash takes containerd, the shims and the container processes with it, and a reboot
    empties /run, where the exec root (containerd's task state) lives.  Without that, the
    dockerd 20.10 here hangs re-attaching dead tasks ("cannot find cgroup mount destination").
    """
    deadline = time.monotonic() + 60
    while _engine_pids(engine, ("dockerd",)):
        assert time.monotonic() < deadline, "the killed dockerd did not exit"
        time.sleep(0.1)
    ids = [p.name for p in engine.data_root.glob("*/containers/*")]
    for pid in _engine_pids(engine, ("containerd", "containerd-shim", "containerd-shim-runc-v2")):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if any(i in (entry / "cgroup").read_text() for i in ids):
                    os.kill(int(entry.name), signal.SIGKILL)
    while _engine_pids(engine, ("containerd", "containerd-shim", "containerd-shim-runc-v2")):
        assert time.monotonic() < deadline, "the killed engine's containerd did not exit"
        time.sleep(0.1)
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
              if line.split()[1].startswith(str(engine.exec_root))]
    for m in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", m], capture_output=True)
    shutil.rmtree(engine.exec_root, ignore_errors=True)
    engine.pidfile.unlink(missing_ok=True)
    engine.start(timeout=120)
    return container_ids(engine, "crash")


# --- other profiles ---------------------------------------------------------------------------------


def test_node_profile_smoke(host_engine: PrivateDaemon, prebuilt_images: object) -> None:
    engine = host_engine
    root = make_project("nodeapp", 'name = "nodeapp"\nprofile = "node"\n')
    ok(devbox(engine, root, "up", "-d"))
    r = ok(devbox(engine, root, "exec", "runtime", "--", "node", "-e", "console.log(process.versions.node.split('.')[0])"))
    assert r.stdout == "18\n"
    r = ok(devbox(engine, root, "exec", "runtime", "--", "redis-cli", "-h", "db", "ping"))
    assert r.stdout == "PONG\n"
    ok(devbox(engine, root, "exec", "runtime", "--", "node", "-e", "require('fs').writeFileSync('n.txt', 'x')"))
    # npm over this network's TLS-intercepting proxy: the host's CA reaches node (NODE_EXTRA_CA_CERTS)
    r = ok(devbox(engine, root, "exec", "runtime", "--", "sh", "-c", "npm install --no-audit --no-fund is-number@7"))
    assert (root / "node_modules" / "is-number" / "package.json").is_file(), r.stdout + r.stderr
    assert owners(root) == {}
    ok(devbox(engine, root, "down", "--volumes"))


def test_pip_trusts_the_hosts_extra_ca_at_run_time_unless_told_not_to(host_engine: PrivateDaemon) -> None:
    """This machine's network intercepts TLS and the host trusts its CA; the images do not."""
    engine = host_engine
    root = make_project("tls", 'name = "tls"\nprofile = "python"\n')
    ok(devbox(engine, root, "up", "-d"))
    report = json.loads(ok(devbox(engine, root, "ps", "--json")).stdout)
    ca = report["network"]["ca_bundle"]
    assert ca is not None and ca["target"] == "/etc/devbox/ca-certificates.crt" and ca["extra"] > 0
    pip = "python3 -m venv /work/.venv && /work/.venv/bin/pip install --disable-pip-version-check -q six"
    r = ok(devbox(engine, root, "exec", "runtime", "--", "sh", "-c", pip))
    assert list((root / ".venv").glob("lib/python3*/site-packages/six.py")), r.stdout + r.stderr
    r = ok(devbox(engine, root, "exec", "runtime", "--", "sh", "-c", "echo $SSL_CERT_FILE $REQUESTS_CA_BUNDLE"))
    assert r.stdout == "/etc/devbox/ca-certificates.crt /etc/devbox/ca-certificates.crt\n"
    assert owners(root) == {}
    shutil.rmtree(root / ".venv")
    found = {f["id"]: f for f in json.loads(devbox(engine, root, "doctor", "--json").stdout)["findings"]}
    assert found["network.tls"]["status"] == "ok", found["network.tls"]
    assert found["network.tls"]["evidence"][0].endswith("python3 → https://pypi.org/simple/: the TLS handshake and request succeed")
    assert found["network.proxy"]["status"] == "ok"

    # behind a proxy (one on the daemon's bridge, with credentials): pip goes through it, db does not
    proxy = Proxy(bridge_address(engine))
    try:
        url = f"http://dev:s3cret@{proxy.address}"
        r = ok(devbox(engine, root, "up", "-d", env={"HTTPS_PROXY": url, "no_proxy": "corp.lan"}))
        assert "service runtime: recreated (config changed" in r.stderr
        r = ok(devbox(engine, root, "exec", "runtime", "--", "sh", "-c", pip))
        assert any(seen.startswith("CONNECT ") and seen.endswith(":443") for seen in proxy.seen), proxy.seen
        r = ok(devbox(engine, root, "exec", "runtime", "--", "sh", "-c", "echo $https_proxy; echo $NO_PROXY"))
        assert r.stdout == f"{url}\ncorp.lan,localhost,127.0.0.1,::1,db,editor,runtime\n"
        r = ok(devbox(engine, root, "ps", "--json", env={"HTTPS_PROXY": url, "no_proxy": "corp.lan"}))
        assert "s3cret" not in r.stdout + r.stderr
        assert json.loads(r.stdout)["network"]["proxy"]["HTTPS_PROXY"] == {
            "value": f"http://***@{proxy.address}", "from": "environment"}
        assert all(s["up_to_date"] == "yes" for s in json.loads(r.stdout)["services"])
        r = ok(devbox(engine, root, "exec", "runtime", "--", "python3", "-c",
                      "import psycopg2; psycopg2.connect().close(); print('db ok')"))
        assert r.stdout == "db ok\n"
    finally:
        proxy.close()
    shutil.rmtree(root / ".venv")

    # the image's own trust only: the same install fails on the certificate, and up said what changed
    (root / "devbox.toml").write_text('name = "tls"\nprofile = "python"\n[network]\nca_certificates = "image"\n')
    r = ok(devbox(engine, root, "up", "-d"))
    assert "service runtime: recreated (config changed" in r.stderr
    r = devbox(engine, root, "exec", "runtime", "--", "sh", "-c", pip)
    assert r.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in r.stdout + r.stderr
    found = {f["id"]: f for f in json.loads(devbox(engine, root, "doctor", "--json").stdout)["findings"]}
    tls = found["network.tls"]
    assert tls["status"] == "fail", tls
    assert "the certificate chain is not trusted inside the container" in tls["evidence"][0]
    assert tls["evidence"][1] == 'services get no extra CA bundle ([network] ca_certificates = "image")'
    assert tls["fix"] == 'set [network] ca_certificates = "auto" (or "host") in devbox.toml, then devbox up'
    ok(devbox(engine, root, "down", "--volumes"))


def test_ide_profile_serves_jupyterlab_showing_the_work_dir(host_engine: PrivateDaemon, prebuilt_images: object) -> None:
    engine = host_engine
    chromium = shutil.which("chromium")
    assert chromium, "tests/run installs chromium"
    port = free_port()
    token = "devbox-test-token"
    root = make_project("ide", (
        'name = "ide"\nprofile = "ide-python"\n\n'
        f'[services.ide]\nports = ["127.0.0.1:{port}:8888"]\n\n'
        f'[services.ide.env]\nJUPYTER_TOKEN = "{token}"\n'
    ))
    marker = root / "hello_from_devbox.py"
    marker.write_text("print('hi')\n")
    os.chown(marker, UID, UID)
    ok(devbox(engine, root, "up", "-d"))
    deadline = time.monotonic() + 180  # up -d does not wait for the health of services nothing depends on
    while (services := ps(engine, root))["ide"]["health"] == "starting" and time.monotonic() < deadline:
        time.sleep(1)
    assert services["ide"]["ports"] == [f"127.0.0.1:{port}->8888/tcp"]
    assert services["ide"]["health"] == "healthy"

    ARTIFACTS.mkdir(exist_ok=True)
    url = f"http://127.0.0.1:{port}/lab?token={token}"
    common = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,800",
              "--virtual-time-budget=20000", "--user-data-dir=" + str(projects_dir() / "chromium-profile")]
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=180)
    assert "hello_from_devbox.py" in dom.stdout, dom.stderr[-2000:]
    shot = ARTIFACTS / "ide-jupyterlab.png"
    subprocess.run([*common, f"--screenshot={shot}", url], capture_output=True, timeout=180)
    assert shot.is_file() and shot.stat().st_size > 10_000
    ok(devbox(engine, root, "down", "--volumes"))
    assert owners(root) == {}
