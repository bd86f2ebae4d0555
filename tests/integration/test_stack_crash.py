"""`devbox up` and `switch` SIGKILLed at random moments, 50 times: the next `up` converges and the rows survive.

The python stack (editor, runtime, PostgreSQL 15 with a named volume) runs on
the suite's remapped dockerd; its images are the session's, built by
test_stack.py.  Each run starts `up -d` or a `switch` between python and
python-3.13 and SIGKILLs it after a random delay (observing, removals,
creations, starts, health waits); runs that finished first do not count, until
50 were killed.  After every tenth kill, and at the end, `up -d` must
converge: exactly one container per service, every container, network and
volume of the project labelled, no duplicates, and the rows inserted at the
start still there.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

from harness.daemon import PrivateDaemon

from .test_stack import APP, HOME, USER, container_ids, devbox, make_project, ok

KILLS = int(os.environ.get("DEVBOX_STACK_KILLS", "50"))


def _start(engine: PrivateDaemon, cwd: object, *args: str) -> subprocess.Popen[bytes]:
    env = {"PATH": os.environ["PATH"], "HOME": HOME, "COLUMNS": "200", "LANG": "C.UTF-8", **engine.env}
    argv = ["setpriv", "--reuid", USER, "--regid", USER, "--init-groups", "--", sys.executable, "-m", "devbox", *args]
    return subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def _converged(engine: PrivateDaemon, project: str) -> None:
    ids = container_ids(engine, project)  # asserts one container per service
    assert set(ids) == {"db", "editor", "runtime"}, ids
    fmt = '{{.Names}} {{.Label "devbox.project"}}'
    named = engine.docker("ps", "-a", "--filter", f"name=devbox-{project}-", "--format", fmt).stdout.split("\n")
    assert all(line.split(" ")[1:] == [project] for line in named if line), named  # nothing unlabelled
    states = engine.docker("ps", "-a", "--filter", f"label=devbox.project={project}", "--format", "{{.State}}").stdout
    assert states.split() == ["running"] * 3, states
    networks = engine.docker("network", "ls", "--filter", f"name=devbox-{project}", "--format",
                             '{{.Name}} {{.Label "devbox.project"}}').stdout.split("\n")
    assert [n for n in networks if n] == [f"devbox-{project} {project}"]
    volumes = engine.docker("volume", "ls", "--filter", f"name=devbox-{project}-", "--format",
                            '{{.Name}} {{.Label "devbox.project"}}').stdout.split("\n")
    assert all(v.endswith(f" {project}") for v in volumes if v), volumes


def test_up_and_switch_killed_at_random_moments_converge(remap_engine: PrivateDaemon) -> None:
    engine = remap_engine
    project = "crashy"
    root = make_project(project, f'name = "{project}"\nprofile = "python"\n')
    (root / "app.py").write_text(APP)
    os.chown(root / "app.py", *(os.lstat(root).st_uid, os.lstat(root).st_gid))
    ok(devbox(engine, root, "up", "-d"))
    assert ok(devbox(engine, root, "exec", "runtime", "--", "python3", "app.py", "before")).stdout.endswith("rows 1\n")
    rng = random.Random(int(os.environ.get("DEVBOX_CRASH_SEED", "20261126")))
    killed = runs = 0
    try:
        while killed < KILLS:
            assert runs < KILLS * 4, f"only {killed} of {runs} runs were still going when the kill came"
            args = ("up", "-d") if runs % 3 == 0 else ("switch", "python-3.13" if runs % 3 == 1 else "python")
            runs += 1
            proc = _start(engine, root, *args)
            time.sleep(rng.uniform(0.05, 1.6))  # start-up ~0.4 s; a no-op up ~0.6 s, a switch 1.5-3 s
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                killed += 1
            proc.wait()
            if proc.returncode == -signal.SIGKILL and killed % 10 == 0:
                ok(devbox(engine, root, "up", "-d"))
                _converged(engine, project)
        ok(devbox(engine, root, "up", "-d"))
        _converged(engine, project)
        r = ok(devbox(engine, root, "exec", "runtime", "--", "python3", "app.py", "after"))
        assert r.stdout.endswith("rows 2\n"), r.stdout  # the row from before every kill is still there
        print(f"stack crash: {killed} kills in {runs} runs, converged every time, rows intact")
    finally:
        devbox(engine, root, "down", "--volumes")
