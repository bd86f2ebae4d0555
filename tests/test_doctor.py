"""devbox doctor, pure parts: dependency order and skips, rendering, and the small readers."""

from __future__ import annotations

import json
import os
import types
from pathlib import Path
from typing import Any

import pytest

from devbox import doctor
from devbox.core.findings import Finding
from devbox.core.idmap import IdRange
from devbox.core.model import Mount, Profile, Service
from devbox.doctor import Check, Result, run_checks
from devbox.errors import ConfigError, EngineError
from devbox.watch.leaks import Kind, Leak


def _check(group: str, fid: str, status: str, needs: tuple[str, ...] = (), calls: list[str] | None = None) -> Check:
    def run(ctx: Any) -> list[Finding]:
        if calls is not None:
            calls.append(fid)
        return [Finding(fid, status, f"title of {fid}", (f"evidence of {fid}",), "do it" if status != "ok" else None)]  # type: ignore[arg-type]

    return Check(group, ((fid, f"title of {fid}"),), needs, run)


def test_failed_prerequisite_skips_dependents_transitively_and_says_why() -> None:
    calls: list[str] = []
    checks = [
        _check("engine", "a", "fail", calls=calls),
        _check("engine", "b", "ok", calls=calls),
        _check("daemon", "c", "ok", ("a",), calls=calls),
        _check("daemon", "d", "ok", ("c", "b"), calls=calls),
        _check("daemon", "e", "warn", ("b",), calls=calls),
    ]
    results = run_checks(checks, None)
    assert calls == ["a", "b", "e"]  # c and d never ran
    by_id = {r.finding.id: r.finding for r in results}
    assert [r.finding.id for r in results] == ["a", "b", "c", "d", "e"]
    assert by_id["c"] == Finding("c", "skip", "title of c", ("skipped: a (title of a) failed",))
    assert by_id["d"] == Finding("d", "skip", "title of d", ("skipped: c (title of c) was skipped",))
    assert by_id["e"].status == "warn"
    assert [r.needs for r in results] == [(), (), ("a",), ("c", "b"), ("b",)]


def test_a_skipped_check_skips_its_dependents_but_a_warning_does_not() -> None:
    results = run_checks([_check("p", "x", "skip"), _check("p", "y", "warn"), _check("p", "z", "ok", ("x", "y"))], None)
    assert results[2].finding.evidence == ("skipped: x (title of x) was skipped",)
    results = run_checks([_check("p", "y", "warn"), _check("p", "z", "ok", ("y",))], None)
    assert results[1].finding.status == "ok"


def test_every_skipped_id_of_a_multi_finding_check_is_reported() -> None:
    multi = Check("proof", (("p1", "one"), ("p2", "two")), ("a",), lambda ctx: [])
    results = run_checks([_check("e", "a", "fail"), multi], None)
    assert [(r.finding.id, r.finding.status, r.finding.title) for r in results[1:]] == [("p1", "skip", "one"), ("p2", "skip", "two")]


def test_prerequisite_listed_after_its_dependent_is_a_programming_error() -> None:
    with pytest.raises(ValueError) as info:
        run_checks([_check("d", "c", "ok", ("a",)), _check("e", "a", "ok")], None)
    assert str(info.value) == "check c needs a, which no earlier check reports"


def test_devbox_error_inside_a_check_becomes_a_failure_of_its_ids() -> None:
    def boom(ctx: Any) -> list[Finding]:
        raise EngineError("Docker engine error: gone", hint="check `docker info`")

    results = run_checks([Check("engine", (("k", "kind"),), (), boom)], None)
    assert results[0].finding == Finding("k", "fail", "kind", ("Docker engine error: gone — check `docker info`",))


def test_shipped_checks_are_in_dependency_order_with_unique_ids() -> None:
    produced: set[str] = set()
    for check in doctor.CHECKS:
        assert set(check.needs) <= produced, check.ids
        assert check.group in doctor.GROUPS
        produced |= {i for i, _ in check.ids}
    ids = [i for c in doctor.CHECKS for i, _ in c.ids]
    assert len(ids) == len(set(ids))
    groups = [c.group for c in doctor.CHECKS]
    assert sorted(set(groups), key=groups.index) == list(doctor.GROUPS)


RESULTS = [
    Result("engine", Finding("engine.socket", "ok", "Docker engine reachable", ("DOCKER_HOST is not set",))),
    Result("engine", Finding("engine.kind", "warn", "rootful", ("rootless Docker",), None)),
    Result("daemon", Finding("daemon.json", "fail", "daemon.json sets userns-remap", ("/x has no key", "second"), "sudo devbox remap --apply")),
    Result("daemon", Finding("daemon.old-images", "skip", "images", ("skipped: engine.socket (E) failed", "more")), ("engine.socket",)),
]


def test_render_shows_details_and_fixes_only_where_something_is_wrong() -> None:
    assert doctor.render_lines(RESULTS, verbose=False) == [
        ("group", "", "engine", "bold"),
        ("check", "ok", "Docker engine reachable  [engine.socket]", ""),
        ("check", "warn", "rootful  [engine.kind]", ""),
        ("detail", "", "rootless Docker", "dim"),
        ("group", "", "daemon", "bold"),
        ("check", "fail", "daemon.json sets userns-remap  [daemon.json]", ""),
        ("detail", "", "/x has no key", "dim"),
        ("detail", "", "second", "dim"),
        ("fix", "", "fix: sudo devbox remap --apply", "cyan"),
        ("check", "skip", "images  [daemon.old-images]", ""),
        ("detail", "", "skipped: engine.socket (E) failed", "dim"),
    ]


def test_verbose_shows_evidence_for_every_check() -> None:
    rows = doctor.render_lines(RESULTS, verbose=True)
    assert ("detail", "", "DOCKER_HOST is not set", "dim") in rows
    assert ("detail", "", "more", "dim") in rows
    assert doctor.summary_line(RESULTS) == "1 failed, 1 warning(s), 1 ok, 1 skipped"


def test_json_rows_carry_group_and_needs() -> None:
    assert RESULTS[3].to_json() == {
        "id": "daemon.old-images", "status": "skip", "title": "images", "group": "daemon",
        "evidence": ["skipped: engine.socket (E) failed", "more"], "fix": None, "needs": ["engine.socket"],
    }


def _res(fid: str, status: str) -> Result:
    return Result("g", Finding(fid, status, fid))  # type: ignore[arg-type]


def test_fix_applies_to_remap_failures_and_a_stopped_daemon_only() -> None:
    assert doctor.fixable([_res("subuid.own-line", "fail")], None)
    assert doctor.fixable([_res("probe.file-owner", "fail")], None)
    assert not doctor.fixable([_res("subuid.own-line", "fail"), _res("kernel.userns", "fail")], None)
    assert not doctor.fixable([_res("subuid.map-lines", "warn"), _res("project.leaks", "fail")], None)
    assert not doctor.fixable([_res("subuid.map-lines", "fail")], None)
    down = EngineError("no Docker daemon socket at /run/x.sock")
    assert doctor.fixable([_res("engine.socket", "fail")], down)
    denied = EngineError("permission denied on /run/x.sock")
    assert not doctor.fixable([_res("engine.socket", "fail")], denied)


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
    got = doctor.blocking_parents(root, 1500, 1500)
    assert [d for d, _ in got if d.startswith(str(tmp_path))] == [str(a)]
    assert dict(got)[str(a)] == "drwx------ root:root"
    os.chown(a, 1500, 0)
    assert [d for d, _ in doctor.blocking_parents(root, 1500, 1500) if d.startswith(str(tmp_path))] == []


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
    ev, images, containers = doctor.count_old_images(tmp_path)
    assert (images, containers) == (2, 1)
    assert ev == [
        f"{drv}/repositories.json: 2 image(s), 2 tag(s): debian:bookworm-slim, devbox/probe:0123",
        f"{tmp_path}/containers: 1 container(s)",
    ]
    assert doctor.count_old_images(tmp_path / "none") == ([], 0, 0)


def test_docker_context_endpoint(tmp_path: Path) -> None:
    import hashlib

    assert doctor.docker_context(tmp_path) == (None, None)
    (tmp_path / "config.json").write_text(json.dumps({"currentContext": "default"}))
    assert doctor.docker_context(tmp_path) == (None, None)
    (tmp_path / "config.json").write_text(json.dumps({"currentContext": "rootless"}))
    assert doctor.docker_context(tmp_path) == ("rootless", None)
    meta = tmp_path / "contexts" / "meta" / hashlib.sha256(b"rootless").hexdigest()
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(json.dumps({"Endpoints": {"docker": {"Host": "unix:///run/user/1500/docker.sock"}}}))
    assert doctor.docker_context(tmp_path) == ("rootless", "unix:///run/user/1500/docker.sock")


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
    assert doctor.summarise_leaks(leaks, ["/p"]) == [
        "4 path(s) owned by container uid 1000 (host uid 101000, service runtime): n/1, n/2, n/3, … (1 more)",
        "1 path(s) owned by root (uid 0): a",
    ]


def _by_design_ctx(*services: Service) -> Any:
    profile = Profile("python", Path("/x/python.toml"), "", None, services)
    project = types.SimpleNamespace(profile=lambda name=None: profile, file=Path("/p/devbox.toml"))
    user = types.SimpleNamespace(name="mino", uid=1500, gid=1500)
    state = types.SimpleNamespace(predicted_uid_map=(IdRange(0, 1500, 1), IdRange(1, 100000, 65536)))
    return types.SimpleNamespace(user=user, state=state, project=project, profiles_checked=["python"])


WORK = Mount("bind", "/p", "/work")


def test_service_user_in_the_subordinate_range_writing_a_bind_mount_fails() -> None:
    ctx = _by_design_ctx(
        Service("editor", "img", mounts=(WORK,)),
        Service("runtime", "img", mounts=(WORK,), user="1000"),
        Service("db", "img", user="999"),  # no bind mount: its files stay in a volume
        Service("ro", "img", mounts=(Mount("bind", "/p", "/src", read_only=True),), user="1000"),
        Service("asroot", "img", mounts=(WORK,), user="0:0"),
    )
    [f] = doctor.check_by_design(ctx)
    assert f == Finding(
        "project.by-design", "fail", "no service is set up to write files you will not own",
        ('profile python: services.runtime: user = "1000" writes to /p → /work: container uid 1000 is host uid 100999, '
         "in mino's subordinate range",),
        'remove user = "1000" from [services.runtime] in /p/devbox.toml: with the remap, container root is already you (uid 1500)',
    )


def test_named_user_and_host_userns_are_reported() -> None:
    ctx = _by_design_ctx(
        Service("node", "img", mounts=(WORK,), user="node"),
        Service("tool", "img", mounts=(WORK,), userns_mode="host", userns_reason="needs host PID"),
    )
    [f] = doctor.check_by_design(ctx)
    assert f.status == "fail"
    assert f.evidence == (
        'profile python: services.node: user = "node" writes to /p → /work: user "node" is resolved inside the image; '
        "any uid but 0 maps into mino's subordinate range",
        'profile python: services.tool: userns_mode = "host" (needs host PID): its root is the host\'s root, '
        "so what it writes to /p → /work is owned by root",
    )
    [f] = doctor.check_by_design(_by_design_ctx(Service("tool", "img", mounts=(WORK,), userns_mode="host", userns_reason="r")))
    assert f.status == "warn"
    [f] = doctor.check_by_design(_by_design_ctx(Service("editor", "img", mounts=(WORK,))))
    assert f == Finding("project.by-design", "ok", "no service is set up to write files you will not own",
                        ("checked profile(s) python: every service writing to a bind mount runs as container root",))


def test_project_config_error_is_one_failure_with_its_hint() -> None:
    err = ConfigError("unknown profile 'pyhton'", where="/p/devbox.toml:1", hint="did you mean 'python'?")
    ctx = types.SimpleNamespace(project_or_error=err, project_root=Path("/p"), cwd=Path("/p"))
    assert doctor.check_project(ctx) == [Finding(
        "project.config", "fail", "devbox.toml and its profiles load",
        ("/p/devbox.toml:1: unknown profile 'pyhton' — did you mean 'python'?",), "did you mean 'python'?",
    )]
    ctx = types.SimpleNamespace(project_or_error=None, project_root=None, cwd=Path("/q"))
    assert doctor.check_project(ctx)[0].evidence == ("no devbox.toml in /q or any parent directory",)
