"""Pure reconciliation: desired :class:`Stack` + :class:`Observed` -> :class:`StackPlan`.

Every :class:`Operation` says *why* (its cause); ``str(plan)`` is what
``up --dry-run`` prints, one line per operation, in the order the executor
runs them::

    #1 network:devbox-myapp, CreateNetwork, not found
    #2 image:devbox/python:0123456789ab, BuildImage, not found
    level 1:
    #3 service:db, CreateContainer, not found
    level 2 (after db healthy):
    #4 service:runtime, CreateContainer, not found

Order: orphans go first (they may hold ports or names), then network,
volumes and images, then services level by level: every service of one level
may start in parallel, and a level starts once the dependencies its services
name have reached their condition.

A container is left alone when its ``devbox.config-hash`` label equals the
desired hash and it runs the image id its reference currently points at.
"""

from __future__ import annotations

import dataclasses
import enum

from devbox.core.hashing import config_hash
from devbox.core.model import Build, DependsOn, Observed, ObservedContainer, Service, Stack


class Action(enum.Enum):
    REMOVE_ORPHAN = "RemoveOrphan"
    CREATE_NETWORK = "CreateNetwork"
    CREATE_VOLUME = "CreateVolume"
    BUILD_IMAGE = "BuildImage"
    PULL_IMAGE = "PullImage"
    CREATE = "CreateContainer"
    RECREATE = "RecreateContainer"
    START = "StartContainer"
    LEAVE = "Leave"
    REMOVE_NETWORK = "RemoveNetwork"
    REMOVE_VOLUME = "RemoveVolume"


@dataclasses.dataclass(frozen=True)
class Operation:
    action: Action
    kind: str  # network, volume, image, service, container
    name: str
    cause: str
    level: int | None = None  # services only: 0-based dependency level
    service: Service | None = None
    config_hash: str | None = None  # the hash to label a created container with
    container_id: str | None = None  # the existing container (recreate, start, remove, leave)
    build: Build | None = None
    wait_for: tuple[DependsOn, ...] = ()  # conditions to reach before this service starts

    @property
    def mutates(self) -> bool:
        return self.action is not Action.LEAVE

    def line(self, number: int) -> str:
        return f"#{number} {self.kind}:{self.name}, {self.action.value}, {self.cause}"


@dataclasses.dataclass(frozen=True)
class StackPlan:
    stack: Stack
    operations: tuple[Operation, ...]

    @property
    def mutations(self) -> tuple[Operation, ...]:
        return tuple(op for op in self.operations if op.mutates)

    @property
    def is_noop(self) -> bool:
        return not self.mutations

    @property
    def prepare(self) -> tuple[Operation, ...]:
        """Everything before the services: orphans, network, volumes, images (in this order)."""
        return tuple(op for op in self.operations if op.level is None)

    def images_only(self) -> StackPlan:
        """Only the image builds and pulls (what must exist before a service's user can be read)."""
        return StackPlan(self.stack, tuple(op for op in self.operations
                                           if op.action in (Action.BUILD_IMAGE, Action.PULL_IMAGE)))

    @property
    def levels(self) -> tuple[tuple[Operation, ...], ...]:
        """Service operations grouped by dependency level (each group may run in parallel)."""
        count = max((op.level for op in self.operations if op.level is not None), default=-1) + 1
        return tuple(tuple(op for op in self.operations if op.level == n) for n in range(count))

    def __str__(self) -> str:
        lines: list[str] = []
        number = 0
        for op in self.prepare:
            number += 1
            lines.append(op.line(number))
        for n, group in enumerate(self.levels):
            waits = sorted({f"{w.service} {w.condition}" for op in group for w in op.wait_for})
            lines.append(f"level {n + 1}" + (f" (after {', '.join(waits)})" if waits else "") + ":")
            for op in group:
                number += 1
                lines.append(op.line(number))
        if not self.mutations:
            lines.append("nothing to do")
        return "\n".join(lines)


def reconcile(desired: Stack, observed: Observed) -> StackPlan:
    """The operations that turn ``observed`` into ``desired``; pure."""
    ops: list[Operation] = []
    wanted = {s.name for s in desired.services}

    for c in sorted(observed.containers, key=lambda c: (c.service, c.name)):
        if c.project == desired.project and c.service not in wanted:
            ops.append(Operation(Action.REMOVE_ORPHAN, "container", c.name, f"orphan: no service '{c.service}' in profile {desired.profile}", container_id=c.id))

    if desired.network not in observed.networks:
        ops.append(Operation(Action.CREATE_NETWORK, "network", desired.network, "not found"))
    for vol in desired.volumes:
        if vol not in observed.volumes:
            ops.append(Operation(Action.CREATE_VOLUME, "volume", vol, "not found"))

    missing_images: set[str] = set()
    for ref, build in desired.images:
        if observed.image(ref) is None:
            missing_images.add(ref)
            if build is not None:
                ops.append(Operation(Action.BUILD_IMAGE, "image", ref, "not found", build=build))
            else:
                ops.append(Operation(Action.PULL_IMAGE, "image", ref, "not found"))

    for level, names in enumerate(desired.levels()):
        for name in names:
            svc = desired.service(name)
            ops.extend(_service_ops(desired, observed, svc, level, missing_images))
    return StackPlan(desired, tuple(ops))


def _service_ops(desired: Stack, observed: Observed, svc: Service, level: int, missing_images: set[str]) -> list[Operation]:
    want = config_hash(svc)

    def op(action: Action, cause: str, container: ObservedContainer | None = None) -> Operation:
        return Operation(
            action, "service", svc.name, cause, level=level, service=svc, config_hash=want,
            container_id=container.id if container else None, wait_for=svc.depends_on,
        )

    mine = [c for c in observed.containers_of(svc.name) if c.project == desired.project]
    existing = sorted(mine, key=lambda c: (c.status != "running", c.name))
    if not existing:
        return [op(Action.CREATE, "not found")]
    c = existing[0]
    cause = _recreate_cause(c, want, observed, svc, missing_images)
    if cause:
        first = op(Action.RECREATE, cause, c)
    elif c.status in ("running", "restarting"):
        first = op(Action.LEAVE, "up to date", c)
    else:
        first = op(Action.START, c.status, c)
    # Duplicates (say, left by an interrupted recreate) go; the running one is kept if any.
    extras = [
        Operation(Action.REMOVE_ORPHAN, "container", x.name, f"duplicate of service {svc.name}", level=level, container_id=x.id)
        for x in existing[1:]
    ]
    return [first, *extras]


def _recreate_cause(c: ObservedContainer, want: str, observed: Observed, svc: Service, missing_images: set[str]) -> str | None:
    if c.config_hash != want:
        return f"config changed ({c.config_hash[:12] or 'no hash'} -> {want[:12]})"
    if c.status in ("dead", "removing"):
        return f"container is {c.status}"
    image = observed.image(svc.image)
    if image is not None and svc.image not in missing_images and image.id != c.image_id:
        return f"image changed ({_short(c.image_id)} -> {_short(image.id)})"
    return None


def _short(image_id: str) -> str:
    return image_id.split(":", 1)[-1][:12]


def teardown(project: str, observed: Observed, *, volumes: bool = False) -> StackPlan:
    """``down``: every container of ``project`` (found by label), its network, and with ``volumes`` its volumes."""
    ops = [
        Operation(Action.REMOVE_ORPHAN, "container", c.name, "down", container_id=c.id)
        for c in sorted(observed.containers, key=lambda c: c.name)
        if c.project == project
    ]
    ops += [Operation(Action.REMOVE_NETWORK, "network", n, "down") for n in sorted(observed.networks)]
    if volumes:
        ops += [Operation(Action.REMOVE_VOLUME, "volume", v, "down --volumes") for v in sorted(observed.volumes)]
    return StackPlan(Stack(project=project, profile="", services=()), tuple(ops))
