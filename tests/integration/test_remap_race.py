"""devbox and shadow-utils editing /etc/subuid at the same time: no lost update, no torn file.

In an /etc sandbox, devbox's host-change transaction (apply, then revert, in a
loop; tests/harness/change_driver.py) races a real ``usermod --add-subuids`` /
``--del-subuids`` for another account, while a reader checks every version of
the files it sees.  The "restart" is ``true`` and the engine a stub: what is
under test is the locks and the journal against a real shadow-utils.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from harness.ids import OTHER_USER
from harness.sandbox import EtcSandbox
from harness.stub_engine import stub_engine

DRIVER = Path(__file__).resolve().parents[1] / "harness" / "change_driver.py"
LINE = re.compile(r"^[a-z_][a-z0-9_-]*:\d+:\d+$")
SECONDS = float(os.environ.get("DEVBOX_RACE_SECONDS", "25"))


def test_devbox_and_usermod_race_without_lost_updates(etc_sandbox: EtcSandbox, tmp_path: Path) -> None:
    sb = etc_sandbox
    for f in ("/etc/subuid", "/etc/subgid"):
        sb.write(f, "alice:200000:65536\n")
    sb.write("/etc/daemon.json", "{}\n")
    other = f"{OTHER_USER}:400000:65536"
    stop = threading.Event()
    usermod_ops: list[tuple[str, bool]] = []
    devbox_ops: list[tuple[str, int]] = []
    torn: list[str] = []
    reads = 0

    def usermod_loop() -> None:
        add = True
        while not stop.is_set():
            flag = "--add-subuids" if add else "--del-subuids"
            r = sb.run(["usermod", flag, "400000-465535", OTHER_USER], timeout=60)
            usermod_ops.append((flag, r.returncode == 0))
            if r.returncode == 0:
                add = not add

    def devbox_loop(sock: Path) -> None:
        ops = ("apply", "revert")
        i = 0
        while not stop.is_set():
            op = ops[i % 2]
            r = subprocess.run(sb.argv([sys.executable, str(DRIVER), "/etc", op, str(tmp_path / "state")]),
                               env={**os.environ, "DOCKER_HOST": f"unix://{sock}"}, capture_output=True, text=True,
                               timeout=120)
            devbox_ops.append((op, r.returncode))
            assert r.returncode in (0, 2), r.stderr  # 2: a file changed since it was read, nothing written
            if r.returncode == 0:
                i += 1

    def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            for f in ("/etc/subuid", "/etc/subgid"):
                try:
                    text = sb.path(f).read_text()
                except FileNotFoundError:
                    torn.append(f"{f} missing")
                    continue
                reads += 1
                if text and (not text.endswith("\n") or not all(LINE.match(x) for x in text.splitlines())):
                    torn.append(f"{f}: {text!r}")

    with stub_engine(tmp_path / "engine.sock") as sock:
        threads = [threading.Thread(target=usermod_loop), threading.Thread(target=devbox_loop, args=(sock,)),
                   threading.Thread(target=reader)]
        for t in threads:
            t.start()
        time.sleep(SECONDS)
        stop.set()
        for t in threads:
            t.join()
    done = [flag for flag, ok in usermod_ops if ok]
    assert len(done) >= 5 and sum(1 for _, rc in devbox_ops if rc == 0) >= 5, (usermod_ops, devbox_ops)
    assert torn == []
    # what usermod last reported as done is what the file says about that account
    assert (other in sb.read("/etc/subuid").splitlines()) == (done[-1] == "--add-subuids")
    # devbox's own edit is whole too: after an even number of successful runs its lines are gone
    applied = sum(1 for op, rc in devbox_ops if op == "apply" and rc == 0)
    reverted = sum(1 for op, rc in devbox_ops if op == "revert" and rc == 0)
    assert ("mino:1500:1" in sb.read("/etc/subuid")) == (applied > reverted)
    print(f"race: {len(usermod_ops)} usermod runs ({len(done)} done), {len(devbox_ops)} devbox runs, {reads} reads, 0 torn")
