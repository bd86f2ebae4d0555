"""``devbox remap``: check (the default), ``--apply`` and ``--revert``; what the CLI calls, and the report."""

from __future__ import annotations

import dataclasses
import os
import shlex
from typing import Any

from devbox import console
from devbox.core.findings import Finding, worst
from devbox.core.idmap import map_rows
from devbox.core.ownership import Choice
from devbox.engine.endpoint import find_endpoint
from devbox.errors import DevboxError, Exit, HostError
from devbox.host.user import User, refuse_root, resolve_user
from devbox.paths import Paths
from devbox.remap.assess import (
    FIX_APPLY,
    HostState,
    assess,
    assess_kernel,
    observe_host,
    snapshotter_key,
    store_under_remap,
)

# The check (the common, timed path: benchmarks/bench_remap.py) imports only what it reads;
# devbox.host.change, devbox.host.journal and devbox.remap.plan are imported by --apply and --revert.


def remap_target(name: str | None) -> User:
    """The user whose container root the remap is about (never root: container root would stay host root)."""
    return refuse_root(resolve_user(name), "refusing to remap to root: container root would stay host root",
                       "run as your own user, or pass --user NAME (with sudo, SUDO_USER is used)")


def check_command(*, user: str | None, probe: bool, json_out: bool, verbose: bool = False) -> Exit:
    paths = Paths.from_env()
    target = remap_target(user)
    state = observe_host(paths, target, probe=probe)
    findings = assess(state)
    if not probe:
        findings = [f for f in findings if not f.id.startswith("probe.")]
    status = worst(findings)
    unfinished = None
    if os.path.exists(paths.remap_journal):  # False too when an ordinary user may not look (it is root's)
        from devbox.host import journal

        unfinished = journal.pending_if_readable(paths)
    if json_out:
        report = remap_report_json(state, findings)
        report["unfinished"] = None if unfinished is None else {
            "op": unfinished.get("op"), "state": unfinished.get("state"), "stamp": unfinished.get("stamp"),
            "files": [f["path"] for f in unfinished.get("files", [])]}
        report["ok"] = report["ok"] and unfinished is None
        console.emit_json(report)
    else:
        render_report(state, findings, verbose)
    if unfinished is not None:
        console.warn(f"{journal.describe_pending(unfinished)}; `sudo devbox remap --apply` (or --revert) puts "
                     "its files back first, then carries on")
        return Exit.PROBLEMS
    return Exit.PROBLEMS if status == "fail" else Exit.OK


def remap_report_json(state: HostState, findings: list[Finding]) -> dict[str, Any]:
    u = state.user
    return {
        "schema": "devbox.remap/1",
        "user": {"name": u.name, "uid": u.uid, "gid": u.gid, "group": u.group},
        "ok": worst(findings) != "fail",
        "engine": None if state.engine is None else {
            "kind": state.engine.kind, "product": state.engine.product, "version": state.engine.version,
            "api_version": state.engine.api_version, "host": state.engine.host, "source": find_endpoint().source,
            "image_store": state.engine.image_store,
        },
        "strategy": ({"name": c.strategy, "why": c.why, "setting": state.setting} if isinstance(c := state.choice, Choice)
                     else {"name": None, "refused": c.message, "fix": c.fix, "setting": state.setting}),
        "findings": [f.to_json() for f in findings],
        "predicted": {
            "uid_map": [dataclasses.asdict(r) for r in state.predicted_uid_map],
            "gid_map": [dataclasses.asdict(r) for r in state.predicted_gid_map],
        },
        "probe": state.probe.to_json() if state.probe else None,
    }


def render_report(state: HostState, findings: list[Finding], verbose: bool) -> None:
    u = state.user
    console.say(f"devbox remap — {u.name} (uid {u.uid}, gid {u.gid})", style="bold")
    console.findings(findings, verbose)
    rows = map_rows(state.predicted_uid_map)
    strategy = state.strategy
    if rows:
        console.say("")
        console.table(["container uid", "host uid", "count"], rows,
                      title=f"Predicted uid map ({strategy or 'remap'}, from /etc/subuid)")
    ok = worst(findings) != "fail"
    console.say("")
    if strategy in (None, "remap") and (state.engine is None or state.engine.kind == "docker-rootful"):
        console.say("remap proven: container root is you" if ok and state.probe else
                    "remap looks right (probe skipped)" if ok else
                    f"remap is not working — fix: {FIX_APPLY} (--dry-run shows every edit first)",
                    style="green" if ok else "red")
        if not ok and state.engine is not None and not state.engine.userns:
            console.info("or leave this dockerd unremapped: idmapped views make the files containers write yours "
                         "without it (sudo devbox idmap --install, then devbox idmap; README: Idmapped views)")
        return
    who = {"keep-id": "your own uid in the container is you", "rootless": "container root is you",
           "idmap": "what container root writes through an idmapped bind is yours (its processes are host root)",
           }.get(strategy or "", "")
    console.say(f"{strategy} proven: {who}" if ok and state.probe else
                f"{strategy} looks right (probe skipped)" if ok else
                "not working — each failed check above says how to fix it",
                style="green" if ok else "red")


def _require_root(args: list[str]) -> None:
    if os.geteuid() != 0:
        raise HostError("changing /etc/subuid, /etc/subgid and daemon.json needs root",
                        hint=f"run: sudo {shlex.join(['devbox', 'remap', *args])}")


def change_command(
    *, revert: bool, user: str | None, dry_run: bool, yes: bool, restart_cmd: str | None, json_out: bool,
) -> Exit:
    from devbox.host import change
    from devbox.remap.plan import apply_remap, plan_remap

    paths = Paths.from_env()
    if revert:
        return _revert_command(paths, dry_run=dry_run, yes=yes, restart_cmd=restart_cmd, json_out=json_out)
    target = remap_target(user)
    args = ["--apply", "--user", target.name] + (["--restart-cmd", restart_cmd] if restart_cmd else [])
    if not dry_run and os.geteuid() != 0 and _engine_kind() != "docker-rootful":
        return _not_dockerd(observe_host(paths, target, probe=True))  # nothing to write: no root needed
    if not dry_run:
        _require_root(args)
        # a change an earlier, killed devbox left half-done is put back before anything is read
        change.recover(paths, change.restart_argv(paths, restart_cmd), progress=console.info)
    state = observe_host(paths, target, probe=True)
    if state.kind != "docker-rootful":
        return _not_dockerd(state)
    if state.kernel.max_user_namespaces == 0 or not state.kernel.userns_supported:
        f = assess_kernel(state.kernel)
        raise HostError("the kernel cannot run user namespaces: " + "; ".join(f.evidence), hint=f.fix)
    p = plan_remap(state, paths)
    if json_out:
        console.emit_json({"schema": "devbox.remap-apply/1", "changes": [
            {"path": str(c.path), "reasons": list(c.reasons), "diff": c.diff()} for c in p.changes],
            "restart": p.restart, "dry_run": dry_run})
    if p.nothing_to_do:
        if not json_out:
            console.say(f"nothing to change: the remap for {target.name} is configured and proven "
                        f"(container root = host uid {target.uid})", style="green")
        return Exit.OK
    if not json_out:
        for c in p.changes:
            console.say(f"{c.path}:", style="bold")
            console.indented([f"- {r}" for r in c.reasons], style="")
            console.diff(c.diff())
        if p.restart_reason:
            console.say(p.restart_reason)
        if not change.validate_available():
            console.info("note: this dockerd has no --validate (it arrived in Docker 23); the restart itself is the test, with rollback")
    if dry_run:
        return Exit.OK
    if state.engine is not None and not state.engine.userns:
        e = state.engine
        store = "the containerd image store" if e.image_store == "containerd" else e.data_root
        console.info(f"while remap is on, the {e.images} image(s) and {e.containers} container(s) in {store} are not "
                     f"visible (dockerd uses {e.data_root}/{target.uid}.{target.gid}); nothing is deleted, and "
                     "`devbox remap --revert` shows them again")
        _, why = store_under_remap(e.major, snapshotter_key(state))
        if why:
            console.info(f"note: {why}; images you build or pull from now on go to the classic store")
    if not yes and not console.confirm("Apply these changes and restart dockerd?"):
        raise DevboxError("not confirmed; nothing was changed", hint="re-run with --yes to skip the question")
    stamp = apply_remap(paths, target, p, restart_cmd, progress=console.info)
    console.say(f"remap configured and proven: container root = host uid {target.uid} ({target.name}); "
                f"backups in {paths.remap_backups / stamp}", style="green")
    return Exit.OK


def _engine_kind() -> str:
    """The engine's kind; for one that does not answer, what its address suggests."""
    from devbox.engine import client
    from devbox.engine.endpoint import find_endpoint, guess_kind

    try:
        api = client.fast_api()
        try:
            return client.inspect_engine(api).kind
        finally:
            api.close()
    except DevboxError:
        return guess_kind(find_endpoint().host)


def _not_dockerd(state: HostState) -> Exit:
    """``--apply`` on Podman or rootless Docker: nothing of dockerd's to configure, daemon.json is never
    written.  What the engine does need is said with the exact command for each failed check."""
    label = state.engine.label if state.engine else state.kind
    failed = [f for f in assess(state) if f.status == "fail"]
    if not failed:
        console.say(f"nothing to change: {label} needs no userns-remap, and "
                    f"{state.strategy or 'its strategy'} is proven for {state.user.name}", style="green")
        return Exit.OK
    lines = [f"{f.title}: {f.fix}" for f in failed if f.fix]
    raise HostError(f"{label} does not use dockerd's userns-remap: devbox changes nothing here "
                    f"(daemon.json is not written); {len(failed)} check(s) failed",
                    hint="; ".join(lines) or "see `devbox remap --verbose`")


def _revert_command(paths: Paths, *, dry_run: bool, yes: bool, restart_cmd: str | None, json_out: bool) -> Exit:
    from devbox.host import change, journal

    if not dry_run:
        _require_root(["--revert"] + (["--restart-cmd", restart_cmd] if restart_cmd else []))
    restart = change.restart_argv(paths, restart_cmd)
    if not dry_run:
        change.recover(paths, restart, progress=console.info)
    changes = journal.plan_revert(paths)
    if json_out:
        console.emit_json({"schema": "devbox.remap-revert/1", "changes": [
            {"path": str(c.path), "reasons": list(c.reasons), "diff": c.diff()} for c in changes], "dry_run": dry_run})
    if not changes:
        if not json_out:
            console.say("nothing to revert: devbox has not changed this host's remap configuration", style="green")
        return Exit.OK
    if not json_out:
        for c in changes:
            console.say(f"{c.path}:", style="bold")
            console.indented([f"- {r}" for r in c.reasons], style="")
            console.diff(c.diff())
    if dry_run:
        return Exit.OK
    if not yes and not console.confirm("Revert these changes and restart dockerd?"):
        raise DevboxError("not confirmed; nothing was changed", hint="re-run with --yes to skip the question")
    # the revert proves only that dockerd comes back: there is no remap left to prove
    stamp = change.apply_changes(paths, changes, restart, verify=None, op="revert", progress=console.info)
    console.say(f"reverted; the state before devbox is back (copies of what was replaced: {paths.remap_backups / stamp})",
                style="green")
    return Exit.OK
