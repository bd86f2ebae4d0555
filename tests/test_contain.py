"""Resolving a path beneath its work dir, one component at a time, on a real filesystem."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from devbox.watch.contain import Escape, chown_beneath, lstat_beneath, root_of


def test_root_of_takes_the_deepest_root_and_respects_component_boundaries() -> None:
    assert root_of("/w/a/b", ["/w", "/w/a"]) == "/w/a"
    assert root_of("/wx/a", ["/w"]) is None
    assert root_of("/w", ["/w"]) is None  # the root itself is not beneath itself


def test_a_plain_path_resolves(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f").write_text("x")
    assert lstat_beneath(str(tmp_path), str(tmp_path / "a" / "b" / "f")).st_size == 1


def test_a_link_in_the_middle_is_an_escape_and_a_link_at_the_end_is_itself(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    work = tmp_path / "work"
    outside.mkdir()
    (outside / "f").write_text("secret")
    work.mkdir()
    (work / "a").symlink_to(outside)
    (work / "last").symlink_to(outside / "f")
    with pytest.raises(Escape) as raised:
        lstat_beneath(str(work), str(work / "a" / "f"))
    assert raised.value.reason == f"{work}/a is a symbolic link now"
    st = lstat_beneath(str(work), str(work / "last"))
    assert stat.S_ISLNK(st.st_mode)  # the link itself, never where it points


@pytest.mark.parametrize("rel", ["a/../b", "./a", "a//b", "../work/a"])
def test_dot_dot_and_empty_components_are_refused(tmp_path: Path, rel: str) -> None:
    (tmp_path / "a").mkdir()
    with pytest.raises(Escape):
        lstat_beneath(str(tmp_path), f"{tmp_path}/{rel}")


def test_a_file_in_the_middle_is_refused_and_a_missing_one_is_gone(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(Escape) as raised:
        lstat_beneath(str(tmp_path), str(tmp_path / "f" / "g"))
    assert raised.value.reason == f"{tmp_path}/f is not a directory now"
    with pytest.raises(FileNotFoundError):
        lstat_beneath(str(tmp_path), str(tmp_path / "nope" / "g"))


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs and chowns")
def test_another_filesystem_is_refused_and_chown_stays_beneath(tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "mnt").mkdir(parents=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(work / "mnt")], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        (work / "mnt" / "f").write_text("x")
        with pytest.raises(Escape) as raised:
            chown_beneath(str(work), str(work / "mnt" / "f"), 4242, 4242)
        assert raised.value.reason == f"{work}/mnt is on another filesystem"
        assert os.lstat(work / "mnt" / "f").st_uid == 0
    finally:
        subprocess.run(["umount", str(work / "mnt")], check=True)
    (work / "d").mkdir()
    (work / "d" / "f").write_text("y")
    chown_beneath(str(work), str(work / "d" / "f"), 4242, 4343)
    assert (os.lstat(work / "d" / "f").st_uid, os.lstat(work / "d" / "f").st_gid) == (4242, 4343)
