"""Carry out a :class:`~devbox.stack.reconcile.StackPlan` on the engine.  No decisions are made here.

Order (the plan's): orphans, network, volumes, images (built in parallel),
then every service operation in its own thread; a service first waits until
the services it ``depends_on`` reached their condition (``started`` or
``healthy``), so independent services start together and dependents wait.

Every engine error comes back as a one-line, typed :class:`~devbox.errors.EngineError`.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devbox import console
from devbox.core.containers import create_body
from devbox.core.model import LABEL_PROJECT, LABEL_VOLUME, Build, DependsOn, Service, Stack
from devbox.engine.errors import call
from devbox.errors import DevboxError, EngineError, EngineErrorKind
from devbox.stack.reconcile import Action, Operation, StackPlan

if TYPE_CHECKING:
    from devbox.engine.client import Engine
    from devbox.stack.pods import Pod

DEFAULT_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
STOP_TIMEOUT = 10
BUILD_WORKERS = 3
LOG_TAIL = 15
_STEP_RE = re.compile(r"^(?:Step|STEP) (\d+)/(\d+) ?: (.*)$")  # Docker's "Step 1/8 : ", Podman's "STEP 1/8: "


class BuildError(DevboxError):
    """An image build failed; the message names the failing step."""


def ca_bundle() -> Path | None:
    """The host CA bundle copied into ``certs/`` of build contexts that have one (images/README.md)."""
    path = Path(os.environ.get("DEVBOX_CA_BUNDLE", DEFAULT_CA_BUNDLE))
    return path if path.is_file() else None


@dataclasses.dataclass
class Report:
    """What was done, for the summary and for tests."""

    done: list[str] = dataclasses.field(default_factory=list)
    containers: dict[str, str] = dataclasses.field(default_factory=dict)  # service -> container id
    seconds: float = 0.0

    def add(self, line: str) -> None:
        self.done.append(line)
        console.info(line)


def execute(client: Engine, plan: StackPlan, build_args: Mapping[str, str] | None = None,
            before_services: Callable[[], None] | None = None, cpu_shares: int | None = None,
            pod: Pod | None = None, podman: bool = False) -> Report:
    """Carry ``plan`` out.  ``build_args`` go to every build (the proxy settings: Docker's predefined
    proxy args, which do not bust the build cache).  ``before_services`` runs once images exist and
    before any container is created or started (the idmapped views are made there).

    On Podman (``podman``, and ``pod`` when services are created) the project's network is a pod
    and containers are created in it (:mod:`devbox.stack.pods`)."""
    from devbox.stack import pods

    podman = podman or pod is not None
    started = time.monotonic()
    report = Report()
    prepare = plan.prepare
    for op in prepare:
        if op.action is Action.REMOVE_ORPHAN:
            _remove_container(client, op, report)
        elif op.action is Action.CREATE_NETWORK and podman:
            how = pods.create_pod(client, plan.stack, op.name, pod)
            report.add(f"pod {op.name}: created ({how})")
        elif op.action is Action.CREATE_NETWORK:
            client.api.create_network(op.name, driver="bridge", labels={LABEL_PROJECT: plan.stack.project})
            report.add(f"network {op.name}: created")
        elif op.action is Action.CREATE_VOLUME:
            client.api.create_volume(op.name, labels={LABEL_PROJECT: plan.stack.project, LABEL_VOLUME: op.name})
            report.add(f"volume {op.name}: created")
        elif op.action is Action.REMOVE_NETWORK and podman:
            pods.remove_pod(client, op.name)
            report.add(f"pod {op.name}: removed")
        elif op.action is Action.REMOVE_NETWORK:
            _remove_network(client, op.name)
            report.add(f"network {op.name}: removed")
        elif op.action is Action.REMOVE_VOLUME:
            client.api.remove_volume(op.name, force=True)
            report.add(f"volume {op.name}: removed")
    images = [op for op in prepare if op.action in (Action.BUILD_IMAGE, Action.PULL_IMAGE)]
    if images:
        _images(client, images, report, dict(build_args or {}), cpu_shares, pods.BUILD_NETWORK if podman else None)
    services = [op for group in plan.levels for op in group]
    if before_services is not None:
        before_services()
    if services:
        _services(client, plan.stack, services, report, pod)
    report.seconds = time.monotonic() - started
    return report


# --- images -----------------------------------------------------------------------


def _images(client: Engine, ops: list[Operation], report: Report, build_args: dict[str, str],
            cpu_shares: int | None = None, network_mode: str | None = None) -> None:
    with console.BuildProgress() as progress, concurrent.futures.ThreadPoolExecutor(BUILD_WORKERS) as pool:
        futures = [pool.submit(functools.partial(_build, build_args=build_args, cpu_shares=cpu_shares, network_mode=network_mode)
                               if op.build else _pull, client, op, progress)
                   for op in ops]
        errors = []
        for fut in futures:
            try:
                report.add(fut.result())
            except DevboxError as exc:
                errors.append(exc)
    if errors:
        raise errors[0]


def _pull(client: Engine, op: Operation, progress: console.BuildProgress) -> str:
    started = time.monotonic()
    progress.start(op.name)
    repo, _, tag = op.name.rpartition(":") if ":" in op.name.rsplit("/", 1)[-1] else (op.name, "", "latest")
    try:
        call(lambda: client.docker.api.pull(repo, tag=tag))
    except EngineError as exc:
        if exc.kind in (EngineErrorKind.UNREACHABLE, EngineErrorKind.PERMISSION, EngineErrorKind.TIMEOUT):
            raise  # the engine itself, not the registry
        raise pull_failed(op.name, exc.message) from None
    progress.done(op.name, time.monotonic() - started)
    return f"image {op.name}: pulled"


def build_context(build: Build, into: Path, bundle: Path | None) -> Path:
    """A copy of the context; a ``certs/`` directory in it receives the host CA bundle."""
    ctx = into / "context"
    shutil.copytree(build.context_dir, ctx, symlinks=True)
    if bundle is not None and (ctx / "certs").is_dir():
        shutil.copyfile(bundle, ctx / "certs" / "host-ca.crt")
    return ctx


def _build(client: Engine, op: Operation, progress: console.BuildProgress,
           build_args: Mapping[str, str] | None = None, cpu_shares: int | None = None, network_mode: str | None = None) -> str:
    assert op.build is not None
    started = time.monotonic()
    progress.start(op.name)
    tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL)
    step = "the start"
    instruction = ""
    with tempfile.TemporaryDirectory(prefix="devbox-build-") as tmp:
        # a project's own context is sent as it is (the SDK honours its .dockerignore); images/ ones get the CA bundle
        ctx = Path(op.build.context_dir) if op.build.in_project else build_context(op.build, Path(tmp), ca_bundle())
        stream = call(
            lambda: client.docker.api.build(
                path=str(ctx), tag=op.name, buildargs={**(build_args or {}), **(op.build.args_dict if op.build else {})},
                dockerfile=op.build.dockerfile if op.build else "Dockerfile", rm=True, forcerm=True, decode=True,
                target=op.build.target if op.build else None,
                # --nice: the build's RUN steps get a small CPU weight, so they yield to everything else
                container_limits={"cpushares": cpu_shares} if cpu_shares else None,
                network_mode=network_mode,
            )
        )
        error = None

        def consume() -> None:
            nonlocal step, error, instruction
            for chunk in stream:
                text = chunk.get("stream")
                if text:
                    for line in text.rstrip("\n").splitlines():
                        m = _STEP_RE.match(line)
                        if m:
                            step = f"step {m.group(1)}/{m.group(2)} ({m.group(3)[:80]})"
                            instruction = m.group(3)
                            tail.clear()
                            progress.step(op.name, int(m.group(1)), int(m.group(2)), m.group(3))
                        elif line.strip():
                            tail.append(line)
                            progress.output(op.name, line)
                if "error" in chunk:
                    error = str(chunk.get("errorDetail", {}).get("message") or chunk["error"]).strip()

        call(consume)
    if error is not None:
        progress.failed(op.name, step, list(tail))
        last = error.splitlines()[-1] if error else "unknown error"
        base = base_image(instruction)
        if base is not None:
            # the engine failed to get the FROM image: a registry or network problem, not the Dockerfile's
            raise pull_failed(base, last, f"building {op.name}: ")
        where = Path(op.build.context_dir, op.build.dockerfile) if op.build.in_project else f"images/{op.build.context}/{op.build.dockerfile}"
        raise BuildError(f"building {op.name} failed at {step}: {last}", hint=f"fix {where}")
    progress.done(op.name, time.monotonic() - started)
    return f"image {op.name}: built in {time.monotonic() - started:.1f}s"


def pull_failed(image: str, why: str, prefix: str = "") -> EngineError:
    """The engine could not get ``image`` from its registry: a network or registry problem, said so."""
    from devbox.stack.bootstrap import debian_release

    release = debian_release(image)
    local = (f"or make it here without a registry: devbox images --bootstrap {release}" if release else
             "or load the image into the engine (docker load -i FILE, or docker import of a rootfs tarball)")
    return EngineError(
        f"{prefix}cannot get the image {image}: {why}", kind=EngineErrorKind.PULL_FAILED,
        hint=f"the engine could not pull it: check that it reaches its registry (docker pull {image}), {local}",
    )


def base_image(instruction: str) -> str | None:
    """The image a ``FROM`` build step pulls (``FROM [--platform=P] IMAGE [AS NAME]``), else ``None``."""
    words = instruction.split()
    if not words or words[0].upper() != "FROM":
        return None
    refs = [w for w in words[1:] if not w.startswith("--")]
    return refs[0] if refs else None


# --- containers -------------------------------------------------------------------


def _remove_container(client: Engine, op: Operation, report: Report) -> None:
    assert op.container_id is not None
    remove_container(client, op.container_id)
    report.add(f"container {op.name}: removed ({op.cause})")


def remove_container(client: Engine, container_id: str) -> None:
    try:
        client.api.stop(container_id, timeout=STOP_TIMEOUT)
    except EngineError as exc:
        if exc.kind is EngineErrorKind.NOT_FOUND:
            return
        if exc.kind not in (EngineErrorKind.CONFLICT, EngineErrorKind.SERVER):
            raise
        # already stopped, or dead: removal below forces it
    try:
        client.api.remove_container(container_id, force=True, volumes=False)
    except EngineError as exc:
        # gone already, or another removal of it is in progress (409)
        if exc.kind not in (EngineErrorKind.NOT_FOUND, EngineErrorKind.CONFLICT):
            raise EngineError(f"cannot remove container {container_id[:12]}: {exc.message}", kind=exc.kind,
                              status=exc.status) from None


def _remove_network(client: Engine, name: str) -> None:
    try:
        client.api.remove_network(name)
    except EngineError as exc:
        if exc.kind is not EngineErrorKind.NOT_FOUND:
            raise EngineError(f"cannot remove network {name}: {exc.message}", kind=exc.kind, status=exc.status) from None


class _Gate:
    """Per service: set once its own operation finished (or failed)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.container_id: str | None = None
        self.error: str | None = None


def _services(client: Engine, stack: Stack, ops: list[Operation], report: Report, pod: Pod | None = None) -> None:
    gates = {op.name: _Gate() for op in ops}
    lock = threading.Lock()
    # Services others wait for are on the critical path: the rest of their level starts
    # once they have (parallel starts slow each other down in the engine).
    awaited = {dep.service for op in ops for dep in op.wait_for} & gates.keys()
    first = {op.level: [gates[o.name] for o in ops if o.level == op.level and o.name in awaited] for op in ops}

    def run(op: Operation) -> None:
        gate = gates[op.name]
        try:
            if op.name not in awaited:
                for g in first[op.level]:
                    g.event.wait()
            for dep in op.wait_for:
                _wait_for(client, stack, dep, gates.get(dep.service), op.name, pod)
            cid = _service_op(client, stack, op, pod)
            gate.container_id = cid
            with lock:
                report.containers[op.name] = cid
                if op.action is not Action.LEAVE:
                    report.add(f"service {op.name}: {_DONE[op.action]} ({op.cause})")
        except DevboxError as exc:
            gate.error = exc.one_line()
            raise
        finally:
            gate.event.set()

    with concurrent.futures.ThreadPoolExecutor(max(1, len(ops))) as pool:
        futures = [pool.submit(run, op) for op in ops]
        errors: list[DevboxError] = []
        for fut in futures:
            try:
                fut.result()
            except DevboxError as exc:
                errors.append(exc)
    if errors:
        # the root cause, not the "dependency failed" it caused downstream
        errors.sort(key=lambda e: isinstance(e, _DependencyFailed))
        raise errors[0]


_DONE = {
    Action.CREATE: "created and started",
    Action.RECREATE: "recreated",
    Action.START: "started",
    Action.REMOVE_ORPHAN: "removed",
}


class _DependencyFailed(DevboxError):
    pass


def _service_op(client: Engine, stack: Stack, op: Operation, pod: Pod | None = None) -> str:
    if op.action is Action.REMOVE_ORPHAN:
        assert op.container_id is not None
        remove_container(client, op.container_id)
        return op.container_id
    if op.action is Action.LEAVE:
        assert op.container_id is not None
        return op.container_id
    if op.action is Action.START:
        assert op.container_id is not None
        cid = op.container_id
        client.api.start(cid)
        if op.service is not None:
            _lifecycle(client, op.service, cid, "post_start", op.service.post_start)
        return cid
    assert op.service is not None and op.config_hash is not None
    if op.action is Action.RECREATE and op.container_id is not None:
        remove_container(client, op.container_id)
    if pod is not None:
        from devbox.stack import pods

        cid = pods.create_container(client, pod, stack, op.service, op.config_hash)
        pods.start(client, op.service, cid, pod.keep_id)
    else:
        cid = client.api.create_container(create_body(stack, op.service, op.config_hash),
                                          name=stack.container_name(op.service.name))
        client.api.start(cid)
    try:
        _lifecycle(client, op.service, cid, "post_create", op.service.post_create)
    except DevboxError:
        remove_container(client, cid)  # so that the next `up` creates it again and runs post_create again
        raise
    _lifecycle(client, op.service, cid, "post_start", op.service.post_start)
    return cid


def _lifecycle(client: Engine, svc: Service, cid: str, what: str, commands: tuple[tuple[str, ...], ...]) -> None:
    """Run ``svc``'s ``post_create`` or ``post_start`` commands in order, as its user in its working dir.

    The devcontainer spec runs the entries of an object-form command in parallel; these run one after
    the other (their output interleaved would be unreadable, and most entries are quick).
    """
    for argv in commands:
        low = client.docker.api
        exec_id = call(functools.partial(low.exec_create, cid, list(argv), user=svc.user or "", workdir=svc.working_dir))["Id"]
        output: bytes = call(functools.partial(low.exec_start, exec_id))
        code = call(functools.partial(low.exec_inspect, exec_id)).get("ExitCode")
        if code:
            lines = [ln for ln in output.decode(errors="replace").splitlines() if ln.strip()]
            raise DevboxError(f"service {svc.name}: {what} command {list(argv)} failed with exit code {code}: "
                              + (lines[-1] if lines else "(no output)"),
                              hint=f"fix {what} of services.{svc.name}" + ("; the container was removed, 'devbox up' "
                                                                          "runs it again" if what == "post_create" else ""))
        console.info(f"service {svc.name}: {what} {' '.join(argv)[:100]}: ok")


def _wait_for(client: Engine, stack: Stack, dep: DependsOn, gate: _Gate | None, waiter: str,
              pod: Pod | None = None) -> None:
    """Block until ``dep.service`` reached ``dep.condition``; fail with its log tail when it cannot.

    The container's events (start, die, health_status) say when to look again, so
    the wait ends as soon as the engine reports the condition, without polling.
    """
    if gate is not None:
        gate.event.wait()
        if gate.error is not None:
            raise _DependencyFailed(f"service {waiter} not started: its dependency {dep.service} failed")
    name = stack.container_name(dep.service)
    target = gate.container_id if gate and gate.container_id else name
    if pod is not None:
        from devbox.stack import pods

        pods.wait_for(client, stack, dep, target, waiter, lambda state: _reached(client, dep, state, name, waiter))
        return
    svc = stack.service(dep.service)
    limit = 120.0
    if svc.healthcheck is not None:
        h = svc.healthcheck
        limit = h.start_period_s + h.retries * (h.interval_s + h.timeout_s) + 10
    now = time.time()
    deadline = now + limit
    # Subscribed before the first look; `since` replays what happened in between,
    # and `until` makes the engine end the stream at the deadline.
    events = client.api.events(
        since=f"{now - 1:.9f}", until=f"{deadline:.9f}",
        filters={"container": [target], "type": ["container"], "event": ["start", "die", "health_status"]},
    )
    try:
        while True:
            state = client.api.inspect_container(target)["State"]
            if _reached(client, dep, state, name, waiter):
                return
            if time.time() >= deadline:
                raise DevboxError(f"service {dep.service} did not become {dep.condition} in {limit:.0f}s", hint=f"see devbox logs {dep.service}")
            if events.next() is None:
                time.sleep(0.1)  # the stream ended early: keep looking until the deadline
    finally:
        events.close()


def _reached(client: Engine, dep: DependsOn, state: dict[str, Any], name: str, waiter: str) -> bool:
    """Has the dependency reached its condition (``state`` is its inspect ``State``)?  Raise when it never will."""
    status = state.get("Status")
    health = (state.get("Health") or {}).get("Status")
    if status in ("exited", "dead"):
        raise DevboxError(
            f"service {dep.service} exited with code {state.get('ExitCode')} before {waiter} could start: "
            + _last_log_line(client, name),
            hint=f"see devbox logs {dep.service}",
        )
    if dep.condition == "started":
        return status == "running"
    if health == "unhealthy":
        raise DevboxError(f"service {dep.service} is unhealthy: {_last_log_line(client, name)}", hint=f"see devbox logs {dep.service}")
    return health == "healthy"


def _last_log_line(client: Engine, name: str) -> str:
    try:
        text = client.api.logs(name, tail=3)
    except EngineError:  # only decorating an error message
        return "(no log)"
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"

