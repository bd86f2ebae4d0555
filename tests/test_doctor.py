"""devbox doctor, pure parts: dependency order and skips, rendering, the small readers, and checks on
Contexts built by hand."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from devbox.core.findings import TITLES, Finding
from devbox.core.idmap import IdRange, parse_subid
from devbox.core.model import Mount, Profile, Project, RemapPolicy, Service, WatchSettings
from devbox.doctor import checks
from devbox.doctor.checks.daemon import blocking_parents, count_old_images
from devbox.doctor.checks.engine import check_socket
from devbox.doctor.checks.project import check_by_design, check_inotify, check_leaks, check_project, summarise_leaks
from devbox.doctor.context import Context
from devbox.doctor.render import render_lines, summary_line
from devbox.doctor.runner import Check, Result, run_checks
from devbox.engine.endpoint import docker_context
from devbox.errors import ConfigError, EngineError, EngineErrorKind
from devbox.host.observe import Kernel
from devbox.host.user import User
from devbox.paths import Paths
from devbox.remap.assess import HostState
from devbox.watch.leaks import Attribution, HostUser, Kind, Leak, RecordLog
from devbox.watch.scan import ScanResult


def _check(group: str, fid: str, status: str, needs: tuple[str, ...] = (), calls: list[str] | None = None) -> Check:
    def run(ctx: Any) -> list[Finding]:
        if calls is not None:
            calls.append(fid)
        return [Finding(fid, status, (f"evidence of {fid}",), "do it" if status != "ok" else None)]  # type: ignore[arg-type]

    return Check(group, (fid,), needs, run)


# any five ids of the registry stand for the checks a..e
A, B, C, D, E = "engine.socket", "engine.context", "daemon.live", "daemon.old-images", "daemon.parents"


def test_failed_prerequisite_skips_dependents_transitively_and_says_why() -> None:
    calls: list[str] = []
    checks_ = [
        _check("engine", A, "fail", calls=calls),
        _check("engine", B, "ok", calls=calls),
        _check("daemon", C, "ok", (A,), calls=calls),
        _check("daemon", D, "ok", (C, B), calls=calls),
        _check("daemon", E, "warn", (B,), calls=calls),
    ]
    results = run_checks(checks_, None)
    assert calls == [A, B, E]  # C and D never ran
    by_id = {r.finding.id: r.finding for r in results}
    assert [r.finding.id for r in results] == [A, B, C, D, E]
    assert by_id[C] == Finding(C, "skip", (f"skipped: {A} ({TITLES[A]}) failed",))
    assert by_id[D] == Finding(D, "skip", (f"skipped: {C} ({TITLES[C]}) was skipped",))
    assert by_id[D].title == TITLES[D]
    assert by_id[E].status == "warn"
    assert [r.needs for r in results] == [(), (), (A,), (C, B), (B,)]


def test_a_skipped_check_skips_its_dependents_but_a_warning_does_not() -> None:
    results = run_checks([_check("p", A, "skip"), _check("p", B, "warn"), _check("p", C, "ok", (A, B))], None)
    assert results[2].finding.evidence == (f"skipped: {A} ({TITLES[A]}) was skipped",)
    results = run_checks([_check("p", B, "warn"), _check("p", C, "ok", (B,))], None)
    assert results[1].finding.status == "ok"


def test_every_skipped_id_of_a_multi_finding_check_is_reported() -> None:
    multi = Check("proof", ("probe.file-owner", "probe.process"), (A,), lambda ctx: [])
    results = run_checks([_check("e", A, "fail"), multi], None)
    assert [(r.finding.id, r.finding.status, r.finding.title) for r in results[1:]] == [
        ("probe.file-owner", "skip", "a file created in the container is yours"),
        ("probe.process", "skip", "the container's process runs as you on the host"),
    ]


def test_prerequisite_listed_after_its_dependent_is_a_programming_error() -> None:
    with pytest.raises(ValueError) as info:
        run_checks([_check("d", C, "ok", (A,)), _check("e", A, "ok")], None)
    assert str(info.value) == f"check {C} needs {A}, which no earlier check reports"


def test_devbox_error_inside_a_check_becomes_a_failure_of_its_ids() -> None:
    def boom(ctx: Any) -> list[Finding]:
        raise EngineError("Docker engine error: gone", hint="check `docker info`")

    results = run_checks([Check("engine", ("engine.kind",), (), boom)], None)
    assert results[0].finding == Finding("engine.kind", "fail", ("Docker engine error: gone — check `docker info`",))


def test_shipped_checks_are_in_dependency_order_with_unique_ids() -> None:
    produced: set[str] = set()
    for check in checks.CHECKS:
        assert set(check.needs) <= produced, check.ids
        assert check.group in checks.GROUPS
        produced |= set(check.ids)
    ids = [i for c in checks.CHECKS for i in c.ids]
    assert len(ids) == len(set(ids))
    # every id has its title in the registry, and the report follows the registry's order
    assert [i for i in TITLES if i in produced] == ids
    groups = [c.group for c in checks.CHECKS]
    assert sorted(set(groups), key=groups.index) == list(checks.GROUPS)


KIND = "the engine, and how it makes your files yours (the ownership strategy)"
RESULTS = [
    Result("engine", Finding("engine.socket", "ok", ("DOCKER_HOST is not set",))),
    Result("engine", Finding("engine.kind", "warn", ("rootless Docker",), None)),
    Result("daemon", Finding("daemon.json", "fail", ("/x has no key", "second"), "sudo devbox remap --apply")),
    Result("daemon", Finding("daemon.old-images", "skip", ("skipped: engine.socket (E) failed", "more")), ("engine.socket",)),
]


def test_render_shows_details_and_fixes_only_where_something_is_wrong() -> None:
    assert render_lines(RESULTS, verbose=False) == [
        ("group", "", "engine", "bold"),
        ("check", "ok", "Docker engine reachable  [engine.socket]", ""),
        ("check", "warn", f"{KIND}  [engine.kind]", ""),
        ("detail", "", "rootless Docker", "dim"),
        ("group", "", "daemon", "bold"),
        ("check", "fail", "daemon.json sets userns-remap  [daemon.json]", ""),
        ("detail", "", "/x has no key", "dim"),
        ("detail", "", "second", "dim"),
        ("fix", "", "fix: sudo devbox remap --apply", "cyan"),
        ("check", "skip", "images from before the remap  [daemon.old-images]", ""),
        ("detail", "", "skipped: engine.socket (E) failed", "dim"),
    ]


def test_verbose_shows_evidence_for_every_check() -> None:
    rows = render_lines(RESULTS, verbose=True)
    assert ("detail", "", "DOCKER_HOST is not set", "dim") in rows
    assert ("detail", "", "more", "dim") in rows
    assert summary_line(RESULTS) == "1 failed, 1 warning(s), 1 ok, 1 skipped"


def test_json_rows_carry_group_and_needs() -> None:
    assert RESULTS[3].to_json() == {
        "id": "daemon.old-images", "status": "skip", "title": "images from before the remap", "group": "daemon",
        "evidence": ["skipped: engine.socket (E) failed", "more"], "fix": None, "needs": ["engine.socket"],
    }


def _res(fid: str, status: str) -> Result:
    return Result("g", Finding(fid, status))  # type: ignore[arg-type]


def test_fix_applies_to_remap_failures_and_a_stopped_daemon_only() -> None:
    assert checks.fixable([_res("subuid.own-line", "fail")], None)
    assert checks.fixable([_res("probe.file-owner", "fail")], None)
    assert not checks.fixable([_res("subuid.own-line", "fail"), _res("kernel.userns", "fail")], None)
    assert not checks.fixable([_res("subuid.map-lines", "warn"), _res("project.leaks", "fail")], None)
    assert not checks.fixable([_res("subuid.map-lines", "fail")], None)
    down = EngineError("no Docker daemon socket at /run/x.sock", kind=EngineErrorKind.UNREACHABLE)
    assert checks.fixable([_res("engine.socket", "fail")], down)
    denied = EngineError("permission denied on /run/x.sock", kind=EngineErrorKind.PERMISSION)
    assert not checks.fixable([_res("engine.socket", "fail")], denied)


def test_fixable_follows_the_error_kind_not_its_words() -> None:
    socket = [_res("engine.socket", "fail")]
    # a stopped daemon, however the message reads: the restart command starts it
    assert checks.fixable(socket, EngineError("the daemon went away", kind=EngineErrorKind.UNREACHABLE))
    # "refused" in the words of an error a restart cannot help
    assert not checks.fixable(socket, EngineError("access refused on /run/x.sock", kind=EngineErrorKind.PERMISSION))
    assert not checks.fixable(socket, EngineError("connection refused by tcp://h:2375", kind=EngineErrorKind.REMOTE))
    assert not checks.fixable(socket, EngineError("no Docker daemon socket (it says)", kind=EngineErrorKind.TIMEOUT))


def test_blocking_parents_uses_dockerds_owner_group_other_rule(tmp_path: Path) -> None:
    a = tmp_path / "a"
    b = a / "b"
    root = b / "data"
    root.mkdir(parents=True)
    tmp_path.chmod(0o755)
    a.chmod(0o700)
    b.chmod(0o750)
    os.chown(b, 0, 1500)  # group x for gid 1500 lets it through
    os.chown(a, 0, 0)
    got = blocking_parents(root, 1500, 1500)
    assert [d for d, _ in got if d.startswith(str(tmp_path))] == [str(a)]
    assert dict(got)[str(a)] == "drwx------ root:root"
    os.chown(a, 1500, 0)
    assert [d for d, _ in blocking_parents(root, 1500, 1500) if d.startswith(str(tmp_path))] == []


def test_count_old_images_reads_repositories_and_imagedb(tmp_path: Path) -> None:
    drv = tmp_path / "image" / "overlay2"
    content = drv / "imagedb" / "content" / "sha256"
    content.mkdir(parents=True)
    for n in ("a" * 64, "b" * 64):
        (content / n).write_text("{}")
    (drv / "repositories.json").write_text(json.dumps({"Repositories": {
        "debian": {"debian:bookworm-slim": "sha256:" + "a" * 64, "debian@sha256:" + "c" * 64: "sha256:" + "a" * 64},
        "devbox/probe": {"devbox/probe:0123": "sha256:" + "b" * 64},
    }}))
    (tmp_path / "containers" / ("d" * 64)).mkdir(parents=True)
    ev, images, containers = count_old_images(tmp_path)
    assert (images, containers) == (2, 1)
    assert ev == [
        f"{drv}/repositories.json: 2 image(s), 2 tag(s): debian:bookworm-slim, devbox/probe:0123",
        f"{tmp_path}/containers: 1 container(s)",
    ]
    assert count_old_images(tmp_path / "none") == ([], 0, 0)


def test_docker_context_endpoint(tmp_path: Path) -> None:
    import hashlib

    assert docker_context(tmp_path) == (None, None)
    (tmp_path / "config.json").write_text(json.dumps({"currentContext": "default"}))
    assert docker_context(tmp_path) == (None, None)
    (tmp_path / "config.json").write_text(json.dumps({"currentContext": "rootless"}))
    assert docker_context(tmp_path) == ("rootless", None)
    meta = tmp_path / "contexts" / "meta" / hashlib.sha256(b"rootless").hexdigest()
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(json.dumps({"Endpoints": {"docker": {"Host": "unix:///run/user/1500/docker.sock"}}}))
    assert docker_context(tmp_path) == ("rootless", "unix:///run/user/1500/docker.sock")


def _leak(path: str, uid: int, kind: Kind, cuid: int | None, services: tuple[str, ...] = ()) -> Leak:
    return Leak(path, uid, uid, kind, cuid, cuid, services)


def test_leak_summary_by_owner_and_service() -> None:
    leaks = [
        _leak("/p/a", 0, Kind.ROOT, None),
        _leak("/p/n/1", 101000, Kind.SUBORDINATE, 1000, ("runtime",)),
        _leak("/p/n/2", 101000, Kind.SUBORDINATE, 1000, ("runtime",)),
        _leak("/p/n/3", 101000, Kind.SUBORDINATE, 1000, ("runtime",)),
        _leak("/p/n/4", 101000, Kind.SUBORDINATE, 1000, ("runtime",)),
    ]
    assert summarise_leaks(leaks, ["/p"]) == [
        "4 path(s) owned by container uid 1000 (host uid 101000, service runtime): n/1, n/2, n/3, … (1 more)",
        "1 path(s) owned by root (uid 0): a",
    ]


USER = User("mino", 1500, 1500, "mino", "/home/mino")
SUBID = "mino:1500:1\nmino:100000:65536\n"
WORK = Mount("bind", "/p", "/work")


def _context(tmp_path: Path | None = None, *, project: Project | ConfigError | None = None, cwd: str = "/p",
             environ: dict[str, str] | None = None, engine_error: EngineError | None = None) -> Context:
    """A Context built by hand: the host state of ``mino`` (uid 1500) with SUBID, no engine unless told."""
    state = HostState(
        user=USER, subuid=parse_subid(SUBID, "/etc/subuid"), subgid=parse_subid(SUBID, "/etc/subgid"),
        accounts=(), groups=(), login_defs={}, kernel=Kernel("6.1.0", True, "y", "/boot/config-6.1.0", 15000, None),
        daemon_json=None, daemon_json_error=None, flags=(), engine=None, engine_error=None, probe=None, probe_error=None,
    )
    base = tmp_path or Path("/nonexistent/doctor-test")
    paths = Paths(user_state=base / "state", proc=base / "proc")
    ctx = Context(paths=paths, state=state, engine_error=engine_error, client=None, cwd=Path(cwd),
                  environ=environ or {})
    ctx.project_or_error = project  # the lazy attributes may be set by hand
    return ctx


def _project(*services: Service, workdirs: tuple[Mount, ...] = (WORK,)) -> Project:
    profile = Profile("python", Path("/x/python.toml"), "", None, services)
    return Project("demo", Path("/p"), Path("/p/devbox.toml"), "python", RemapPolicy.REQUIRE, WatchSettings(),
                   workdirs, {"python": profile})


def _by_design_ctx(*services: Service) -> Context:
    return _context(project=_project(*services))


def test_service_user_in_the_subordinate_range_writing_a_bind_mount_fails() -> None:
    ctx = _by_design_ctx(
        Service("editor", "img", mounts=(WORK,)),
        Service("runtime", "img", mounts=(WORK,), user="1000"),
        Service("db", "img", user="999"),  # no bind mount: its files stay in a volume
        Service("ro", "img", mounts=(Mount("bind", "/p", "/src", read_only=True),), user="1000"),
        Service("asroot", "img", mounts=(WORK,), user="0:0"),
        Service("byname", "img", mounts=(WORK,), user="root"),
    )
    [f] = check_by_design(ctx)
    assert f == Finding(
        "project.by-design", "fail",
        ('profile python: services.runtime: user = "1000" writes to /p → /work: container uid 1000 is host uid 100999, '
         "in mino's subordinate range, and no idmap helper answers to give it a view",),
        "sudo devbox idmap --install (up then gives it an idmapped view that stores its files as you), or remove "
        'user = "1000" from [services.runtime] in /p/devbox.toml: with the remap, container root is already you (uid 1500)',
    )
    assert f.title == "no service is set up to write files you will not own"


def test_a_non_root_service_under_remap_is_fine_when_the_idmap_helper_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket
    import threading

    monkeypatch.setenv("DEVBOX_IDMAP_RUN", str(tmp_path))
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "idmapd.sock"))
    server.listen(1)

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b'{"ok": true, "version": 1}\n')

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    ctx = _by_design_ctx(Service("editor", "img", mounts=(WORK,)), Service("runtime", "img", mounts=(WORK,), user="1000"))
    [f] = check_by_design(ctx)
    t.join(5)
    server.close()
    assert f.status == "ok", f
    assert f.evidence[1] == ('profile python: services.runtime: user = "1000" writes to /p → /work through its own '
                             "idmapped view (stored as mino)")


def test_named_user_and_host_userns_are_reported() -> None:
    ctx = _by_design_ctx(
        Service("node", "img", mounts=(WORK,), user="node"),
        Service("tool", "img", mounts=(WORK,), userns_mode="host", userns_reason="needs host PID"),
    )
    [f] = check_by_design(ctx)
    assert f.status == "fail"
    assert f.evidence == (
        'profile python: services.node: user = "node" writes to /p → /work: user "node" is resolved inside the image; '
        "any uid but 0 maps into mino's subordinate range, and no idmap helper answers to give it a view",
        'profile python: services.tool: userns_mode = "host" (needs host PID): its root is the host\'s root, '
        "so what it writes to /p → /work is owned by root",
    )
    [f] = check_by_design(_by_design_ctx(Service("tool", "img", mounts=(WORK,), userns_mode="host", userns_reason="r")))
    assert f.status == "warn"
    [f] = check_by_design(_by_design_ctx(Service("editor", "img", mounts=(WORK,))))
    assert f == Finding("project.by-design", "ok",
                        ("checked profile(s) python: every service writing to a bind mount runs as container root",))


def test_project_config_error_is_one_failure_with_its_hint() -> None:
    err = ConfigError("unknown profile 'pyhton'", where="/p/devbox.toml:1", hint="did you mean 'python'?")
    ctx = _context(project=err)
    assert check_project(ctx) == [Finding(
        "project.config", "fail",
        ("/p/devbox.toml:1: unknown profile 'pyhton' — did you mean 'python'?",), "did you mean 'python'?",
    )]
    ctx = _context(project=None, cwd="/q")
    assert check_project(ctx)[0].evidence == ("no devbox.toml in /q or any parent directory",)


def test_socket_fix_follows_the_error_kind() -> None:
    env = {"DOCKER_HOST": "unix:///nonexistent/doctor.sock"}
    down = EngineError("no Docker daemon socket at /nonexistent/doctor.sock", kind=EngineErrorKind.UNREACHABLE)
    [f] = check_socket(_context(environ=env, engine_error=down))
    assert f == Finding("engine.socket", "fail", (
        "DOCKER_HOST=unix:///nonexistent/doctor.sock (from the environment)",
        "/nonexistent/doctor.sock does not exist",
        "no Docker daemon socket at /nonexistent/doctor.sock",
    ), "start the engine (sudo systemctl start docker), or set DOCKER_HOST to the engine you use")
    denied = EngineError("the words do not matter", kind=EngineErrorKind.PERMISSION)
    [f] = check_socket(_context(environ=env, engine_error=denied))
    assert f.fix is not None and f.fix.startswith("sudo usermod -aG docker ")
    assert f.fix.endswith("; or run devbox with sudo")
    other = EngineError("Docker engine error: boom", kind=EngineErrorKind.SERVER, hint="look at dockerd's log")
    assert check_socket(_context(environ=env, engine_error=other))[0].fix == "look at dockerd's log"


# --- project.leaks and project.inotify on a hand-built scan ---------------------------------------

MAPS = (IdRange(0, 1500, 1), IdRange(1, 100000, 65536))


def _leaks_ctx(tmp_path: Path, found: tuple[tuple[str, int, int, bool], ...] = (),
               unreadable: tuple[str, ...] = (), dirs: int = 3) -> Context:
    """The work dir is ``tmp_path/work``; the scan's result is given."""
    work = str(tmp_path / "work")
    ctx = _context(tmp_path, project=_project(Service("editor", "img"), workdirs=(Mount("bind", work, "/work"),)))
    ctx.attribution = Attribution(user=HostUser("mino", 1500, 1500), uid_map=MAPS, gid_map=MAPS)
    ctx.scan = ScanResult(found=found, dirs=dirs, entries=10, unreadable=unreadable, seconds=0.0, workers=1)
    return ctx


def test_no_leaks_and_everything_read_is_ok(tmp_path: Path) -> None:
    work = str(tmp_path / "work")
    ctx = _leaks_ctx(tmp_path)
    assert check_leaks(ctx) == [Finding("project.leaks", "ok", (f"no leaked files from a scan of 3 directories under {work}",))]


def test_unreadable_directories_are_reported_not_passed_over(tmp_path: Path) -> None:
    work = str(tmp_path / "work")
    ctx = _leaks_ctx(tmp_path, unreadable=(f"{work}/closed",))
    assert check_leaks(ctx) == [Finding("project.leaks", "warn", (
        f"no leaked files from a scan of 3 directories under {work} in what could be read",
        "closed/: cannot be read, so what is inside it is not checked",
    ), f"chmod u+rx -- {work}/closed  (then run devbox doctor again)")]


def test_unreadable_directories_beside_leaks(tmp_path: Path) -> None:
    work = str(tmp_path / "work")
    # n/ was made 0700 by container uid 1000: a leak, and unreadable for that reason; mine/ is yours, mode 000
    ctx = _leaks_ctx(tmp_path, found=((f"{work}/n", 100999, 100999, True),),
                           unreadable=(f"{work}/n", f"{work}/mine"))
    [f] = check_leaks(ctx)
    assert f == Finding("project.leaks", "fail", (
        f"1 leaked path(s) from a scan of 3 directories under {work}",
        "1 path(s) owned by container uid 1000 (host uid 100999): n/",
        "2 directories cannot be read, so what is inside them is not checked: mine/, n/",
    ), "devbox leaks --fix  (a helper container chowns the 1 mapped path(s) back to you, no sudo); "
       f"then chmod u+rx -- {work}/mine")


def test_unreadable_directories_are_reported_with_the_watchers_records(tmp_path: Path) -> None:
    work = str(tmp_path / "work")
    ctx = _leaks_ctx(tmp_path, unreadable=(f"{work}/n",))
    log = RecordLog(ctx.records_path)
    log.write(Leak(f"{work}/n", 101000, 101000, Kind.SUBORDINATE, 1000, 1000, ("runtime",), is_dir=True))
    log.close()
    [f] = check_leaks(ctx)
    assert f.status == "fail"
    assert f.evidence == (
        f"1 leaked path(s) from the watcher's records ({ctx.records_path})",
        "1 path(s) owned by container uid 1000 (host uid 101000, service runtime): n/",
        "n/: cannot be read, so what is inside it is not checked",
    )
    assert f.fix == "devbox leaks --fix  (a helper container chowns the 1 mapped path(s) back to you, no sudo)"


def test_inotify_says_what_it_could_not_count(tmp_path: Path) -> None:
    limit = tmp_path / "proc" / "sys" / "fs" / "inotify" / "max_user_watches"
    limit.parent.mkdir(parents=True)
    limit.write_text("8192\n")
    work = str(tmp_path / "work")
    ctx = _leaks_ctx(tmp_path)
    [f] = check_inotify(ctx)
    assert f == Finding("project.inotify", "ok", (
        f"3 directories to watch under {work} (ignoring nothing)",
        "fs.inotify.max_user_watches = 8,192",
    ))
    ctx = _leaks_ctx(tmp_path, unreadable=(f"{work}/a", f"{work}/b"), dirs=8000)
    [f] = check_inotify(ctx)
    assert f.status == "warn"
    assert f.evidence[2] == "not counted: what 2 unreadable directories hold (see project.leaks)"
