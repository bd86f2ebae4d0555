"""reconcile(desired, observed) -> StackPlan, asserted as the printed --dry-run text."""

from __future__ import annotations

import dataclasses
import graphlib
from pathlib import Path

import pytest

from devbox.config import resolve as config
from devbox.core.hashing import config_hash
from devbox.core.model import (
    Build,
    DependsOn,
    Healthcheck,
    Mount,
    Observed,
    ObservedContainer,
    ObservedImage,
    Profile,
    Service,
    Stack,
    find_cycle,
)
from devbox.stack.reconcile import Action, StackPlan, reconcile, teardown

HEALTH = Healthcheck(test=("CMD", "true"))
PY_BUILD = Build(context="python", context_dir="/images/python", args=(("DEBIAN_RELEASE", "bookworm"),))


def stack(*services: Service, profile: str = "python") -> Stack:
    return Stack(project="app", profile=profile, services=services)


def basic() -> Stack:
    return stack(
        Service(name="db", image="devbox/postgres:15", healthcheck=HEALTH, mounts=(Mount("volume", "devbox-app-pgdata", "/data"),)),
        Service(name="editor", image="devbox/editor:1", interactive=True),
        Service(name="runtime", image="devbox/python:311", build=PY_BUILD, depends_on=(DependsOn("db", "healthy"),)),
    )


def image_id(ref: str) -> str:
    return "sha256:" + ref.replace("/", "").replace(":", "").ljust(16, "0")


def converged(desired: Stack, *, status: str = "running") -> Observed:
    """What the engine holds after executing a plan for ``desired`` (the executor's job, faked)."""
    return Observed(
        containers=tuple(
            ObservedContainer(
                id=f"id-{s.name}",
                name=desired.container_name(s.name),
                project=desired.project,
                service=s.name,
                profile=desired.profile,
                config_hash=config_hash(s),
                image_id=image_id(s.image),
                status=status,
            )
            for s in desired.services
        ),
        networks=frozenset({desired.network}),
        volumes=frozenset(desired.volumes),
        images=tuple(ObservedImage(ref, image_id(ref)) for ref, _ in desired.images),
    )


def with_containers(observed: Observed, *containers: ObservedContainer) -> Observed:
    return dataclasses.replace(observed, containers=observed.containers + containers)


def test_first_up() -> None:
    observed = Observed(images=(ObservedImage("devbox/editor:1", image_id("devbox/editor:1")),))
    plan = reconcile(basic(), observed)
    assert str(plan) == """\
#1 network:devbox-app, CreateNetwork, not found
#2 volume:devbox-app-pgdata, CreateVolume, not found
#3 image:devbox/postgres:15, PullImage, not found
#4 image:devbox/python:311, BuildImage, not found
level 1:
#5 service:db, CreateContainer, not found
#6 service:editor, CreateContainer, not found
level 2 (after db healthy):
#7 service:runtime, CreateContainer, not found"""
    build = [op for op in plan.operations if op.action is Action.BUILD_IMAGE]
    assert build[0].build == PY_BUILD
    # the executor labels what it creates with the hash the plan carries
    runtime = plan.levels[1][0]
    assert runtime.config_hash == config_hash(basic().service("runtime"))
    assert runtime.wait_for == (DependsOn("db", "healthy"),)
    assert not plan.is_noop


def test_noop_up_does_nothing() -> None:
    desired = basic()
    plan = reconcile(desired, converged(desired))
    assert plan.is_noop and plan.mutations == ()
    assert str(plan) == """\
level 1:
#1 service:db, Leave, up to date
#2 service:editor, Leave, up to date
level 2 (after db healthy):
#3 service:runtime, Leave, up to date
nothing to do"""
    assert [op.container_id for op in plan.operations] == ["id-db", "id-editor", "id-runtime"]


def test_changed_hash_recreates_only_that_service() -> None:
    before = basic()
    runtime = dataclasses.replace(before.service("runtime"), env=(("DEBUG", "1"),))
    after = stack(before.service("db"), before.service("editor"), runtime)
    old, new = config_hash(before.service("runtime")), config_hash(runtime)
    plan = reconcile(after, converged(before))
    assert str(plan) == f"""\
level 1:
#1 service:db, Leave, up to date
#2 service:editor, Leave, up to date
level 2 (after db healthy):
#3 service:runtime, RecreateContainer, config changed ({old[:12]} -> {new[:12]})"""
    assert [op.name for op in plan.mutations] == ["runtime"]
    assert plan.mutations[0].container_id == "id-runtime"


def test_stopped_containers_are_started_not_recreated() -> None:
    desired = basic()
    plan = reconcile(desired, converged(desired, status="exited"))
    assert [(op.name, op.action, op.cause) for op in plan.operations] == [
        ("db", Action.START, "exited"),
        ("editor", Action.START, "exited"),
        ("runtime", Action.START, "exited"),
    ]


def test_dead_container_is_recreated() -> None:
    desired = basic()
    observed = converged(desired)
    dead = dataclasses.replace(observed.containers[0], status="dead")
    plan = reconcile(desired, dataclasses.replace(observed, containers=(dead, *observed.containers[1:])))
    assert plan.mutations[0].line(1) == "#1 service:db, RecreateContainer, container is dead"


def test_rebuilt_image_recreates_its_users() -> None:
    desired = basic()
    observed = converged(desired)
    images = tuple(
        ObservedImage(i.ref, "sha256:fresh00000000000") if i.ref == "devbox/python:311" else i for i in observed.images
    )
    plan = reconcile(desired, dataclasses.replace(observed, images=images))
    assert [op.line(1) for op in plan.mutations] == [
        "#1 service:runtime, RecreateContainer, image changed (devboxpython -> fresh0000000)"
    ]


def test_orphans_removed_first_and_other_projects_ignored() -> None:
    desired = basic()
    orphan = ObservedContainer("id-ide", "devbox-app-ide", "app", "ide", "ide-python", "h", "sha256:x", "running")
    foreign = ObservedContainer("id-web", "devbox-other-web", "other", "web", "node", "h", "sha256:x", "running")
    plan = reconcile(desired, with_containers(converged(desired), orphan, foreign))
    assert str(plan).splitlines()[0] == "#1 container:devbox-app-ide, RemoveOrphan, orphan: no service 'ide' in profile python"
    assert [op.container_id for op in plan.mutations] == ["id-ide"]


def test_duplicate_containers_for_one_service() -> None:
    desired = basic()
    observed = converged(desired)
    stale = dataclasses.replace(observed.containers[1], id="id-editor-old", name="devbox-app-editor-old", status="exited")
    plan = reconcile(desired, with_containers(observed, stale))
    assert [op.line(n) for n, op in enumerate(plan.mutations, 1)] == [
        "#1 container:devbox-app-editor-old, RemoveOrphan, duplicate of service editor"
    ]
    editor = next(op for op in plan.operations if op.name == "editor")
    assert editor.action is Action.LEAVE and editor.container_id == "id-editor"


def test_dependency_levels_run_independent_services_together() -> None:
    def svc(name: str, *deps: str) -> Service:
        return Service(name=name, image="busybox", depends_on=tuple(DependsOn(d) for d in deps))

    desired = stack(svc("app", "api", "worker"), svc("api", "db", "cache"), svc("worker", "db"), svc("db"), svc("cache"), svc("lint"))
    assert desired.levels() == (("cache", "db", "lint"), ("api", "worker"), ("app",))
    observed = Observed(networks=frozenset({"devbox-app"}), images=(ObservedImage("busybox", "sha256:b"),))
    plan = reconcile(desired, observed)
    assert str(plan) == """\
level 1:
#1 service:cache, CreateContainer, not found
#2 service:db, CreateContainer, not found
#3 service:lint, CreateContainer, not found
level 2 (after cache started, db started):
#4 service:api, CreateContainer, not found
#5 service:worker, CreateContainer, not found
level 3 (after api started, worker started):
#6 service:app, CreateContainer, not found"""
    assert [[op.name for op in level] for level in plan.levels] == [["cache", "db", "lint"], ["api", "worker"], ["app"]]


def test_levels_reject_a_cycle() -> None:
    a = Service(name="a", image="x", depends_on=(DependsOn("b"),))
    b = Service(name="b", image="x", depends_on=(DependsOn("a"),))
    with pytest.raises(graphlib.CycleError) as raised:
        stack(a, b).levels()
    assert raised.value.args[1] in (["a", "b", "a"], ["b", "a", "b"])


def test_find_cycle_names_it_in_dependency_order() -> None:
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"], "d": []}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["a"]}) == ["a", "a"]
    assert find_cycle({"a": ["b"], "b": []}) is None


def test_teardown() -> None:
    desired = basic()
    observed = converged(desired)
    assert str(teardown("app", observed)) == """\
#1 container:devbox-app-db, RemoveOrphan, down
#2 container:devbox-app-editor, RemoveOrphan, down
#3 container:devbox-app-runtime, RemoveOrphan, down
#4 network:devbox-app, RemoveNetwork, down"""
    assert str(teardown("app", observed, volumes=True)).splitlines()[-1] == "#5 volume:devbox-app-pgdata, RemoveVolume, down --volumes"
    assert str(teardown("app", Observed())) == "nothing to do"


# --- with the shipped profiles ------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped() -> dict[str, Profile]:
    return config.load_profiles(project_root=Path("/nonexistent/app"), home=Path("/nonexistent/home"), project="app")


def shipped_stack(profiles: dict[str, Profile], name: str) -> Stack:
    return Stack(project="app", profile=name, services=profiles[name].services)


def test_switch_python_to_313_recreates_only_runtime(shipped: dict[str, Profile]) -> None:
    before = shipped_stack(shipped, "python")
    after = shipped_stack(shipped, "python-3.13")
    old = config_hash(before.service("runtime"))
    new = config_hash(after.service("runtime"))
    plan = reconcile(after, converged(before))
    assert str(plan) == f"""\
#1 image:{after.service("runtime").image}, BuildImage, not found
level 1:
#2 service:db, Leave, up to date
#3 service:editor, Leave, up to date
level 2 (after db healthy):
#4 service:runtime, RecreateContainer, config changed ({old[:12]} -> {new[:12]})"""
    # the editor container and the database volume survive
    assert {op.name: op.container_id for op in plan.operations if op.action is Action.LEAVE} == {"db": "id-db", "editor": "id-editor"}
    assert not any(op.kind == "volume" for op in plan.operations)
    # and back again: only the runtime, its image already there
    after_switch = converged(after)
    both = dataclasses.replace(after_switch, images=after_switch.images + converged(before).images)
    back = reconcile(before, both)
    assert [(op.name, op.action) for op in back.mutations] == [("runtime", Action.RECREATE)]


def test_switch_to_pg17_recreates_db_on_a_new_volume(shipped: dict[str, Profile]) -> None:
    before = shipped_stack(shipped, "python-3.13")
    after = shipped_stack(shipped, "python-3.13-pg17")
    plan = reconcile(after, converged(before))
    lines = str(plan).splitlines()
    assert lines[0] == "#1 volume:devbox-app-pgdata-17, CreateVolume, not found"
    assert lines[1] == f"#2 image:{after.service('db').image}, BuildImage, not found"
    assert [(op.name, op.action) for op in plan.mutations if op.kind == "service"] == [("db", Action.RECREATE)]


def test_switch_to_ide_profile_removes_editor(shipped: dict[str, Profile]) -> None:
    before = shipped_stack(shipped, "python")
    after = shipped_stack(shipped, "ide-python")
    plan = reconcile(after, converged(before))
    assert str(plan) == f"""\
#1 container:devbox-app-editor, RemoveOrphan, orphan: no service 'editor' in profile ide-python
#2 image:{after.service("ide").image}, BuildImage, not found
level 1:
#3 service:db, Leave, up to date
level 2 (after db healthy):
#4 service:ide, CreateContainer, not found
#5 service:runtime, Leave, up to date"""


@pytest.mark.parametrize("name", sorted(p.stem for p in (Path(__file__).resolve().parent.parent / "profiles").glob("*.toml")))
def test_every_shipped_profile_plans_and_converges(shipped: dict[str, Profile], name: str) -> None:
    desired = shipped_stack(shipped, name)
    first = reconcile(desired, Observed())
    assert isinstance(first, StackPlan) and first.operations[0].action is Action.CREATE_NETWORK
    assert {op.name for op in first.operations if op.kind == "service"} == set(shipped[name].service_names)
    assert reconcile(desired, converged(desired)).is_noop
