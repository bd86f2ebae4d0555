"""Pure remap logic: assessments and planned edits, from hand-made host states (no engine, no /etc)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devbox.core.idmap import Account, parse_subid
from devbox.engine.client import EngineInfo
from devbox.errors import ConfigError, HostError
from devbox.host.observe import DaemonJson, Flag, Kernel
from devbox.host.user import User
from devbox.paths import Paths
from devbox.remap.assess import HostState, assess, assess_kernel
from devbox.remap.plan import plan_remap as plan
from devbox.remap.plan import plan_subid

USER = User("mino", 1500, 1500, "mino", "/home/mino")
ACCOUNTS = (Account("root", 0), Account("mino", 1500), Account("alice", 1501), Account("nobody", 65534))
KERNEL = Kernel("6.1", True, "y", "/boot/config-6.1", 15000, None)
PATHS = Paths(daemon_json=Path("/etc/docker/daemon.json"))


def state(subuid: str, subgid: str | None = None, daemon: dict[str, object] | None = None,
          flags: tuple[Flag, ...] = (), engine: EngineInfo | None = None, login_defs: dict[str, str] | None = None,
          user: User = USER) -> HostState:
    text = json.dumps(daemon, indent=2) + "\n" if daemon is not None else ""
    return HostState(
        user=user,
        subuid=parse_subid(subuid, "/etc/subuid"),
        subgid=parse_subid(subuid if subgid is None else subgid, "/etc/subgid"),
        accounts=ACCOUNTS, groups=ACCOUNTS, login_defs=login_defs or {}, kernel=KERNEL,
        daemon_json=DaemonJson("/etc/docker/daemon.json", daemon is not None, text, daemon or {}),
        daemon_json_error=None, flags=flags, engine=engine, engine_error=None if engine else "engine not checked",
        probe=None, probe_error=None,
    )


def by_id(s: HostState) -> dict[str, tuple[str, tuple[str, ...], str | None]]:
    return {f.id: (f.status, f.evidence, f.fix) for f in assess(s)}


GOOD = "mino:1500:1\nmino:100000:65536\n"


def test_good_layout_passes_every_file_check() -> None:
    found = by_id(state(GOOD, daemon={"userns-remap": "mino"}))
    for key in ("subuid.own-line", "subuid.accounts", "subuid.overlap", "subuid.range", "subgid.own-line",
                "daemon.json", "daemon.flags"):
        assert found[key][0] == "ok", key
    assert found["daemon.live"][0] == "fail"  # no engine in this state
    assert found["probe.file-owner"][0] == "skip"


def test_missing_lines_name_what_is_missing() -> None:
    found = by_id(state(""))
    assert found["subuid.own-line"] == (
        "fail", ("no line for mino in /etc/subuid",),
        "sudo devbox remap --apply  (adds mino:1500:1 as mino's first line)",
    )
    assert found["subuid.range"][1] == ("0 usable subordinate uids for mino (containers need 65536)",)
    assert found["daemon.json"][1] == ("/etc/docker/daemon.json does not exist",)


def test_reversed_order_says_what_container_root_becomes() -> None:
    found = by_id(state("mino:100000:65536\nmino:1500:1\n"))
    assert found["subuid.own-line"][1][-1] == (
        "mino:1500:1 is not first: dockerd takes the lines in file order, so container root becomes host uid 100000"
    )


@pytest.mark.parametrize(
    ("subuid", "expected", "reasons"),
    [
        ("", GOOD, ["added mino:1500:1 first: container root becomes mino (1500)",
                    "added mino:100000:65536: subordinate ids for the container's other users"]),
        (GOOD, GOOD, []),
        ("mino:100000:65536\nmino:1500:1\n", GOOD,
         ["moved mino:1500:1 before mino:100000:65536: dockerd maps container root to the first line, "
          "which made container root host id 100000"]),
        ("mino:1500:65536\n", GOOD,
         ["added mino:1500:1 first: container root becomes mino (1500)",
          "replaced mino:1500:65536 (line 1): it maps container ids 1.. onto host ids 1501.., where real accounts live",
          "added mino:100000:65536: subordinate ids for the container's other users"]),
        ("# keep me\nbob:100000:65536\nmino:100000:65536\n", "# keep me\nbob:100000:65536\nmino:1500:1\nmino:165536:65536\n",
         ["added mino:1500:1 first: container root becomes mino (1500)",
          "replaced mino:100000:65536 (line 3): it overlaps bob's range bob:100000:65536 at /etc/subuid:2",
          "added mino:165536:65536: subordinate ids for the container's other users"]),
        ("mino:300000:65536\nbob:100000:65536\n", "mino:1500:1\nmino:300000:65536\nbob:100000:65536\n",
         ["added mino:1500:1 first: container root becomes mino (1500)"]),
        ("mino:1500:1\nmino:100000:1000\n", "mino:1500:1\nmino:100000:1000\nmino:101000:65536\n",
         ["added mino:101000:65536: subordinate ids for the container's other users"]),
    ],
)
def test_subuid_edits(subuid: str, expected: str, reasons: list[str]) -> None:
    p = plan(state(subuid, daemon={"userns-remap": "mino"}), PATHS)
    changes = {str(c.path): c for c in p.changes}
    if expected == subuid:
        assert "/etc/subuid" not in changes
        return
    change = changes["/etc/subuid"]
    assert change.new == expected
    assert list(change.reasons) == reasons
    assert changes["/etc/subgid"].new == expected


def test_other_users_lines_are_never_touched() -> None:
    text = "alice:200000:65536\nmino:100000:65536\nzed:400000:65536\n"
    change = plan_subid(parse_subid(text), "mino", 1500, ACCOUNTS, 500000, 65536)
    assert change.new == "alice:200000:65536\nmino:1500:1\nmino:100000:65536\nzed:400000:65536\n"
    assert change.added == ("mino:1500:1",)
    assert change.removed == ()


def test_allocation_honours_login_defs() -> None:
    p = plan(state("", login_defs={"SUB_UID_MIN": "300000", "SUB_GID_MIN": "300000"}), PATHS)
    assert p.changes[0].new == "mino:1500:1\nmino:300000:65536\n"


def test_no_free_range_is_an_error_naming_login_defs() -> None:
    with pytest.raises(HostError) as exc:
        plan(state("", login_defs={"SUB_UID_MIN": "100000", "SUB_UID_MAX": "110000"}), PATHS)
    assert exc.value.one_line() == (
        "/etc/login.defs: no free range of 65536 subordinate ids between 100000 and 110000 — "
        "raise SUB_UID_MAX/SUB_GID_MAX or free a range"
    )


def test_malformed_file_refused_with_line() -> None:
    with pytest.raises(ConfigError) as exc:
        plan(state("mino:1500:1\nmino:x:65536\n"), PATHS)
    assert exc.value.one_line() == (
        "/etc/subuid:2: START 'x' is not a non-negative integer — fix or remove that line first; "
        "devbox will not rewrite a file it cannot parse"
    )


def test_daemon_json_merge_keeps_other_keys_and_indent() -> None:
    s = state(GOOD, daemon={"log-driver": "journald", "userns-remap": "default", "debug": True})
    change = [c for c in plan(s, PATHS).changes if str(c.path) == "/etc/docker/daemon.json"][0]
    assert json.loads(change.new) == {"log-driver": "journald", "userns-remap": "mino", "debug": True}
    assert list(json.loads(change.new)) == ["log-driver", "userns-remap", "debug"]
    assert change.reasons == ('set "userns-remap": "mino" (was "default"); every other key is kept',)


def test_group_named_differently_is_spelt_out() -> None:
    user = User("mino", 1500, 100, "users", "/home/mino")
    s = state(GOOD, "users:100:1\nusers:100000:65536\n", user=user)
    change = [c for c in plan(s, PATHS).changes if str(c.path) == "/etc/docker/daemon.json"][0]
    assert json.loads(change.new) == {"userns-remap": "mino:users"}


def test_flag_and_key_conflict_removes_the_duplicate_key() -> None:
    flag = Flag("/etc/systemd/system/docker.service.d/u.conf:2", "mino", True)
    s = state(GOOD, daemon={"userns-remap": "mino", "debug": True}, flags=(flag,))
    found = by_id(s)
    assert found["daemon.flags"][0] == "fail"
    assert found["daemon.flags"][2] == (
        'sudo devbox remap --apply  (removes the duplicate "userns-remap" from daemon.json; the flag in '
        "/etc/systemd/system/docker.service.d/u.conf stays)"
    )
    change = [c for c in plan(s, PATHS).changes if str(c.path) == "/etc/docker/daemon.json"][0]
    assert json.loads(change.new) == {"debug": True}


def test_flag_for_another_user_is_refused() -> None:
    flag = Flag("/etc/default/docker:3", "dockremap", True)
    with pytest.raises(HostError) as exc:
        plan(state(GOOD, daemon={}, flags=(flag,)), PATHS)
    assert exc.value.one_line().startswith("dockerd is given --userns-remap=dockremap at /etc/default/docker:3")


def test_files_right_but_daemon_not_remapped_plans_a_restart_only() -> None:
    engine = EngineInfo("unix:///x", "24.0", "1.43", ("name=seccomp,profile=default",), "/var/lib/docker", 3, 1, False)
    p = plan(state(GOOD, daemon={"userns-remap": "mino"}, engine=engine), PATHS)
    assert p.changes == ()
    assert p.restart
    assert p.restart_reason == "restart dockerd: the files are right but the running daemon does not use them yet"


@pytest.mark.parametrize(
    ("kernel", "status", "fix"),
    [
        (KERNEL, "ok", None),
        (Kernel("6.1", True, "y", None, 0, None), "fail",
         "sudo sysctl -w user.max_user_namespaces=15000 (and persist it in /etc/sysctl.d/)"),
        (Kernel("4.9", False, "n", "/boot/config-4.9", None, None), "fail",
         "use a kernel built with CONFIG_USER_NS=y (every mainstream distribution kernel has it)"),
    ],
)
def test_kernel(kernel: Kernel, status: str, fix: str | None) -> None:
    f = assess_kernel(kernel)
    assert (f.status, f.fix) == (status, fix)


# --- the containerd image store and Docker 29 (moby#51042) -------------------------------------------------


def _docker(version: str, store: str = "graphdriver", images: int = 3) -> EngineInfo:
    return EngineInfo("unix:///var/run/docker.sock", version, "1.52", ("name=seccomp",), "/var/lib/docker", images, 0,
                      False, image_store=store)


def test_store_under_remap_by_version_and_key() -> None:
    from devbox.remap.assess import store_under_remap

    assert store_under_remap(26, None) == ("graphdriver", None)
    assert store_under_remap(26, True) == ("containerd", None)  # seen on 26.1: obeyed, remap runs on it
    store, why = store_under_remap(29, None)
    assert store == "graphdriver" and why == "Docker 29 turns the containerd image store off while userns-remap is set (moby#51042)"
    store, why = store_under_remap(30, True)
    assert store == "graphdriver" and why is not None and "is ignored, with only a warning in dockerd's log" in why
    assert store_under_remap(None, True) == ("containerd", None)


@pytest.mark.parametrize(("version", "dropped"), [("29.0.1", True), ("26.1.5+dfsg1", False), ("28.5.2", False)])
def test_an_explicit_containerd_store_key_is_taken_out_only_where_dockerd_ignores_it(version: str, dropped: bool) -> None:
    daemon = {"features": {"containerd-snapshotter": True, "buildkit": True}, "debug": True}
    p = plan(state(GOOD, daemon=daemon, engine=_docker(version, "containerd")), PATHS)
    dj = next(c for c in p.changes if c.path == PATHS.daemon_json)
    new = json.loads(dj.new)
    assert new["userns-remap"] == "mino" and new["debug"] is True
    if dropped:
        assert new["features"] == {"buildkit": True}
        assert dj.reasons[1] == (
            'removed "features": {"containerd-snapshotter": true}: Docker 29 turns the containerd image store off '
            'while userns-remap is set (moby#51042): "features": {"containerd-snapshotter": true} in daemon.json is '
            "ignored, with only a warning in dockerd's log; images in the containerd store stay on disk")
    else:
        assert new["features"] == daemon["features"] and len(dj.reasons) == 1


def test_the_features_table_goes_when_the_key_was_its_only_entry() -> None:
    daemon = {"features": {"containerd-snapshotter": True}}
    p = plan(state(GOOD, daemon=daemon, engine=_docker("29.1.0", "containerd")), PATHS)
    assert json.loads(next(c for c in p.changes if c.path == PATHS.daemon_json).new) == {"userns-remap": "mino"}
    # an explicit false is what dockerd does anyway: kept
    p = plan(state(GOOD, daemon={"features": {"containerd-snapshotter": False}}, engine=_docker("29.1.0")), PATHS)
    assert json.loads(next(c for c in p.changes if c.path == PATHS.daemon_json).new)["features"] == {
        "containerd-snapshotter": False}
