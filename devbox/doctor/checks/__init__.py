"""Doctor's checks, grouped as the report is, and :data:`CHECKS`: all of them in dependency order.

* :mod:`.engine` — the socket, the docker CLI's context, who can use the socket, the engine's kind
* :mod:`.kernel` — user namespaces, AppArmor's restriction
* :mod:`.subid` — /etc/subuid and /etc/subgid
* :mod:`.daemon` — daemon.json and flags, the running dockerd, the data root's parents, old images,
  and the probe's proof
* :mod:`.idmap` — the kernel, the work dir's filesystem, the helper, the views' proof
* :mod:`.project` — devbox.toml, services set up to leak, privileged containers, leaked files, inotify
* :mod:`.network` — the proxy settings in effect, an HTTPS request from a running service
* :mod:`.watcher` — the background watcher

:func:`fixable` says whether ``devbox doctor --fix`` (remap's plan and a dockerd restart) can help.
"""

from __future__ import annotations

from collections.abc import Sequence

from devbox.doctor.checks.daemon import (
    check_daemon_config,
    check_live,
    check_old_images,
    check_parents,
    check_probe,
)
from devbox.doctor.checks.engine import check_access, check_context, check_kind, check_socket
from devbox.doctor.checks.idmap import check_idmap_helper_for_up, check_idmap_host, check_idmap_proof
from devbox.doctor.checks.kernel import check_apparmor, check_kernel
from devbox.doctor.checks.network import check_proxy, check_tls
from devbox.doctor.checks.project import check_by_design, check_containers, check_inotify, check_leaks, check_project
from devbox.doctor.checks.subid import check_newuidmap, check_subgid, check_subuid, subid_ids
from devbox.doctor.checks.watcher import check_watcher
from devbox.doctor.runner import Check, Result
from devbox.errors import EngineError
from devbox.errors import EngineErrorKind as Kind
from devbox.remap.assess import PROBE_IDS

GROUPS = ("engine", "kernel", "subordinate ids", "daemon", "proof", "idmapped views", "project", "network", "watcher")

CHECKS: tuple[Check, ...] = (
    Check("engine", ("engine.socket",), (), check_socket),
    Check("engine", ("engine.context",), (), check_context),
    Check("engine", ("engine.access",), (), check_access),
    Check("engine", ("engine.kind",), ("engine.socket",), check_kind),
    Check("kernel", ("kernel.userns",), (), check_kernel),
    Check("kernel", ("kernel.apparmor",), (), check_apparmor),
    Check("subordinate ids", subid_ids("subuid"), (), check_subuid),
    Check("subordinate ids", subid_ids("subgid"), (), check_subgid),
    Check("subordinate ids", ("host.newuidmap",), (), check_newuidmap),
    Check("daemon", ("daemon.json", "daemon.flags"), (), check_daemon_config),
    Check("daemon", ("daemon.live",), ("engine.socket",), check_live),
    Check("daemon", ("daemon.parents",), (), check_parents),
    Check("daemon", ("daemon.old-images",), ("engine.socket",), check_old_images),
    Check("proof", PROBE_IDS, ("engine.socket", "kernel.userns"), check_probe),
    Check("idmapped views", ("idmap.kernel", "idmap.filesystem"), (), check_idmap_host),
    Check("idmapped views", ("idmap.helper",), (), check_idmap_helper_for_up),
    Check("idmapped views", ("idmap.proof",), ("engine.socket", "idmap.kernel", "idmap.helper"), check_idmap_proof),
    Check("project", ("project.config",), (), check_project),
    Check("project", ("project.by-design",), ("project.config",), check_by_design),
    Check("project", ("project.containers",), ("project.config", "engine.socket"), check_containers),
    Check("project", ("project.leaks",), ("project.config",), check_leaks),
    Check("project", ("project.inotify",), ("project.config",), check_inotify),
    Check("network", ("network.proxy",), ("project.config",), check_proxy),
    Check("network", ("network.tls",), ("project.config", "engine.socket"), check_tls),
    Check("watcher", ("watcher.running",), ("project.config", "engine.socket"), check_watcher),
)

# Findings that remap's plan/execute can make right (restarting dockerd included).
REMAP_PREFIXES = ("subuid.", "subgid.", "daemon.json", "daemon.flags", "daemon.live", "probe.")


def fixable(results: Sequence[Result], engine_error: EngineError | None, engine_kind: str | None = None) -> bool:
    """Would ``--fix`` (remap's plan + a dockerd restart) address something that failed?
    Never on Podman or rootless Docker: their fixes are the usermod commands the findings print."""
    if engine_kind is not None and engine_kind != "docker-rootful":
        return False
    by_id = {r.finding.id: r.finding for r in results}
    if by_id.get("kernel.userns") and by_id["kernel.userns"].status == "fail":
        return False
    if any(r.finding.status == "fail" and r.finding.id.startswith(REMAP_PREFIXES) and not r.finding.id.endswith("map-lines")
           for r in results):
        return True
    # a stopped daemon: the restart command starts it (no permission on the socket, a remote engine,
    # an engine too old or answering with errors: a restart cannot help)
    return engine_error is not None and engine_error.kind is Kind.UNREACHABLE
