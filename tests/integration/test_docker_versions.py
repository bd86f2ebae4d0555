"""What differs between the Dockers of the matrix, tested rather than assumed (the rest of the remap and
stack suites runs on each of them): the containerd image store under remap on Docker 26.1."""

from __future__ import annotations

import json

import pytest

from harness.images import import_base_images
from harness.sandbox import EtcSandbox

USER = "devbox-tester"


@pytest.mark.parametrize("etc_sandbox", ["26.1"], indirect=True)
def test_remap_on_the_containerd_image_store_of_docker_26(etc_sandbox: EtcSandbox, env: dict[str, str]) -> None:
    """26.1 obeys "containerd-snapshotter": true under userns-remap (29 would not, moby#51042): devbox keeps
    the key, proves the remap on that store, and counts the images that vanish from view."""
    sb = etc_sandbox
    sb.write("/etc/subuid", "")
    sb.write("/etc/subgid", "")
    config = {"features": {"containerd-snapshotter": True}}
    d = sb.daemon("rm-c8d", config=config, storage_driver=None)
    sb.start_daemon(d)
    import_base_images(d, ("bookworm",))
    e = {**env, **d.env}
    r = sb.devbox("remap", "--json", env=e)
    report = json.loads(r.stdout)
    assert report["engine"]["image_store"] == "containerd"
    assert report["engine"]["version"].startswith("26.1")

    listed = d.docker("images", "-q").stdout.split()  # the containerd store lists (and counts) each name
    r = sb.devbox("remap", "--apply", "--yes", "--restart-cmd", sb.restart_cmd(d), env=e)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (f"while remap is on, the {len(listed)} image(s) and 0 container(s) in the containerd image store are not visible"
            in r.stderr), r.stderr
    assert "Docker 29" not in r.stdout + r.stderr
    assert json.loads(sb.read("/etc/docker/daemon.json")) == {**config, "userns-remap": USER}
    info = json.loads(d.docker("info", "--format", "{{json .}}").stdout)
    assert ["driver-type", "io.containerd.snapshotter.v1"] in info["DriverStatus"]
    assert "name=userns" in info["SecurityOptions"]
    # the store's images are not visible under remap (not lost): only the probe's, imported since
    assert d.docker("images", "--format", "{{.Repository}}").stdout.split() == ["devbox/probe"]
    r = sb.devbox("remap", "--json", env=e)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["engine"]["image_store"] == "containerd"

    r = sb.devbox("remap", "--revert", "--yes", "--restart-cmd", sb.restart_cmd(d), env=e)
    assert r.returncode == 0, r.stdout + r.stderr
    assert set(listed) <= set(d.docker("images", "-q").stdout.split())  # back in view
