"""``devbox import devcontainer`` and ``devbox export compose|devcontainer``: files in and out, and the engine's answers.

The mapping is pure (:mod:`.importer`, :mod:`.exporter`); here the files are read and written, the
written project is loaded back (an import that ``up`` would refuse is taken back, never left behind),
and for the compose export the engine says which ownership strategy applies and which uid a named
``user`` is, so the file carries numbers and needs no ``$UID`` (docker/compose#2380).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from devbox import console, paths
from devbox.config import resolve as config
from devbox.core.model import Profile, Project, Service, Stack
from devbox.core.ownership import Choice
from devbox.devcontainer import render
from devbox.devcontainer.exporter import COMPOSE_FILE, Layout, to_compose, to_devcontainer
from devbox.devcontainer.importer import import_devcontainer
from devbox.devcontainer.mapper import Decisions, Where
from devbox.devcontainer.parse import parse_compose, parse_jsonc
from devbox.errors import ConfigError, DevboxError, EngineError, Exit
from devbox.host.files import write_atomic
from devbox.host.user import resolve_user

IMPORTED_PROFILE = "devcontainer"
ALWAYS_NOTES = (
    "devbox's ownership watcher (devbox watch) does not run under compose; `devbox leaks` still finds what leaked",
    "devbox adds the host's extra CA certificates and proxy settings at run time; they are not in this file",
)


# --- import -----------------------------------------------------------------------------------------


def _read(path: Path, shown: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", where=shown) from None


def import_command(path: str | None, *, force: bool, json_out: bool, cwd: Path | None = None) -> Exit:
    """Write devbox.toml and ``.devbox/profiles/devcontainer.toml`` from a devcontainer.json; say what became of it."""
    root = (cwd or Path.cwd()).resolve()
    if path is None:
        found = next((root / f for f in config.DEVCONTAINER_FILES if (root / f).is_file()), None)
        if found is None:
            raise ConfigError(f"no {' or '.join(config.DEVCONTAINER_FILES)} in {root}", hint="give its path: devbox import devcontainer PATH")
        file = found
    else:
        file = (root / path).resolve()
    shown = os.path.relpath(file, root) if file.is_relative_to(root) else str(file)
    project_file, profile_file = root / config.PROJECT_FILE, root / config.PROJECT_PROFILES / f"{IMPORTED_PROFILE}.toml"
    if project_file.exists() and not force:
        raise DevboxError("devbox.toml already exists", where=str(project_file),
                          hint=f"--force replaces it and {config.PROJECT_PROFILES / (IMPORTED_PROFILE + '.toml')}")
    doc = parse_jsonc(_read(file, shown), shown)
    compose, compose_dir = None, None
    if "dockerComposeFile" in doc:
        files = doc["dockerComposeFile"] if isinstance(doc["dockerComposeFile"], list) else [doc["dockerComposeFile"]]
        if len(files) != 1:
            raise ConfigError(f"dockerComposeFile: {len(files)} files layered on each other: devbox maps one compose file",
                              where=shown, hint="merge them into one (docker compose config > compose.yaml) and name that")
        compose_path = (file.parent / str(files[0])).resolve()
        compose_shown = os.path.relpath(compose_path, root)
        compose, compose_dir = parse_compose(_read(compose_path, compose_shown), compose_shown), str(compose_path.parent)
    home = config.user_home()
    where = Where(root=str(root), config_dir=str(file.parent), images=str(paths.shipped_images().resolve()), home=str(home),
                  env=dict(os.environ),
                  refuse_bind=lambda src: config.check_bind_source(src, root=root, home=home, allow_outside_project=False)[1])
    try:
        imported = import_devcontainer(doc, where, config.project_slug(root), compose=compose, compose_dir=compose_dir)
    except ConfigError as exc:
        raise ConfigError(exc.message, where=exc.where or shown, hint=exc.hint) from None
    header = [f"Imported from {shown} by `devbox import devcontainer`; edit freely (README: Coming from Dev Containers / Compose).",
              *[f"refused: {p}: {w}" for p, w in imported.report.refused]]
    previous = {f: f.read_bytes() if f.exists() else None for f in (project_file, profile_file)}
    write_atomic(profile_file, render.profile_toml(header, imported.description, imported.services).encode())
    write_atomic(project_file, render.project_toml(
        [f"devbox project file, imported from {shown}; its services are in {config.PROJECT_PROFILES}/{IMPORTED_PROFILE}.toml"],
        config.project_slug(root), IMPORTED_PROFILE, [{"source": ".", "target": imported.workdir}]).encode())
    try:
        config.load_project(root, home=home)
    except ConfigError as exc:
        for f, data in previous.items():  # never leave a project `up` refuses
            if data is None:
                f.unlink(missing_ok=True)
            else:
                write_atomic(f, data)
        raise ConfigError(f"the imported profile is not valid: {exc.one_line()}", where=shown,
                          hint="fix the devcontainer.json, or write the profile by hand") from None
    _say_report(imported.report, json_out, [str(project_file), str(profile_file)])
    if not json_out:
        console.info(f"wrote {project_file.name} and {profile_file.relative_to(root)}; next: devbox up")
    return Exit.OK


def _say_report(report: Decisions, json_out: bool, written: Sequence[str]) -> None:
    if json_out:
        console.emit_json({"schema": "devbox.import/1", "written": list(written), **report.to_json()})
        return
    for prop, what in report.mapped:
        console.info(f"mapped   {prop}: {what}")
    for prop, what in report.ignored:
        console.info(f"ignored  {prop}: {what}")
    for prop, what in report.refused:
        console.warn(f"refused  {prop}: {what}")


# --- export -----------------------------------------------------------------------------------------


def _layout(project: Project, out_dir: Path) -> Layout:
    return Layout(project.name, str(project.root), str(out_dir.resolve()), str(paths.shipped_images().resolve()))


def _writable_bind(svc: Service) -> bool:
    return any(m.kind == "bind" and not m.read_only for m in svc.mounts)


def compose_users(project: Project, stack: Stack) -> tuple[dict[str, str | None], list[str]]:
    """Each service's ``user`` under compose, in numbers where the engine can say them, and what compose
    cannot do that devbox does (the notes)."""
    from devbox.engine.client import connect, inspect_engine
    from devbox.stack import observe
    from devbox.stack.views import choose_for_engine, container_users

    user = resolve_user()
    notes: list[str] = []
    try:
        client = connect()
        choice = choose_for_engine(inspect_engine(client), project)
        if not isinstance(choice, Choice):
            return {}, [f"ownership: {choice.message}; users are written as the profile has them"]
        strategy = choice.strategy
        present = {ref: observe.image(client, ref) is not None for ref, _ in stack.images}
        found = container_users(client, stack, "remap" if strategy != "idmap" else strategy, present)
    except EngineError as exc:
        return {}, [f"the engine did not answer ({exc.message}): users are written as the profile has them"]
    users: dict[str, str | None] = {}
    for svc in stack.services:
        ids = found.get(svc.name)
        if svc.userns_mode == "host":
            notes.append(f"service {svc.name}: userns_mode host: container root is real root, as under devbox")
        if ids is None:
            if svc.user is not None and _writable_bind(svc):
                notes.append(f"service {svc.name}: user {svc.user} is not resolved (its image is not built yet: devbox up, then export again)")
            continue
        if strategy == "idmap" and ids == (0, 0) and _writable_bind(svc):
            users[svc.name] = f"{user.uid}:{user.gid}"
            notes.append(f"service {svc.name}: runs as you ({user.uid}:{user.gid}) under compose, so its files are yours; "
                         "devbox would run it as root through an idmapped view (strategy idmap), which compose cannot ask for")
        elif ids != (0, 0):
            users[svc.name] = f"{ids[0]}:{ids[1]}"
            if _writable_bind(svc):
                notes.append(f"service {svc.name}: runs as container {ids[0]}:{ids[1]}; devbox gives it an idmapped view of "
                             "the work dir, compose cannot: files it writes there will not be yours (devbox leaks --fix)")
    if strategy == "remap":
        notes.insert(0, "ownership: the engine remaps user namespaces (userns-remap), so container root is you under compose too")
    return users, notes


def export_compose_command(*, output: str | None, profile: str | None, cwd: Path | None = None) -> Exit:
    project = config.find_project(cwd)
    prof = _profile(project, profile)
    stack = project.stack(prof.name)
    out = Path(output).resolve() if output else None
    users, notes = compose_users(project, stack)
    exported = to_compose(stack.services, _layout(project, out.parent if out else project.root), users)
    notes += [*exported.notes, *ALWAYS_NOTES]
    header = [f"Exported by `devbox export compose` from project {project.name}, profile {prof.name}.",
              f"Run: docker-compose -p {project.name} -f FILE up -d  (Compose v1.29 or v2).", "",
              "What compose does differently from devbox up:", *[f"- {n}" for n in notes]]
    text = render.compose_yaml(header, exported.data)
    if out is None:
        console.raw(text.encode())
    else:
        write_atomic(out, text.encode())
        console.info(f"wrote {out}")
    for n in notes:
        console.info(f"note: {n}")
    return Exit.OK


def export_devcontainer_command(*, output_dir: str | None, profile: str | None, force: bool, cwd: Path | None = None) -> Exit:
    project = config.find_project(cwd)
    prof = _profile(project, profile)
    out_dir = ((cwd or Path.cwd()) / (output_dir or ".devcontainer")).resolve()
    json_file, compose_file = out_dir / "devcontainer.json", out_dir / COMPOSE_FILE
    for f in (json_file, compose_file):
        if f.exists() and not force:
            raise DevboxError(f"{f.name} already exists", where=str(f), hint="--force replaces it")
    first = project.workdirs[0] if project.workdirs else None
    doc, compose = to_devcontainer(prof.services, _layout(project, out_dir), prof.description or f"{project.name} ({prof.name})",
                                   first.target if first else "/work", first.source if first else str(project.root))
    notes = [*doc.notes, *(compose.notes if compose else ()), *ALWAYS_NOTES]
    text = "".join(f"// {n}\n" for n in [f"Exported by `devbox export devcontainer` from profile {prof.name}.", *notes])
    write_atomic(json_file, (text + render.devcontainer_json(doc.data)).encode())
    written = [json_file]
    if compose is not None:
        write_atomic(compose_file, render.compose_yaml([f"The services of {json_file.name}: exported by devbox from profile {prof.name}."],
                                                       compose.data).encode())
        written.append(compose_file)
    console.info("wrote " + " and ".join(str(f) for f in written))
    for n in notes:
        console.info(f"note: {n}")
    return Exit.OK


def _profile(project: Project, name: str | None) -> Profile:
    name = name or project.default_profile
    if name not in project.profiles:
        raise ConfigError(f"unknown profile '{name}'", hint=config.suggest(name, project.profiles))
    return project.profiles[name]
