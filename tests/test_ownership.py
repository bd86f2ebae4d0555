"""Ownership strategies (pure): the choice per engine, the refusals, and each strategy's prediction;
engine detection from DOCKER_HOST, docker contexts and the Podman sockets; the rootless findings."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devbox.core.idmap import IdRange, parse_subid, to_host
from devbox.core.ownership import (
    AUTO,
    KINDS,
    STRATEGIES,
    Choice,
    Refusal,
    choose_strategy,
    compose,
    expect,
    keep_id_map,
    rootless_map,
)
from devbox.engine import endpoint
from devbox.engine.client import EngineInfo
from devbox.engine.endpoint import Endpoint, find_endpoint, guess_kind
from devbox.host.observe import IdHelper, Kernel
from devbox.host.user import User
from devbox.remap.assess import HostState, assess


def test_auto_picks_one_strategy_per_engine() -> None:
    assert {k: choose_strategy(k) for k in KINDS} == {
        "docker-rootful": Choice("remap", "chosen for this engine (auto)"),
        "docker-rootless": Choice("rootless", "chosen for this engine (auto)"),
        "podman-rootless": Choice("keep-id", "chosen for this engine (auto)"),
        "podman-rootful": Refusal("podman-rootful: strategy idmap needs idmapped mounts, which this kernel does not "
                                  "make (5.12 or newer)", "run Podman rootless (`podman system service` as your user: "
                                  "keep-id), or use a newer kernel"),
    }
    # rootful Podman makes idmapped binds itself (crun): idmap, wherever the kernel makes idmapped mounts
    assert choose_strategy("podman-rootful", idmap_ok=True) == Choice("idmap", "chosen for this engine (auto)")
    assert choose_strategy("podman-rootful", "idmap", idmap_ok=True) == Choice("idmap", "set in devbox.toml [ownership]")


def test_auto_on_rootful_docker_takes_the_remap_a_daemon_has_else_idmapped_views() -> None:
    def pick(remapped: bool, idmap_ok: bool) -> str | None:
        c = choose_strategy("docker-rootful", remapped=remapped, idmap_ok=idmap_ok)
        return c.strategy if isinstance(c, Choice) else None

    assert pick(remapped=True, idmap_ok=True) == "remap"  # the daemon's own remap isolates as well
    assert pick(remapped=False, idmap_ok=True) == "idmap"
    assert pick(remapped=False, idmap_ok=False) == "remap"  # up then says how to set it up
    # set by hand, idmap works on rootful Docker, with or without remap; nowhere else
    assert choose_strategy("docker-rootful", "idmap") == Choice("idmap", "set in devbox.toml [ownership]")
    for kind in ("docker-rootless", "podman-rootless"):
        refusal = choose_strategy(kind, "idmap")
        assert isinstance(refusal, Refusal) and kind in refusal.message


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("setting", STRATEGIES)
def test_every_setting_on_every_engine_is_a_choice_or_a_reasoned_refusal(kind: str, setting: str) -> None:
    c = choose_strategy(kind, setting)
    if isinstance(c, Choice):
        assert c.strategy == (AUTO[kind] if setting == "auto" else setting)
    else:
        assert c.message and c.fix
        assert kind in c.message


def test_the_refusals_say_why() -> None:
    assert choose_strategy("docker-rootless", "remap") == Refusal(
        'strategy "remap" cannot work on docker-rootless: rootless dockerd fails to start with userns-remap set '
        "(moby#48521); container root is already you there", 'use strategy = "auto" (rootless on this engine)')
    assert choose_strategy("podman-rootless", "rootless") == Choice("rootless", "set in devbox.toml [ownership]")
    assert choose_strategy("docker-rootless", "idmap").message.startswith('strategy "idmap" cannot work on docker-rootless')
    assert isinstance(choose_strategy("nope"), Refusal)


SUB = parse_subid("pd1:400000:65536\n").entries


def test_keep_id_matches_what_podman_4_3_wrote_here() -> None:
    """The map a real keep-id container showed in /proc/PID/uid_map (uid 1777, range 400000+65536)."""
    assert keep_id_map(1777, rootless_map(1777, SUB)) == (
        IdRange(0, 400000, 1777), IdRange(1777, 1777, 1), IdRange(1778, 401777, 63759))
    e = expect("keep-id", 1777, 1777, SUB, SUB)
    assert e.userns == "keep-id" and e.uid_map == e.gid_map


def test_rootless_map_skips_a_line_that_holds_your_own_id() -> None:
    lines = parse_subid("pd1:1777:1\npd1:400000:65536\n").entries
    assert rootless_map(1777, lines) == (IdRange(0, 1777, 1), IdRange(1, 400000, 65536))
    assert expect("rootless", 1777, 1777, lines, lines).uid_map == rootless_map(1777, lines)
    # remap stacks every line, own line first: container root is you
    assert expect("remap", 1777, 1777, lines, lines).uid_map == (IdRange(0, 1777, 1), IdRange(1, 400000, 65536))


def test_keep_id_across_several_ranges_and_too_few_ids() -> None:
    lines = parse_subid("u:400000:1000\nu:500000:65536\n").entries
    m = keep_id_map(1500, rootless_map(1500, lines))
    assert m == (IdRange(0, 400000, 1000), IdRange(1000, 500000, 500), IdRange(1500, 1500, 1),
                 IdRange(1501, 500500, 65036))
    assert keep_id_map(70000, rootless_map(70000, parse_subid("u:400000:65536\n").entries)) == ()


@given(uid=st.integers(1, 60000), start=st.integers(100000, 10**9), count=st.integers(65536, 200000))
def test_keep_id_maps_your_uid_to_you_and_nothing_twice(uid: int, start: int, count: int) -> None:
    lines = parse_subid(f"u:{start}:{count}\n").entries
    m = keep_id_map(uid, rootless_map(uid, lines))
    assert to_host(m, uid) == uid
    hosts = [r.host + i for r in m for i in (0, r.count - 1)]
    assert sum(r.count for r in m) == count + 1
    assert len({(r.host, r.count) for r in m}) == len(m) and uid in hosts
    assert all(start <= to_host(m, c) < start + count for c in (0, uid - 1, uid + 1, count) if to_host(m, c) is not None)


def test_compose_splits_at_outer_boundaries() -> None:
    outer = (IdRange(0, 10, 5), IdRange(5, 100, 5))
    assert compose([(0, 3, 4)], outer) == (IdRange(0, 13, 2), IdRange(2, 100, 2))


# --- engine detection ---------------------------------------------------------------------------------------


def _listen(path: Path) -> socket.socket:
    path.parent.mkdir(parents=True, exist_ok=True)
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    return s


@pytest.fixture
def no_default_sockets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setattr(endpoint, "DOCKER_SOCKET", str(tmp_path / "docker.sock"))
    monkeypatch.setattr(endpoint, "PODMAN_ROOTFUL_SOCKET", str(tmp_path / "run-podman.sock"))
    return tmp_path


def test_endpoint_order(no_default_sockets: Path) -> None:
    tmp = no_default_sockets
    env = {"HOME": str(tmp / "home"), "XDG_RUNTIME_DIR": str(tmp / "xdg")}
    assert find_endpoint(env).source.startswith("Docker's default socket (none of")
    rootful = _listen(tmp / "run-podman.sock")
    assert find_endpoint(env) == Endpoint(f"unix://{tmp}/run-podman.sock", "the rootful Podman socket")
    rootless = _listen(tmp / "xdg/podman/podman.sock")
    assert find_endpoint(env) == Endpoint(f"unix://{tmp}/xdg/podman/podman.sock", "the rootless Podman socket")
    docker = _listen(tmp / "docker.sock")
    assert find_endpoint(env).source == "Docker's default socket"
    # a docker CLI context beats the sockets; DOCKER_CONTEXT beats config.json; DOCKER_HOST beats both
    cfg = tmp / "home/.docker"
    for name, host in (("remote", "ssh://me@box"), ("other", "unix:///x.sock")):
        meta = cfg / "contexts/meta" / hashlib.sha256(name.encode()).hexdigest() / "meta.json"
        meta.parent.mkdir(parents=True)
        meta.write_text(json.dumps({"Name": name, "Endpoints": {"docker": {"Host": host}}}))
    (cfg / "config.json").write_text(json.dumps({"currentContext": "remote"}))
    assert find_endpoint(env) == Endpoint("ssh://me@box", "docker context remote")
    assert find_endpoint({**env, "DOCKER_CONTEXT": "other"}) == Endpoint("unix:///x.sock", "docker context other")
    assert find_endpoint({**env, "DOCKER_CONTEXT": "default"}).source == "Docker's default socket"
    assert find_endpoint({**env, "DOCKER_HOST": "tcp://h:2375"}) == Endpoint("tcp://h:2375", "DOCKER_HOST")
    for s in (rootful, rootless, docker):
        s.close()


def test_a_regular_file_is_not_a_socket(no_default_sockets: Path) -> None:
    (no_default_sockets / "docker.sock").write_text("")
    assert "none of" in find_endpoint({"HOME": str(no_default_sockets)}).source


def test_guess_kind_when_the_engine_does_not_answer() -> None:
    assert guess_kind("unix:///run/user/1000/podman/podman.sock") == "podman-rootless"
    assert guess_kind("unix:///run/podman/podman.sock") == "podman-rootful"
    assert guess_kind("unix:///var/run/docker.sock") == "docker-rootful"


# --- findings on a rootless engine ----------------------------------------------------------------------------

USER = User("pd1", 1777, 1777, "pd1", "/home/pd1")


def _podman(version: str = "4.3.1") -> EngineInfo:
    return EngineInfo("unix:///run/user/1777/podman/podman.sock", version, "1.41", (), "/s", 0, 0, True,
                      product="podman", components=("Podman Engine",))


def _state(subuid: str, engine: EngineInfo | None, helpers: tuple[IdHelper, ...] = ()) -> HostState:
    f = parse_subid(subuid, "/etc/subuid")
    g = parse_subid(subuid, "/etc/subgid")
    kernel = Kernel("6.18", True, "y", "/boot/config", 1000, None)
    return HostState(USER, f, g, (), (), {}, kernel, None, None, (), engine, "engine down" if engine is None else None,
                     None, None, id_helpers=helpers or (IdHelper("/usr/bin/newuidmap", True, True, False),
                                                         IdHelper("/usr/bin/newgidmap", True, True, False)),
                     endpoint="unix:///run/user/1777/podman/podman.sock")


def test_podman_findings_skip_dockerd_and_forbid_the_own_line() -> None:
    found = {f.id: f for f in assess(_state("pd1:1777:1\npd1:400000:65536\n", _podman()))}
    assert "daemon.json" not in found and "daemon.live" not in found
    assert found["engine.kind"].status == "ok"
    own = found["subuid.own-line"]
    assert own.status == "fail"
    assert own.fix == "sudo usermod --del-subuids 1777-1777 pd1, then: podman system migrate"
    assert found["subgid.own-line"].fix == "sudo usermod --del-subgids 1777-1777 pd1, then: podman system migrate"
    assert found["subuid.range"].status == "ok"


def test_podman_without_a_range_is_given_a_free_one_by_usermod() -> None:
    found = {f.id: f for f in assess(_state("", _podman()))}
    assert found["subuid.own-line"].status == "ok"
    assert found["subuid.range"].fix == "sudo usermod --add-subuids 100000-165535 pd1, then: podman system migrate"


def test_podman_down_is_still_assessed_as_podman() -> None:
    found = {f.id: f for f in assess(_state("pd1:1777:1\npd1:400000:65536\n", None))}
    assert found["engine.kind"].status == "fail"
    assert found["engine.kind"].fix.startswith("start it: systemctl --user start podman.socket")
    assert found["subuid.own-line"].status == "fail"
    assert {found[i].status for i in ("probe.file-owner", "probe.process", "probe.uid-map")} == {"skip"}


def test_missing_helpers_fail_with_the_package_to_install() -> None:
    helpers = (IdHelper("/usr/bin/newuidmap", False, False, False), IdHelper("/usr/bin/newgidmap", True, False, False))
    f = {f.id: f for f in assess(_state("pd1:400000:65536\n", _podman(), helpers))}["host.newuidmap"]
    assert f.status == "fail"
    assert f.evidence == ("/usr/bin/newuidmap: missing", "/usr/bin/newgidmap: neither setuid root nor file capabilities")
    assert f.fix is not None and f.fix.startswith("sudo apt-get install uidmap")


def test_id_helpers_reads_the_mode(tmp_path: Path) -> None:
    from devbox.host.observe import id_helpers

    plain = tmp_path / "newuidmap"
    plain.write_text("")
    os.chmod(plain, 0o755)
    (h, missing) = id_helpers((str(plain), str(tmp_path / "nope")))
    assert h.exists and not h.setuid_root and not h.usable and not missing.exists


def test_up_knows_a_local_podman_without_its_slow_info(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``/libpod/info`` costs 0.35-0.45 s: ``up`` reads Podman's kind from the ping and the socket's owner."""
    from devbox.engine.client import _podman_brief

    if os.geteuid() != 0:
        pytest.skip("chowns a socket file: run as root (tests/run does)")
    sock = tmp_path / "podman.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock))
    try:
        monkeypatch.setenv("DOCKER_HOST", f"unix://{sock}")
        headers = {"libpod-api-version": "4.3.1", "api-version": "1.41"}
        os.chown(sock, 0, 0)
        rootful = _podman_brief(headers)
        assert rootful is not None and rootful.kind == "podman-rootful" and rootful.version == "4.3.1"
        os.chown(sock, 1234, 1234)  # a user's own socket: rootless Podman
        rootless = _podman_brief(headers)
        assert rootless is not None and rootless.kind == "podman-rootless" and rootless.api_version == "1.41"
        assert rootless.label == "Podman 4.3.1 (API 1.41), rootless"
        monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")
        assert _podman_brief(headers) is None  # not a local socket: the engine is asked
    finally:
        server.close()


def test_idmap_on_rootful_podman_needs_crun_which_honours_idmapped_binds() -> None:
    from devbox.core.ownership import idmap_runtime_refusal

    assert idmap_runtime_refusal("podman-rootful", "idmap", "crun") is None
    assert idmap_runtime_refusal("podman-rootful", "idmap", "") is None  # not asked: the probe still tells
    assert idmap_runtime_refusal("docker-rootful", "idmap", "runc") is None  # Docker's views are the helper's mounts
    refused = idmap_runtime_refusal("podman-rootful", "idmap", "runc")
    assert refused is not None and "ignores idmapped binds" in refused.message
    assert refused.fix == 'install crun and set runtime = "crun" under [engine] in /etc/containers/containers.conf'
