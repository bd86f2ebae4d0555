"""`devbox images` (pure parts): which base images a project's builds pull, and when mmdebstrap can run."""

from __future__ import annotations

from pathlib import Path

from devbox.config.resolve import load_project
from devbox.core.idmap import parse_subid
from devbox.stack.bootstrap import debian_release, from_images, needed, unshare_problem, unshare_tmpdir

REPO = Path(__file__).resolve().parents[1]


def test_from_lines_with_args_defaults_stages_and_scratch() -> None:
    text = """\
# comment
ARG DEBIAN_RELEASE=bookworm
ARG TAG
FROM --platform=linux/amd64 debian:${DEBIAN_RELEASE}-slim AS builder
ARG DEBIAN_RELEASE
RUN echo hi
FROM builder AS second
FROM docker.io/library/python:${TAG:-3.12}
from scratch
FROM $BASE
"""
    assert from_images(text, {}) == ["debian:bookworm-slim", "docker.io/library/python:3.12", ""]
    assert from_images(text, {"DEBIAN_RELEASE": "trixie", "TAG": "3.13"})[:2] == [
        "debian:trixie-slim", "docker.io/library/python:3.13"]


def test_debian_release_names() -> None:
    assert debian_release("debian:bookworm-slim") == "bookworm"
    assert debian_release("docker.io/library/debian:trixie") == "trixie"
    assert debian_release("debian:12") is None
    assert debian_release("ubuntu:noble") is None
    assert debian_release("example.com/debian:bookworm-slim") is None


def test_the_shipped_profiles_need_bookworm_and_trixie(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "devbox.toml").write_text('name = "x"\n')
    project = load_project(root, home=tmp_path)
    found = {b.ref: b for b in needed(project)}
    assert {b.release for b in found.values()} == {"bookworm", "trixie"}
    assert "python-3.13/runtime" in found["debian:trixie-slim"].used_by
    assert "python/editor" in found["debian:bookworm-slim"].used_by


def test_unshare_mode_needs_a_full_first_range() -> None:
    ok = parse_subid("u:100000:65536\n", "/etc/subuid")
    assert unshare_problem(ok, "u") is None
    docker_layout = parse_subid("u:1000:1\nu:100000:65536\n", "/etc/subuid")
    assert unshare_problem(docker_layout, "u") == (
        "mmdebstrap's unshare mode maps u's first /etc/subuid range only, and /etc/subuid:1: u:1000:1 has 1 id(s), "
        "not 65,536 (Docker's remap wants that line first)")
    assert unshare_problem(parse_subid("", "/etc/subuid"), "u") == "u has no line in /etc/subuid"


def test_unshare_mode_tmpdir_must_be_reachable_by_the_subordinate_root(tmp_path: Path) -> None:
    # mmdebstrap builds under TMPDIR as your subordinate root: a TMPDIR others cannot traverse (itself
    # or a parent) gives way to /var/tmp
    private = tmp_path / "private"
    private.mkdir()
    private.chmod(0o700)
    inside = private / "open"
    inside.mkdir()
    inside.chmod(0o1777)
    assert unshare_tmpdir(None) is None
    assert unshare_tmpdir("") is None
    assert unshare_tmpdir(str(private)) == "/var/tmp"
    assert unshare_tmpdir(str(inside)) == "/var/tmp"
    assert unshare_tmpdir(str(tmp_path / "missing")) == "/var/tmp"
    assert unshare_tmpdir("/tmp") == "/tmp"
