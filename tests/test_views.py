"""Idmapped views without a kernel: which service gets which map (core.views), the helper's rules
(idmapd.rules), Docker's reading of `user` (stack.views.resolve_spec), mountinfo parsing."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devbox.core.idmap import IdRange
from devbox.core.model import Mount, Service, Stack
from devbox.core.views import View, apply_views, needs_user, parse_user, plan_views, staging_path
from devbox.host.idmount import fs_support, kernel_version, parse_mountinfo
from devbox.idmapd import rules
from devbox.stack.views import resolve_spec

WORK = Mount("bind", "/home/mino/app", "/work")
ME = (1500, 1500)
SUBS = ([(100000, 65536)], [(100000, 65536)])
# remap: container 0 -> 1500, 1.. -> 100000..
REMAP = (IdRange(0, 1500, 1), IdRange(1, 100000, 65536))


def _stack(*services: Service) -> Stack:
    return Stack("app", "p", services)


def test_idmap_gives_every_writer_a_view_that_maps_you_onto_its_host_uid() -> None:
    stack = _stack(
        Service("editor", "img", mounts=(WORK,)),
        Service("db", "img", mounts=(Mount("volume", "devbox-app-data", "/data"),)),  # a volume: no view
        Service("ro", "img", mounts=(Mount("bind", "/home/mino/app", "/src", read_only=True),)),
        Service("mine", "img", mounts=(WORK,), user="1500:1500"),
    )
    vp = plan_views(stack, "idmap", ME, {"editor": (0, 0), "mine": (1500, 1500)}, allowed=SUBS)
    assert [(v.service, v.uid_lines, v.gid_lines) for v in vp.views] == [
        ("editor", ((1500, 0, 1),), ((1500, 0, 1),)),
        ("mine", ((1500, 1500, 1),), ((1500, 1500, 1),)),
    ]
    assert vp.refused == ()


def test_idmap_refuses_a_writer_that_is_another_account_without_remap() -> None:
    vp = plan_views(_stack(Service("node", "img", mounts=(WORK,), user="1000")), "idmap", ME, {"node": (1000, 1000)},
                    allowed=SUBS)
    assert vp.views == ()
    assert vp.refused == ("service node runs as container 1000:1000, host 1000:1000: host uid 1000 is neither root, "
                          "you (1500) nor one of your subordinate ids, so devbox will not let it write as you",)


def test_rootful_podman_binds_let_any_container_user_write_as_you() -> None:
    # an idmapped bind lives only in the container's mount namespace: no host process of account 1000 can
    # reach it (the helper's staging mounts are host mounts), so a devcontainer's remoteUser 1000 may write
    vp = plan_views(_stack(Service("node", "img", mounts=(WORK,), user="1000")), "idmap", ME, {"node": (1000, 1000)},
                    allowed=SUBS, any_writer=True)
    assert vp.refused == ()
    assert [(v.service, v.owner, v.writer) for v in vp.views] == [("node", ME, (1000, 1000))]


def test_remap_views_only_the_non_root_writers_through_the_remap() -> None:
    stack = _stack(Service("editor", "img", mounts=(WORK,)), Service("runtime", "img", mounts=(WORK,), user="1000"),
                   Service("tool", "img", mounts=(WORK,), user="5", userns_mode="host", userns_reason="pid"))
    vp = plan_views(stack, "remap", ME, {"editor": (0, 0), "runtime": (1000, 1000), "tool": (5, 5)}, REMAP, REMAP, SUBS)
    (view,) = vp.views
    assert (view.service, view.uid_lines, view.container_user) == ("runtime", ((1500, 100999, 1),), (1000, 1000))
    # a uid past the subordinate range is not mapped at all: refused, with the reason
    far = plan_views(_stack(Service("x", "img", mounts=(WORK,))), "remap", ME, {"x": (70000, 0)}, REMAP, REMAP, SUBS)
    assert far.views == () and "which the remap does not map" in far.refused[0]


def test_other_strategies_need_no_views() -> None:
    stack = _stack(Service("editor", "img", mounts=(WORK,), user="1000"))
    for strategy in ("keep-id", "rootless"):
        assert plan_views(stack, strategy, ME, {"editor": (1000, 1000)}) == plan_views(stack, "none", ME, {})
        assert not needs_user(stack.services[0], strategy)


def test_names_are_stable_per_source_and_map_and_staging_paths_live_under_the_owner() -> None:
    a = View("app", "editor", "/w", "/work", ME, (0, 0), (0, 0))
    same = View("app", "runtime", "/w", "/src", ME, (0, 0), (0, 0))  # another service, same source and map: shared
    other = View("app", "editor", "/w", "/work", ME, (100999, 100999), (1000, 1000))
    assert a.name == same.name != other.name
    assert a.name.startswith("app-") and len(a.name) == len("app-") + 16
    assert staging_path("/run/devbox-idmapd", 1500, a.name) == f"/run/devbox-idmapd/mounts/1500/{a.name}"


def test_apply_views_points_only_viewed_binds_at_their_staging_path() -> None:
    vol = Mount("volume", "devbox-app-data", "/data")
    stack = _stack(Service("editor", "img", mounts=(WORK, vol)), Service("other", "img", mounts=(WORK,)))
    vp = plan_views(_stack(stack.services[0]), "idmap", ME, {}, allowed=SUBS)
    out = apply_views(stack, vp, "/r")
    assert out.service("editor").mounts == (Mount("bind", f"/r/mounts/1500/{vp.views[0].name}", "/work"), vol)
    assert out.service("other").mounts == (WORK,)


def test_which_users_need_the_image() -> None:
    assert parse_user(None) == (0, 0) and parse_user("1000:100") == (1000, 100)
    assert parse_user("1000") is None and parse_user("node") is None and parse_user("node:staff") is None
    svc = Service("n", "img", mounts=(WORK,), user="node")
    assert needs_user(svc, "remap") and needs_user(svc, "idmap")
    assert not needs_user(Service("n", "img", user="node"), "remap")  # no bind: nothing to view


PASSWD = "root:x:0:0:root:/root:/bin/sh\nnode:x:1000:1000::/home/node:/bin/sh\npostgres:x:101:104::/var/lib/postgresql:/bin/sh\n"
GROUP = "root:x:0:\nstaff:x:50:\nnode:x:1000:\n"


def test_resolve_spec_reads_user_the_way_docker_does() -> None:
    assert resolve_spec("node", PASSWD, GROUP) == (1000, 1000)
    assert resolve_spec("postgres", PASSWD, GROUP) == (101, 104)
    assert resolve_spec("1000", PASSWD, GROUP) == (1000, 1000)  # a uid with an entry: its group
    assert resolve_spec("4242", PASSWD, GROUP) == (4242, 0)  # no entry: group 0
    assert resolve_spec("node:staff", PASSWD, GROUP) == (1000, 50)
    assert resolve_spec("node:7", PASSWD, GROUP) == (1000, 7)
    assert resolve_spec("nobody-here", PASSWD, GROUP) is None
    assert resolve_spec("node:nogroup", PASSWD, GROUP) is None


# --- the helper's rules ---------------------------------------------------------------------------


def test_rules_refuse_names_and_paths_that_could_escape() -> None:
    for bad in ("", "../x", "a/b", ".hidden", "x.json", "a" * 200, 5, None):
        with pytest.raises(rules.Refused):
            rules.check_name(bad)
    assert rules.check_name("app-0123456789abcdef") == "app-0123456789abcdef"
    for bad in ("relative", "/a/../b", "/a/./b", "/a//b", "/a/", "/a\0b", 7):
        with pytest.raises(rules.Refused):
            rules.check_path_text(bad)
    assert rules.check_path_text("/home/mino/app") == "/home/mino/app"


def test_rules_grant_only_root_the_caller_or_its_subordinate_ids_as_writer() -> None:
    me = (1500, 1500)
    subs = [(100000, 65536)]
    for ok in ([0, 0], [1500, 1500], [100999, 100999], [0, 1500], [165535, 100000]):
        assert rules.check_writer(me, ok, subs, subs) == tuple(ok)
    for bad in ([1000, 1000], [0, 1000], [165536, 0], [99999, 0], [-1, 0], ["0", 0], [True, 0], [0], "0:0"):
        with pytest.raises(rules.Refused):
            rules.check_writer(me, bad, subs, subs)
    with pytest.raises(rules.Refused, match="not to the caller"):
        rules.check_owner("/x", 0, 1500)
    with pytest.raises(rules.Refused, match="the limit is 256"):
        rules.check_count(256)


@given(st.lists(st.sampled_from(["a", "b", ".", "..", "", "c.d", "..."]), min_size=1, max_size=6))
def test_no_accepted_path_has_a_dot_component(parts: list[str]) -> None:
    path = "/" + "/".join(parts)
    try:
        rules.check_path_text(path)
    except rules.Refused:
        return
    assert not any(p in ("", ".", "..") for p in path.split("/")[1:])


@given(st.integers(0, 2**32), st.integers(0, 2**32))
def test_a_granted_writer_is_always_one_the_caller_already_controls(uid: int, gid: int) -> None:
    me, subs = (1500, 1500), [(100000, 65536)]
    try:
        w = rules.check_writer(me, [uid, gid], subs, subs)
    except rules.Refused:
        return
    for i in (0, 1):
        assert w[i] in (0, me[i]) or 100000 <= w[i] < 165536


# --- mechanism helpers ------------------------------------------------------------------------------


def test_mountinfo_is_parsed_with_its_escapes_and_idmapped_flag() -> None:
    text = ("63 25 254:0 /tmp/src\\040dir /run/devbox-idmapd/mounts/1500/app-0123 rw,relatime,idmapped shared:1 - ext4 /dev/vda rw\n"
            "64 25 0:5 / /proc rw,nosuid - proc proc rw\n")
    a, b = parse_mountinfo(text)
    assert (a.root, a.target, a.idmapped, a.fstype) == ("/tmp/src dir", "/run/devbox-idmapd/mounts/1500/app-0123", True, "ext4")
    assert not b.idmapped


def test_kernel_versions_and_filesystem_support() -> None:
    assert kernel_version("6.18.44-fc-v595") == (6, 18)
    assert kernel_version("5.4.0-150-generic") == (5, 4)
    assert kernel_version("weird") == (0, 0)
    ok, why = fs_support(str(Path("/proc")), (6, 18))  # procfs: not one devbox knows
    assert ok is None and "only a real write" in why


def test_the_helper_reads_a_callers_ranges_by_name_uid_and_for_gids_primary_group(tmp_path: Path) -> None:
    import grp
    import pwd

    from devbox.idmapd.server import Helper

    me = pwd.getpwuid(0).pw_name
    group = grp.getgrgid(0).gr_name
    (tmp_path / "subuid").write_text(f"{me}:100000:65536\n0:300000:10\nsomeone:400000:65536\n")
    (tmp_path / "subgid").write_text(f"{group}:500000:65536\nsomeone:600000:65536\n")
    helper = Helper(tmp_path / "run", subuid=tmp_path / "subuid", subgid=tmp_path / "subgid", quiet=True)
    uids, gids = helper._subids(0, 0)
    assert uids == [(100000, 65536), (300000, 10)]
    assert gids == [(500000, 65536)]
