"""Faults a user meets, each made for real: read-only /etc, a full disk, dockerd killed during the probe.

Each ends in one line naming what happened and what to do, a non-zero exit,
no traceback, and nothing half-written.  (A daemon that accepts and never
answers is in tests/test_engine_errors.py; an engine that disappears mid-`up`
in tests/integration/test_stack.py.)
"""

from __future__ import annotations

import json
import threading
import time

from harness.ids import TEST_UID, TEST_USER
from harness.sandbox import EtcSandbox

FILES = ("/etc/subuid", "/etc/subgid", "/etc/docker/daemon.json")
REVERSED = f"{TEST_USER}:300000:65536\n{TEST_USER}:{TEST_UID}:1\n"


def _files(sb: EtcSandbox) -> dict[str, str | None]:
    return {f: sb.read(f) if sb.path(f).exists() else None for f in FILES}


def _prepare(sb: EtcSandbox) -> None:
    sb.write("/etc/subuid", REVERSED)
    sb.write("/etc/subgid", REVERSED)
    sb.write("/etc/docker/daemon.json", '{\n  "debug": false\n}\n')


def _one_line(r_stderr: str) -> str:
    assert "Traceback" not in r_stderr
    lines = [line for line in r_stderr.splitlines() if line.startswith("devbox: error:")]
    assert len(lines) == 1, r_stderr
    return lines[0]


def test_read_only_etc(etc_sandbox: EtcSandbox, env: dict[str, str]) -> None:
    sb = etc_sandbox
    _prepare(sb)
    before = _files(sb)
    sb.run(["mount", "-o", "remount,ro", "/etc"], check=True)
    r = sb.devbox("remap", "--apply", "--yes", "--restart-cmd", "true", env=env)
    assert r.returncode == 2, r.stdout + r.stderr
    line = _one_line(r.stderr)
    assert line.startswith("devbox: error: ") and "Read-only file system" in line
    assert line.endswith("— /etc is on a read-only filesystem: remount it read-write, or change the image it comes from")
    assert _files(sb) == before


def test_full_disk_under_etc(etc_sandbox: EtcSandbox, env: dict[str, str]) -> None:
    """/etc on a small tmpfs, filled to the last page: the lock cannot be written, nothing changes."""
    sb = etc_sandbox
    _prepare(sb)
    setup = (
        "set -e; c=$(mktemp -d /run/devbox-test/etccopy.XXXXXX); cp -a /etc/. $c/; "
        "mount -t tmpfs -o size=12m tmpfs /etc; cp -a $c/. /etc/; rm -rf $c; "
        "dd if=/dev/zero of=/etc/.filler bs=4096 2>/dev/null || true; sync"
    )
    sb.run(["sh", "-c", setup], check=True)
    before = _files(sb)
    r = sb.devbox("remap", "--apply", "--yes", "--restart-cmd", "true", env=env)
    assert r.returncode == 2, r.stdout + r.stderr
    line = _one_line(r.stderr)
    assert "No space left on device" in line
    assert line.endswith("— the filesystem holding /etc is full: free some space (df -h /etc)")
    assert _files(sb) == before
    leftovers = sb.run(["sh", "-c", "ls -a /etc | grep -E '^(subuid|subgid)\\.[0-9]+$|devbox-tmp$' || true"]).stdout
    assert leftovers == ""
    # with room again, the same command goes through
    sb.run(["rm", "-f", "/etc/.filler"], check=True)
    r = sb.devbox("remap", "--apply", "--yes", "--dry-run", env=env)
    assert r.returncode == 0, r.stderr


def test_dockerd_killed_during_the_probe(etc_sandbox: EtcSandbox, env: dict[str, str]) -> None:
    sb = etc_sandbox
    sb.write("/etc/subuid", f"{TEST_USER}:{TEST_UID}:1\n{TEST_USER}:300000:65536\n")
    sb.write("/etc/subgid", f"{TEST_USER}:{TEST_UID}:1\n{TEST_USER}:300000:65536\n")
    d = sb.daemon("flt-probe", config={"userns-remap": TEST_USER})
    sb.start_daemon(d)
    e = {**env, **d.env, "DEVBOX_FAULT_DELAY": "probe-started=4"}
    probes_before = set(sb.run(["sh", "-c", "ls -d /tmp/devbox-probe-* 2>/dev/null || true"]).stdout.split())
    killer = threading.Thread(target=lambda: (time.sleep(2.5), d.stop(timeout=1)))
    killer.start()
    r = sb.devbox("remap", "--json", env=e)
    killer.join()
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    found = {f["id"]: f for f in json.loads(r.stdout)["findings"]}
    assert found["daemon.live"]["status"] == "ok"  # it answered before it was killed
    probe = found["probe.file-owner"]
    assert probe["status"] == "fail"
    assert "Docker daemon" in probe["evidence"][0] or "probe did not report" in probe["evidence"][0]
    probes_after = set(sb.run(["sh", "-c", "ls -d /tmp/devbox-probe-* 2>/dev/null || true"]).stdout.split())
    assert probes_after <= probes_before  # its temp dir is gone (and stale ones of killed runs were swept)
