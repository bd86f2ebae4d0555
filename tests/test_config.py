"""devbox.toml and profiles -> model: every validation and refusal, exact messages and lines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from devbox.config import resolve as config
from devbox.core.hashing import config_hash
from devbox.core.model import Healthcheck, Mount, Port, Profile, Project, RemapPolicy
from devbox.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent

BASE_PROFILE = """\
description = "test stack"

[services.editor]
build = { context = "editor" }
interactive = true
working_dir = "/work"

[services.runtime]
build = { context = "python", args = { DEBIAN_RELEASE = "bookworm" } }
depends_on = { db = "healthy" }
env = { A = "1", B = "2" }

[services.db]
image = "postgres:15"
workdir = false
volumes = ["pgdata:/var/lib/postgresql/data"]
healthcheck = { test = ["pg_isready"], interval = 1 }
"""


class Env:
    def __init__(self, tmp: Path) -> None:
        self.home = tmp / "home" / "mino"
        self.root = self.home / "src" / "myapp"
        self.images = tmp / "images"
        self.profiles = tmp / "profiles"
        for d in (self.root, self.profiles):
            d.mkdir(parents=True)
        for ctx in ("editor", "python", "postgres"):
            (self.images / ctx).mkdir(parents=True)
            (self.images / ctx / "Dockerfile").write_text(f"FROM debian:bookworm-slim\n# {ctx}\n")
        self.profile("base", BASE_PROFILE)

    def profile(self, name: str, text: str) -> Path:
        path = self.profiles / f"{name}.toml"
        path.write_text(text)
        return path

    def project_profile(self, name: str, text: str) -> Path:
        d = self.root / ".devbox" / "profiles"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{name}.toml").write_text(text)
        return d / f"{name}.toml"

    @property
    def file(self) -> Path:
        return self.root / "devbox.toml"

    def load(self, project: str = 'profile = "base"\n') -> Project:
        self.file.write_text(project)
        return config.load_project(self.root, home=self.home, profiles_dir=self.profiles, images_dir=self.images)

    def error(self, project: str = 'profile = "base"\n') -> str:
        with pytest.raises(ConfigError) as info:
            self.load(project)
        return info.value.one_line()


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


# --- the happy path ------------------------------------------------------------


def test_defaults(env: Env) -> None:
    project = env.load()
    assert project.name == "myapp"
    assert project.default_profile == "base"
    assert project.remap is RemapPolicy.REQUIRE
    assert project.workdirs == (Mount("bind", str(env.root), "/work"),)
    stack = project.stack()
    assert [s.name for s in stack.services] == ["db", "editor", "runtime"]
    runtime = stack.service("runtime")
    assert runtime.mounts == (Mount("bind", str(env.root), "/work"),)
    assert runtime.image.startswith("devbox/python:")
    db = stack.service("db")
    # database files go to a named volume, and the work dir is not mounted at all
    assert db.mounts == (Mount("volume", "devbox-myapp-pgdata", "/var/lib/postgresql/data"),)
    assert db.healthcheck is not None and db.healthcheck.test == ("CMD", "pg_isready")
    assert stack.volumes == ("devbox-myapp-pgdata",)
    assert stack.levels() == (("db", "editor"), ("runtime",))
    interactive = project.profile().interactive
    assert interactive is not None and interactive.name == "editor"


def test_project_settings_reach_workdir_services_only(env: Env) -> None:
    (env.root / "data").mkdir()
    project = env.load(
        """\
name = "shop"
profile = "base"
workdirs = [{ source = ".", target = "/src" }]
mounts = ["data:/data:ro"]
env = { APP_ENV = "dev" }
ports = { runtime = ["8000", "0.0.0.0:9000:9001/udp", "8080:80", "[::1]:8443:443"] }

[remap]
policy = "warn"

[watch]
ignore = [".git"]
allowed_gids = [100]
rescan_interval = 60

[services.runtime.env]
B = "override"
"""
    )
    assert project.remap is RemapPolicy.WARN
    assert project.watch.ignore == (".git",) and project.watch.allowed_gids == (100,)
    assert project.watch.rescan_interval_s == 60.0
    runtime = project.stack().service("runtime")
    assert runtime.env == (("A", "1"), ("APP_ENV", "dev"), ("B", "override"))
    assert runtime.ports == (Port(8000, 8000, "127.0.0.1", "tcp"), Port(9001, 9000, "0.0.0.0", "udp"),
                             Port(80, 8080, "127.0.0.1", "tcp"), Port(443, 8443, "::1", "tcp"))  # HOST:CONTAINER, not IP:PORT
    assert runtime.mounts == (
        Mount("bind", str(env.root), "/src"),
        Mount("bind", str(env.root / "data"), "/data", read_only=True),
    )
    db = project.stack().service("db")
    assert db.env == () and all(m.kind == "volume" for m in db.mounts)
    assert db.volumes == ("devbox-shop-pgdata",)


def test_project_profile_replaces_shipped_one(env: Env) -> None:
    env.project_profile("base", '[services.solo]\nimage = "busybox"\n')
    project = env.load()
    assert project.profile().service_names == ("solo",)
    assert project.profile().source == env.root / ".devbox" / "profiles" / "base.toml"


def test_extends_deep_merges_services(env: Env) -> None:
    env.profile(
        "child",
        """\
extends = "base"

[services.runtime]
env = { B = "child", C = "3" }
build = { args = { DEBIAN_RELEASE = "trixie" } }

[services.editor]
enabled = false

[services.extra]
image = "busybox"
""",
    )
    project = env.load('profile = "child"\n')
    prof = project.profile()
    assert prof.service_names == ("db", "extra", "runtime")
    runtime = prof.service("runtime")
    assert runtime.env_dict == {"A": "1", "B": "child", "C": "3"}
    assert runtime.build is not None and runtime.build.args == (("DEBIAN_RELEASE", "trixie"),)
    assert runtime.build.context == "python"  # inherited through the deep merge
    assert prof.description == "test stack"
    # same spec -> same hash across profiles; a changed build arg -> new tag -> new hash
    base = project.profile("base")
    assert config_hash(prof.service("db")) == config_hash(base.service("db"))
    assert config_hash(runtime) != config_hash(base.service("runtime"))


def test_image_in_a_later_layer_replaces_inherited_build(env: Env) -> None:
    project = env.load('profile = "base"\n[services.runtime]\nimage = "python:3.12"\n')
    runtime = project.stack().service("runtime")
    assert runtime.image == "python:3.12" and runtime.build is None


def test_depends_on_forms(env: Env) -> None:
    env.profile("deps", '[services.a]\nimage = "x"\ndepends_on = ["b"]\n[services.b]\nimage = "x"\n[services.c]\nimage = "x"\ndepends_on = { a = { condition = "started" } }\n')
    stack = env.load('profile = "deps"\n').stack()
    assert stack.levels() == (("b",), ("a",), ("c",))


def test_userns_host_with_reason_is_accepted(env: Env) -> None:
    project = env.load(
        'profile = "base"\n[services.runtime]\nuserns_mode = "host"\nuserns_reason = "strace needs host pid"\npid_mode = "host"\n'
    )
    runtime = project.stack().service("runtime")
    assert runtime.userns_mode == "host" and runtime.pid_mode == "host"


def test_outside_project_allowed_explicitly(env: Env, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    project = env.load(f'profile = "base"\nmounts = [{{ source = "{shared}", target = "/shared", allow_outside_project = true }}]\n')
    assert Mount("bind", str(shared), "/shared", allow_outside_project=True) in project.stack().service("editor").mounts


# --- syntax, unknown keys, types -----------------------------------------------------


def test_toml_syntax_error_keeps_tomllib_position(env: Env) -> None:
    assert env.error('profile = "base"\n\nname = \n') == f"{env.file}:3: invalid TOML: Invalid value (at line 3, column 8)"


def test_unknown_service_key_with_suggestion(env: Env) -> None:
    path = env.profile("typo", '[services.editor]\nimage = "x"\n\n[services.runtime]\nimgae = "python:3.11"\n')
    assert env.error('profile = "typo"\n') == (
        f"{path}:5: unknown key 'imgae' in services.runtime — did you mean 'image'?"
    )


def test_unknown_key_inside_inline_table(env: Env) -> None:
    path = env.profile("typo", '[services.db]\nimage = "x"\nhealthcheck = { tset = ["true"] }\n')
    assert env.error() == f"{path}:3: unknown key 'tset' in services.db.healthcheck — did you mean 'test'?"


def test_unknown_key_in_dotted_table_header(env: Env) -> None:
    path = env.profile("typo", '[services.db]\nimage = "x"\n\n[services.db.build]\ncontext = "postgres"\nargz = {}\n')
    assert env.error() == f"{path}:6: unknown key 'argz' in services.db.build — did you mean 'args'?"


def test_unknown_top_level_key_without_close_match(env: Env) -> None:
    assert env.error('profile = "base"\nzzz = 1\n') == (
        f"{env.file}:2: unknown key 'zzz' at the top level — expected one of: "
        "env, mounts, name, network, ownership, ports, profile, remap, services, watch, workdirs"
    )


def test_unknown_profile_key(env: Env) -> None:
    path = env.profile("typo", 'descripton = "x"\n[services.a]\nimage = "x"\n')
    assert env.error() == f"{path}:1: unknown key 'descripton' at the top level — did you mean 'description'?"


def test_wrong_type_in_profile(env: Env) -> None:
    path = env.profile("bad", '[services.editor]\nimage = "x"\ninteractive = "yes"\n')
    assert env.error() == f"{path}:3: services.editor.interactive must be a boolean, not a string"


def test_wrong_type_in_array_item(env: Env) -> None:
    path = env.profile("bad", '[services.editor]\nimage = "x"\ncommand = ["vim", 1]\n')
    assert env.error() == f"{path}:3: services.editor.command[1] must be a string, not an integer"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ('profile = 3\n', 1, "profile must be a string, not an integer"),
        ('profile = "base"\nenv = { A = true }\n', 2, "env.A must be a string, not a boolean"),
        ('profile = "base"\nenv = { "bad-name" = "1" }\n', 2, "env.bad-name: 'bad-name' is not a valid environment variable name"),
        ('profile = "base"\n[watch]\nrescan_interval = "soon"\n', 3, "watch.rescan_interval must be a number, not a string"),
        ('profile = "base"\n[watch]\nrescan_interval = 0\n', 3, "watch.rescan_interval must be between 1 and 86400, not 0"),
        ('profile = "base"\n[watch]\nallowed_gids = ["staff"]\n', 3, "watch.allowed_gids[0] must be an integer, not a string"),
        ('profile = "base"\n[remap]\npolicy = "maybe"\n', 3, "remap.policy must be 'require', 'warn' or 'off', not 'maybe'"),
        ('name = "My App"\nprofile = "base"\n', 1, "name: 'My App' is not a project name (lowercase letters, digits, _ . -)"),
        ('profile = "base"\nports = { runtime = ["80:http"] }\n', 2, "ports.runtime[0]: '80:http' is not a port ([IP:]HOST:CONTAINER[/tcp|udp])"),
        ('profile = "base"\nports = { runtime = [{ container = 70000 }] }\n', 2, "ports.runtime[0].container must be between 1 and 65535, not 70000"),
        ('profile = "base"\n[services.runtime]\nworking_dir = "src"\n', 3, "services.runtime.working_dir must be an absolute path inside the container, not 'src'"),
        ('profile = "base"\n[services.runtime]\nvolumes = ["cache"]\n', 3, "services.runtime.volumes[0]: 'cache' is not NAME:TARGET[:ro]"),
        ('profile = "base"\n[services.runtime]\nmounts = [{ source = "." }]\n', 3, "services.runtime.mounts[0] needs 'target'"),
        ('profile = "base"\n[services.db.healthcheck]\nretries = 0\n', 3, "services.db.healthcheck.retries must be between 1 and 10000, not 0"),
        ('profile = "base"\n[services.runtime]\ndepends_on = { db = "ready" }\n', 3, "services.runtime.depends_on.db: unknown condition 'ready' — expected 'started' or 'healthy'"),
        ('profile = "base"\n[services.runtime]\nuserns_mode = "private"\n', 3, "services.runtime.userns_mode must be 'host', not 'private'"),
    ],
)
def test_project_file_types_and_values(env: Env, text: str, line: int, message: str) -> None:
    assert env.error(text) == f"{env.file}:{line}: {message}"


def test_unknown_profile_with_suggestion(env: Env) -> None:
    assert env.error('name = "x"\nprofile = "bsae"\n') == f"{env.file}:2: unknown profile 'bsae' — did you mean 'base'?"


def test_override_for_a_service_no_profile_has(env: Env) -> None:
    assert env.error('profile = "base"\n\n[services.runtim]\nenv = {}\n') == (
        f"{env.file}:3: services.runtim: no profile has a service 'runtim' — did you mean 'runtime'?"
    )


# --- profile structure: extends, depends_on, images ----------------------------------


def test_extends_unknown_profile(env: Env) -> None:
    path = env.profile("child", '# comment\nextends = "bas"\n')
    assert env.error() == f"{path}:2: unknown profile 'bas' in extends — did you mean 'base'?"


def test_extends_cycle(env: Env) -> None:
    env.profile("a", 'extends = "b"\n')
    path_b = env.profile("b", 'description = "b"\nextends = "a"\n')
    assert env.error() == f"{path_b}:2: extends cycle: a → b → a"


def test_depends_on_cycle(env: Env) -> None:
    path = env.profile(
        "loop",
        '[services.a]\nimage = "x"\ndepends_on = ["b"]\n\n[services.b]\nimage = "x"\ndepends_on = ["c"]\n\n[services.c]\nimage = "x"\ndepends_on = ["a"]\n',
    )
    assert env.error() == f"{path}:3: depends_on cycle: a → b → c → a"


def test_depends_on_itself(env: Env) -> None:
    path = env.profile("loop", '[services.a]\nimage = "x"\ndepends_on = ["a"]\n')
    assert env.error() == f"{path}:3: services.a.depends_on: service 'a' depends on itself"


def test_depends_on_unknown_service(env: Env) -> None:
    path = env.profile("deps", '[services.app]\nimage = "x"\ndepends_on = ["dbb"]\n\n[services.db]\nimage = "y"\n')
    assert env.error() == f"{path}:3: services.app.depends_on: unknown service 'dbb' — did you mean 'db'?"


def test_depends_on_disabled_service(env: Env) -> None:
    assert env.error('profile = "base"\n[services.db]\nenabled = false\n') == (
        f"{env.profiles / 'base.toml'}:10: services.runtime.depends_on: service 'db' is disabled in profile 'base'"
    )


def test_healthy_needs_a_healthcheck(env: Env) -> None:
    path = env.profile("deps", '[services.app]\nimage = "x"\ndepends_on = { db = "healthy" }\n\n[services.db]\nimage = "y"\n')
    assert env.error() == f"{path}:3: services.app.depends_on: condition 'healthy' needs a healthcheck on service 'db'"


def test_only_one_interactive_service(env: Env) -> None:
    assert env.error('profile = "base"\n\n[services.runtime]\ninteractive = true\n') == (
        f"{env.file}:4: services.runtime.interactive: only one service can be interactive (already: editor)"
    )


def test_image_and_build_in_one_layer(env: Env) -> None:
    path = env.profile("both", '[services.a]\nimage = "x"\nbuild = "python"\n')
    assert env.error() == f"{path}:3: services.a has both 'image' and 'build' — keep one"


def test_neither_image_nor_build(env: Env) -> None:
    path = env.profile("none", '[services.a]\ncommand = ["true"]\n')
    assert env.error() == f"{path}:1: services.a needs 'image' or 'build'"


def test_an_empty_service_table_is_a_config_error(env: Env) -> None:
    """Found by the fuzz suite: `[services.a]` with nothing in it crashed with StopIteration (exit 3)."""
    path = env.profile("empty", 'description = "x"\n[services.a]\n')
    assert env.error() == f"{path}:2: services.a needs 'image' or 'build'"


def test_unknown_build_context(env: Env) -> None:
    path = env.profile("ctx", '[services.a]\nbuild = { context = "pyhton" }\n')
    assert env.error() == f"{path}:2: services.a.build.context: no image 'pyhton' in {env.images} — did you mean 'python'?"


def test_profile_without_services(env: Env) -> None:
    path = env.profile("empty", 'description = "nothing"\n')
    assert env.error() == f"{path}: a profile needs at least one service under [services.NAME]"


# --- refusals ------------------------------------------------------------------------


def test_never_privileged(env: Env) -> None:
    path = env.profile("priv", '[services.a]\nimage = "x"\nprivileged = true\n')
    assert env.error() == f"{path}:3: services.a.privileged: devbox never runs privileged containers — remove this key"


def test_userns_host_needs_a_reason(env: Env) -> None:
    assert env.error('profile = "base"\n[services.runtime]\nuserns_mode = "host"\n') == (
        f"{env.file}:3: services.runtime.userns_mode: 'host' turns off the user-namespace remap for this container"
        ' — add userns_reason = "why it needs host namespaces"'
    )


def test_host_network_needs_userns_host(env: Env) -> None:
    assert env.error('profile = "base"\n[services.runtime]\nnetwork_mode = "host"\n') == (
        f'{env.file}:3: services.runtime.network_mode: host namespaces need userns_mode = "host" (with a userns_reason)'
    )


@pytest.mark.parametrize(
    ("source", "shown", "reason"),
    [
        ("/", "/", "it is the host's whole filesystem"),
        ("/etc", "/etc", "/etc holds the host's configuration (passwords, sudoers)"),
        ("/etc/ssl", "/etc/ssl", "/etc holds the host's configuration (passwords, sudoers)"),
        ("/var/run/docker.sock", "/run/docker.sock", "the Docker socket gives root on the host"),
        ("/run", "/run", "the Docker socket gives root on the host"),
    ],
)
def test_refused_bind_sources(env: Env, source: str, shown: str, reason: str) -> None:
    if source == "/var/run/docker.sock" and not os.path.islink("/var/run"):
        shown = "/var/run/docker.sock"
    text = f'profile = "base"\nmounts = [\n  "{source}:/host",\n]\n'
    # the line of the array item, not of the key
    assert env.error(text) == f"{env.file}:3: mounts[0]: refusing to bind-mount {shown}: {reason}"


@pytest.mark.parametrize(("source", "verb"), [("~", "is"), ("~/", "is"), ("../..", "is"), ("../../..", "contains")])
def test_refused_whole_home(env: Env, source: str, verb: str) -> None:
    # no override: allow_outside_project does not make a whole home acceptable
    shown = env.home if verb == "is" else env.home.parent
    assert env.error(f'profile = "base"\nworkdirs = [{{ source = "{source}", target = "/work", allow_outside_project = true }}]\n') == (
        f"{env.file}:2: workdirs[0]: refusing to bind-mount {shown}: it {verb} your whole home directory ({env.home})"
    )


def test_parent_of_project_is_outside_project(env: Env) -> None:
    assert env.error('profile = "base"\nworkdirs = ["..:/work"]\n') == (
        f"{env.file}:2: workdirs[0]: refusing to bind-mount {env.root.parent}: it is outside the project ({env.root})"
        " — set allow_outside_project = true on this mount if that is intended"
    )


def test_project_at_home_is_refused(env: Env) -> None:
    (env.home / "devbox.toml").write_text('profile = "base"\n')
    with pytest.raises(ConfigError) as info:
        config.load_project(env.home, home=env.home, profiles_dir=env.profiles, images_dir=env.images)
    assert info.value.one_line() == (
        f"{env.home / 'devbox.toml'}: workdirs[0]: refusing to bind-mount {env.home}: it is your whole home directory ({env.home})"
    )


def test_symlink_inside_project_cannot_smuggle_etc(env: Env) -> None:
    (env.root / "conf").symlink_to("/etc")
    assert env.error('profile = "base"\n[services.runtime]\nmounts = ["conf:/conf"]\n') == (
        f"{env.file}:3: services.runtime.mounts[0]: refusing to bind-mount /etc: /etc holds the host's configuration (passwords, sudoers)"
    )


def test_refusal_in_a_profile_points_at_the_profile(env: Env) -> None:
    path = env.profile("sock", '[services.a]\nimage = "x"\nmounts = [{ source = "/run/docker.sock", target = "/var/run/docker.sock" }]\n')
    assert env.error() == f"{path}:3: services.a.mounts[0]: refusing to bind-mount /run/docker.sock: the Docker socket gives root on the host"


def test_outside_project_refused_without_flag(env: Env, tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir()
    assert env.error(f'profile = "base"\nmounts = ["{tmp_path}/shared:/t"]\n') == (
        f"{env.file}:2: mounts[0]: refusing to bind-mount {tmp_path / 'shared'}: it is outside the project ({env.root})"
        " — set allow_outside_project = true on this mount if that is intended"
    )


def test_no_project_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        config.load_project(tmp_path)
    assert info.value.one_line() == f"{tmp_path}: no devbox.toml here — run 'devbox init'"


# --- one mount per container path ------------------------------------------------------


def test_two_workdirs_on_one_target(env: Env) -> None:
    text = 'profile = "base"\nworkdirs = [\n  { source = ".", target = "/work" },\n  { source = "sub", target = "/work/" },\n]\n'
    assert env.error(text) == f"{env.file}:4: workdirs[1].target: '/work/' is already the target of workdirs[0]"


def test_two_workdirs_on_one_target_as_array_of_tables(env: Env) -> None:
    text = 'profile = "base"\n\n[[workdirs]]\nsource = "."\ntarget = "/src"\n\n[[workdirs]]\nsource = "sub"\ntarget = "/src"\n'
    assert env.error(text) == f"{env.file}:9: workdirs[1].target: '/src' is already the target of workdirs[0]"


def test_mount_on_the_default_workdir(env: Env) -> None:
    assert env.error('profile = "base"\nmounts = ["data:/work"]\n') == (
        f"{env.file}:2: mounts[0].target: '/work' is already the target of the default work dir (workdirs[0])"
    )


def test_mount_on_a_workdir(env: Env) -> None:
    assert env.error('profile = "base"\nworkdirs = ["./:/src"]\nmounts = [{ source = "data", target = "/src" }]\n') == (
        f"{env.file}:3: mounts[0].target: '/src' is already the target of workdirs[0]"
    )


def test_service_mount_in_project_file_on_a_workdir(env: Env) -> None:
    assert env.error('profile = "base"\n[services.runtime]\nmounts = ["data:/work"]\n') == (
        f"{env.file}:3: services.runtime.mounts[0].target: '/work' is already the target of the default work dir (workdirs[0])"
    )


def test_profile_volume_on_the_default_workdir_blames_the_profile(env: Env) -> None:
    path = env.profile("clash", '[services.a]\nimage = "x"\nvolumes = ["cache:/work"]\n')
    assert env.error() == (
        f"{path}:3: services.a.volumes[0].target: '/work' is already the target of the default work dir (workdirs[0]) in {env.file}"
    )


def test_workdir_on_a_profile_volume_blames_the_project_file(env: Env) -> None:
    path = env.profile("clash", '[services.a]\nimage = "x"\nmounts = ["conf:/etc/app"]\nvolumes = [\n  "cache:/cache",\n]\n')
    assert env.error('profile = "base"\nworkdirs = ["./:/cache"]\n') == (
        f"{env.file}:2: workdirs[0].target: '/cache' is already the target of services.a.volumes[0] in {path}:5"
    )


def test_two_volumes_on_one_target_in_a_profile(env: Env) -> None:
    path = env.profile("clash", '[services.a]\nimage = "x"\nworkdir = false\nmounts = ["conf:/data"]\nvolumes = ["a:/a", "b:/data"]\n')
    assert env.error() == f"{path}:5: services.a.volumes[1].target: '/data' is already the target of services.a.mounts[0]"


def test_workdir_false_service_may_use_the_workdir_path(env: Env) -> None:
    env.profile("own", '[services.a]\nimage = "x"\nworkdir = false\nvolumes = ["cache:/work"]\n')
    assert env.load().profile("own").service("a").mounts == (Mount("volume", "devbox-myapp-cache", "/work"),)


# --- every number is bounded, and says its bounds -----------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("[watch]\nrescan_interval = 99999999999999999999999\n", 3, "watch.rescan_interval must be between 1 and 86400, not 99999999999999999999999"),
        (f"[watch]\nrescan_interval = {10**400}\n", 3, f"watch.rescan_interval must be between 1 and 86400, not {10**400}"),
        ("[watch]\nrescan_interval = 0.5\n", 3, "watch.rescan_interval must be between 1 and 86400, not 0.5"),
        ("[watch]\nrescan_interval = inf\n", 3, "watch.rescan_interval must be between 1 and 86400, not inf"),
        ("[watch]\nrescan_interval = nan\n", 3, "watch.rescan_interval must be between 1 and 86400, not nan"),
        ("[watch]\nallowed_gids = [100, 4294967295]\n", 3, "watch.allowed_gids[1] must be between 0 and 4294967294, not 4294967295"),
        ("[watch]\nallowed_gids = [-1]\n", 3, "watch.allowed_gids[0] must be between 0 and 4294967294, not -1"),
        ("[services.db.healthcheck]\ninterval = 0\n", 3, "services.db.healthcheck.interval must be between 0.001 and 86400, not 0"),
        ("[services.db.healthcheck]\ntimeout = 1e30\n", 3, "services.db.healthcheck.timeout must be between 0.001 and 86400, not 1e+30"),
        ("[services.db.healthcheck]\nstart_period = -1\n", 3, "services.db.healthcheck.start_period must be between 0 and 86400, not -1"),
        ("[services.db.healthcheck]\nretries = 99999999999999999999999\n", 3, "services.db.healthcheck.retries must be between 1 and 10000, not 99999999999999999999999"),
        ('ports = { runtime = ["127.0.0.1:99999:80"] }\n', 2, "ports.runtime[0].host must be between 0 and 65535, not 99999"),
        ("ports = { runtime = [{ container = 80, host = -1 }] }\n", 2, "ports.runtime[0].host must be between 0 and 65535, not -1"),
        ('ports = { runtime = ["127.0.0.1::0"] }\n', 2, "ports.runtime[0].container must be between 1 and 65535, not 0"),
    ],
)
def test_numbers_are_bounded(env: Env, text: str, line: int, message: str) -> None:
    assert env.error('profile = "base"\n' + text) == f"{env.file}:{line}: {message}"


def test_numbers_at_their_bounds_are_accepted(env: Env) -> None:
    project = env.load(
        'profile = "base"\n[watch]\nrescan_interval = 86400\nallowed_gids = [0, 4294967294]\n'
        "[services.db.healthcheck]\ninterval = 0.001\ntimeout = 86400\nretries = 10000\nstart_period = 0\n"
    )
    assert project.watch.rescan_interval_s == 86400.0 and project.watch.allowed_gids == (0, 4294967294)
    health = project.stack().service("db").healthcheck
    assert health is not None and (health.interval_s, health.timeout_s, health.retries) == (0.001, 86400.0, 10000)


def test_healthcheck_defaults_are_the_models(env: Env) -> None:
    health = env.load().stack().service("db").healthcheck
    assert health == Healthcheck(test=("CMD", "pg_isready"), interval_s=1.0)


# --- end to end: one line on stderr, exit 2 ---------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'profile = "base"\nworkdirs = ["./:/work", "sub:/work"]\n',
            "{file}:2: workdirs[1].target: '/work' is already the target of workdirs[0]",
        ),
        (
            'profile = "base"\n[watch]\nrescan_interval = 99999999999999999999999\n',
            "{file}:3: watch.rescan_interval must be between 1 and 86400, not 99999999999999999999999",
        ),
    ],
)
def test_cli_up_reports_config_errors_in_one_line(env: Env, tmp_path: Path, text: str, message: str) -> None:
    env.file.write_text(text)
    run_env = {k: v for k, v in os.environ.items() if not k.startswith(("DEVBOX_", "FORCE_COLOR"))}
    run_env.update(
        DEVBOX_PROFILES_DIR=str(env.profiles),
        DEVBOX_IMAGES_DIR=str(env.images),
        DEVBOX_STATE_DIR=str(tmp_path / "state"),
        PYTHONPATH=str(REPO),
    )
    result = subprocess.run(
        [sys.executable, "-m", "devbox", "up", "--dry-run"], cwd=env.root, env=run_env, capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stderr) == (2, f"devbox: error: {message.format(file=env.file.resolve())}\n")


# --- hashes and tags -------------------------------------------------------------------


def test_context_edits_change_the_tag_but_certs_do_not(env: Env) -> None:
    before = env.load().stack().service("runtime")
    (env.images / "python" / "certs").mkdir()
    (env.images / "python" / "certs" / "host-ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    same = env.load().stack().service("runtime")
    assert same.image == before.image and config_hash(same) == config_hash(before)
    (env.images / "python" / "Dockerfile").write_text("FROM debian:trixie-slim\n")
    after = env.load().stack().service("runtime")
    assert after.image != before.image
    assert config_hash(after) != config_hash(before)


def test_config_hash_is_stable_and_sensitive() -> None:
    from devbox.core.model import Service

    a = Service(name="x", image="busybox", env=(("A", "1"),))
    assert config_hash(a) == config_hash(Service(name="x", image="busybox", env=(("A", "1"),)))
    assert len(config_hash(a)) == 64
    assert config_hash(a) != config_hash(Service(name="x", image="busybox", env=(("A", "2"),)))
    # the reason is documentation: rewording it must not recreate the container
    b = Service(name="x", image="busybox", userns_mode="host", userns_reason="one")
    assert config_hash(b) == config_hash(Service(name="x", image="busybox", userns_mode="host", userns_reason="two"))


# --- locating keys ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "line"),
    [
        (("name",), 1),
        (("services",), 3),
        (("services", "runtime"), 3),
        (("services", "runtime", "image"), 4),
        (("services", "runtime", "env", "B"), 6),
        (("services", "db", "volumes", 0), 10),
        (("services", "db", "healthcheck", "retries"), 11),
        (("services", "db", "build", "args", "X"), 14),
        (("nothing",), None),
    ],
)
def test_find_line(path: tuple[str | int, ...], line: int | None) -> None:
    text = """\
name = "x"

[services.runtime]
image = "a"
env = { A = "1",
        B = "2" }

[services.db]
image = "b"  # imagine
volumes = ["v:/v"]
healthcheck = { test = ["true"], retries = 3 }

[services.db.build.args]
X = "1"
"""
    assert config.find_line(text, path) == line


ARRAYS = """\
workdirs = [
  { source = ".", target = "/work" },  # first, ]
  { source = "sub",
    target = "/work" },
]
mounts = ["a:/a", 'b,]:/b']

[[services.a.ports]]
container = 1

[[services.a.ports]]
container = 2

[x]
args = [
  \"\"\"a, ]
b\"\"\", # c, d
  "e",
]
"""


@pytest.mark.parametrize(
    ("path", "line"),
    [
        (("workdirs", 0, "target"), 2),
        (("workdirs", 1), 3),
        (("workdirs", 1, "target"), 4),
        (("workdirs", 2), 1),  # no such item: the key's line
        (("mounts", 1), 6),
        (("mounts", 1, "target"), 6),  # a string item: its line
        (("services", "a", "ports", 0, "container"), 9),
        (("services", "a", "ports", 1, "container"), 12),
        (("services", "a", "ports", 1), 11),
        (("x", "args", 1), 18),
    ],
)
def test_find_line_counts_array_items(path: tuple[str | int, ...], line: int | None) -> None:
    assert config.find_line(ARRAYS, path) == line


# --- the shipped profiles ------------------------------------------------------------------


SHIPPED = sorted(p.stem for p in (REPO / "profiles").glob("*.toml"))


def test_shipped_profile_set() -> None:
    assert {"python", "python-3.13", "node", "node-20", "ide-python"} <= set(SHIPPED)


@pytest.fixture(scope="module")
def shipped() -> dict[str, Profile]:
    return config.load_profiles(project_root=Path("/nonexistent/project"), home=Path("/nonexistent/home"), project="app")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profile_loads_and_validates(shipped: dict[str, Profile], name: str) -> None:
    prof = shipped[name]
    assert prof.description
    assert set(prof.service_names) <= {"editor", "runtime", "db", "ide"}
    assert "runtime" in prof.service_names and "db" in prof.service_names
    db = prof.service("db")
    assert db.binds == () and len(db.volumes) == 1  # data in a named volume, never in the work dir
    assert db.healthcheck is not None
    for svc in prof.services:
        assert svc.build is not None and svc.build.args_dict["DEBIAN_RELEASE"] in ("bookworm", "trixie")
        assert svc.userns_mode is None
        assert all(p.host_ip == "127.0.0.1" for p in svc.ports)


@pytest.mark.parametrize(
    ("name", "runtime", "db", "release"),
    [
        ("python", "python 3.11", "postgresql 15", "bookworm"),
        ("python-3.13", "python 3.13", "postgresql 15", "trixie"),
        ("python-3.13-pg17", "python 3.13", "postgresql 17", "trixie"),
        ("node", "node 18", "redis 7", "bookworm"),
        ("node-20", "node 20", "redis 8", "trixie"),
        ("ide-python", "python 3.11", "postgresql 15", "bookworm"),
        ("ide-code", "python 3.11", "postgresql 15", "bookworm"),
        ("ide-code-3.13", "python 3.13", "postgresql 15", "trixie"),
        ("ide-code-node", "node 20", "redis 8", "trixie"),
    ],
)
def test_shipped_toolchains(shipped: dict[str, Profile], name: str, runtime: str, db: str, release: str) -> None:
    prof = shipped[name]
    rt = prof.service("runtime").build
    dbb = prof.service("db").build
    assert rt is not None and dbb is not None
    assert rt.args_dict == {"DEBIAN_RELEASE": release, "TOOLCHAIN": runtime}
    assert dbb.args_dict["TOOLCHAIN"] == db


def test_switching_python_profiles_keeps_editor_and_db(shipped: dict[str, Profile]) -> None:
    py, py313 = shipped["python"], shipped["python-3.13"]
    for svc in ("editor", "db"):
        assert config_hash(py.service(svc)) == config_hash(py313.service(svc))
    assert config_hash(py.service("runtime")) != config_hash(py313.service("runtime"))
    assert py.service("db").volumes == ("devbox-app-pgdata-15",)
    assert shipped["python-3.13-pg17"].service("db").volumes == ("devbox-app-pgdata-17",)
    assert config_hash(shipped["node"].service("editor")) == config_hash(py.service("editor"))


def test_ide_profile_serves_on_loopback(shipped: dict[str, Profile]) -> None:
    prof = shipped["ide-python"]
    assert prof.service_names == ("db", "ide", "runtime")
    assert prof.service("ide").ports == (Port(8888, 8888, "127.0.0.1"),)
    assert prof.interactive is None
    assert shipped["python"].interactive is not None and shipped["python"].interactive.name == "editor"


def test_code_server_profiles_serve_on_a_free_loopback_port_with_a_generated_password(shipped: dict[str, Profile]) -> None:
    for name in ("ide-code", "ide-code-3.13", "ide-code-node"):
        prof = shipped[name]
        assert prof.service_names == ("db", "ide", "runtime")
        ide = prof.service("ide")
        assert ide.ports == (Port(8080, 0, "127.0.0.1"),)  # the engine picks the host port
        assert ide.web_port == 8080 and ide.generated_env == ("PASSWORD",) and ide.terminal == "runtime"
        assert ide.volumes == ("devbox-app-code-server",)  # settings and extensions, never in the work dir
        assert ide.build is not None and ide.build.args_dict["TOOLCHAIN"].startswith("code-server ")
        assert prof.service("runtime").command == ("python3", "/usr/local/lib/devbox/devbox-term", "serve")
        assert prof.interactive is None
    # switching toolchains keeps the IDE and the database (same config hash)
    code, code313, node = shipped["ide-code"], shipped["ide-code-3.13"], shipped["ide-code-node"]
    assert config_hash(code.service("ide")) == config_hash(code313.service("ide")) == config_hash(node.service("ide"))
    assert config_hash(code.service("db")) == config_hash(code313.service("db"))
    assert config_hash(code.service("runtime")) != config_hash(code313.service("runtime"))


def test_port_with_an_empty_host_port_lets_the_engine_pick(env: Env) -> None:
    env.profile("web", 'extends = "base"\n[services.runtime]\nports = ["127.0.0.1::8080", "9000"]\nweb_port = 8080\n')
    prof = env.load('profile = "web"\n').profiles["web"]
    assert prof.service("runtime").ports == (Port(8080, 0, "127.0.0.1"), Port(9000, 9000, "127.0.0.1"))
    assert prof.service("runtime").web_port == 8080


@pytest.mark.parametrize(("layer", "message"), [
    ('terminal = "runtime"', "services.runtime.terminal: service 'runtime' cannot be its own terminal"),
    ('terminal = "rutnime"', "services.runtime.terminal: unknown service 'rutnime'"),
    ('terminal = "Runtime"', "is not a service name"),
    ('generated_env = ["PASS WORD"]', "an environment variable name"),
])
def test_ide_keys_are_checked_with_file_and_line(env: Env, layer: str, message: str) -> None:
    path = env.profile("web", f'extends = "base"\n[services.runtime]\n{layer}\n')
    err = env.error('profile = "web"\n')
    assert message in err and f"{path}:3" in err, err


def test_a_project_override_of_one_profiles_ports_leaves_the_others_loadable(env: Env) -> None:
    # [services.ide] in devbox.toml applies to every profile's ide: a web_port it no longer publishes
    # is not an error (ps and open find no URL), or one profile's override would break the others
    env.profile("web", 'extends = "base"\n[services.runtime]\nports = ["127.0.0.1::8080"]\nweb_port = 8080\n')
    prof = env.load('profile = "web"\n[services.runtime]\nports = ["127.0.0.1:9999:8888"]\n').profiles["web"]
    assert prof.service("runtime").web_port == 8080
