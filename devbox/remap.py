"""Host remap: observe the state, assess it, plan edits, apply them safely, revert them.

The shape is observe -> (pure) assess / plan -> apply:

* :func:`observe` reads everything once into a :class:`HostState`;
* :func:`assess` turns a state into :class:`~devbox.findings.Finding`s (pure);
* :func:`plan` computes the exact new bytes of /etc/subuid, /etc/subgid and
  daemon.json, with a reason per edit (pure);
* :func:`apply` writes them under shadow-utils' lock with backups, restarts
  dockerd, proves the result with the probe, and restores every file
  byte-for-byte (and restarts again) when anything fails;
* :func:`revert` undoes what the journal says devbox did, with the same safety.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
from pathlib import Path
from typing import Any, Callable

from devbox import host, hostchange
from devbox.engine import EngineInfo
from devbox.errors import ConfigError, DevboxError, Exit, HostError
from devbox.findings import Finding, Status, worst
from devbox.hostchange import FileChange, json_indent
from devbox.host import DaemonJson, Flag, Kernel, User
from devbox.idmap import (
    MIN_SUBORDINATE,
    Account,
    IdMap,
    SubidEntry,
    SubidFile,
    account_overlaps,
    allocate,
    predict_map,
    range_overlaps,
    seed_style,
    sub_bounds,
)
from devbox.paths import Paths
from devbox.probe import ProbeResult

KEY = "userns-remap"
FIX_APPLY = "sudo devbox remap --apply"
OLD_KERNEL_MAP_LINES = 5


# --- observed state -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HostState:
    user: User
    subuid: SubidFile
    subgid: SubidFile
    accounts: tuple[Account, ...]
    groups: tuple[Account, ...]
    login_defs: dict[str, str]
    kernel: Kernel
    daemon_json: DaemonJson | None
    daemon_json_error: str | None
    flags: tuple[Flag, ...]
    engine: EngineInfo | None
    engine_error: str | None
    probe: ProbeResult | None
    probe_error: str | None

    @property
    def remap_value(self) -> str:
        """What ``userns-remap`` should say: ``name`` or ``name:group``."""
        u = self.user
        return u.name if u.group == u.name else f"{u.name}:{u.group}"

    @property
    def uid_entries(self) -> tuple[SubidEntry, ...]:
        return self.subuid.owned_by(self.user.name)

    @property
    def gid_entries(self) -> tuple[SubidEntry, ...]:
        return self.subgid.owned_by(self.user.group)

    @property
    def predicted_uid_map(self) -> IdMap:
        return predict_map(self.uid_entries)

    @property
    def predicted_gid_map(self) -> IdMap:
        return predict_map(self.gid_entries)


def observe(paths: Paths, user: User, *, engine: bool = True, probe: bool = True) -> HostState:
    """Read every layer once.  Engine and probe failures are kept as data, not raised."""
    daemon_json: DaemonJson | None = None
    daemon_json_error = None
    try:
        daemon_json = host.read_daemon_json(paths.daemon_json)
    except DevboxError as exc:
        daemon_json_error = exc.one_line()
    info = None
    engine_error = None
    probe_result = None
    probe_error = None
    if engine:
        from devbox import engine as engine_mod

        try:
            api = engine_mod.fast_api()
            info = engine_mod.info(api)
            if probe:
                from devbox import probe as probe_mod

                try:
                    probe_result = probe_mod.run(api, owner=(user.uid, user.gid))
                    probe_error = probe_result.error
                except DevboxError as exc:
                    probe_error = exc.one_line()
        except DevboxError as exc:
            engine_error = exc.one_line()
    return HostState(
        user=user,
        subuid=host.read_subid(paths.subuid),
        subgid=host.read_subid(paths.subgid),
        accounts=tuple(host.accounts()),
        groups=tuple(host.groups()),
        login_defs=host.login_defs(paths),
        kernel=host.kernel(paths),
        daemon_json=daemon_json,
        daemon_json_error=daemon_json_error,
        flags=tuple(host.userns_flags(paths)),
        engine=info,
        engine_error=engine_error,
        probe=probe_result,
        probe_error=probe_error,
    )


# --- assessment (pure) ----------------------------------------------------------


def assess_kernel(k: Kernel) -> Finding:
    evidence = [f"kernel {k.release}"]
    if k.config_user_ns is not None:
        evidence.append(f"CONFIG_USER_NS={k.config_user_ns} ({k.config_source})")
    evidence.append("/proc/self/ns/user " + ("exists" if k.userns_supported else "is missing"))
    if k.max_user_namespaces is not None:
        evidence.append(f"/proc/sys/user/max_user_namespaces = {k.max_user_namespaces}")
    if not k.userns_supported or k.config_user_ns == "n":
        return Finding(
            "kernel.userns", "fail", "kernel user namespaces", tuple(evidence),
            "use a kernel built with CONFIG_USER_NS=y (every mainstream distribution kernel has it)",
        )
    if k.max_user_namespaces == 0:
        return Finding(
            "kernel.userns", "fail", "kernel user namespaces", tuple(evidence),
            "sudo sysctl -w user.max_user_namespaces=15000 (and persist it in /etc/sysctl.d/)",
        )
    return Finding("kernel.userns", "ok", "kernel user namespaces", tuple(evidence))


def assess_subid(f: SubidFile, owner: str, own_id: int, accounts: tuple[Account, ...], kind: str) -> list[Finding]:
    """Findings for one of /etc/subuid (kind "uid") or /etc/subgid (kind "gid")."""
    name = Path(f.path).name  # subuid / subgid
    out: list[Finding] = []
    if f.problems:
        out.append(Finding(
            f"{name}.syntax", "fail", f"{f.path} syntax",
            tuple(f"{f.where(p.line)}: {p.message}" for p in f.problems),
            f"fix or remove line {f.problems[0].line} of {f.path} (devbox will not rewrite a file it cannot parse)",
        ))
    mine = f.owned_by(owner)
    shown = tuple(f"{f.where(e.line)}: {e.text()}" for e in mine) or (f"no line for {owner} in {f.path}",)
    own = [e for e in mine if e.start == own_id and e.count == 1]
    if not own:
        out.append(Finding(
            f"{name}.own-line", "fail", f"{f.path} maps container root to {owner}", shown,
            f"{FIX_APPLY}  (adds {owner}:{own_id}:1 as {owner}'s first line)",
        ))
    elif mine[0] is not own[0]:
        first = mine[0]
        out.append(Finding(
            f"{name}.own-line", "fail", f"{f.path} maps container root to {owner}",
            shown + (f"{owner}:{own_id}:1 is not first: dockerd takes the lines in file order, "
                     f"so container root becomes host {kind} {first.start}",),
            f"{FIX_APPLY}  (moves {owner}:{own_id}:1 first)",
        ))
    else:
        out.append(Finding(f"{name}.own-line", "ok", f"{f.path} maps container root to {owner}", shown))
    seeds = seed_style(mine, own_id)
    acc = account_overlaps(mine, accounts, own_id, kind)
    if seeds or acc:
        evidence = [
            f"{f.where(e.line)}: {e.text()} maps container {kind}s 1.. onto host {kind}s {own_id + 1}.., "
            "the ids of real accounts" for e in seeds
        ] + [o.message(f.path) for o in acc if o.entry not in seeds]
        out.append(Finding(
            f"{name}.accounts", "fail", f"{f.path} ranges stay clear of real accounts", tuple(evidence),
            f"{FIX_APPLY}  (replaces the range with a free one)",
        ))
    else:
        out.append(Finding(f"{name}.accounts", "ok", f"{f.path} ranges stay clear of real accounts"))
    others = [e for e in f.entries if e.owner != owner]
    clashes = range_overlaps(mine, others, f.path)
    if clashes:
        out.append(Finding(
            f"{name}.overlap", "fail", f"{f.path} ranges are {owner}'s alone",
            tuple(o.message(f.path) for o in clashes),
            f"{FIX_APPLY}  (gives {owner} a free range; other users' lines are left alone)",
        ))
    else:
        out.append(Finding(f"{name}.overlap", "ok", f"{f.path} ranges are {owner}'s alone"))
    bad = {id(e) for e in seeds} | {id(o.entry) for o in acc} | {id(o.entry) for o in clashes}
    subordinate = sum(e.count for e in mine if not (e.start == own_id and e.count == 1) and id(e) not in bad)
    size_ev = (f"{subordinate} usable subordinate {kind}s for {owner} (containers need {MIN_SUBORDINATE})",)
    if subordinate < MIN_SUBORDINATE:
        out.append(Finding(
            f"{name}.range", "fail", f"{f.path} gives {owner} ≥ {MIN_SUBORDINATE} subordinate ids", size_ev,
            f"{FIX_APPLY}  (allocates a free range)",
        ))
    else:
        out.append(Finding(f"{name}.range", "ok", f"{f.path} gives {owner} ≥ {MIN_SUBORDINATE} subordinate ids", size_ev))
    if len(mine) > OLD_KERNEL_MAP_LINES:
        out.append(Finding(
            f"{name}.map-lines", "warn", f"{f.path} map fits old kernels",
            (f"{len(mine)} lines for {owner}: kernels before 4.15 accept at most {OLD_KERNEL_MAP_LINES}",),
            f"merge {owner}'s ranges into fewer lines",
        ))
    return out


def assess_daemon_config(state: HostState) -> list[Finding]:
    want = state.remap_value
    out: list[Finding] = []
    dj = state.daemon_json
    json_value = None
    if state.daemon_json_error is not None:
        out.append(Finding("daemon.json", "fail", "daemon.json sets userns-remap", (state.daemon_json_error,),
                           "fix the JSON syntax first"))
    elif dj is not None:
        json_value = dj.data.get(KEY)
        where = f"{dj.path}:{_key_line(dj.text, KEY)}" if json_value is not None else dj.path
        if json_value is None:
            ev = (f"{dj.path} has no \"{KEY}\"" if dj.exists else f"{dj.path} does not exist",)
            flag_ok = bool(state.flags) and all(_same_remap(f.value, state) for f in state.flags)
            status: Status = "ok" if flag_ok else "fail"
            out.append(Finding("daemon.json", status, "daemon.json sets userns-remap",
                               ev + (("set by a dockerd flag instead",) if flag_ok else ()),
                               None if flag_ok else FIX_APPLY))
        elif _same_remap(str(json_value), state):
            out.append(Finding("daemon.json", "ok", "daemon.json sets userns-remap", (f"{where}: \"{KEY}\": \"{json_value}\"",)))
        else:
            out.append(Finding("daemon.json", "fail", "daemon.json sets userns-remap",
                               (f"{where}: \"{KEY}\": \"{json_value}\", not {state.user.name}",),
                               f"{FIX_APPLY}  (sets \"{KEY}\": \"{want}\")"))
    if state.flags:
        flag_ev = tuple(f"{f.where}: --userns-remap={f.value}" for f in state.flags)
        if json_value is not None:
            out.append(Finding(
                "daemon.flags", "fail", "userns-remap set once (flag or daemon.json, not both)",
                flag_ev + (f"{state.daemon_json.path if state.daemon_json else 'daemon.json'} also sets \"{KEY}\": "
                      "dockerd refuses to start when a directive is both a flag and in the config file",),
                _flag_fix(state),
            ))
        elif any(not _same_remap(f.value, state) for f in state.flags):
            out.append(Finding("daemon.flags", "fail", "userns-remap set once (flag or daemon.json, not both)", flag_ev,
                               f"edit {state.flags[0].where} to --userns-remap={want}"))
        else:
            out.append(Finding("daemon.flags", "ok", "userns-remap set once (flag or daemon.json, not both)", flag_ev))
    else:
        out.append(Finding("daemon.flags", "ok", "userns-remap set once (flag or daemon.json, not both)",
                           ("no --userns-remap flag in the running dockerd, systemd units or /etc/default/docker",)))
    return out


def _flag_fix(state: HostState) -> str:
    files = sorted({f.where.rsplit(":", 1)[0] if f.editable else f.where for f in state.flags})
    if all(_same_remap(f.value, state) for f in state.flags):
        return f"{FIX_APPLY}  (removes the duplicate \"{KEY}\" from daemon.json; the flag in {', '.join(files)} stays)"
    return f"remove --userns-remap from {', '.join(files)}, then: {FIX_APPLY}"


def _same_remap(value: str, state: HostState) -> bool:
    """Does a ``userns-remap`` value select the target user and group, as dockerd resolves it?"""
    u = state.user
    name, _, group = value.partition(":")
    if name not in (u.name, str(u.uid)):
        return False
    if group:
        return group in (u.group, str(u.gid))
    # no group given: dockerd takes the group named like the user, or gid = uid for a numeric user
    return u.gid == u.uid if name.isdigit() else u.group == u.name


def _key_line(text: str, key: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        if f'"{key}"' in line:
            return number
    return 1


def assess_engine(state: HostState) -> list[Finding]:
    if state.engine is None:
        return [Finding("daemon.live", "fail", "running dockerd uses the remap",
                        (state.engine_error or "engine not checked",), "start the engine, then re-run devbox remap")]
    e = state.engine
    u = state.user
    first_uid = state.predicted_uid_map[0].host if state.predicted_uid_map else None
    first_gid = state.predicted_gid_map[0].host if state.predicted_gid_map else None
    ev = (
        f"{e.host}: Docker {e.version} (API {e.api_version})",
        f"SecurityOptions: {', '.join(e.security_options) or '(none)'}",
        f"DockerRootDir: {e.data_root}",
    )
    if e.rootless:
        return [Finding("daemon.live", "warn", "running dockerd uses the remap",
                        ev + ("rootless Docker: container root is already you; userns-remap does not apply",), None)]
    if not e.userns:
        return [Finding("daemon.live", "fail", "running dockerd uses the remap",
                        ev + ("no name=userns: containers run as real root",),
                        "restart dockerd after configuring: sudo devbox remap --apply")]
    ids = e.remap_ids()
    if ids is None or ids != (first_uid, first_gid) or ids != (u.uid, u.gid):
        return [Finding("daemon.live", "fail", "running dockerd uses the remap",
                        ev + (f"data root is for {ids[0]}.{ids[1]}, not {u.uid}.{u.gid}" if ids else
                              "data root does not end in /UID.GID",),
                        FIX_APPLY)]
    return [Finding("daemon.live", "ok", "running dockerd uses the remap", ev)]


def assess_probe(state: HostState) -> list[Finding]:
    u = state.user
    titles = {
        "probe.file-owner": "a file created by container root is yours",
        "probe.process": "container root runs as you on the host",
        "probe.uid-map": "/proc/self/uid_map is what /etc/subuid predicts",
    }
    p = state.probe
    if p is None or p.error is not None:
        why = state.probe_error or (p.error if p else None) or "engine unreachable"
        return [Finding(i, "skip" if state.engine is None else "fail", t, (why,),
                        None if state.engine is None else "see the evidence; re-run with `devbox remap -v`")
                for i, t in titles.items()]
    out = []
    file_ev = (f"created as container root: host uid {p.file_uid}, gid {p.file_gid} (want {u.uid}, {u.gid})",)
    ok = p.file_uid == u.uid and p.file_gid == u.gid
    out.append(Finding("probe.file-owner", "ok" if ok else "fail", titles["probe.file-owner"], file_ev,
                       None if ok else FIX_APPLY))
    proc_ev = (f"container root's process: host uid {p.process_uid}, gid {p.process_gid}",)
    ok = p.process_uid == u.uid
    out.append(Finding("probe.process", "ok" if ok else "fail", titles["probe.process"], proc_ev,
                       None if ok else FIX_APPLY))
    predicted = state.predicted_uid_map
    got = p.uid_map or ()
    map_ev = (
        "uid_map: " + "; ".join(f"{r.container} {r.host} {r.count}" for r in got),
        "predicted: " + ("; ".join(f"{r.container} {r.host} {r.count}" for r in predicted) or "(no lines)"),
    )
    ok = tuple(got) == tuple(predicted) and tuple(p.gid_map or ()) == tuple(state.predicted_gid_map)
    out.append(Finding("probe.uid-map", "ok" if ok else "fail", titles["probe.uid-map"], map_ev,
                       None if ok else "restart dockerd so it re-reads /etc/subuid and /etc/subgid"))
    return out


def assess(state: HostState) -> list[Finding]:
    u = state.user
    findings = [assess_kernel(state.kernel)]
    findings += assess_subid(state.subuid, u.name, u.uid, state.accounts, "uid")
    findings += assess_subid(state.subgid, u.group, u.gid, state.groups, "gid")
    findings += assess_daemon_config(state)
    findings += assess_engine(state)
    findings += assess_probe(state)
    return findings


# --- the plan (pure) --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Plan:
    changes: tuple[FileChange, ...]
    restart: bool
    restart_reason: str | None

    @property
    def nothing_to_do(self) -> bool:
        return not self.changes and not self.restart

    def reasons(self) -> list[str]:
        out = [f"{c.path}: {r}" for c in self.changes for r in c.reasons]
        if self.restart and self.restart_reason:
            out.append(self.restart_reason)
        return out


def plan_subid(
    f: SubidFile, owner: str, own_id: int, accounts: tuple[Account, ...], new_start: int, count: int,
) -> FileChange:
    """Rewrite ``owner``'s block: ``OWNER:ID:1`` first, then good ranges, then a new one if needed."""
    if f.problems:
        p = f.problems[0]
        raise ConfigError(p.message, where=f.where(p.line),
                          hint="fix or remove that line first; devbox will not rewrite a file it cannot parse")
    mine = [e for e in f.entries if e.owner == owner]
    others = [e for e in f.entries if e.owner != owner]
    own_text = f"{owner}:{own_id}:1"
    reasons: list[str] = []
    bad: dict[int, str] = {}
    for e in seed_style(mine, own_id):
        bad[id(e)] = (f"replaced {e.text()} (line {e.line}): it maps container ids 1.. onto host ids "
                      f"{own_id + 1}.., where real accounts live")
    for o in account_overlaps(mine, accounts, own_id):
        bad.setdefault(id(o.entry), f"replaced {o.entry.text()} (line {o.entry.line}): it overlaps {o.with_what}")
    for o in range_overlaps(mine, others, f.path):
        bad.setdefault(id(o.entry), f"replaced {o.entry.text()} (line {o.entry.line}): it overlaps {o.with_what}")
    own = [e for e in mine if e.start == own_id and e.count == 1]
    good = [e for e in mine if id(e) not in bad and e not in own]
    block = [own_text] + [e.text() for e in good]
    if not own:
        reasons.append(f"added {own_text} first: container root becomes {owner} ({own_id})")
    elif mine[0] is not own[0]:
        reasons.append(f"moved {own_text} before {mine[0].text()}: dockerd maps container root to the first line, "
                       f"which made container root host id {mine[0].start}")
    reasons += [bad[id(e)] for e in mine if id(e) in bad]
    if sum(e.count for e in good) < MIN_SUBORDINATE:
        new_line = f"{owner}:{new_start}:{count}"
        block.append(new_line)
        reasons.append(f"added {new_line}: subordinate ids for the container's other users")
    lines = list(f.lines)
    positions = [e.line - 1 for e in mine]
    insert_at = positions[0] if positions else len(lines)
    for index in sorted(positions, reverse=True):
        del lines[index]
    lines[insert_at:insert_at] = block
    new = "\n".join(lines) + "\n" if lines else ""
    old = f.render()
    old_lines = [e.text() for e in mine]
    return FileChange(
        Path(f.path), old, new, True, tuple(reasons) if new != old else (),
        added=tuple(x for x in block if x not in old_lines),
        removed=tuple(x for x in old_lines if x not in block),
    )


def plan_daemon_json(state: HostState, path: Path) -> FileChange | None:
    if state.daemon_json_error is not None:
        raise ConfigError(state.daemon_json_error)
    dj = state.daemon_json or DaemonJson(str(path), False, "", {})
    want = state.remap_value
    current = dj.data.get(KEY)
    flags = list(state.flags)
    if flags:
        if not all(_same_remap(f.value, state) for f in flags):
            f = next(f for f in flags if not _same_remap(f.value, state))
            raise HostError(
                f"dockerd is given --userns-remap={f.value} at {f.where}",
                hint=f"edit it to --userns-remap={want} (devbox does not edit service units), then re-run",
            )
        if current is None:
            return None  # the flag does the job; adding the key would stop dockerd from starting
        data = {k: v for k, v in dj.data.items() if k != KEY}
        reason = (f"removed \"{KEY}\": it is also given as a flag at {flags[0].where}, and dockerd refuses to "
                  "start when a directive is both a flag and in daemon.json")
    else:
        if current is not None and _same_remap(str(current), state):
            return None
        data = dict(dj.data)
        data[KEY] = want
        reason = (f"set \"{KEY}\": \"{want}\"" + (f" (was \"{current}\")" if current is not None else "")
                  + "; every other key is kept")
    indent = json_indent(dj.text)
    new = json.dumps(data, indent=indent) + "\n"
    return FileChange(path, dj.text, new, dj.exists, (reason,), json_key=KEY, json_before=current)


def plan(state: HostState, paths: Paths) -> Plan:
    u = state.user
    lo, hi, count = sub_bounds(state.login_defs, "SUB_UID")
    glo, ghi, gcount = sub_bounds(state.login_defs, "SUB_GID")
    count = max(count, gcount, MIN_SUBORDINATE)
    taken = [(e.start, e.end) for e in state.subuid.entries if e.owner != u.name]
    taken += [(e.start, e.end) for e in state.subgid.entries if e.owner != u.group]
    taken += [(a.id, a.id + 1) for a in state.accounts + state.groups]
    # the user's own good ranges stay; allocate clear of them too
    taken += [(e.start, e.end) for e in state.subuid.entries + state.subgid.entries if e.owner in (u.name, u.group)]
    start = allocate(taken, count, max(lo, glo), min(hi, ghi))
    if start is None:
        raise HostError(f"no free range of {count} subordinate ids between {max(lo, glo)} and {min(hi, ghi)}",
                        where=str(paths.login_defs), hint="raise SUB_UID_MAX/SUB_GID_MAX or free a range")
    changes = [
        plan_subid(state.subuid, u.name, u.uid, state.accounts, start, count),
        plan_subid(state.subgid, u.group, u.gid, state.groups, start, count),
    ]
    dj = plan_daemon_json(state, paths.daemon_json)
    if dj is not None:
        changes.append(dj)
    changes = [c for c in changes if c.changed]
    live_ok = all(f.status == "ok" for f in assess_engine(state) + assess_probe(state))
    restart = bool(changes) or not live_ok
    reason = None
    if restart and not changes:
        reason = "restart dockerd: the files are right but the running daemon does not use them yet"
    return Plan(tuple(changes), restart, reason)


# --- applying ---------------------------------------------------------------------


def verify_live(paths: Paths, user: User) -> str | None:
    """After a restart: does the daemon use the remap, and does the probe prove it?  The failure, or None."""
    state = observe(paths, user)
    bad = [f for f in assess_engine(state) + assess_probe(state) if f.status != "ok"]
    if bad:
        return "; ".join(f"{f.title}: {f.evidence[-1] if f.evidence else f.status}" for f in bad)
    return None


def apply_plan(paths: Paths, user: User, p: Plan, restart_cmd: str | None,
               progress: Callable[[str], None] = lambda _: None) -> str:
    """Carry out ``p`` (safely, see :func:`devbox.hostchange.execute`), prove it, record it for --revert."""
    stamp = hostchange.execute(paths, p.changes, hostchange.restart_argv(paths, restart_cmd),
                               verify=lambda: verify_live(paths, user), progress=progress)
    if p.changes:
        hostchange.record(paths, user.name, stamp, p.changes)
    return stamp


# --- commands (what the CLI calls) ----------------------------------------------------


def check_command(*, user: str | None, probe: bool, json_out: bool, verbose: bool = False) -> Exit:
    from devbox import console

    paths = Paths.from_env()
    target = host.resolve_user(user)
    state = observe(paths, target, probe=probe)
    findings = assess(state)
    if not probe:
        findings = [f for f in findings if not f.id.startswith("probe.")]
    status = worst(findings)
    if json_out:
        console.emit_json(report_json(state, findings))
    else:
        render_report(state, findings, verbose)
    return Exit.PROBLEMS if status == "fail" else Exit.OK


def report_json(state: HostState, findings: list[Finding]) -> dict[str, Any]:
    u = state.user
    return {
        "schema": "devbox.remap/1",
        "user": {"name": u.name, "uid": u.uid, "gid": u.gid, "group": u.group},
        "ok": worst(findings) != "fail",
        "findings": [f.to_json() for f in findings],
        "predicted": {
            "uid_map": [dataclasses.asdict(r) for r in state.predicted_uid_map],
            "gid_map": [dataclasses.asdict(r) for r in state.predicted_gid_map],
        },
        "probe": state.probe.to_json() if state.probe else None,
    }


def render_report(state: HostState, findings: list[Finding], verbose: bool) -> None:
    from devbox import console
    from devbox.idmap import map_rows

    u = state.user
    console.say(f"devbox remap — {u.name} (uid {u.uid}, gid {u.gid})", style="bold")
    render_findings(findings, verbose)
    rows = map_rows(state.predicted_uid_map)
    if rows:
        console.say("")
        console.table(["container uid", "host uid", "count"], rows, title="Predicted uid map (from /etc/subuid, in file order)")
    ok = worst(findings) != "fail"
    console.say("")
    console.say("remap proven: container root is you" if ok and state.probe else
                "remap looks right (probe skipped)" if ok else
                f"remap is not working — fix: {FIX_APPLY} (--dry-run shows every edit first)",
                style="green" if ok else "red")


def render_findings(findings: list[Finding], verbose: bool) -> None:
    from devbox import console

    for f in findings:
        console.status_line(f.status, f.title)
        if verbose or f.status in ("fail", "warn"):
            console.indented(f.evidence)
        if f.fix and f.status in ("fail", "warn"):
            console.indented([f"fix: {f.fix}"], style="cyan")


def _require_root(args: list[str]) -> None:
    if os.geteuid() != 0:
        raise HostError("changing /etc/subuid, /etc/subgid and daemon.json needs root",
                        hint=f"run: sudo {shlex.join(['devbox', 'remap', *args])}")


def change_command(
    *, revert: bool, user: str | None, dry_run: bool, yes: bool, restart_cmd: str | None, json_out: bool,
) -> Exit:
    from devbox import console

    paths = Paths.from_env()
    if revert:
        return _revert_command(paths, dry_run=dry_run, yes=yes, restart_cmd=restart_cmd, json_out=json_out)
    target = host.resolve_user(user)
    args = ["--apply", "--user", target.name] + (["--restart-cmd", restart_cmd] if restart_cmd else [])
    if not dry_run:
        _require_root(args)
    state = observe(paths, target, probe=True)
    if state.kernel.max_user_namespaces == 0 or not state.kernel.userns_supported:
        f = assess_kernel(state.kernel)
        raise HostError("the kernel cannot run user namespaces: " + "; ".join(f.evidence), hint=f.fix)
    p = plan(state, paths)
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
        if not hostchange.validate_available():
            console.info("note: this dockerd has no --validate (it arrived in Docker 23); the restart itself is the test, with rollback")
    if dry_run:
        return Exit.OK
    new_json = next((c.new for c in p.changes if c.path == paths.daemon_json), None)
    problem = hostchange.validate_config(new_json) if new_json is not None else None
    if problem:
        raise ConfigError(f"dockerd --validate rejects the new daemon.json: {problem}", where=str(paths.daemon_json))
    if state.engine is not None and not state.engine.userns:
        console.info(f"while remap is on, the {state.engine.images} image(s) and {state.engine.containers} container(s) "
                     f"under {state.engine.data_root} are not visible (dockerd uses {state.engine.data_root}/"
                     f"{target.uid}.{target.gid}); nothing is deleted, and `devbox remap --revert` shows them again")
    if not yes and not console.confirm("Apply these changes and restart dockerd?"):
        raise DevboxError("not confirmed; nothing was changed", hint="re-run with --yes to skip the question")
    stamp = apply_plan(paths, target, p, restart_cmd, progress=console.info)
    console.say(f"remap configured and proven: container root = host uid {target.uid} ({target.name}); "
                f"backups in {paths.remap_backups / stamp}", style="green")
    return Exit.OK


def _revert_command(paths: Paths, *, dry_run: bool, yes: bool, restart_cmd: str | None, json_out: bool) -> Exit:
    from devbox import console

    if not dry_run:
        _require_root(["--revert"] + (["--restart-cmd", restart_cmd] if restart_cmd else []))
    changes = hostchange.plan_revert(paths)
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
    stamp = hostchange.execute(paths, changes, hostchange.restart_argv(paths, restart_cmd), verify=None,
                               progress=console.info)
    hostchange.finish_revert(paths)
    console.say(f"reverted; the state before devbox is back (copies of what was replaced: {paths.remap_backups / stamp})",
                style="green")
    return Exit.OK
