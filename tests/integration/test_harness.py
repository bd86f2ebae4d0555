"""The harness itself: private daemons are isolated and the /etc sandbox holds."""

from __future__ import annotations

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
