"""The ownership watcher on a real filesystem (no Docker).

We run as root, so a "leak" is made the way a container makes one: a file is
created and ``os.chown``-ed to a subordinate host uid (100004 = container uid
5 under the map ``0->USER, 1..65536->100000..``).  Live tests set a huge
reconcile interval and check that no fallback scan ran, so a pass proves the
*events* caught the change.  Every wait polls with a deadline.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from devbox.core.idmap import IdRange
from devbox.errors import DevboxError
from devbox.watch import watcher as watcher_module
from devbox.watch.busy import BusyTrees
from devbox.watch.degraded import Degraded
from devbox.watch.leaks import (
    Attribution,
    HostUser,
    Kind,
    Leak,
    RecordLog,
    State,
    compact_records,
    fix,
    load_leaks,
    load_records,
    plan_fix,
)
from devbox.watch.scan import Ignore, outermost, scan, scan_leaks
from devbox.watch.source import (
    CHECK,
    GONE,
    OVERFLOW,
    RESCAN,
    WATCHDOG_PIN,
    Coverage,
    InotifySource,
    Put,
    check_watchdog,
    items_for,
    watchdog_version,
)
from devbox.watch.watcher import (
    Change,
    Reporter,
    Tracker,
    Watcher,
)

MAP = (IdRange(0, 1500, 1), IdRange(1, 100000, 65536))
MINO = HostUser("mino", 1500, 1500, frozenset({27}))
ATTR = Attribution(
    user=MINO,
    uid_map=MAP,
    gid_map=MAP,
    services_by_uid={1000: ("runtime",), 5: ("db", "worker")},
    accounts={0: "root", 1500: "mino", 1001: "alice"},
    groups={0: "root", 1500: "mino", 27: "sudo", 1002: "staff"},
    host_ns_services=("legacy",),
)

# Live tests: we are root, so "the user" is root with the same shape of map.
ROOT_MAP = (IdRange(0, 0, 1), IdRange(1, 100000, 65536))
ME = HostUser("root", 0, 0)
LIVE = Attribution(user=ME, uid_map=ROOT_MAP, gid_map=ROOT_MAP, services_by_uid={5: ("db",)}, accounts={0: "root"})
LEAK_UID = 100004  # container uid 5


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeSource:
    """An event source the test drives: it delivers the events the test hands it, and nothing else."""

    def __init__(self, watches: int = 10**9) -> None:
        self.watches = watches
        self.put: Put | None = None
        self.closed = False

    def start(self, roots: object, put: Put) -> None:
        self.put = put

    def close(self) -> None:
        self.closed = True

    def watch_count(self) -> int:
        return self.watches

    def event(self, event_type: str, path: Path, *, is_dir: bool = False) -> None:
        assert self.put is not None
        for item in items_for(event_type, str(path), "", is_dir):
            self.put(item)

    def overflow(self) -> None:
        assert self.put is not None
        self.put((OVERFLOW, "", False))


def leak(path: str, uid: int = 100998, gid: int = 100998, *, is_dir: bool = False) -> Leak:
    return ATTR.classify(path, uid, gid, is_dir=is_dir)


def touch(path: Path, uid: int | None = None, gid: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    if uid is not None:
        os.chown(path, uid, uid if gid is None else gid)
    return path


def wait_until(w: Watcher, cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s; stats={w.stats}")
        w.step(0.05)


def start_live(root: Path, records: Path) -> Watcher:
    """A started watcher over ``root``, events only (no reconcile can rescue a missed event)."""
    changes: list[Change] = []
    lines: list[str] = []
    notices: list[str] = []
    w = Watcher(
        [root],
        LIVE,
        records=RecordLog(records),
        sink=lines.append,
        notice=notices.append,
        on_change=changes.append,
        reconcile_interval=1e9,
        workers=1,
    )
    w.start()
    w.changes, w.lines, w.notices, w.root = changes, lines, notices, root  # type: ignore[attr-defined]
    return w


@pytest.fixture
def live(tmp_path: Path):
    root = tmp_path / "w"
    root.mkdir()
    w = start_live(root, tmp_path / "leaks.jsonl")
    yield w
    w.close()


@pytest.fixture
def burst_root(tmp_path: Path):
    """Where 50,000 files get created: tmpfs when there is one.

    On ext4, creating files soon after many were deleted is ~20x slower (perf:
    ext4's ``recently_deleted`` inode scan; seen here: 50,000 creates took 1.3 s
    or 24 s depending on what earlier runs deleted).  inotify behaves the same
    on tmpfs, so the test's time measures the watcher, not the allocator.
    """
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        root = Path(tempfile.mkdtemp(prefix="devbox-watch-", dir=shm))
        yield root
        shutil.rmtree(root, ignore_errors=True)
    else:
        yield tmp_path / "burst"


# --- classification -------------------------------------------------------------


def test_subordinate_names_container_uid_and_services() -> None:
    lk = ATTR.classify("/p/pgdata", 100004, 100004, is_dir=True)
    assert (lk.kind, lk.container_uid, lk.container_gid, lk.service) == (Kind.SUBORDINATE, 5, 5, "db, worker")
    assert lk.fixable
    assert lk.describe() == "/p/pgdata/: owned by container uid 5 (host uid 100004, service db, worker) — a container user wrote it"


def test_subordinate_without_a_known_service() -> None:
    lk = ATTR.classify("/p/f", 100041, 1500)
    assert (lk.kind, lk.container_uid, lk.service) == (Kind.SUBORDINATE, 42, None)
    assert lk.describe() == "/p/f: owned by container uid 42 (host uid 100041) — a container user wrote it"


def test_root_owned_points_at_remap_or_host_userns_services() -> None:
    lk = ATTR.classify("/p/f", 0, 0)
    assert (lk.kind, lk.container_uid, lk.service, lk.fixable) == (Kind.ROOT, None, "legacy", False)
    assert lk.describe() == "/p/f: owned by root (uid 0, service legacy) — remap off or a userns_mode=host service"


def test_other_real_user_and_unmapped_ids() -> None:
    other = ATTR.classify("/p/f", 1001, 1500)
    assert (other.kind, other.account, other.container_uid) == (Kind.OTHER_USER, "alice", None)
    assert other.describe() == "/p/f: owned by user alice (uid 1001) — another host account"
    nobody = ATTR.classify("/p/f", 700000, 1500)
    assert nobody.kind is Kind.UNMAPPED
    assert nobody.describe() == "/p/f: owned by unmapped uid 700000 — no account or container map has this id"


def test_wrong_group_alone_is_told_by_the_gid() -> None:
    sub = ATTR.classify("/p/f", 1500, 100009)
    assert (sub.kind, sub.by_gid, sub.container_gid, sub.container_uid) == (Kind.SUBORDINATE, True, 10, 0)
    assert sub.describe() == "/p/f: owned by container gid 10 (host gid 100009) — a container user wrote it"
    assert ATTR.classify("/p/f", 1500, 0).describe().startswith("/p/f: owned by root (gid 0")
    assert ATTR.classify("/p/f", 1500, 1002).describe() == "/p/f: owned by group staff (gid 1002) — another host account"


def test_user_owns_own_ids_and_allowlisted_groups_only() -> None:
    assert MINO.owns(1500, 1500) and MINO.owns(1500, 27)
    assert not MINO.owns(1500, 28) and not MINO.owns(100004, 1500)


def test_uid_leak_with_unmapped_gid_is_not_fixable_by_helper() -> None:
    assert not ATTR.classify("/p/f", 100004, 0).fixable


# --- records --------------------------------------------------------------------


def test_records_round_trip_and_latest_state_wins(tmp_path: Path) -> None:
    log = RecordLog(tmp_path / "s" / "leaks.jsonl")
    a, b = leak("/p/a"), ATTR.classify("/p/b", 0, 0)
    log.write(a, at=10.0)
    log.write(b, at=11.0)
    log.write(a, State.FIXED, at=12.0)
    log.close()
    with open(tmp_path / "s" / "leaks.jsonl", "a") as fh:
        fh.write('{"torn": \n')
    recs = load_records(tmp_path / "s" / "leaks.jsonl")
    assert [r["path"] for r in recs] == ["/p/b"]
    r = recs[0]
    for key in ("path", "uid", "gid", "kind", "container_uid", "service", "first_seen"):
        assert key in r
    assert (r["uid"], r["kind"], r["container_uid"], r["service"], r["state"]) == (0, "root", None, "legacy", "leak")
    everything = load_records(tmp_path / "s" / "leaks.jsonl", include_resolved=True)
    assert {x["path"]: x["state"] for x in everything} == {"/p/a": "fixed", "/p/b": "leak"}
    assert load_leaks(tmp_path / "s" / "leaks.jsonl") == [b]
    assert load_records(tmp_path / "s" / "leaks.jsonl", under=["/q"]) == []
    assert compact_records(tmp_path / "s" / "leaks.jsonl") == 1
    assert len((tmp_path / "s" / "leaks.jsonl").read_text().splitlines()) == 1


def test_record_first_seen_is_iso_and_reads_back() -> None:
    lk = ATTR.classify("/p/x", 100004, 100004, now=1700000000.25)
    rec = lk.to_record()
    assert rec["first_seen"] == "2023-11-14T22:13:20.250Z"
    assert json.loads(json.dumps(rec))["service"] == "db, worker"
    assert Leak.from_record(rec) == lk


def test_missing_records_file_reads_as_no_leaks(tmp_path: Path) -> None:
    assert load_records(tmp_path / "none.jsonl") == []


def count_lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def test_records_are_compacted_at_start_and_stay_bounded_on_a_long_run(tmp_path: Path) -> None:
    root = tmp_path / "w"
    root.mkdir()
    records = tmp_path / "state" / "leaks.jsonl"
    old = RecordLog(records)  # what earlier runs left: 500 leaks long fixed, one still there
    for i in range(500):
        lk = LIVE.classify(str(root / f"old{i}"), LEAK_UID, LEAK_UID)
        old.write(lk, at=1.0)
        old.write(lk, State.FIXED, at=2.0)
    stays = touch(root / "stays", LEAK_UID)
    old.write(LIVE.classify(str(stays), LEAK_UID, LEAK_UID), at=3.0)
    old.close()
    assert count_lines(records) == 1001
    clock = FakeClock()
    source = FakeSource()
    w = Watcher([root], LIVE, records=RecordLog(records), clock=clock, reconcile_interval=60, source=source, workers=1)
    with w:
        w.start()
        assert count_lines(records) == 1 and w.stats.compactions == 1
        sizes = []
        for cycle in range(30):  # a busy project: each minute 20 leaks appear and the previous 20 are fixed or removed
            for i in range(20):
                source.event("created", touch(root / f"c{cycle}-{i}", LEAK_UID))
                prev = root / f"c{cycle - 1}-{i}"
                if cycle and i % 2:
                    os.chown(prev, 0, 0)
                    source.event("attrib", prev)
                elif cycle:
                    prev.unlink()
                    source.event("deleted", prev)
            w.step(0)
            clock.t += 60
            w.step(0)  # the reconcile scan, then the compaction
            sizes.append(count_lines(records))
        assert w.stats.leaks_found + w.stats.resolved == 30 * 20 + 29 * 20
        assert w.stats.full_scans == 31
        assert sizes == [21] * 30
        # the append handle was reopened after each compaction: nothing written since went to a replaced file
        expected = {str(stays)} | {str(root / f"c29-{i}") for i in range(20)}
        assert {r["path"] for r in load_records(records)} == expected
        source.event("created", touch(root / "last", LEAK_UID))
        w.step(0)
        assert {r["path"] for r in load_records(records)} == expected | {str(root / "last")}


def test_records_are_compacted_between_scans_when_they_grow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watcher_module, "COMPACT_BETWEEN_SCANS", 50)
    records = tmp_path / "leaks.jsonl"
    root = tmp_path / "w"
    root.mkdir()
    source = FakeSource()
    w = Watcher([root], LIVE, records=RecordLog(records), reconcile_interval=1e9, source=source, workers=1)
    with w:
        w.start()
        most = 0
        f = touch(root / "flapping")
        for _ in range(200):  # leaked and given back, again and again, without a full scan
            os.chown(f, LEAK_UID, LEAK_UID)
            source.event("attrib", f)
            w.step(0)
            os.chown(f, 0, 0)
            source.event("attrib", f)
            w.step(0)
            most = max(most, count_lines(records))
        assert w.stats.leaks_found == w.stats.resolved == 200 and w.stats.full_scans == 1
        assert most <= 50 and w.stats.compactions >= 8


def test_a_record_appended_through_another_handle_survives_compaction(tmp_path: Path) -> None:
    path = tmp_path / "leaks.jsonl"
    watcher_log, fixer_log = RecordLog(path), RecordLog(path)  # e.g. the watcher's and devbox leaks --fix's
    watcher_log.write(leak("/p/x"))
    fixer_log.write(leak("/p/y"))  # its handle is open on the file
    assert watcher_log.compact() == 2
    fixer_log.write(leak("/p/y"), State.FIXED)  # must land in the new file, not in the one compaction replaced
    watcher_log.write(leak("/p/z"))
    states = {r["path"]: r["state"] for r in load_records(path, include_resolved=True)}
    assert states == {"/p/x": "leak", "/p/y": "fixed", "/p/z": "leak"}
    fixer_log.close()
    watcher_log.close()


# --- fix boundary -----------------------------------------------------------------


def test_fix_runs_helper_for_mapped_ids_and_prints_root_command(tmp_path: Path) -> None:
    user = HostUser("root", 0, 0)
    attr = Attribution(user=user, uid_map=ROOT_MAP, gid_map=ROOT_MAP, accounts={0: "root"})
    mapped = touch(tmp_path / "a b", LEAK_UID)
    stubborn = touch(tmp_path / "stubborn", LEAK_UID)
    foreign = touch(tmp_path / "foreign", 700000)
    leaks = [attr.classify(str(p), os.lstat(p).st_uid, os.lstat(p).st_gid) for p in (mapped, stubborn, foreign)]
    leaks.append(attr.classify(str(tmp_path / "vanished"), LEAK_UID, LEAK_UID))
    calls = []

    def helper(pairs):  # stands in for the helper container: container root = the user
        calls.append(list(pairs))
        os.chown(mapped, 0, 0)

    plan = plan_fix(leaks, user)
    assert [lk.path for lk in plan.needs_root] == [str(foreign)]
    result = fix(leaks, user, [str(tmp_path)], helper)
    assert calls == [[(str(tmp_path), str(mapped)), (str(tmp_path), str(stubborn))]]  # the vanished one is not tried
    assert result.fixed == (str(mapped),)
    assert result.failed == (str(stubborn),)
    assert result.vanished == (str(tmp_path / "vanished"),)
    assert result.needs_root == (str(foreign),)
    assert result.root_command == "sudo devbox leaks --fix"  # devbox as root, never a bare `sudo chown PATH`


def test_fix_never_reaches_through_a_link_planted_since(tmp_path: Path) -> None:
    """A recorded leak whose directory a container has since swapped for a link to elsewhere: skipped, untouched."""
    work, outside = tmp_path / "work", tmp_path / "outside"
    (work / "a").mkdir(parents=True)
    outside.mkdir()
    victim = touch(outside / "leak", LEAK_UID)
    user = HostUser("me", 0, 0)
    attr = Attribution(user=user, uid_map=ROOT_MAP, gid_map=ROOT_MAP, accounts={0: "root"})
    recorded = attr.classify(str(work / "a" / "leak"), LEAK_UID, LEAK_UID)  # what the stale records say
    (work / "a").rmdir()
    (work / "a").symlink_to(outside)  # the swap
    tried = []
    for as_root in (True, False):
        result = fix([recorded], user, [str(work)], lambda pairs: tried.append(pairs), as_root=as_root)
        assert result.skipped == ((str(work / "a" / "leak"), f"{work}/a is a symbolic link now"),)
        assert result.fixed == result.failed == ()
    assert tried == []
    assert os.lstat(victim).st_uid == LEAK_UID  # nothing outside changed owner


def test_fix_as_root_chowns_beneath_the_work_dir(tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "d").mkdir(parents=True)
    leak = touch(work / "d" / "f", LEAK_UID)
    link = work / "d" / "l"
    link.symlink_to("/etc/hostname")  # a leaked link: the link itself is given back, never its target
    os.lchown(link, LEAK_UID, LEAK_UID)
    me = HostUser("me", 4242, 4242)
    attr = Attribution(user=me, uid_map=ROOT_MAP, gid_map=ROOT_MAP)
    before = os.stat("/etc/hostname")
    leaks = [attr.classify(str(p), LEAK_UID, LEAK_UID) for p in (leak, link)]
    result = fix(leaks, me, [str(work)], lambda pairs: None, as_root=True)
    assert sorted(result.fixed) == sorted([str(leak), str(link)])
    assert (os.lstat(leak).st_uid, os.lstat(link).st_uid) == (4242, 4242)
    assert os.stat("/etc/hostname").st_uid == before.st_uid


# --- ignore, outermost -----------------------------------------------------------------


def test_ignore_patterns_match_names_and_root_relative_paths() -> None:
    ign = Ignore(["/r"], [".git/objects", "__pycache__", "*.swp"])
    assert ign.entry("/r/.git/objects", "objects")
    assert not ign.entry("/r/x/.git/objects", "objects")
    assert ign.entry("/r/a/__pycache__", "__pycache__")
    assert ign.path("/r/.git/objects/ab/cdef")
    assert ign.path("/r/src/__pycache__/m.pyc")
    assert ign.path("/r/src/.m.swp")
    assert not ign.path("/r/src/m.py")
    assert not ign.path("/elsewhere/__pycachex")


def test_outermost_drops_nested_directories() -> None:
    assert outermost(["/a/b", "/a", "/ab", "/a/b/c", "/c"]) == ["/a", "/ab", "/c"]


# --- tracker ------------------------------------------------------------------------


def test_tracker_reports_once_until_owner_changes_or_fixed() -> None:
    t = Tracker(ATTR)
    first = t.seen("/p/f", 100004, 100004, False, 1.0)
    assert first is not None and first.state is State.LEAK
    assert t.seen("/p/f", 100004, 100004, False, 2.0) is None
    again = t.seen("/p/f", 100999, 100999, False, 3.0)
    assert again is not None and again.leak.container_uid == 1000 and again.leak.service == "runtime"
    fixed = t.seen("/p/f", 1500, 1500, False, 4.0)
    assert fixed is not None and fixed.state is State.FIXED
    assert t.seen("/p/f", 1500, 1500, False, 5.0) is None
    t.seen("/p/d/x", 0, 0, False, 6.0)
    assert t.under("/p/d") == ["/p/d/x"] and t.under("/p/") == ["/p/d/x"]
    gone = t.missing("/p/d/x")
    assert gone is not None and gone.state is State.GONE and t.missing("/p/d/x") is None


# --- reporter (fake clock) -------------------------------------------------------------


def test_isolated_leaks_print_at_once() -> None:
    r = Reporter(["/proj"], burst=3, quiet=0.5)
    assert r.add(leak("/proj/a"), 0.0) == ["a: owned by container uid 999 (host uid 100998) — a container user wrote it"]
    assert r.due() is None and r.tick(100.0) == []
    assert len(r.add(leak("/proj/b"), 10.0)) == 1


def test_burst_becomes_a_summary_after_quiet() -> None:
    r = Reporter(["/proj"], burst=2, quiet=0.5, max_delay=5.0)
    out = []
    t = 0.0
    for i in range(1206):
        out += r.add(leak(f"/proj/node_modules/pkg{i % 7}/f{i}", 100999, 100999), t)
        t += 0.001
    out += r.add(leak("/proj/src/x", 100999, 100999), t)
    assert len(out) == 2  # the first two, at once; the rest held
    assert r.tick(t + 0.1) == []  # still inside the burst
    assert r.due() == pytest.approx(t + 0.5)
    summary = r.tick(t + 0.5)
    assert summary == [
        "1,204 files under node_modules/ owned by container uid 1000 (service runtime)",
        "src/x: owned by container uid 1000 (host uid 100999, service runtime) — a container user wrote it",
    ]
    assert r.reported == 1207
    # The burst is over: the next leak prints at once again.
    assert len(r.add(leak("/proj/y"), t + 2.0)) == 1


def test_long_burst_is_summarised_every_max_delay() -> None:
    r = Reporter(["/proj"], burst=1, quiet=0.5, max_delay=1.0)
    lines: list[str] = []
    t = 0.0
    while t < 2.5:
        lines += r.add(leak(f"/proj/a/f{t:.2f}"), t)
        t += 0.1
    lines += r.tick(t + 1.0)
    assert lines[0].startswith("a/f0.00: owned by")
    summaries = lines[1:]
    assert len(summaries) == 3  # at ~1.0 s, ~2.1 s, and when it went quiet
    counts = [int(s.split(" ")[0].replace(",", "")) for s in summaries]
    assert sum(counts) + 1 == 25 == r.reported


def test_summary_splits_by_area_owner_and_counts_directories() -> None:
    r = Reporter(["/proj"], burst=0, quiet=0.1)
    leaks = [leak(f"/proj/build/o{i}") for i in range(3)]
    leaks += [leak("/proj/build/sub", is_dir=True), leak("/proj/build/sub2", is_dir=True)]
    leaks += [ATTR.classify(f"/proj/data/{i}", 0, 0) for i in range(4)]
    leaks += [ATTR.classify(f"/proj/t{i}", 1001, 1500) for i in range(3)]
    for lk in leaks:
        assert r.add(lk, 0.0) == []
    assert r.tick(1.0) == [
        "3 files and 2 directories under build/ owned by container uid 999",
        "4 files under data/ owned by root (uid 0, service legacy)",
        "3 files under ./ owned by user alice (uid 1001)",
    ]


def test_several_roots_show_absolute_paths() -> None:
    r = Reporter(["/a", "/b"], burst=0, quiet=0.1)
    for i in range(3):
        r.add(leak(f"/b/x/{i}"), 0.0)
    assert r.tick(1.0) == ["3 files under /b/x/ owned by container uid 999"]


# --- scanner --------------------------------------------------------------------------


def make_tree(root: Path, dirs: int = 100, files: int = 5, leak_every: int = 37) -> set[str]:
    """A tree owned by root with a known set of leaked paths (files, dirs, a symlink, a gid-only leak)."""
    expected = set()
    n = 0
    for d in range(dirs):
        sub = root / f"top{d % 10}" / f"d{d}"
        sub.mkdir(parents=True, exist_ok=True)
        for f in range(files):
            p = sub / f"f{f}"
            p.touch()
            n += 1
            if n % leak_every == 0:
                os.chown(p, LEAK_UID, LEAK_UID)
                expected.add(str(p))
    leaked_dir = root / "top3" / "owned-by-db"
    leaked_dir.mkdir()
    os.chown(leaked_dir, LEAK_UID, 0)
    expected.add(str(leaked_dir))
    grp = touch(root / "top4" / "grp", 0, 100009)
    expected.add(str(grp))
    link = root / "top5" / "link"
    link.symlink_to("/etc")  # not followed: /etc is not scanned
    os.lchown(link, LEAK_UID, LEAK_UID)
    expected.add(str(link))
    return expected


@pytest.mark.parametrize("workers", [1, 2])
def test_scan_finds_exactly_the_leaks(tmp_path: Path, workers: int) -> None:
    expected = make_tree(tmp_path)
    result = scan([tmp_path], ME, workers=workers)
    assert {p for p, *_ in result.found} == expected
    assert len(result.found) == len(expected)
    assert result.workers == workers
    assert result.dirs == 1 + 10 + 100 + 1
    assert result.entries == 10 + 100 + 500 + 3
    by_path = {p: (u, g, d) for p, u, g, d in result.found}
    assert by_path[str(tmp_path / "top3" / "owned-by-db")] == (LEAK_UID, 0, True)
    assert by_path[str(tmp_path / "top4" / "grp")] == (0, 100009, False)


def test_scan_prunes_ignored_dirs_and_reports_a_leaked_root(tmp_path: Path) -> None:
    root = tmp_path / "r"
    touch(root / ".git" / "objects" / "ab" / "c", LEAK_UID)
    touch(root / "src" / "__pycache__" / "m.pyc", LEAK_UID)
    kept = touch(root / "src" / "m.py", LEAK_UID)
    os.chown(root, 0, 100001)
    found = scan([root], ME, ignore=[".git/objects", "__pycache__"], workers=1).found
    assert {p for p, *_ in found} == {str(kept), str(root)}


def test_scan_leaks_classifies(tmp_path: Path) -> None:
    touch(tmp_path / "db" / "x", LEAK_UID)
    [lk] = scan_leaks([tmp_path], LIVE, workers=1, now=5.0)
    assert (lk.path, lk.kind, lk.container_uid, lk.service, lk.first_seen) == (
        str(tmp_path / "db" / "x"),
        Kind.SUBORDINATE,
        5,
        "db",
        5.0,
    )


def test_scan_of_missing_root_is_empty(tmp_path: Path) -> None:
    assert scan([tmp_path / "nope"], ME).found == ()


# --- coverage and overflow ---------------------------------------------------------------


def test_coverage_partial_only_beyond_slack() -> None:
    assert not Coverage(1000, 1000, 8192).partial
    assert not Coverage(1000, 995, 8192).partial
    assert Coverage(40000, 8192, 8192).partial
    assert "8,192 of 40,000 directories" in Coverage(40000, 8192, 8192).message()
    assert Coverage(40000, 8192, 8192).hint() == "raise the limit: sudo sysctl fs.inotify.max_user_watches=80000"


def test_short_watch_budget_is_said_and_switches_to_periodic_rescans(tmp_path: Path) -> None:
    for i in range(20):
        (tmp_path / f"d{i}").mkdir()
    notices: list[str] = []
    clock = FakeClock()
    source = FakeSource(watches=3)  # 3 watches for 21 directories: most changes bring no event
    w = Watcher(
        [tmp_path], LIVE, notice=notices.append, clock=clock, reconcile_interval=300, fallback_interval=7,
        source=source, watch_limit=lambda: 3, workers=1,
    )
    with w:
        w.start()
        assert w.degraded
        assert notices == [
            (
                "only 3 of 21 directories have an inotify watch (fs.inotify.max_user_watches = 3): changes in the "
                "others are caught by periodic rescans only — raise the limit: sudo sysctl fs.inotify.max_user_watches=65536"
            )
        ]
        late = str(touch(tmp_path / "d7" / "late", LEAK_UID))  # in an unwatched directory: no event
        w.drain(timeout=2, idle=0.1)
        clock.t += 6.9
        w.step(0)
        assert late not in w.tracker.leaks and w.stats.full_scans == 1
        clock.t += 0.1  # the fallback interval, not the reconcile interval
        w.step(0)
        assert late in w.tracker.leaks and w.stats.full_scans == 2
        # The budget is raised: said, and back to the reconcile interval.
        source.watches = 21
        clock.t += 7
        w.step(0)
        assert not w.degraded and w.stats.full_scans == 3
        assert notices[-1] == "every directory has an inotify watch again: back to live events"
        assert w.timers.next_reconcile == clock.t + 300


def test_overflow_is_said_once_and_rescans_after_the_burst_settles(tmp_path: Path) -> None:
    clock = FakeClock()
    notices: list[str] = []
    source = FakeSource()
    w = Watcher([tmp_path], LIVE, notice=notices.append, clock=clock, reconcile_interval=1e9, settle=0.5,
                source=source, workers=1)
    with w:
        w.start()
        seen = touch(tmp_path / "seen", LEAK_UID)
        source.event("created", seen)
        w.step(0)
        assert str(seen) in w.tracker.leaks and not w.degraded  # events are live
        lost = touch(tmp_path / "lost", LEAK_UID)  # its event is lost in the overflow
        source.overflow()
        w.step(0)
        assert w.stats.overflows == 1 and w.degraded
        assert notices == ["inotify event queue overflowed: events were lost; rescanning now and every 10 s until it stays quiet"]
        assert str(lost) not in w.tracker.leaks  # waits for the burst to settle
        clock.t += 0.3
        source.overflow()  # the same burst: counted, not said again, and the rescan is not pushed back
        w.step(0)
        assert w.stats.overflows == 2 and len(notices) == 1 and str(lost) not in w.tracker.leaks
        clock.t += 0.2
        w.step(0)
        assert str(lost) in w.tracker.leaks
        assert w.stats.full_scans == 2
        # Degraded: rescans every fallback interval until quiet for degraded_hold.
        assert w.timers.next_reconcile == pytest.approx(clock.t + 10)
        clock.t += 59.7
        w.step(0)
        assert w.degraded  # 60 s after the last overflow, not the first
        clock.t += 0.3
        w.step(0)
        assert not w.degraded and notices[-1] == "no queue overflow for a while: back to live events"
        clock.t = w.timers.next_reconcile  # the fallback rescan already planned still runs, then the long interval
        w.step(0)
        assert w.stats.full_scans == 4 and w.timers.next_reconcile == pytest.approx(clock.t + 1e9)


def test_degraded_overflow_episode_with_a_fake_clock() -> None:
    clock = FakeClock(0.0)
    d = Degraded(clock, reconcile_interval=300, fallback_interval=10, hold=60, settle=0.5)
    assert d.scan_due() and not d.degraded  # the first scan is due at once
    d.scanned()
    assert (d.next_reconcile, d.deadline(), d.scan_due()) == (300, 300, False)
    clock.t = 100
    assert d.overflowed() is True  # the first of an episode: the one to say
    assert d.degraded and d.rescan_at == 100.5 and d.deadline() == 100.5
    clock.t = 100.4
    assert d.overflowed() is False  # the same episode
    assert (d.rescan_at, d.overflow_until, d.scan_due()) == (100.5, 160.4, False)
    clock.t = 100.5
    assert d.scan_due()
    d.scanned()
    assert d.rescan_at is None and d.next_reconcile == 110.5  # the fallback interval while degraded
    clock.t = 160.3
    assert not d.quiet() and d.degraded
    clock.t = 160.4
    assert d.quiet() and not d.quiet()  # said once
    assert not d.degraded and d.interval == 300
    clock.t = 170
    assert d.overflowed() is True  # a new episode


def test_degraded_partial_coverage_lasts_as_long_as_the_short_budget() -> None:
    clock = FakeClock(0.0)
    d = Degraded(clock, reconcile_interval=300, fallback_interval=7, hold=60)
    assert d.coverage(False) is None
    assert d.coverage(True) == "partial" and d.coverage(True) is None
    d.scanned()
    assert d.degraded and d.next_reconcile == 7
    clock.t = 7
    d.overflowed()
    clock.t = 67
    assert d.quiet() and d.degraded  # the overflow is over, the short budget is not
    assert d.coverage(False) == "full" and not d.degraded
    d.scanned()
    assert d.next_reconcile == 367


def test_events_become_work_items() -> None:
    assert items_for("attrib", "/r/f", "", False) == [(CHECK, "/r/f", False)]
    assert items_for("created", "/r/f", "", False) == [(CHECK, "/r/f", False)]
    assert items_for("created", "/r/d", "", True) == [(CHECK, "/r/d", True), (RESCAN, "/r/d", True)]
    assert items_for("moved", "/r/a", "/r/b", False) == [(GONE, "/r/a", False), (CHECK, "/r/b", False)]
    assert items_for("moved", "/r/a", "/r/b", True) == [(GONE, "/r/a", True), (CHECK, "/r/b", True), (RESCAN, "/r/b", True)]
    assert items_for("deleted", "/r/d", "", True) == [(GONE, "/r/d", True)]
    for other in ("modified", "opened", "closed", "closed_no_write"):
        assert items_for(other, "/r/f", "", False) == []


# --- the watchdog this code was written against -------------------------------------------


def test_the_watchdog_pin_is_pyprojects_and_the_installed_watchdog_is_inside_it() -> None:
    import importlib.metadata

    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert re.findall(r'"(watchdog\b[^"]*)"', pyproject) == [WATCHDOG_PIN]
    m = re.fullmatch(r"watchdog>=(\d+)\.(\d+),<(\d+)\.(\d+)", WATCHDOG_PIN)
    assert m is not None
    low, high = (int(m[1]), int(m[2])), (int(m[3]), int(m[4]))
    installed = importlib.metadata.version("watchdog")
    assert installed == watchdog_version()
    major, minor = (int(x) for x in installed.split(".")[:2])
    assert low <= (major, minor) < high, f"watchdog {installed} is outside {WATCHDOG_PIN}"
    check_watchdog()  # what a starting watcher checks


@pytest.mark.parametrize("version", ["7.2.0", "7.0.1", "6.0.0", "8.1", "unknown"])
def test_an_unsupported_watchdog_is_refused_in_one_line(version: str) -> None:
    with pytest.raises(DevboxError) as exc:
        check_watchdog(version)
    assert exc.value.one_line() == (
        f"watchdog {version} is installed, but the ownership watcher needs watchdog >=7.1,<7.2 (it relies on that "
        "version's inotify internals) — pip install 'watchdog>=7.1,<7.2'"
    )
    check_watchdog("7.1.9")


def test_a_live_chown_is_delivered_as_an_attrib_event_and_writes_bring_none(tmp_path: Path) -> None:
    f = touch(tmp_path / "f")
    w = Watcher([tmp_path], LIVE, reconcile_interval=1e9, workers=1)
    with w:
        w.start()
        assert isinstance(w.source, InotifySource) and sum(w.source.delivered.values()) == 0
        os.chown(f, LEAK_UID, LEAK_UID)
        wait_until(w, lambda: str(f) in w.tracker.leaks)
        assert dict(w.source.delivered) == {"attrib": 1} and w.stats.full_scans == 1
        with open(f, "ab") as fh:  # no IN_MODIFY in the mask: writes are not events
            for _ in range(200):
                fh.write(b"x" * 4096)
                fh.flush()
        w.drain(idle=0.3)
        assert dict(w.source.delivered) == {"attrib": 1}


MAKE_IN = """
import os, sys
root, n, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    fd = os.open(os.path.join(root, "d%d" % (i % 100), "f%d" % i), os.O_CREAT | os.O_WRONLY, 0o644)
    if i % every == 0:
        os.fchown(fd, 100004, 100004)
    os.close(fd)
"""


def test_real_queue_overflow_is_detected_and_rescan_reports_every_leak(burst_root: Path) -> None:
    burst_root.mkdir(exist_ok=True)
    for i in range(100):
        (burst_root / f"d{i}").mkdir()  # watched before the flood, so every create queues an event
    notices: list[str] = []
    w = Watcher([burst_root], LIVE, notice=notices.append, reconcile_interval=1e9, settle=0.2, workers=1)
    with w:
        w.start()
        n, every = 20_000, 100  # more events than fs.inotify.max_queued_events (16,384 here)
        assert isinstance(w.source, InotifySource)
        logging.disable(logging.CRITICAL)  # the overflow must reach the watcher without watchdog's log line
        try:
            with w.source.paused():  # events pile up in the kernel's queue
                subprocess.run([sys.executable, "-c", MAKE_IN, str(burst_root), str(n), str(every)], check=True, timeout=60)
            expected = {str(burst_root / f"d{i % 100}" / f"f{i}") for i in range(0, n, every)}
            wait_until(w, lambda: set(w.tracker.leaks) == expected, timeout=20)
        finally:
            logging.disable(logging.NOTSET)
        assert w.stats.overflows >= 1
        assert w.stats.full_scans >= 2  # the overflow rescan, not the (disabled) reconcile, found them
        assert notices[0].startswith("inotify event queue overflowed")


MAKE_SPREAD = """
import os, sys
root, ndirs, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    os.close(os.open(os.path.join(root, "d%d" % (i % ndirs), "f%d" % i), os.O_CREAT | os.O_WRONLY, 0o644))
"""


def test_an_overflow_on_more_directories_than_the_queue_holds_is_recovered_from(burst_root: Path) -> None:
    """watchdog 7.1 answers an overflow by removing and re-adding every watch, and each removal queues an
    IN_IGNORED: with more directories than the queue holds, that overflows it again, for ever.  Our watch
    group keeps the watches: one overflow, then live events again."""
    queued = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    ndirs = queued + 1000
    burst_root.mkdir(exist_ok=True)
    for i in range(ndirs):
        (burst_root / f"d{i}").mkdir()
    w = Watcher([burst_root], LIVE, reconcile_interval=1e9, settle=0.2, workers=1)
    with w:
        w.start()
        assert isinstance(w.source, InotifySource)
        with w.source.paused():
            subprocess.run([sys.executable, "-c", MAKE_SPREAD, str(burst_root), str(ndirs), str(queued + 4000)],
                           check=True, timeout=60)
        wait_until(w, lambda: w.stats.overflows >= 1 and w.stats.full_scans >= 2, timeout=30)
        end = time.monotonic() + 3
        while time.monotonic() < end:
            w.step(0.1)
        assert w.stats.overflows == 1
        assert w.source.watch_count() == ndirs + 1
        new = burst_root / "new" / "sub"
        new.mkdir(parents=True)
        f = touch(new / "x", LEAK_UID)
        scans = w.stats.full_scans
        wait_until(w, lambda: str(f) in w.tracker.leaks, timeout=5)
        assert w.stats.full_scans == scans  # found by events, not a rescan


# --- live watcher --------------------------------------------------------------------------


def leak_paths(w: Watcher) -> list[str]:
    return [c.leak.path for c in w.changes if c.state is State.LEAK]  # type: ignore[attr-defined]


def test_chown_of_existing_file_is_flagged(tmp_path: Path) -> None:
    root = tmp_path / "w"
    f = touch(root / "src" / "main.py")
    lines: list[str] = []
    w = Watcher([root], LIVE, sink=lines.append, reconcile_interval=1e9, workers=1)
    with w:
        w.start()
        assert w.tracker.leaks == {}
        t0 = time.monotonic()
        os.chown(f, LEAK_UID, LEAK_UID)
        wait_until(w, lambda: str(f) in w.tracker.leaks)
        assert time.monotonic() - t0 < 2
        assert lines == ["src/main.py: owned by container uid 5 (host uid 100004, service db) — a container user wrote it"]
        assert w.stats.full_scans == 1
        os.chown(f, 0, 0)  # fixed
        wait_until(w, lambda: str(f) not in w.tracker.leaks)


def test_mkdir_touch_chown_in_quick_succession_misses_nothing(live: Watcher) -> None:
    root: Path = live.root  # type: ignore[attr-defined]
    expected = set()
    for i in range(40):
        deep = root / f"n{i}" / "m" / "k"
        deep.mkdir(parents=True)
        f = deep / "f"
        f.touch()
        os.chown(f, LEAK_UID, LEAK_UID)
        expected.add(str(f))
        if i % 2:
            os.chown(deep, LEAK_UID, LEAK_UID)  # a directory chowned before its watch may exist
            expected.add(str(deep))
    wait_until(live, lambda: expected <= set(live.tracker.leaks))
    live.drain(idle=0.3)
    assert set(live.tracker.leaks) == expected
    assert live.stats.full_scans == 1 and live.stats.overflows == 0  # events alone found them


BURST = """
import os, sys
root, uid = sys.argv[1], int(sys.argv[2])
for d in range(250):
    sub = os.path.join(root, "node_modules", "pkg%d" % d)
    os.makedirs(sub)
    for f in range(200):
        fd = os.open(os.path.join(sub, "f%d.js" % f), os.O_CREAT | os.O_WRONLY, 0o644)
        if f % 50 == 7:
            os.fchown(fd, uid, uid)
        os.close(fd)
"""


def test_burst_of_50000_files_with_1000_leaks_reports_each_once(burst_root: Path, tmp_path: Path) -> None:
    burst_root.mkdir(exist_ok=True)
    live = start_live(burst_root, tmp_path / "leaks.jsonl")
    try:
        check_burst(live, burst_root, tmp_path)
    finally:
        live.close()


def check_burst(live: Watcher, root: Path, tmp_path: Path) -> None:
    # Another process writes, as a container would (in-process, the GIL would pace the writer).
    subprocess.run([sys.executable, "-c", BURST, str(root), str(LEAK_UID)], check=True, timeout=60)
    expected = {str(root / "node_modules" / f"pkg{d}" / f"f{f}.js") for d in range(250) for f in range(7, 200, 50)}
    assert len(expected) == 1000
    wait_until(live, lambda: set(live.tracker.leaks) >= expected, timeout=25)
    live.drain(idle=0.5)
    reported = leak_paths(live)
    dupes = [p for p, n in collections.Counter(reported).items() if n > 1]
    assert dupes == []
    assert set(reported) == expected
    for line in live.reporter.flush():
        live.lines.append(line)  # type: ignore[attr-defined]
    lines: list[str] = live.lines  # type: ignore[attr-defined]
    assert len(lines) < 40  # summaries, not a flood
    counted = sum(int(line.split(" ")[0].replace(",", "")) if " files under " in line else 1 for line in lines)
    assert counted == 1000 == live.reporter.reported
    assert any("under node_modules/ owned by container uid 5 (service db)" in line for line in lines)
    recs = load_records(tmp_path / "leaks.jsonl")
    assert len(recs) == 1000 and {r["path"] for r in recs} == expected
    assert len((tmp_path / "leaks.jsonl").read_text().splitlines()) == 1000


def test_moves_into_within_and_out_of_the_tree(live: Watcher, tmp_path: Path) -> None:
    root: Path = live.root  # type: ignore[attr-defined]
    outside = tmp_path / "outside"
    lone = touch(outside / "lone", LEAK_UID)
    touch(outside / "pkg" / "inner" / "deep", LEAK_UID)
    touch(outside / "pkg" / "clean")
    os.rename(lone, root / "lone")
    os.rename(outside / "pkg", root / "pkg")
    want = {str(root / "lone"), str(root / "pkg" / "inner" / "deep")}
    wait_until(live, lambda: set(live.tracker.leaks) == want)

    os.rename(root / "pkg", root / "renamed")  # a directory renamed inside the tree
    want = {str(root / "lone"), str(root / "renamed" / "inner" / "deep")}
    wait_until(live, lambda: set(live.tracker.leaks) == want)

    os.rename(root / "lone", outside / "lone-back")  # moved out
    wait_until(live, lambda: set(live.tracker.leaks) == {str(root / "renamed" / "inner" / "deep")})
    shutil.rmtree(root / "renamed")
    wait_until(live, lambda: live.tracker.leaks == {})
    states = collections.Counter(c.state for c in live.changes)  # type: ignore[attr-defined]
    assert states[State.GONE] == 3 and states[State.LEAK] == 3
    assert live.stats.full_scans == 1


def test_deleted_before_stat_races_do_not_crash(live: Watcher) -> None:
    root: Path = live.root  # type: ignore[attr-defined]
    for i in range(300):
        d = root / f"r{i}"
        d.mkdir()
        f = touch(d / "x", LEAK_UID)
        if i % 3 == 0:
            os.unlink(f)
            d.rmdir()
        elif i % 3 == 1:
            shutil.rmtree(d)
    keep = {str(root / f"r{i}" / "x") for i in range(300) if i % 3 == 2}
    wait_until(live, lambda: set(live.tracker.leaks) == keep)
    live.drain(idle=0.3)
    assert set(live.tracker.leaks) == keep
    # Direct calls on paths that vanished: no exception, nothing tracked.
    live._lstat(str(root / "never"))
    live._rescan(str(root / "never-a-dir"))
    assert set(live.tracker.leaks) == keep


def test_reconcile_scan_finds_leaks_made_with_no_event_source(tmp_path: Path) -> None:
    clock = FakeClock()
    w = Watcher([tmp_path], LIVE, clock=clock, reconcile_interval=60, source=None, workers=1)
    with w:
        w.start()
        hidden = touch(tmp_path / "a" / "hidden", LEAK_UID)
        w.drain(timeout=3, idle=0.2)
        assert w.tracker.leaks == {}
        clock.t += 59
        w.step(0)
        assert w.tracker.leaks == {}
        clock.t += 1
        w.step(0)
        assert list(w.tracker.leaks) == [str(hidden)]
        assert w.stats.coverage is None and not w.degraded  # no source: no watches to count


def test_restart_reconciles_with_the_records_file(tmp_path: Path) -> None:
    root = tmp_path / "w"
    fixed_later = touch(root / "fixed", LEAK_UID)
    stays = touch(root / "stays", LEAK_UID)
    records = tmp_path / "state" / "leaks.jsonl"
    first = Watcher([root], LIVE, records=RecordLog(records), source=None)
    with first:
        first.start()
    assert {r["path"] for r in load_records(records)} == {str(fixed_later), str(stays)}

    os.chown(fixed_later, 0, 0)  # while no watcher ran
    new = touch(root / "new", LEAK_UID)
    lines: list[str] = []
    notices: list[str] = []
    changes: list[Change] = []
    second = Watcher([root], LIVE, records=RecordLog(records), sink=lines.append, notice=notices.append,
                     on_change=changes.append, workers=1)
    with second:
        second.start()
    assert lines == ["new: owned by container uid 5 (host uid 100004, service db) — a container user wrote it"]
    assert notices == ["1 leak recorded earlier still present (devbox leaks lists them)"]
    assert sorted((c.leak.path, c.state.value) for c in changes) == [(str(fixed_later), "fixed"), (str(new), "leak")]
    # the fix was recorded, then compacted away with the rest of the history: the file holds the current leaks
    latest = {r["path"]: r["state"] for r in load_records(records, include_resolved=True)}
    assert latest == {str(stays): "leak", str(new): "leak"}
    assert count_lines(records) == 2


# --- unreadable directories (as an unprivileged user: root reads any directory) ----------------------

OTHER_UID = 4242

UNREADABLE_CHILD = """
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
from devbox.watch.leaks import Attribution, HostUser
from devbox.watch.watcher import Watcher
root = sys.argv[2]
notices = []
w = Watcher([root], Attribution(user=HostUser("me", os.getuid(), os.getgid())), notice=notices.append,
            reconcile_interval=1e9, workers=1)

def wait(cond):
    deadline = time.monotonic() + 10
    while not cond() and time.monotonic() < deadline:
        w.step(0.05)

w.start()
out = {"at_start": list(notices), "leaks_at_start": sorted(w.tracker.leaks)}
os.chmod(os.path.join(root, "mine"), 0o755)  # readable again: what it holds is seen now
wait(lambda: os.path.join(root, "mine", "hidden") in w.tracker.leaks)
out["leaks_after_chmod"] = sorted(w.tracker.leaks)
os.mkdir(os.path.join(root, "later"), 0)  # unreadable from the start, even to its owner
wait(lambda: len(notices) > 1)
out["live"] = notices[1:]
out["unreadable"] = sorted(w.unreadable)
out["full_scans"] = w.stats.full_scans
w.close()
print(json.dumps(out))
"""


def as_uid(uid: int, argv: list[str]) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", *argv]


@pytest.fixture
def unreadable_tree():
    """uid 4242's tree: ``locked/`` is another uid's directory, mode 000; ``mine/`` is 4242's own, mode 000,
    holding a leak.  Under /tmp: tmp_path's parents are root's 0700 directories, which 4242 could not cross."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run as another uid")
    base = Path(tempfile.mkdtemp(prefix="devbox-unreadable-"))
    root = base / "w"
    touch(root / "ok" / "f", OTHER_UID)
    touch(root / "locked" / "secret", LEAK_UID)
    touch(root / "mine" / "hidden", LEAK_UID)
    for d in (base, root, root / "ok", root / "mine"):
        os.chown(d, OTHER_UID, OTHER_UID)
    os.chown(root / "locked", LEAK_UID, LEAK_UID)
    (root / "locked").chmod(0)
    (root / "mine").chmod(0)
    yield root
    shutil.rmtree(base, ignore_errors=True)


def test_unreadable_directories_are_said_at_start_and_live(unreadable_tree: Path) -> None:
    root = unreadable_tree
    package_parent = str(Path(__file__).resolve().parents[1])
    r = subprocess.run(as_uid(OTHER_UID, [sys.executable, "-c", UNREADABLE_CHILD, package_parent, str(root)]),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["at_start"] == ["2 directories cannot be read, so what is inside them is not checked: locked/, mine/"]
    assert out["leaks_at_start"] == [str(root / "locked")]
    assert out["leaks_after_chmod"] == [str(root / "locked"), str(root / "mine" / "hidden")]
    assert out["live"] == ["later/: cannot be read, so what is inside it is not checked"]
    assert out["unreadable"] == [str(root / "later"), str(root / "locked")]
    assert out["full_scans"] == 1  # all of it from events


def test_unreadable_line_names_a_few_and_counts_the_rest() -> None:
    from devbox.watch.leaks import unreadable_line

    paths = [f"/r/d{i}" for i in range(7)]
    assert unreadable_line(paths, lambda p: p[3:]) == (
        "7 directories cannot be read, so what is inside them is not checked: d0/, d1/, d2/, d3/, d4/ and 2 more"
    )


# --- busy trees: node_modules and friends are watched, rescanned whole once they settle ---------------


def test_busy_tree_tops_and_timing() -> None:
    clock = FakeClock()
    busy = BusyTrees(["/w"], ["node_modules", ".git"], clock, settle=1.0, max_delay=5.0)
    assert busy.top("/w/node_modules/a/b/c.js") == "/w/node_modules/a"  # the unit: one package
    assert busy.top("/w/app/node_modules/x/node_modules/y/z") == "/w/app/node_modules/x"  # of the outermost tree
    assert busy.top("/w/node_modules") is None  # the tree itself is an ordinary entry
    assert busy.top("/w/node_modules/a") is None  # and so are its own entries (a package appearing)
    assert busy.top("/w/src/a.py") is None and busy.top("/elsewhere/node_modules/x") is None
    busy.touch("/w/node_modules/a")
    assert busy.due() == clock.t + 1.0 and busy.take_due() == []
    for _ in range(10):  # busy for 10 s without a pause: rescanned every max_delay anyway
        clock.t += 0.5
        busy.touch("/w/node_modules/a")
    assert busy.take_due() == ["/w/node_modules/a"]
    assert busy.due() is None


def test_a_busy_tree_is_rescanned_not_followed_and_a_leak_in_it_is_reported(tmp_path: Path) -> None:
    clock = FakeClock()
    source = FakeSource()
    lines: list[str] = []
    w = Watcher([tmp_path], LIVE, clock=clock, source=source, workers=1, sink=lines.append,
                busy=["node_modules"], busy_settle=1.0, reconcile_interval=1e9)
    with w:
        w.start()
        files = [touch(tmp_path / "node_modules" / f"pkg{i}" / "index.js", LEAK_UID) for i in range(300)]
        for f in files:  # an npm install as container uid 5: 300 files in 300 packages, no lstat per file
            source.event("created", f)
        w.step(0.05)
        assert w.stats.lstats == 0 and w.tracker.leaks == {}
        clock.t += 1.0  # quiet for the settle time: each package rescanned once
        w.step(0)
        assert w.stats.busy_rescans == 300
        assert len(w.tracker.leaks) == 300  # every file (the directories are the user's), none missed
        w.close()
    assert any("under node_modules/ owned by container uid 5" in line for line in lines), lines
    assert len(lines) < 10  # summarised, not 600 lines


def test_outside_busy_trees_events_are_followed_at_once(tmp_path: Path) -> None:
    clock = FakeClock()
    source = FakeSource()
    w = Watcher([tmp_path], LIVE, clock=clock, source=source, workers=1, busy=["node_modules"], reconcile_interval=1e9)
    with w:
        w.start()
        f = touch(tmp_path / "src" / "app.py", LEAK_UID)
        source.event("created", f)
        w.step(0.05)
        assert str(f) in w.tracker.leaks
