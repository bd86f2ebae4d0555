"""TOML -> validated :class:`devbox.core.model.Project`: the entry points, services, bind-mount refusals.

Reading a file (:mod:`.source`), checking it against the schema (:mod:`.schema`)
and merging the layers (:mod:`.merge`) happen elsewhere; here the merged
tables become :class:`Service` objects, bind sources are resolved and refused
when they would hand the container the host, and build contexts are hashed.
Every error names the file, the key path and the line.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import os
import posixpath
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from devbox import paths
from devbox.config.merge import Layered, extends_chain, merge_services
from devbox.config.schema import (
    BUILD,
    DEFAULT_PROFILE,
    HEALTHCHECK,
    SERVICE,
    ProjectFile,
    RawProfile,
    check_profile_file,
    check_project_file,
)
from devbox.config.source import KeyPath, Source, find_line, format_path, read_toml, suggest
from devbox.core.hashing import image_tag
from devbox.core.model import (
    Build,
    Condition,
    DependsOn,
    Healthcheck,
    Mount,
    Port,
    Profile,
    Project,
    Service,
    find_cycle,
    volume_name,
)
from devbox.errors import ConfigError
from devbox.host.user import resolve_user

__all__ = [
    "DEFAULT_PROFILE",
    "DEVCONTAINER_FILES",
    "PROJECT_FILE",
    "PROJECT_PROFILES",
    "check_bind_source",
    "context_digest",
    "find_line",
    "find_project",
    "load_profiles",
    "load_project",
    "project_slug",
    "suggest",
    "user_home",
]

PROJECT_FILE = "devbox.toml"
PROJECT_PROFILES = Path(".devbox") / "profiles"
DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")
DEVCONTAINER_FILES = (".devcontainer/devcontainer.json", ".devcontainer.json")  # where the devcontainer CLI looks


# --- the entry points ------------------------------------------------------------------


def user_home() -> Path:
    """The home of the user devbox acts for (under sudo, SUDO_USER's): a bind mount of it is refused."""
    return Path(resolve_user().home)


def find_project(start: Path | None = None, *, home: Path | None = None) -> Project:
    """The project at or above ``start`` (default: the current directory), fully validated."""
    root = paths.project_root(start)
    if root is None:
        here = (start or Path.cwd()).resolve()
        found = next((f for f in DEVCONTAINER_FILES if (here / f).is_file()), None)
        if found is not None:  # meet Dev Containers users where they are
            raise ConfigError(f"no devbox.toml in {here} or any parent directory, but there is {found}",
                              hint="run 'devbox import devcontainer' to run it with devbox (or 'devbox init' for a shipped profile)")
        raise ConfigError(f"no devbox.toml in {here} or any parent directory", hint="run 'devbox init'")
    return load_project(root, home=home or user_home())


def load_project(
    root: Path,
    *,
    home: Path | None = None,
    profiles_dir: Path | None = None,
    images_dir: Path | None = None,
) -> Project:
    """Load ``root/devbox.toml`` and every profile it can run; raise :class:`ConfigError` on the first problem.

    ``home`` is the *user's* home (under sudo, not root's): a bind mount of it is refused.
    """
    root = root.resolve()
    file = root / PROJECT_FILE
    if not file.is_file():
        raise ConfigError("no devbox.toml here", where=str(root), hint="run 'devbox init'")
    pf = check_project_file(read_toml(file))
    _distinct_targets(_project_mounts(pf))
    name = pf.name or project_slug(root)
    ctx = _Ctx(root=root, home=home or Path.home(), images=images_dir or paths.shipped_images(), project=name, project_file=pf)
    profiles = _load_profiles(profiles_dir or paths.shipped_profiles(), ctx)
    if pf.profile not in profiles:
        raise pf.src.error(("profile",), f"unknown profile '{pf.profile}'", suggest(pf.profile, profiles))
    all_services = {s for p in profiles.values() for s in p.service_names}
    for key in ("services", "ports"):
        table: Mapping[str, Any] = pf.services if key == "services" else pf.ports
        for svc in table:
            if svc not in all_services:
                raise pf.src.error((key, svc), f"{key}.{svc}: no profile has a service '{svc}'", suggest(svc, all_services))
    return Project(
        name=name,
        root=root,
        file=file,
        default_profile=pf.profile,
        remap=pf.remap,
        strategy=pf.strategy,
        ca_certificates=pf.ca_certificates,
        watch=pf.watch,
        workdirs=tuple(_bind(m, ctx, pf.src, ("workdirs", i)) for i, m in enumerate(pf.workdirs)),
        profiles=profiles,
    )


def load_profiles(
    *, profiles_dir: Path | None = None, images_dir: Path | None = None, project_root: Path | None = None, home: Path | None = None, project: str = "devbox"
) -> dict[str, Profile]:
    """Every profile, validated without a project file (``devbox profiles`` outside a project, tests)."""
    root = (project_root or Path.cwd()).resolve()
    ctx = _Ctx(root=root, home=home or Path.home(), images=images_dir or paths.shipped_images(), project=project, project_file=None)
    return _load_profiles(profiles_dir or paths.shipped_profiles(), ctx)


def _load_profiles(shipped: Path, ctx: _Ctx) -> dict[str, Profile]:
    files = profile_files(shipped, ctx.root if ctx.project_file is not None else None)
    raws = {name: load_raw_profile(f) for name, f in files.items()}
    contexts = sorted(p.name for p in ctx.images.iterdir() if (p / "Dockerfile").is_file()) if ctx.images.is_dir() else []
    return {name: _resolve_profile(raw, raws, ctx, contexts) for name, raw in sorted(raws.items())}


def load_raw_profile(path: Path) -> RawProfile:
    return check_profile_file(read_toml(path))


def profile_files(shipped: Path, project_root: Path | None) -> dict[str, Path]:
    """Profile name -> file; a project's ``.devbox/profiles/NAME.toml`` replaces the shipped one."""
    found: dict[str, Path] = {}
    dirs = [shipped] + ([project_root / PROJECT_PROFILES] if project_root else [])
    for d in dirs:
        if d.is_dir():
            for f in sorted(d.glob("*.toml")):
                found[f.stem] = f
    return found


def project_slug(root: Path) -> str:
    """The default project name: the directory's name, lowercased, runs of other characters as ``-``."""
    return re.sub(r"[^a-z0-9_.-]+", "-", root.name.lower()).strip("-._") or "project"


@dataclasses.dataclass(frozen=True)
class _Ctx:
    root: Path
    home: Path
    images: Path
    project: str
    project_file: ProjectFile | None


# --- profiles ------------------------------------------------------------------------


def _resolve_profile(raw: RawProfile, raws: Mapping[str, RawProfile], ctx: _Ctx, known_contexts: Sequence[str]) -> Profile:
    chain = extends_chain(raw.name, raws)
    layered = merge_services(chain, ctx.project_file)
    enabled = {n: lay for n, lay in layered.items() if SERVICE.complete(lay.data)["enabled"]}
    services: dict[str, Service] = {n: _build_service(n, lay, ctx, known_contexts) for n, lay in sorted(enabled.items())}
    if not services:
        raise raw.src.error((), f"profile '{raw.name}' has no enabled services")

    interactive = [n for n, s in services.items() if s.interactive]
    if len(interactive) > 1:
        raise layered[interactive[1]].fail("interactive", (), f"services.{interactive[1]}.interactive: only one service can be interactive (already: {interactive[0]})")
    for n, service in services.items():
        lay = layered[n]
        for dep in service.depends_on:
            if dep.service == n:
                raise lay.fail("depends_on", (), f"{lay.path('depends_on')}: service '{n}' depends on itself")
            if dep.service not in services:
                if dep.service in layered:
                    raise lay.fail("depends_on", (dep.service,), f"{lay.path('depends_on')}: service '{dep.service}' is disabled in profile '{raw.name}'")
                raise lay.fail("depends_on", (dep.service,), f"{lay.path('depends_on')}: unknown service '{dep.service}'", suggest(dep.service, services))
            if dep.condition == "healthy" and services[dep.service].healthcheck is None:
                raise lay.fail("depends_on", (dep.service,), f"{lay.path('depends_on')}: condition 'healthy' needs a healthcheck on service '{dep.service}'")
    for n, service in services.items():
        lay = layered[n]
        if service.terminal is not None:
            target = service.terminal
            if target == n:
                raise lay.fail("terminal", (), f"{lay.path('terminal')}: service '{n}' cannot be its own terminal",
                               "name the runtime service whose toolchain its terminals should reach")
            if target not in services:
                if target in layered:
                    raise lay.fail("terminal", (), f"{lay.path('terminal')}: service '{target}' is disabled in profile '{raw.name}'")
                raise lay.fail("terminal", (), f"{lay.path('terminal')}: unknown service '{target}'", suggest(target, services))
    cycle = find_cycle({n: [d.service for d in s.depends_on] for n, s in services.items()})
    if cycle:
        lay = layered[cycle[0]]
        raise lay.fail("depends_on", (), f"depends_on cycle: {' → '.join(cycle)}")
    return Profile(
        name=raw.name,
        source=raw.src.path,
        description=raw.description or next((r.description for r in reversed(chain) if r.description), ""),
        extends=raw.extends,
        services=tuple(services.values()),
    )


# --- services ---------------------------------------------------------------------------


def _build_service(name: str, lay: Layered, ctx: _Ctx, known_contexts: Sequence[str]) -> Service:
    d = SERVICE.complete(lay.data)
    build, image = _image(lay, ctx, known_contexts)
    pf = ctx.project_file if d["workdir"] else None  # the project's work dirs, mounts and env
    env = {**(pf.env if pf else {}), **d["env"]}
    ports = d["ports"] + (ctx.project_file.ports.get(name, []) if ctx.project_file else [])
    mounts, health = _mounts(lay, pf, ctx), _healthcheck(lay)
    _check_namespaces(lay, d)
    return Service(
        name=name,
        image=image,
        build=build,
        command=tuple(d["command"]) if "command" in d else None,
        entrypoint=tuple(d["entrypoint"]) if "entrypoint" in d else None,
        env=tuple(sorted(env.items())),
        ports=tuple(Port(p["container"], p["host"], p["host_ip"], p["protocol"]) for p in ports),
        mounts=mounts,
        depends_on=tuple(DependsOn(s, cast(Condition, c)) for s, c in sorted(d["depends_on"].items())),
        healthcheck=health,
        interactive=d["interactive"],
        working_dir=d.get("working_dir"),
        user=d.get("user"),
        userns_mode=d.get("userns_mode"),
        userns_reason=d.get("userns_reason"),
        network_mode=d.get("network_mode"),
        pid_mode=d.get("pid_mode"),
        post_create=tuple(tuple(c) for c in d.get("post_create", ())),
        post_start=tuple(tuple(c) for c in d.get("post_start", ())),
        generated_env=tuple(dict.fromkeys(d.get("generated_env", ()))),
        terminal=d.get("terminal"),
        web_port=d.get("web_port"),
    )


def _image(lay: Layered, ctx: _Ctx, known_contexts: Sequence[str]) -> tuple[Build | None, str]:
    """The build (if devbox builds the image) and the reference the container runs."""
    if "build" in lay.data:
        if "path" in lay.data["build"] and "context" in lay.data["build"]:
            raise lay.fail("build", ("path",), f"{lay.path('build')} has both 'context' and 'path'",
                           "keep one: context names a directory under images/, path one in the project")
        need = None if "path" in lay.data["build"] else BUILD.missing(lay.data["build"])
        if need:
            raise lay.fail("build", (), f"{lay.path('build')} needs {need}")
        b = BUILD.complete(lay.data["build"])
        if "path" in b:
            return _project_build(lay, ctx, b)
        context = b["context"]
        if context not in known_contexts:
            raise lay.fail("build", ("context",), f"{lay.path('build', 'context')}: no image '{context}' in {ctx.images}", suggest(context, known_contexts))
        build = dataclasses.replace(_make_build(ctx.images / context, context, b["args"], b["dockerfile"]), target=b.get("target"))
        return build, image_tag(build)
    if "image" in lay.data:
        return None, lay.data["image"]
    assert lay.declared is not None  # every layered service came from a table
    src, path = lay.declared
    raise src.error(path, f"{format_path(path)} needs 'image' or 'build'")


def _mounts(lay: Layered, pf: ProjectFile | None, ctx: _Ctx) -> tuple[Mount, ...]:
    """The project's work dirs and mounts (``pf``: for a ``workdir = true`` service), its own mounts, its volumes."""
    mounts: list[Mount] = []
    entries: list[_MountEntry] = []
    if pf is not None:
        mounts += [_bind(m, ctx, pf.src, ("workdirs", i)) for i, m in enumerate(pf.workdirs)]
        mounts += [_bind(m, ctx, pf.src, ("mounts", i)) for i, m in enumerate(pf.mounts)]
        entries += _project_mounts(pf)
    if "mounts" in lay.origin:
        src, path = lay.origin["mounts"]
        for i, m in enumerate(lay.data["mounts"]):
            mounts.append(_bind(m, ctx, src, (*path, i)))
            entries.append(_MountEntry(src, (*path, i), m["target"]))
    if "volumes" in lay.origin:
        src, path = lay.origin["volumes"]
        for i, v in enumerate(lay.data["volumes"]):
            mounts.append(Mount("volume", volume_name(ctx.project, v["name"]), v["target"], v["read_only"]))
            entries.append(_MountEntry(src, (*path, i), v["target"]))
    _distinct_targets(entries, project=ctx.project_file.src if ctx.project_file else None)
    return tuple(mounts)


def _healthcheck(lay: Layered) -> Healthcheck | None:
    if "healthcheck" not in lay.data:
        return None
    need = HEALTHCHECK.missing(lay.data["healthcheck"])
    if need:
        raise lay.fail("healthcheck", (), f"{lay.path('healthcheck')} needs {need}")
    h = HEALTHCHECK.complete(lay.data["healthcheck"])  # its defaults are Healthcheck's own
    return Healthcheck(test=tuple(h["test"]), interval_s=h["interval"], timeout_s=h["timeout"], retries=h["retries"], start_period_s=h["start_period"])


def _check_namespaces(lay: Layered, d: Mapping[str, Any]) -> None:
    """Host namespaces only with the remap off for the container, and that only with a written reason."""
    userns = d.get("userns_mode")
    if userns == "host" and not d.get("userns_reason"):
        raise lay.fail(
            "userns_mode", (), f"{lay.path('userns_mode')}: 'host' turns off the user-namespace remap for this container", 'add userns_reason = "why it needs host namespaces"'
        )
    for key in ("network_mode", "pid_mode"):
        if d.get(key) == "host" and userns != "host":
            raise lay.fail(key, (), f"{lay.path(key)}: host namespaces need userns_mode = \"host\" (with a userns_reason)")


# --- mount targets: one mount per container path ------------------------------------


@dataclasses.dataclass(frozen=True)
class _MountEntry:
    """A mount or volume as written: where (file and key path) and the container path it targets."""

    src: Source
    path: KeyPath
    target: str
    default: bool = False  # devbox.toml's default work dir, not written in the file


def _distinct_targets(entries: Sequence[_MountEntry], project: Source | None = None) -> None:
    """Refuse two mounts on one container path (Docker would refuse the container).

    Of two entries, the one in the later layer is blamed: ``project`` (devbox.toml)
    comes after the profiles, which come after devbox.toml's default work dir;
    within one layer, the later entry.
    """

    def layer(e: _MountEntry) -> int:
        return 0 if e.default else 2 if e.src is project else 1

    seen: dict[str, _MountEntry] = {}
    for entry in sorted(entries, key=layer):
        other = seen.setdefault(posixpath.normpath(entry.target), entry)
        if other is entry:
            continue
        what = f"the default work dir ({format_path(other.path)})" if other.default else format_path(other.path)
        if other.src is not entry.src:
            line = None if other.default else find_line(other.src.text, (*other.path, "target"))
            what += f" in {other.src.where(line)}"
        target = (*entry.path, "target")
        raise entry.src.error(target, f"{format_path(target)}: '{entry.target}' is already the target of {what}")


def _project_mounts(pf: ProjectFile) -> list[_MountEntry]:
    """The work dirs and extra mounts of devbox.toml: every ``workdir = true`` service gets them."""
    default = "workdirs" not in pf.src.data
    return [_MountEntry(pf.src, ("workdirs", i), m["target"], default) for i, m in enumerate(pf.workdirs)] + [
        _MountEntry(pf.src, ("mounts", i), m["target"]) for i, m in enumerate(pf.mounts)
    ]


# --- bind mounts and their refusals ------------------------------------------------------


def _bind(m: Mapping[str, Any], ctx: _Ctx, src: Source, keypath: KeyPath) -> Mount:
    real, reason = check_bind_source(m["source"], root=ctx.root, home=ctx.home, allow_outside_project=m["allow_outside_project"])
    if reason:
        hint = "set allow_outside_project = true on this mount if that is intended" if reason.startswith("it is outside") else None
        raise src.error(keypath, f"{format_path(keypath)}: refusing to bind-mount {real}: {reason}", hint)
    return Mount("bind", str(real), m["target"], m["read_only"], m["allow_outside_project"])


def check_bind_source(source: str, *, root: Path, home: Path, allow_outside_project: bool) -> tuple[Path, str | None]:
    """Resolve a bind source (relative to the project, ``~`` = home) and say why it is refused, if it is.

    Symlinks are resolved first, so a link inside the project cannot smuggle
    ``/etc`` in.  The first four refusals have no override.
    """
    expanded = str(home) + source[1:] if source == "~" or source.startswith("~/") else source
    real = _real(root / expanded)
    home_real = _real(home)
    if real == Path("/"):
        return real, "it is the host's whole filesystem"
    if _within(real, _real("/etc")) or _within(real, Path("/etc")):
        return real, "/etc holds the host's configuration (passwords, sudoers)"
    if _within(home_real, real):
        return real, f"it {'is' if real == home_real else 'contains'} your whole home directory ({home})"
    for sock in DOCKER_SOCKETS:
        for candidate in {Path(sock), _real(sock)}:
            if _within(candidate, real):
                return real, "the Docker socket gives root on the host"
    if not allow_outside_project and not _within(real, _real(root)):
        return real, f"it is outside the project ({root})"
    return real, None


def _real(path: str | Path) -> Path:
    return Path(os.path.realpath(path))


def _within(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


# --- builds ------------------------------------------------------------------------------


def _make_build(context_dir: Path, context: str, args: Mapping[str, str], dockerfile: str) -> Build:
    return Build(
        context=context,
        context_dir=str(context_dir),
        args=tuple(sorted(args.items())),
        dockerfile=dockerfile,
        digest=context_digest(context_dir),
    )


def _project_build(lay: Layered, ctx: _Ctx, b: Mapping[str, Any]) -> tuple[Build, str]:
    """A build from a directory of the project (``path``): built in place, never outside the project."""
    real, reason = check_bind_source(b["path"], root=ctx.root, home=ctx.home, allow_outside_project=False)
    if reason is None and not real.is_dir():
        reason = "it is not a directory"
    dockerfile = _real(real / b["dockerfile"])
    if reason is None and not (dockerfile.is_file() and _within(dockerfile, ctx.root)):
        reason = f"{b['dockerfile']} is not a file in the project"
    if reason:
        raise lay.fail("build", ("path",), f"{lay.path('build', 'path')}: cannot build from {real}: {reason}")
    name = re.sub(r"[^a-z0-9_.-]+", "-", (real if real != ctx.root else real / ctx.project).name.lower()).strip("-._") or "build"
    build = Build(context=name, context_dir=str(real), args=tuple(sorted(b["args"].items())), dockerfile=b["dockerfile"],
                  digest=project_context_digest(real, b["dockerfile"]), target=b.get("target"), in_project=True)
    return build, image_tag(build)


_COPIES = re.compile(r"^\s*(COPY|ADD)\s", re.IGNORECASE | re.MULTILINE)


def project_context_digest(context_dir: Path, dockerfile: str) -> str:
    """sha256 of a project build: its Dockerfile, and the context's files only when the Dockerfile copies any.

    A devcontainer's context is often the whole project, whose files change all day; hashing
    them all would rebuild (and recreate the containers) on every edit.  Files ``.dockerignore``
    names (as plain glob lines) and ``.git`` are left out, as the engine leaves them out of the build.
    """
    text = (context_dir / dockerfile).read_bytes()
    h = hashlib.sha256(b"dockerfile\0" + text + b"\0")
    if not _COPIES.search(text.decode(errors="replace")):
        return h.hexdigest()
    ignore = context_dir / ".dockerignore"
    patterns = [ln.strip() for ln in ignore.read_text().splitlines() if ln.strip() and not ln.startswith("#")] if ignore.is_file() else []
    for f in sorted(p for p in context_dir.rglob("*") if p.is_file() and ".git" not in p.relative_to(context_dir).parts):
        rel = f.relative_to(context_dir).as_posix()
        if any(fnmatch.fnmatch(rel, p.rstrip("/")) or fnmatch.fnmatch(rel, p.rstrip("/") + "/*") for p in patterns):
            continue
        h.update(rel.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def context_digest(context_dir: Path) -> str:
    """sha256 over the build context's files (``certs/`` excluded: CA bundles must not change image tags)."""
    h = hashlib.sha256()
    for f in sorted(p for p in context_dir.rglob("*") if p.is_file()):
        rel = f.relative_to(context_dir).as_posix()
        if rel.startswith("certs/"):
            continue
        h.update(rel.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()
