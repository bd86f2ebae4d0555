"""`devbox remap --apply` and `--revert` killed at every fault point, against a real dockerd in an /etc sandbox.

The daemon is started remapped to the test user; then /etc/subuid and
/etc/subgid are reversed and the key removed from daemon.json, as if someone
had edited them since.  `remap --apply` puts them right (with ``--restart-cmd
true``: the running daemon already is what the files will say, so the probe
proves it without a real restart).  Each run is SIGKILLed at the Nth fault
point (``DEVBOX_FAULT_POINT``, devbox/faults.py); afterwards each of the
three files is byte-identical to its old or its new content, ``devbox remap``
says an earlier run was interrupted, and the next run converges.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

from harness.daemon import RUN, SESSION, PrivateDaemon
from harness.ids import TEST_UID, TEST_USER
from harness.sandbox import EtcSandbox

FILES = ("/etc/subuid", "/etc/subgid", "/etc/docker/daemon.json")
GOOD = f"{TEST_USER}:{TEST_UID}:1\n{TEST_USER}:300000:65536\n"
REVERSED = f"{TEST_USER}:300000:65536\n{TEST_USER}:{TEST_UID}:1\n"
CONFIG = {"userns-remap": TEST_USER, "debug": False}


def _files(sb: EtcSandbox) -> dict[str, str | None]:
    return {f: sb.read(f) if sb.path(f).exists() else None for f in FILES}


def _break(sb: EtcSandbox) -> None:
    sb.write("/etc/subuid", REVERSED)
    sb.write("/etc/subgid", REVERSED)
    sb.write("/etc/docker/daemon.json", '{\n  "debug": false\n}\n')


def _remap(sb: EtcSandbox, d: PrivateDaemon, env: dict[str, str], *args: str, fault: int | None = None,
           trace: str | None = None) -> tuple[int, str, str]:
    extra = {**env, **d.env}
    if fault is not None:
        extra["DEVBOX_FAULT_POINT"] = str(fault)
    if trace is not None:
        extra["DEVBOX_FAULT_TRACE"] = trace
    r = sb.devbox("remap", *args, env=extra)
    return r.returncode, r.stdout, r.stderr


def _killed_whole(sb: EtcSandbox, d: PrivateDaemon, env: dict[str, str], args: tuple[str, ...], n: int,
                  old: dict[str, str | None], new: dict[str, str | None], where: str) -> None:
    """Run ``remap ARGS`` killed at fault point ``n``: each file is then its old or its new bytes."""
    rc, out, err = _remap(sb, d, env, *args, fault=n)
    assert rc == -signal.SIGKILL, (where, out, err)
    now = _files(sb)
    for f in FILES:
        assert now[f] in (old[f], new[f]), f"{f} torn after a kill at {where}: {now[f]!r}"


def test_kill_remap_apply_and_revert_at_every_point(etc_sandbox: EtcSandbox, env: dict[str, str]) -> None:
    sb = etc_sandbox
    sb.write("/etc/subuid", GOOD)
    sb.write("/etc/subgid", GOOD)
    d = sb.daemon("rm-crash", config=CONFIG)
    sb.start_daemon(d)
    apply = ("--apply", "--yes", "--restart-cmd", "true")
    revert = ("--revert", "--yes", "--restart-cmd", "true")

    # fresh trace files of this session's own (a stale one would list points this run never reaches)
    apply_trace, revert_trace = f"{RUN}/crash-{SESSION}-apply.trace", f"{RUN}/crash-{SESSION}-revert.trace"
    for t in (apply_trace, revert_trace):
        Path(t).unlink(missing_ok=True)
    _break(sb)
    old = _files(sb)
    rc, out, err = _remap(sb, d, env, *apply, trace=apply_trace)
    assert rc == 0, out + err
    new = _files(sb)
    assert new["/etc/subuid"] == GOOD and old != new
    rc, out, err = _remap(sb, d, env, *revert, trace=revert_trace)
    assert rc == 0, out + err
    assert _files(sb) == old
    apply_points = Path(apply_trace).read_text().splitlines()
    revert_points = Path(revert_trace).read_text().splitlines()
    assert len(apply_points) >= 20 and len(revert_points) >= 20

    said_interrupted = 0
    for n in range(1, len(apply_points) + 1):
        where = f"apply point {apply_points[n - 1]}"
        _killed_whole(sb, d, env, apply, n, old, new, where)
        if n % 10 == 1:  # now and then, the read-only check says what it found
            rc, out, err = _remap(sb, d, env, "--json", "--no-probe")
            report = json.loads(out)
            if report["unfinished"] is not None:
                said_interrupted += 1
                assert "was interrupted" in err and rc == 1 and report["ok"] is False
        rc, out, err = _remap(sb, d, env, *apply)
        assert rc == 0, (where, out, err)
        assert _files(sb) == new, where
        rc, out, err = _remap(sb, d, env, *revert)  # back to the broken state for the next kill
        assert rc == 0, (where, out, err)
        assert _files(sb) == old, where
    assert said_interrupted >= 1

    rc, out, err = _remap(sb, d, env, *apply)
    assert rc == 0, out + err
    for n in range(1, len(revert_points) + 1, 2):
        where = f"revert point {revert_points[n - 1]}"
        _killed_whole(sb, d, env, revert, n, old, new, where)
        rc, out, err = _remap(sb, d, env, *revert)
        assert rc == 0, (where, out, err)
        assert _files(sb) == old, where
        rc, out, err = _remap(sb, d, env, *apply)
        assert rc == 0, (where, out, err)
    assert not any(sb.path(f + ".lock").exists() for f in FILES)
    # probes killed mid-way leave their temp dirs; the next probe sweeps those of dead processes
    stale = [p for p in Path("/tmp").glob("devbox-probe-*-*") if not Path(f"/proc/{p.name.split('-')[2]}").exists()]
    assert stale == []
