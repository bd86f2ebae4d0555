"""Fuzzing the remap's pure core with Hypothesis: subuid/subgid files, allocation, the predicted map, daemon.json.

A few thousand examples per target in the normal run; ``HYPOTHESIS_PROFILE=long``
(tests/conftest.py) runs fifty thousand.  Properties:

* parsing never raises: every line is an entry, a problem, a blank or a comment;
* the plan never raises anything but ConfigError (a file it cannot parse) or
  HostError (no free range), and what it writes puts the user's own line
  first, gives a range that overlaps no account and no other owner's range,
  keeps every other owner's line, and parses back without problems;
* the predicted map is dockerd's algorithm on the same lines (moby
  ``pkg/idtools``: the user's ranges in file order, container ids stacked);
* daemon.json: the key is merged and every other key kept; invalid JSON is
  refused with its line and column and nothing is planned.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from test_remap_plan import KERNEL, PATHS

from devbox.core.idmap import ID_LIMIT, Account, IdRange, parse_subid, predict_map
from devbox.errors import ConfigError, HostError
from devbox.host.observe import DaemonJson, read_daemon_json
from devbox.host.user import User
from devbox.remap.assess import HostState
from devbox.remap.plan import plan_remap

USER = User("mino", 1500, 1500, "mino", "/home/mino")
NAMES = ("mino", "alice", "bob", "ALL", "1500", "mino ", "", "root")
ACCOUNT_IDS = st.lists(st.integers(0, 2_000_000), max_size=12, unique=True)

number = st.one_of(
    st.integers(0, 10), st.integers(0, 2**32 + 5), st.sampled_from([1500, 100000, 65536, 2**32 - 2, 2**32 - 1]),
)
digits = st.one_of(number.map(str), st.sampled_from(["", "-1", "0100000", "0x10", "１２", "1e5", "99999999999999999999999"]))
good_line = st.builds(lambda n, s, c: f"{n}:{s}:{c}", st.sampled_from(NAMES[:5]), st.integers(1, 4_000_000),
                      st.integers(1, 200_000))
any_line = st.one_of(
    good_line,
    st.builds(lambda n, s, c: f"{n}:{s}:{c}", st.sampled_from(NAMES), digits, digits),
    st.sampled_from(["", "# comment", "   ", "mino:1500", "mino:1:2:3", "::", "mino:1500:1 # x", "\x00"]),
    st.text(max_size=40).filter(lambda t: "\n" not in t),
)
subid_text = st.builds(lambda lines, end: "\n".join(lines) + end, st.lists(any_line, max_size=30),
                       st.sampled_from(["\n", "", "\n\n"]))
valid_text = st.builds(lambda lines: "".join(f"{line}\n" for line in lines), st.lists(good_line, max_size=12))



@given(subid_text)
def test_parsing_never_raises_and_accounts_for_every_line(text: str) -> None:
    f = parse_subid(text, "/etc/subuid")
    assert f.render() == text  # a parsed file renders back to exactly what was read
    counted = {e.line for e in f.entries} | {p.line for p in f.problems}
    for number, line in enumerate(f.lines, start=1):
        stripped = line.strip()
        assert number in counted or not stripped or stripped.startswith("#")
    for e in f.entries:
        assert 0 <= e.start and e.count >= 1 and e.start + e.count <= ID_LIMIT


def dockerd_map(text: str, name: str) -> tuple[IdRange, ...]:
    """moby pkg/idtools createIDMap over parseSubidFile's ranges for ``name``, written independently."""
    ranges = []
    for raw in text.split("\n"):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) == 3 and parts[0] == name:
            ranges.append((int(parts[1]), int(parts[2])))
    out, container = [], 0
    for start, length in ranges:
        out.append(IdRange(container, start, length))
        container += length
    return tuple(out)


@given(valid_text)
def test_predicted_map_is_dockerds_algorithm(text: str) -> None:
    f = parse_subid(text, "/etc/subuid")
    if f.problems:
        return  # dockerd 20.10 refuses such a file outright; devbox refuses to rewrite it
    assert predict_map(f.owned_by("mino")) == dockerd_map(text, "mino")


def _state(subuid: str, subgid: str, accounts: list[int], daemon: dict[str, object] | None) -> HostState:
    acc = tuple(Account(f"user{i}", i) for i in accounts) + (Account("mino", 1500), Account("root", 0))
    text = json.dumps(daemon, indent=2) + "\n" if daemon is not None else ""
    return HostState(
        user=USER, subuid=parse_subid(subuid, "/etc/subuid"), subgid=parse_subid(subgid, "/etc/subgid"),
        accounts=acc, groups=acc, login_defs={}, kernel=KERNEL,
        daemon_json=DaemonJson("/etc/docker/daemon.json", daemon is not None, text, daemon or {}),
        daemon_json_error=None, flags=(), engine=None, engine_error="engine not checked", probe=None, probe_error=None,
    )


@given(subid_text, valid_text, ACCOUNT_IDS)
def test_the_plan_never_breaks_a_file_and_never_overlaps(subuid: str, subgid: str, accounts: list[int]) -> None:
    s = _state(subuid, subgid, accounts, {"debug": True})
    try:
        plan = plan_remap(s, PATHS)
    except (ConfigError, HostError) as exc:
        assert exc.one_line()  # a file it cannot parse, or no free range: said in one line
        return
    for change in plan.changes:
        if change.path.name not in ("subuid", "subgid"):
            continue
        before = parse_subid(change.old, str(change.path))
        after = parse_subid(change.new, str(change.path))
        assert before.problems == ()  # devbox plans no edit of a file it cannot parse (ConfigError above)
        assert after.problems == (), after.problems
        mine = after.owned_by("mino")
        assert mine and (mine[0].start, mine[0].count) == (1500, 1)  # the own line first
        others = [e for e in after.entries if e.owner != "mino"]
        assert [e.text() for e in others] == [e.text() for e in before.entries if e.owner != "mino"]  # kept, in order
        for e in mine[1:]:
            if e.text() in {x.text() for x in before.owned_by("mino")}:
                continue  # a range of the user's that was already there and is fine
            assert not any(e.start <= a.id < e.end for a in s.accounts)
            assert not any(e.overlaps(o.start, o.end) for o in others)
            assert e.count >= 65536


json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=8,
)


@given(st.dictionaries(st.text(max_size=12), json_value, max_size=6))
def test_daemon_json_merge_keeps_every_other_key(data: dict[str, object]) -> None:
    s = _state("mino:1500:1\nmino:100000:65536\n", "mino:1500:1\nmino:100000:65536\n", [], data)
    plan = plan_remap(s, PATHS)
    change = next((c for c in plan.changes if c.path == PATHS.daemon_json), None)
    if data.get("userns-remap") == "mino":
        assert change is None
        return
    assert change is not None
    merged = json.loads(change.new)
    assert merged["userns-remap"] == "mino"
    assert {k: v for k, v in merged.items() if k != "userns-remap"} == {k: v for k, v in data.items() if k != "userns-remap"}


@given(st.text(max_size=200))
def test_invalid_daemon_json_is_refused_with_line_and_column(text: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "daemon.json"
        path.write_text(text, encoding="utf-8")
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = ValueError
        try:
            dj = read_daemon_json(path)
        except ConfigError as exc:
            assert parsed is ValueError or not isinstance(parsed, dict)
            assert exc.where is not None and exc.where.startswith(f"{path}:")
            if parsed is ValueError:
                assert "(at line " in exc.message and ", column " in exc.message
            return
        assert isinstance(dj.data, dict)
        assert dj.data == (parsed if text.strip() else {})
