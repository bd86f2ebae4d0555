"""The harness itself: private daemons are isolated and the /etc sandbox holds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from harness.daemon import PrivateDaemon
from harness.ids import TEST_UID
from harness.sandbox import EtcSandbox


def test_plain_engine_runs_containers_from_bootstrapped_images(plain_engine: PrivateDaemon) -> None:
    out = plain_engine.docker("run", "--rm", "debian:bookworm-slim", "sh", "-c", "id -u; cat /etc/debian_version")
    uid, version = out.stdout.split()
    assert uid == "0"
    assert version.startswith("12.")


def test_remap_engine_maps_container_root_to_test_user(remap_engine: PrivateDaemon, tmp_path: Path) -> None:
    tmp_path.chmod(0o777)
    remap_engine.docker("run", "--rm", "-v", f"{tmp_path}:/w", "debian:bookworm-slim", "touch", "/w/f")
    assert (tmp_path / "f").stat().st_uid == TEST_UID
    assert remap_engine.data_root.joinpath(f"{TEST_UID}.{TEST_UID}").is_dir()


def test_etc_sandbox_never_touches_the_real_etc(etc_sandbox: EtcSandbox) -> None:
    before = Path("/etc/subuid").read_bytes()
    etc_sandbox.write("/etc/subuid", "someone:300000:65536\n")
    r = etc_sandbox.run(["sh", "-c", "cat /etc/subuid && mv /etc/subuid /etc/subuid.x && mv /etc/subuid.x /etc/subuid"])
    assert r.returncode == 0, r.stderr
    assert r.stdout == "someone:300000:65536\n"
    assert Path("/etc/subuid").read_bytes() == before


def test_test_accounts_choose_around_a_taken_uid(etc_sandbox: EtcSandbox) -> None:
    """A machine whose uid 1500 (and the next) already belong to someone: the harness picks free ids."""
    sb = etc_sandbox
    for name in ("devbox-tester", "devbox-other"):  # as on a machine that never ran the suite
        sb.run(["userdel", "--force", name])
    for uid in (1500, 1501, 1503):  # squat the ids a blank machine would give the test users, and leave a hole
        if sb.run(["getent", "passwd", str(uid)]).returncode != 0 and sb.run(["getent", "group", str(uid)]).returncode != 0:
            sb.run(["useradd", "--uid", str(uid), "--user-group", "--no-create-home", f"squatter{uid}"], check=True)
    code = "import harness.ids as i; print(i.TEST_UID, i.OTHER_UID)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVBOX_TEST_UID_")}
    r = subprocess.run(sb.argv([sys.executable, "-c", code]),
                       env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    test_uid, other_uid = map(int, r.stdout.split())
    assert test_uid != other_uid
    for uid in (test_uid, other_uid):
        assert uid >= 1500 and uid not in (1500, 1501, 1503)
        assert sb.run(["getent", "passwd", str(uid)]).returncode != 0  # free as a uid
        assert sb.run(["getent", "group", str(uid)]).returncode != 0  # and as a gid
