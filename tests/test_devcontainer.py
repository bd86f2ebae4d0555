"""devbox/devcontainer without an engine: JSONC errors, the mapping of the eight test files, the round trip
(export of every shipped profile, imported again, is the same profile), the compose export, the schema's
new keys (build.path/target, post_create/post_start)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from devbox import paths
from devbox.config import resolve as config
from devbox.devcontainer import render
from devbox.devcontainer.exporter import Layout, to_compose, to_devcontainer
from devbox.devcontainer.importer import import_devcontainer
from devbox.devcontainer.mapper import Where
from devbox.devcontainer.parse import parse_compose, parse_jsonc
from devbox.errors import ConfigError

DATA = Path(__file__).parent / "data" / "devcontainer"
CASES = sorted(p.name for p in DATA.iterdir() if p.is_dir())
SHIPPED = sorted(p.stem for p in paths.shipped_profiles().glob("*.toml"))


def project_from(case: str, tmp: Path) -> Path:
    """The case's files laid out as a project: ``.devcontainer/`` holds them (or the case has its own)."""
    root = tmp / case
    src = DATA / case
    if (src / ".devcontainer").is_dir():
        shutil.copytree(src, root)
    else:
        shutil.copytree(src, root / ".devcontainer")
    (root / "cache").mkdir()
    (root / "config").mkdir()
    return root


def where(root: Path, config_dir: Path, home: Path) -> Where:
    return Where(root=str(root), config_dir=str(config_dir), images=str(paths.shipped_images().resolve()), home=str(home),
                 env={}, refuse_bind=lambda s: config.check_bind_source(s, root=root, home=home, allow_outside_project=False)[1])


def do_import(root: Path, home: Path, file: Path | None = None) -> tuple[dict[str, object], object]:
    """Import the project's devcontainer.json, write the files as the command does, load the project back."""
    file = file or next(root / f for f in config.DEVCONTAINER_FILES if (root / f).is_file())
    doc = parse_jsonc(file.read_text(), str(file))
    compose = compose_dir = None
    if "dockerComposeFile" in doc:
        cfile = file.parent / doc["dockerComposeFile"]
        compose, compose_dir = parse_compose(cfile.read_text(), str(cfile)), str(cfile.parent)
    imported = import_devcontainer(doc, where(root, file.parent, home), config.project_slug(root), compose=compose, compose_dir=compose_dir)
    prof = root / ".devbox" / "profiles"
    prof.mkdir(parents=True, exist_ok=True)
    (prof / "devcontainer.toml").write_text(render.profile_toml([], imported.description, imported.services))
    (root / "devbox.toml").write_text(render.project_toml([], config.project_slug(root), "devcontainer",
                                                          [{"source": ".", "target": imported.workdir}]))
    project = config.load_project(root, home=home)
    return {s.name: s for s in project.profile("devcontainer").services}, imported


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


# --- JSONC ------------------------------------------------------------------------------------------


def test_comments_and_trailing_commas_are_read() -> None:
    assert parse_jsonc('// c\n{ /* b */ "a": [1, 2,], }\n', "f.json") == {"a": [1, 2]}


def test_a_syntax_error_names_file_line_and_column() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_jsonc('{\n  "image": "x"\n  "name": "y"\n}\n', ".devcontainer/devcontainer.json")
    assert exc.value.one_line() == '.devcontainer/devcontainer.json:3:3: not valid JSON with comments: Unexpected """'


def test_a_compose_syntax_error_names_file_line_and_column() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_compose("services:\n  app: [\n", "compose.yaml")
    assert exc.value.where is not None and exc.value.where.startswith("compose.yaml:3:")


# --- the eight files --------------------------------------------------------------------------------


def test_there_are_at_least_eight_cases() -> None:
    assert len(CASES) >= 8


@pytest.mark.parametrize("case", CASES)
def test_each_case_imports_to_a_valid_project(case: str, tmp_path: Path, home: Path) -> None:
    services, imported = do_import(project_from(case, tmp_path), home)
    assert services
    assert imported.report.mapped  # type: ignore[attr-defined]


def test_nonroot_dockerfile_build(tmp_path: Path, home: Path) -> None:
    root = project_from("dockerfile-nonroot", tmp_path)
    services, imported = do_import(root, home)
    dev = services["dev"]
    assert dev.user == "vscode" and dev.working_dir == "/workspaces/app"
    assert dev.build is not None and dev.build.in_project and dev.build.context_dir == str(root / ".devcontainer")
    assert dev.build.args == (("VARIANT", "bookworm"),)
    assert dev.post_create == (("touch", "/workspaces/app/made-by-vscode"),)
    assert [m.target for m in dev.binds] == ["/workspaces/app"]
    assert ("updateRemoteUserUID", "not needed: the remap, or an idmapped view per service, makes the files the user writes "
            "yours without changing the image's uid") in imported.report.ignored  # type: ignore[attr-defined]


def test_lifecycle_commands_in_all_three_forms(tmp_path: Path, home: Path) -> None:
    services, _ = do_import(project_from("lifecycle-forms", tmp_path), home)
    dev = services["dev"]
    assert dev.post_create == (("/bin/sh", "-c", "mkdir -p /src/out && echo on-create > /src/out/1-on-create"),
                               ("touch", "/src/out/2-post-create"))
    assert dev.post_start == (("/bin/sh", "-c", "echo start >> /src/out/3-post-start"), ("touch", "/src/out/4-post-start-array"))
    assert dev.working_dir == "/src" and [m.target for m in dev.binds] == ["/src"]


def test_mounts_in_both_forms_and_the_refused_root(tmp_path: Path, home: Path) -> None:
    root = project_from("mounts-both", tmp_path)
    services, imported = do_import(root, home)
    dev = services["dev"]
    assert [(m.kind, m.source, m.target, m.read_only) for m in dev.mounts[1:]] == [
        ("bind", str(root / "cache"), "/cache", False),
        ("bind", str(root / "config"), "/config", True),
        ("volume", "devbox-mounts-both-devbox-test-history", "/commandhistory", False),
    ]
    assert ("mounts[3]", "/: it is the host's whole filesystem") in imported.report.refused  # type: ignore[attr-defined]
    assert dev.env_dict == {"HISTFILE": "/commandhistory/.bash_history"}


def test_features_and_runargs_refusals_are_named(tmp_path: Path, home: Path) -> None:
    _, jsonc = do_import(project_from("jsonc-comments", tmp_path), home)
    refused = [w for p, w in jsonc.report.refused]  # type: ignore[attr-defined]
    assert [w.split(":")[0] + ":" + w.split(":")[1] for w in refused] == ["ghcr.io/devcontainers/features/node:1",
                                                                           "ghcr.io/devcontainers/features/github-cli:1"]
    services, ra = do_import(project_from("runargs-refusals", tmp_path), home)
    props = [p for p, _ in ra.report.refused]  # type: ignore[attr-defined]
    assert props == ["initializeCommand", "runArgs[4]", "runArgs[5]", "runArgs[6]", "runArgs[8]"]
    assert services["dev"].env_dict == {"FROM_RUNARGS": "yes"}
    assert [str(p) for p in services["dev"].ports] == ["127.0.0.1:7000->7000/tcp"]


def test_ports_are_published_on_loopback(tmp_path: Path, home: Path) -> None:
    services, _ = do_import(project_from("jsonc-comments", tmp_path), home)
    assert [str(p) for p in services["dev"].ports] == ["127.0.0.1:9000->90/tcp", "127.0.0.1:9001->9001/tcp"]
    assert services["dev"].env_dict["WHERE"] == "/workspaces/jsonc-comments"


def test_a_build_target_and_a_context_at_the_project_root(tmp_path: Path, home: Path) -> None:
    services, _ = do_import(project_from("build-target", tmp_path), home)
    b = services["dev"].build
    assert b is not None and b.target == "dev" and b.args == (("X", "fallback"),)
    root = project_from("root-dockerfile-context", tmp_path)
    services, _ = do_import(root, home)
    b = services["dev"].build
    assert b is not None and b.context_dir == str(root) and b.dockerfile == ".devcontainer/Dockerfile"
    assert services["dev"].user == "dev"


def test_a_compose_stack(tmp_path: Path, home: Path) -> None:
    services, imported = do_import(project_from("compose-stack", tmp_path), home)
    app, db = services["app"], services["db"]
    assert app.user == "node" and [d.condition for d in app.depends_on] == ["healthy"]
    assert app.post_create == (("/bin/sh", "-c", "touch /workspace/made-by-node"),)
    assert [m.target for m in app.binds] == ["/workspace"] and db.binds == ()
    assert db.volumes == ("devbox-compose-stack-dbdata",)
    assert db.healthcheck is not None and (db.healthcheck.interval_s, db.healthcheck.retries) == (1.0, 30)
    assert ("services.db.container_name", "devbox names its containers") in imported.report.ignored  # type: ignore[attr-defined]


def test_several_compose_files_are_refused_with_the_reason(tmp_path: Path, home: Path) -> None:
    from devbox.devcontainer.command import import_command

    root = project_from("compose-stack", tmp_path)
    f = root / ".devcontainer" / "devcontainer.json"
    f.write_text(f.read_text().replace('"compose.yaml"', '["compose.yaml", "compose.override.yaml"]'))
    with pytest.raises(ConfigError) as exc:
        import_command(None, force=False, json_out=True, cwd=root)
    assert "dockerComposeFile: 2 files layered on each other: devbox maps one compose file" in exc.value.one_line()


def test_up_without_devbox_toml_offers_the_import(tmp_path: Path) -> None:
    (tmp_path / ".devcontainer").mkdir()
    (tmp_path / ".devcontainer" / "devcontainer.json").write_text("{}")
    with pytest.raises(ConfigError) as exc:
        config.find_project(tmp_path)
    assert "but there is .devcontainer/devcontainer.json" in exc.value.message
    assert exc.value.hint is not None and "devbox import devcontainer" in exc.value.hint


# --- round trip: every shipped profile --------------------------------------------------------------


@pytest.mark.parametrize("profile", SHIPPED)
def test_export_then_import_gives_the_same_profile(profile: str, tmp_path: Path, home: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "devbox.toml").write_text(f'name = "proj"\nprofile = "{profile}"\n')
    project = config.load_project(root, home=home)
    prof = project.profile()
    out = root / ".devcontainer"
    lay = Layout(project.name, str(root), str(out), str(paths.shipped_images().resolve()))
    first = project.workdirs[0]
    doc, compose = to_devcontainer(prof.services, lay, prof.description, first.target, first.source)
    out.mkdir()
    (out / "devcontainer.json").write_text(render.devcontainer_json(doc.data))
    if compose is not None:
        (out / "compose.yaml").write_text(render.compose_yaml(["header"], compose.data))
    (root / "devbox.toml").unlink()
    services, _ = do_import(root, home)
    assert tuple(services.values()) == prof.services


# --- compose export ---------------------------------------------------------------------------------


def test_compose_export_of_the_python_profile(tmp_path: Path, home: Path) -> None:
    root = tmp_path / "app"
    root.mkdir()
    (root / "devbox.toml").write_text('name = "app"\nprofile = "python"\n')
    project = config.load_project(root, home=home)
    lay = Layout("app", str(root), str(root), str(paths.shipped_images().resolve()))
    exported = to_compose(project.profile().services, lay, {"runtime": "1000:1000"})
    data = yaml.safe_load(render.compose_yaml(["a note"], exported.data))
    assert data["version"] == "2.4"
    assert data["volumes"] == {"pgdata-15": {"name": "devbox-app-pgdata-15"}}
    runtime, db, editor = data["services"]["runtime"], data["services"]["db"], data["services"]["editor"]
    assert runtime["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert runtime["user"] == "1000:1000" and "user" not in editor
    assert editor["volumes"] == [".:/work"] and editor["stdin_open"] is True
    assert db["volumes"] == ["pgdata-15:/var/lib/postgresql/data"]
    assert db["healthcheck"]["interval"] == "1s" and db["healthcheck"]["retries"] == 60
    assert runtime["build"]["context"] == str(paths.shipped_images().resolve() / "python")
    assert runtime["image"].startswith("devbox/python:")


# --- the schema's new keys --------------------------------------------------------------------------


def _profile_project(tmp: Path, profile: str, home: Path) -> object:
    root = tmp / "p"
    root.mkdir(exist_ok=True)
    (root / ".devbox" / "profiles").mkdir(parents=True)
    (root / ".devbox" / "profiles" / "p.toml").write_text(profile)
    (root / "devbox.toml").write_text('name = "p"\nprofile = "p"\n')
    return config.load_project(root, home=home).profile("p").services[0]


def test_post_commands_forms(tmp_path: Path, home: Path) -> None:
    svc = _profile_project(tmp_path, '[services.a]\nimage = "x"\npost_create = "make"\npost_start = [["a", "b"], "c d"]\n', home)
    assert svc.post_create == (("/bin/sh", "-c", "make"),)  # type: ignore[attr-defined]
    assert svc.post_start == (("a", "b"), ("/bin/sh", "-c", "c d"))  # type: ignore[attr-defined]


def test_post_commands_must_be_commands(tmp_path: Path, home: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        _profile_project(tmp_path, '[services.a]\nimage = "x"\npost_create = [["a"], 3]\n', home)
    assert "services.a.post_create[1] must be a command" in exc.value.message


def test_build_path_outside_the_project_is_refused(tmp_path: Path, home: Path) -> None:
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "Dockerfile").write_text("FROM scratch\n")
    with pytest.raises(ConfigError) as exc:
        _profile_project(tmp_path, '[services.a]\nbuild = { path = "../other" }\n', home)
    assert "cannot build from" in exc.value.message and "outside the project" in exc.value.message


def test_build_path_and_context_together_are_refused(tmp_path: Path, home: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        _profile_project(tmp_path, '[services.a]\nbuild = { path = ".", context = "python" }\n', home)
    assert "has both 'context' and 'path'" in exc.value.message


def test_a_project_build_digest_ignores_files_the_dockerfile_does_not_copy(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM debian:bookworm-slim\nRUN true\n")
    before = config.project_context_digest(tmp_path, "Dockerfile")
    (tmp_path / "src.py").write_text("print(1)\n")
    assert config.project_context_digest(tmp_path, "Dockerfile") == before
    (tmp_path / "Dockerfile").write_text("FROM debian:bookworm-slim\nCOPY src.py /\n")
    copying = config.project_context_digest(tmp_path, "Dockerfile")
    (tmp_path / "src.py").write_text("print(2)\n")
    assert config.project_context_digest(tmp_path, "Dockerfile") != copying


def test_empty_lifecycle_commands_keep_existing_config_hashes() -> None:
    import dataclasses
    import hashlib
    import json

    from devbox.core.hashing import HASH_VERSION, config_hash
    from devbox.core.model import Service

    plain = Service(name="a", image="x")
    spec = dataclasses.asdict(plain)
    for key in ("build", "userns_reason", "post_create", "post_start",  # the spec as it was before the new fields
                "generated_env", "terminal", "web_port"):
        spec.pop(key)
    before = hashlib.sha256(json.dumps([HASH_VERSION, spec], sort_keys=True).encode()).hexdigest()
    assert config_hash(plain) == before
    assert config_hash(Service(name="a", image="x", post_start=(("true",),))) != before
