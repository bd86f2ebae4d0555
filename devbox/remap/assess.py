"""Host remap, observed and assessed: every layer read once, then turned into findings (pure).

* :func:`observe_host` reads /etc/subuid, /etc/subgid, the accounts,
  login.defs, the kernel, daemon.json, dockerd's flags, the engine and the
  probe into a :class:`HostState` (engine and probe failures are kept as data);
* the ``assess_*`` functions turn a state into
  :class:`~devbox.core.findings.Finding`\\ s without any I/O.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from devbox.core.findings import Finding, Status
from devbox.core.idmap import (
    MIN_SUBORDINATE,
    Account,
    IdMap,
    SubidEntry,
    SubidFile,
    account_overlaps,
    format_map,
    predict_map,
    range_overlaps,
    seed_style,
)
from devbox.engine.client import EngineInfo
from devbox.engine.probe import ProbeResult
from devbox.errors import DevboxError
from devbox.host import observe
from devbox.host.observe import DaemonJson, Flag, Kernel
from devbox.host.user import User
from devbox.paths import Paths

if TYPE_CHECKING:
    from devbox.engine.fastapi import Api

KEY = "userns-remap"
FIX_APPLY = "sudo devbox remap --apply"
OLD_KERNEL_MAP_LINES = 5
PROBE_IDS = ("probe.file-owner", "probe.process", "probe.uid-map")


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


def observe_host(paths: Paths, user: User, *, engine: bool = True, probe: bool = True) -> HostState:
    """Read every layer once.  Engine and probe failures are kept as data, not raised."""
    daemon_json: DaemonJson | None = None
    daemon_json_error = None
    try:
        daemon_json = observe.read_daemon_json(paths.daemon_json)
    except DevboxError as exc:
        daemon_json_error = exc.one_line()
    info = None
    engine_error = None
    probe_result = None
    probe_error = None
    if engine:
        from devbox.engine import client

        try:
            api = client.fast_api()
            info = client.inspect_engine(api)
            if probe:
                probe_result, probe_error = run_probe(api, user)
        except DevboxError as exc:
            engine_error = exc.one_line()
    return HostState(
        user=user,
        subuid=observe.read_subid(paths.subuid),
        subgid=observe.read_subid(paths.subgid),
        accounts=tuple(observe.accounts()),
        groups=tuple(observe.groups()),
        login_defs=observe.login_defs(paths),
        kernel=observe.kernel(paths),
        daemon_json=daemon_json,
        daemon_json_error=daemon_json_error,
        flags=tuple(observe.userns_flags(paths)),
        engine=info,
        engine_error=engine_error,
        probe=probe_result,
        probe_error=probe_error,
    )




def run_probe(api: Api, user: User) -> tuple[ProbeResult | None, str | None]:
    """The probe for ``user``, with its failure kept as data: ``(result, error line)``."""
    from devbox.engine import probe

    try:
        result = probe.run(api, owner=(user.uid, user.gid))
    except DevboxError as exc:
        return None, exc.one_line()
    return result, result.error


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
            "kernel.userns", "fail", tuple(evidence),
            "use a kernel built with CONFIG_USER_NS=y (every mainstream distribution kernel has it)",
        )
    if k.max_user_namespaces == 0:
        return Finding(
            "kernel.userns", "fail", tuple(evidence),
            "sudo sysctl -w user.max_user_namespaces=15000 (and persist it in /etc/sysctl.d/)",
        )
    return Finding("kernel.userns", "ok", tuple(evidence))


def assess_subid(f: SubidFile, owner: str, own_id: int, accounts: tuple[Account, ...], kind: str) -> list[Finding]:
    """Findings for one of /etc/subuid (kind "uid") or /etc/subgid (kind "gid")."""
    name = Path(f.path).name  # subuid / subgid
    out: list[Finding] = []
    if f.problems:
        out.append(Finding(
            f"{name}.syntax", "fail",
            tuple(f"{f.where(p.line)}: {p.message}" for p in f.problems),
            f"fix or remove line {f.problems[0].line} of {f.path} (devbox will not rewrite a file it cannot parse)",
        ))
    mine = f.owned_by(owner)
    shown = tuple(f"{f.where(e.line)}: {e.text()}" for e in mine) or (f"no line for {owner} in {f.path}",)
    own = [e for e in mine if e.start == own_id and e.count == 1]
    if not own:
        out.append(Finding(
            f"{name}.own-line", "fail", shown,
            f"{FIX_APPLY}  (adds {owner}:{own_id}:1 as {owner}'s first line)",
        ))
    elif mine[0] is not own[0]:
        first = mine[0]
        out.append(Finding(
            f"{name}.own-line", "fail",
            shown + (f"{owner}:{own_id}:1 is not first: dockerd takes the lines in file order, "
                     f"so container root becomes host {kind} {first.start}",),
            f"{FIX_APPLY}  (moves {owner}:{own_id}:1 first)",
        ))
    else:
        out.append(Finding(f"{name}.own-line", "ok", shown))
    seeds = seed_style(mine, own_id)
    acc = account_overlaps(mine, accounts, own_id, kind)
    if seeds or acc:
        evidence = [
            f"{f.where(e.line)}: {e.text()} maps container {kind}s 1.. onto host {kind}s {own_id + 1}.., "
            "the ids of real accounts" for e in seeds
        ] + [o.message(f.path) for o in acc if o.entry not in seeds]
        out.append(Finding(
            f"{name}.accounts", "fail", tuple(evidence),
            f"{FIX_APPLY}  (replaces the range with a free one)",
        ))
    else:
        out.append(Finding(f"{name}.accounts", "ok"))
    others = [e for e in f.entries if e.owner != owner]
    clashes = range_overlaps(mine, others, f.path)
    if clashes:
        out.append(Finding(
            f"{name}.overlap", "fail",
            tuple(o.message(f.path) for o in clashes),
            f"{FIX_APPLY}  (gives {owner} a free range; other users' lines are left alone)",
        ))
    else:
        out.append(Finding(f"{name}.overlap", "ok"))
    bad = {id(e) for e in seeds} | {id(o.entry) for o in acc} | {id(o.entry) for o in clashes}
    subordinate = sum(e.count for e in mine if not (e.start == own_id and e.count == 1) and id(e) not in bad)
    size_ev = (f"{subordinate} usable subordinate {kind}s for {owner} (containers need {MIN_SUBORDINATE})",)
    if subordinate < MIN_SUBORDINATE:
        out.append(Finding(
            f"{name}.range", "fail", size_ev,
            f"{FIX_APPLY}  (allocates a free range)",
        ))
    else:
        out.append(Finding(f"{name}.range", "ok", size_ev))
    if len(mine) > OLD_KERNEL_MAP_LINES:
        out.append(Finding(
            f"{name}.map-lines", "warn",
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
        out.append(Finding("daemon.json", "fail", (state.daemon_json_error,),
                           "fix the JSON syntax first"))
    elif dj is not None:
        json_value = dj.data.get(KEY)
        where = f"{dj.path}:{_key_line(dj.text, KEY)}" if json_value is not None else dj.path
        if json_value is None:
            ev = (f"{dj.path} has no \"{KEY}\"" if dj.exists else f"{dj.path} does not exist",)
            flag_ok = bool(state.flags) and all(selects_user(f.value, state) for f in state.flags)
            status: Status = "ok" if flag_ok else "fail"
            out.append(Finding("daemon.json", status,
                               ev + (("set by a dockerd flag instead",) if flag_ok else ()),
                               None if flag_ok else FIX_APPLY))
        elif selects_user(str(json_value), state):
            out.append(Finding("daemon.json", "ok", (f"{where}: \"{KEY}\": \"{json_value}\"",)))
        else:
            out.append(Finding("daemon.json", "fail",
                               (f"{where}: \"{KEY}\": \"{json_value}\", not {state.user.name}",),
                               f"{FIX_APPLY}  (sets \"{KEY}\": \"{want}\")"))
    if state.flags:
        flag_ev = tuple(f"{f.where}: --userns-remap={f.value}" for f in state.flags)
        if json_value is not None:
            out.append(Finding(
                "daemon.flags", "fail",
                flag_ev + (f"{state.daemon_json.path if state.daemon_json else 'daemon.json'} also sets \"{KEY}\": "
                      "dockerd refuses to start when a directive is both a flag and in the config file",),
                _flag_fix(state),
            ))
        elif any(not selects_user(f.value, state) for f in state.flags):
            out.append(Finding("daemon.flags", "fail", flag_ev,
                               f"edit {state.flags[0].where} to --userns-remap={want}"))
        else:
            out.append(Finding("daemon.flags", "ok", flag_ev))
    else:
        out.append(Finding("daemon.flags", "ok",
                           ("no --userns-remap flag in the running dockerd, systemd units or /etc/default/docker",)))
    return out


def _flag_fix(state: HostState) -> str:
    files = sorted({f.where.rsplit(":", 1)[0] if f.editable else f.where for f in state.flags})
    if all(selects_user(f.value, state) for f in state.flags):
        return f"{FIX_APPLY}  (removes the duplicate \"{KEY}\" from daemon.json; the flag in {', '.join(files)} stays)"
    return f"remove --userns-remap from {', '.join(files)}, then: {FIX_APPLY}"


def selects_user(value: str, state: HostState) -> bool:
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
        return [Finding("daemon.live", "fail", (state.engine_error or "engine not checked",),
                        "start the engine, then re-run devbox remap")]
    e = state.engine
    u = state.user
    ev = (
        f"{e.host}: Docker {e.version} (API {e.api_version})",
        f"SecurityOptions: {', '.join(e.security_options) or '(none)'}",
        f"DockerRootDir: {e.data_root}",
    )
    if e.rootless:
        return [Finding("daemon.live", "warn",
                        ev + ("rootless Docker: container root is already you; userns-remap does not apply",), None)]
    verdict = e.root_is(u.name, u.uid, u.gid)
    if not verdict.ok:
        fix = "restart dockerd after configuring: sudo devbox remap --apply" if not e.userns else FIX_APPLY
        return [Finding("daemon.live", "fail", ev + (verdict.reason,), fix)]
    predicted = (state.predicted_uid_map[0].host if state.predicted_uid_map else None,
                 state.predicted_gid_map[0].host if state.predicted_gid_map else None)
    if predicted != (u.uid, u.gid):
        return [Finding("daemon.live", "fail", ev + (
            f"the running dockerd maps root to {u.uid}.{u.gid}, but /etc/subuid and /etc/subgid now say "
            f"{predicted[0]}.{predicted[1]}: they changed since it started",), FIX_APPLY)]
    return [Finding("daemon.live", "ok", ev)]


def assess_probe(state: HostState) -> list[Finding]:
    u = state.user
    p = state.probe
    if p is None or p.error is not None:
        why = state.probe_error or (p.error if p else None) or "engine unreachable"
        return [Finding(i, "skip" if state.engine is None else "fail", (why,),
                        None if state.engine is None else "see the evidence; re-run with `devbox remap --verbose`")
                for i in PROBE_IDS]
    out = []
    file_ev = (f"created as container root: host uid {p.file_uid}, gid {p.file_gid} (want {u.uid}, {u.gid})",)
    ok = p.file_uid == u.uid and p.file_gid == u.gid
    out.append(Finding("probe.file-owner", "ok" if ok else "fail", file_ev,
                       None if ok else FIX_APPLY))
    proc_ev = (f"container root's process: host uid {p.process_uid}, gid {p.process_gid}",)
    ok = p.process_uid == u.uid
    out.append(Finding("probe.process", "ok" if ok else "fail", proc_ev,
                       None if ok else FIX_APPLY))
    predicted = state.predicted_uid_map
    got = p.uid_map or ()
    map_ev = (
        "uid_map: " + format_map(got, "; "),
        "predicted: " + (format_map(predicted, "; ") or "(no lines)"),
    )
    ok = tuple(got) == tuple(predicted) and tuple(p.gid_map or ()) == tuple(state.predicted_gid_map)
    out.append(Finding("probe.uid-map", "ok" if ok else "fail", map_ev,
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


