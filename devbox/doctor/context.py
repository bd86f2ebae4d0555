"""What doctor reads, once: host files, the engine, the probe, the project, its containers, the watcher's files.

:func:`gather` reads the host and the engine into a :class:`Context`; engine and
probe failures are kept as data (``Context.engine_error``,
``HostState.probe_error``) for the checks to report.  The project, its
containers, the leak attribution and the work-dir scan are read lazily, once,
by the first check that needs them (a check whose prerequisite failed never
touches them).  Tests build a :class:`Context` by hand and may set any of the
lazy attributes directly.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devbox.core.model import LABEL_PROFILE, LABEL_PROJECT, Project
from devbox.core.network import NetworkFacts
from devbox.core.ownership import Choice, Refusal, probe_binds_idmapped
from devbox.engine.client import connect, fast_api, inspect_engine
from devbox.engine.endpoint import Endpoint, find_endpoint
from devbox.engine.errors import socket_path, timeout_s
from devbox.errors import ConfigError, DevboxError, EngineError
from devbox.host.user import User
from devbox.paths import Paths
from devbox.paths import project_root as find_project_root
from devbox.remap.assess import HostState, observe_host, run_probe
from devbox.watch.leaks import Attribution, HostUser, load_attribution, service_uids
from devbox.watch.scan import ScanResult, scan

if TYPE_CHECKING:
    from devbox.engine.client import Engine
    from devbox.engine.probe import ProbeResult


class Context:
    """Everything the checks look at.  Built by :func:`gather`; tests may build one by hand.

    ``paths`` is the target user's (:func:`devbox.host.user.paths_for`): under
    sudo, the watcher's files are looked for in their state directory, not root's.
    """

    def __init__(
        self,
        *,
        paths: Paths,
        state: HostState,
        engine_error: EngineError | None,
        client: Engine | None,
        cwd: Path,
        environ: Mapping[str, str],
    ) -> None:
        self.paths = paths
        self.state = state
        self.engine_error = engine_error
        self.client = client
        self.cwd = cwd
        self.environ = environ

    @property
    def user(self) -> User:
        return self.state.user

    @property
    def endpoint(self) -> Endpoint:
        return find_endpoint(self.environ)

    @property
    def host(self) -> str:
        return self.endpoint.host

    @property
    def socket(self) -> str | None:
        return socket_path(self.host)

    # -- the project, loaded once

    @cached_property
    def project_root(self) -> Path | None:
        return find_project_root(self.cwd)

    @cached_property
    def project_or_error(self) -> Project | ConfigError | None:
        if self.project_root is None:
            return None
        from devbox.config.resolve import load_project

        try:
            return load_project(self.project_root, home=Path(self.user.home))
        except ConfigError as exc:
            return exc

    @property
    def project(self) -> Project:
        p = self.project_or_error
        if p is None or isinstance(p, ConfigError):
            raise ConfigError("no usable devbox.toml")  # unreachable: project.* checks need project.config
        return p

    @cached_property
    def network_facts(self) -> NetworkFacts:
        """The CA bundle and proxy settings ``up`` gives this project's services (``[network]``)."""
        from devbox.host.network import network_facts

        return network_facts(self.project.ca_certificates, self.user.home, self.environ, self.project.root)

    @cached_property
    def containers(self) -> list[dict[str, Any]]:
        """``docker inspect`` of every container labelled with this project."""
        client = self.client
        if client is None:
            return []
        listed = client.api.containers(all=True, filters={"label": f"{LABEL_PROJECT}={self.project.name}"})
        found = [client.api.inspect_container(c["Id"]) for c in listed]
        return sorted(found, key=lambda a: str(a.get("Name", "")))

    @cached_property
    def running_profile(self) -> str | None:
        for c in self.containers:
            if c.get("State", {}).get("Running"):
                return str((c.get("Config", {}).get("Labels") or {}).get(LABEL_PROFILE) or "") or None
        return None

    @property
    def stack_running(self) -> bool:
        return any(c.get("State", {}).get("Running") for c in self.containers)

    @property
    def profiles_checked(self) -> list[str]:
        names = [self.project.default_profile]
        if self.running_profile and self.running_profile not in names and self.running_profile in self.project.profiles:
            names.append(self.running_profile)
        return names

    @property
    def workdirs(self) -> list[str]:
        return [m.source for m in self.project.workdirs if not m.read_only]

    @property
    def records_path(self) -> Path:
        return self.paths.leak_records(self.project.name)

    @property
    def pidfile(self) -> Path:
        return self.paths.watcher_pidfile(self.project.name)

    @cached_property
    def attribution(self) -> Attribution:
        by_uid, host_ns = service_uids(
            svc for prof in self.profiles_checked for svc in self.project.profile(prof).services
        )
        user = HostUser.of(self.user, self.project.watch.allowed_gids)
        return load_attribution(user, by_uid, subuid=self.paths.subuid, subgid=self.paths.subgid, host_ns_services=host_ns)

    @cached_property
    def scan(self) -> ScanResult:
        return scan(self.workdirs, self.attribution.user, ignore=self.project.watch.ignore)


def gather(paths: Paths, user: User, *, probe: bool = True, cwd: Path | None = None) -> Context:
    """Read every layer once; engine and probe failures are kept as data.  The probe runs the way
    the project's ``[ownership] strategy`` (else ``auto``) runs containers on this engine."""
    state = observe_host(paths, user, engine=False)
    client = None
    info = None
    engine_error: EngineError | None = None
    try:
        client = connect(timeout=timeout_s(60))
        info = inspect_engine(client)
    except EngineError as exc:
        engine_error = exc
        client = None
    ctx = Context(paths=paths, state=state, engine_error=engine_error, client=client,
                  cwd=cwd or Path.cwd(), environ=dict(os.environ))
    project = ctx.project_or_error
    setting = project.strategy if isinstance(project, Project) else "auto"
    probe_result = None
    probe_error = None
    # ``auto`` on a dockerd without remap means idmapped views once their helper is installed (what `up` then
    # uses); until then doctor diagnoses the remap, and idmap.helper names the alternative
    from devbox.idmapd.client import helper_status

    ctx.state = dataclasses.replace(
        state, engine=info, engine_error=engine_error.one_line() if engine_error else None, setting=setting,
        views_auto=helper_status(root_will_do=False) is None,
    )
    choice = ctx.state.choice
    if client is not None and info is not None and probe:
        if isinstance(choice, Choice) and choice.strategy == "idmap" and not probe_binds_idmapped(info.kind, "idmap"):
            probe_error = "strategy idmap: the engine maps no ids; idmap.proof proves the views instead"
        else:
            probe_result, probe_error = _probe(user, choice, info.kind)
    ctx.state = dataclasses.replace(ctx.state, probe=probe_result, probe_error=probe_error)
    return ctx


def _probe(user: User, choice: Choice | Refusal, kind: str) -> tuple[ProbeResult | None, str | None]:
    """The probe, on the stdlib client (:func:`devbox.remap.assess.run_probe`); failures as data."""
    try:
        api = fast_api()
    except DevboxError as exc:
        return None, exc.one_line()
    try:
        return run_probe(api, user, choice, kind)
    finally:
        api.close()
