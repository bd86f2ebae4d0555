"""Daemon and proof checks: ``daemon.json``, ``daemon.flags``, ``daemon.live``, ``probe.*`` (remap's own
assessments), ``daemon.parents`` and ``daemon.old-images``."""

from __future__ import annotations

import json
import os
import stat as _stat
from pathlib import Path

from devbox.core.findings import Finding
from devbox.doctor.checks.engine import owner_names
from devbox.doctor.context import Context
from devbox.errors import EngineError
from devbox.remap.assess import KEY, assess_daemon_config, assess_engine, assess_probe


def _not_dockerd(ctx: Context, ids: tuple[str, ...]) -> list[Finding] | None:
    """Skips for dockerd's remap checks when the engine is Podman or rootless Docker (None otherwise)."""
    from devbox.doctor.checks.idmap import skipped_under_idmap

    e = ctx.state.engine
    if e is None or e.kind == "docker-rootful":
        return skipped_under_idmap(ctx, ids)
    return [Finding(i, "skip", (f"{e.label}: dockerd's userns-remap does not apply",)) for i in ids]


def check_daemon_config(ctx: Context) -> list[Finding]:
    return _not_dockerd(ctx, ("daemon.json", "daemon.flags")) or assess_daemon_config(ctx.state)


def check_live(ctx: Context) -> list[Finding]:
    return _not_dockerd(ctx, ("daemon.live",)) or assess_engine(ctx.state)


def check_probe(ctx: Context) -> list[Finding]:
    return assess_probe(ctx.state)


def _remap_configured(ctx: Context) -> bool:
    dj = ctx.state.daemon_json
    return bool(ctx.state.flags) or (dj is not None and KEY in dj.data)


def data_root(ctx: Context) -> tuple[Path, bool]:
    """The data root whose ``UID.GID`` subdirectory a remapped dockerd uses, and whether it is live."""
    e = ctx.state.engine
    if e is not None and e.data_root:
        root = Path(e.data_root)
        return (root.parent, True) if e.remap_ids() is not None else (root, True)
    dj = ctx.state.daemon_json
    configured = dj.data.get("data-root") if dj is not None else None
    return Path(str(configured or "/var/lib/docker")), False


def blocking_parents(root: Path, uid: int, gid: int) -> list[tuple[str, str]]:
    """``(dir, mode)`` for each parent of ``root`` (``/`` excluded) that host ``uid``/``gid`` cannot traverse.

    dockerd's own test (``idtools.CanAccess`` on every parent of the remapped
    root): owner, else group, else other x bit.  ``root`` itself is fine:
    dockerd makes it 0710 with the remapped gid.
    """
    out = []
    for d in root.parents:
        if d == Path("/"):
            break
        try:
            st = os.stat(d)
        except OSError:
            continue
        if st.st_uid == uid:
            ok = st.st_mode & _stat.S_IXUSR
        elif st.st_gid == gid:
            ok = st.st_mode & _stat.S_IXGRP
        else:
            ok = st.st_mode & _stat.S_IXOTH
        if not ok:
            out.append((str(d), f"{_stat.filemode(st.st_mode)} {owner_names(st)}"))
    return out


def check_parents(ctx: Context) -> list[Finding]:
    skipped = _not_dockerd(ctx, ("daemon.parents",))
    if skipped:
        return skipped
    root, live = data_root(ctx)
    u = ctx.user
    remapped = root / f"{u.uid}.{u.gid}"
    dj = ctx.state.daemon_json
    source = "the running dockerd" if live else "daemon.json" if dj is not None and "data-root" in dj.data else "the default"
    lacking = blocking_parents(root, u.uid, u.gid)
    if not lacking:
        return [Finding("daemon.parents", "ok", (f"every parent of {root} (from {source}) lets host uid {u.uid} through",))]
    ev = tuple(f"{d}: {mode} (no o+x)" for d, mode in lacking)
    on = _remap_configured(ctx) or (ctx.state.engine is not None and ctx.state.engine.userns)
    why = (f"a remapped dockerd refuses to start: container root (host uid {u.uid}) cannot reach {remapped}"
           if on else f"turning the remap on would fail: container root (host uid {u.uid}) could not reach {remapped}")
    return [Finding("daemon.parents", "fail" if on else "warn", ev + (why,),
                    "sudo chmod o+x " + " ".join(d for d, _ in lacking))]


def count_old_images(parent: Path) -> tuple[list[str], int, int]:
    """Evidence lines, image count and container count under a data root from before the remap."""
    ev: list[str] = []
    images = 0
    image_dir = parent / "image"
    drivers = sorted(p for p in image_dir.iterdir() if p.is_dir()) if image_dir.is_dir() else []
    for driver in drivers:
        content = driver / "imagedb" / "content" / "sha256"
        n = sum(1 for _ in content.iterdir()) if content.is_dir() else 0
        tags: list[str] = []
        repos = driver / "repositories.json"
        try:
            data = json.loads(repos.read_text())
            for refs in (data.get("Repositories") or {}).values():
                tags += list(refs)
        except (OSError, ValueError, AttributeError):
            pass
        tags = sorted(t for t in tags if "@sha256:" not in t)
        if n or tags:
            shown = ", ".join(tags[:5]) + (f", … ({len(tags) - 5} more)" if len(tags) > 5 else "")
            ev.append(f"{repos}: {n} image(s), {len(tags)} tag(s)" + (f": {shown}" if tags else ""))
        images += n
    containers_dir = parent / "containers"
    containers = sum(1 for p in containers_dir.iterdir() if p.is_dir()) if containers_dir.is_dir() else 0
    if containers:
        ev.append(f"{containers_dir}: {containers} container(s)")
    return ev, images, containers


def check_old_images(ctx: Context) -> list[Finding]:
    e = ctx.state.engine
    if e is None:
        raise EngineError("engine not checked")
    skipped = _not_dockerd(ctx, ("daemon.old-images",))
    if skipped:
        return skipped
    ids = e.remap_ids()
    if ids is None:
        return [Finding("daemon.old-images", "ok", (f"data root {e.data_root} is not a remapped one: every image is visible",))]
    parent = Path(e.data_root).parent
    try:
        ev, images, containers = count_old_images(parent)
    except PermissionError as exc:
        return [Finding("daemon.old-images", "skip", (f"cannot read {exc.filename}: permission denied — run with sudo to count",))]
    if not images and not containers:
        return [Finding("daemon.old-images", "ok", (f"nothing under {parent} outside {e.data_root}",))]
    ev.append(f"dockerd now keeps everything under {e.data_root}: these are not visible while the remap is on (not lost)")
    return [Finding("daemon.old-images", "warn", tuple(ev),
                    "to use one under the remap: sudo devbox remap --revert, docker save IMAGE -o image.tar, "
                    "sudo devbox remap --apply, docker load -i image.tar (or rebuild it); "
                    "to reclaim the space once nothing there is needed: docker system prune -a before turning the remap on")]
