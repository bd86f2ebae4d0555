"""Host remap, observed and assessed: every layer read once, then turned into findings (pure).

* :func:`observe_host` reads /etc/subuid, /etc/subgid, the accounts,
  login.defs, the kernel, daemon.json, dockerd's flags, the engine and the
  probe into a :class:`HostState` (engine and probe failures are kept as data);
* the ``assess_*`` functions turn a state into
  :class:`~devbox.core.findings.Finding`\\ s without any I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
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
    allocate,
    format_map,
    predict_map,
    range_overlaps,
    seed_style,
    sub_bounds,
)
from devbox.core.ownership import (
    Choice,
    Expectation,
    Refusal,
    choose_strategy,
    expect,
    idmap_runtime_refusal,
    probe_binds_idmapped,
)
from devbox.core.views import podman_idmap
from devbox.engine.client import EngineInfo
from devbox.engine.endpoint import find_endpoint, guess_kind
from devbox.engine.probe import ProbeResult
from devbox.errors import DevboxError
from devbox.host import observe
from devbox.host.observe import DaemonJson, Flag, IdHelper, Kernel
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
    setting: str = "auto"  # [ownership] strategy
    id_helpers: tuple[IdHelper, ...] = ()
    endpoint: str = ""  # the address devbox used (DOCKER_HOST, a context, a socket found)
    # doctor (not `devbox remap`): ``auto`` on a rootful dockerd without remap means idmapped views, as for `up`
    views_auto: bool = False

    @property
    def kind(self) -> str:
        """The engine's kind; for an engine that does not answer, what its address suggests."""
        return self.engine.kind if self.engine else guess_kind(self.endpoint)

    @property
    def choice(self) -> Choice | Refusal:
        """The ownership strategy for this engine."""
        from devbox.host.idmount import MIN_KERNEL, kernel_version

        remapped = self.engine.userns if self.views_auto and self.engine is not None else True
        return choose_strategy(self.kind, self.setting, remapped=remapped, idmap_ok=kernel_version() >= MIN_KERNEL)

    @property
    def strategy(self) -> str | None:
        c = self.choice
        return c.strategy if isinstance(c, Choice) else None

    @property
    def expectation(self) -> Expectation | None:
        s = self.strategy
        if s is None or (s == "idmap" and not probe_binds_idmapped(self.kind, s)):
            return None
        return expect(s, self.user.uid, self.user.gid, self.uid_entries, self.gid_entries)

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
        e = self.expectation
        return e.uid_map if e else predict_map(self.uid_entries)

    @property
    def predicted_gid_map(self) -> IdMap:
        e = self.expectation
        return e.gid_map if e else predict_map(self.gid_entries)


def observe_host(paths: Paths, user: User, *, engine: bool = True, probe: bool = True,
                 setting: str = "auto") -> HostState:
    """Read every layer once.  Engine and probe failures are kept as data, not raised.
    ``setting`` is the ``[ownership] strategy``: the probe runs the way that strategy runs containers."""
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
                from devbox.host.idmount import MIN_KERNEL, kernel_version

                probe_result, probe_error = run_probe(api, user, choose_strategy(
                    info.kind, setting, idmap_ok=kernel_version() >= MIN_KERNEL), info.kind)
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
        setting=setting,
        id_helpers=observe.id_helpers(),
        endpoint=find_endpoint().host,
    )




def run_probe(api: Api, user: User, choice: Choice | Refusal, kind: str = "") -> tuple[ProbeResult | None, str | None]:
    """The probe for ``user``, run the way ``choice`` runs containers on an engine of ``kind``, with its
    failure kept as data: ``(result, error line)``.  On rootful Podman under idmap its directory is an
    idmapped bind (you on disk = container root), as the work dir of ``up``'s services is."""
    from devbox.engine import probe

    if isinstance(choice, Refusal):
        return None, f"not run: {choice.message}"
    userns = "keep-id" if choice.strategy == "keep-id" else None
    idmap = podman_idmap((user.uid, user.gid), (0, 0)) if probe_binds_idmapped(kind, choice.strategy) else None
    try:
        result = probe.run(api, owner=(user.uid, user.gid), userns=userns, idmap=idmap)
    except DevboxError as exc:
        return None, exc.one_line()
    return result, result.error


# --- assessment (pure) ----------------------------------------------------------


SNAPSHOTTER = "containerd-snapshotter"
C8D_OFF_UNDER_REMAP = 29  # moby#51042: from Docker 29, userns-remap turns the containerd image store off


def snapshotter_key(state: HostState) -> bool | None:
    """``features.containerd-snapshotter`` in daemon.json (None when not set)."""
    features = state.daemon_json.data.get("features") if state.daemon_json else None
    value = features.get(SNAPSHOTTER) if isinstance(features, dict) else None
    return value if isinstance(value, bool) else None


def store_under_remap(major: int | None, key: bool | None) -> tuple[str, str | None]:
    """The image store dockerd uses once userns-remap is on, and what to tell the user about it.

    Docker 29 made the containerd store the default and turns it off whenever userns-remap is set,
    with only a warning in its log, even when daemon.json asks for it (moby#51042; BuildKit breaks on
    the combination, moby#47377).  Before 29 the key is obeyed (seen on 26.1: remap runs on it)."""
    if major is not None and major >= C8D_OFF_UNDER_REMAP:
        why = ("Docker 29 turns the containerd image store off while userns-remap is set (moby#51042)"
               + (f": \"features\": {{\"{SNAPSHOTTER}\": true}} in daemon.json is ignored, with only a warning in "
                  "dockerd's log" if key else ""))
        return "graphdriver", why
    return ("containerd" if key else "graphdriver"), None


def free_range(state: HostState) -> tuple[int, int] | None:
    """``(start, count)``: a range free in both files, clear of every account and every other range,
    inside login.defs' SUB_UID/SUB_GID bounds; None when there is none."""
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
    return None if start is None else (start, count)


@dataclasses.dataclass(frozen=True)
class RootlessFix:
    """How /etc/subuid and /etc/subgid are fixed for a rootless engine: usermod, then ``podman system migrate``."""

    owner: str
    engine: str  # "Podman" or "Docker"
    free: tuple[int, int] | None

    @property
    def after(self) -> str:
        return ", then: podman system migrate" if self.engine == "Podman" else \
            ", then restart the rootless dockerd (systemctl --user restart docker)"

    def add(self, kind: str) -> str:
        if self.free is None:
            return f"give {self.owner} 65,536 subordinate {kind}s clear of every account and range{self.after}"
        start, count = self.free
        return f"sudo usermod --add-sub{kind}s {start}-{start + count - 1} {self.owner}{self.after}"

    def own_line(self, f: SubidFile, mine: Sequence[SubidEntry], shown: tuple[str, ...], own_id: int,
                 kind: str) -> list[Finding]:
        name = Path(f.path).name
        clash = [e for e in mine if e.start <= own_id < e.start + e.count]
        if self.engine != "Podman":
            return []
        if not clash:
            return [Finding(f"{name}.own-line", "ok", shown + (
                f"no line maps {kind} {own_id} itself: rootless Podman maps container root to you on its own",))]
        e = clash[0]
        return [Finding(f"{name}.own-line", "fail", shown + (
            f"{f.where(e.line)}: {e.text()} includes your own {kind} {own_id}: rootless Podman refuses to start "
            f"(\"the specified mapping … includes the user UID\"); Docker's userns-remap wants that line, Podman must "
            "not have it",),
            f"sudo usermod --del-sub{kind}s {e.start}-{e.end - 1} {self.owner}{self.after}")]


def rootless_fix(state: HostState, owner: str) -> RootlessFix | None:
    """How ``owner``'s subordinate ids are fixed on a rootless engine; None on a rootful one (remap's plan)."""
    if not state.kind.endswith("-rootless"):
        return None
    return RootlessFix(owner, "Podman" if state.kind.startswith("podman") else "Docker", free_range(state))


def assess_newuidmap(helpers: tuple[IdHelper, ...]) -> Finding:
    """Rootless engines set up their user namespace through setuid (or file-capability) helpers from uidmap."""
    ev = tuple(f"{h.path}: " + ("missing" if not h.exists else "setuid root" if h.setuid_root else
                                "file capabilities" if h.file_caps else "neither setuid root nor file capabilities")
               for h in helpers)
    if all(h.usable for h in helpers):
        return Finding("host.newuidmap", "ok", ev)
    return Finding("host.newuidmap", "fail", ev, "sudo apt-get install uidmap  (Fedora/RHEL: shadow-utils; Arch: shadow)")


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


def assess_subid(f: SubidFile, owner: str, own_id: int, accounts: tuple[Account, ...], kind: str,
                 rootless: RootlessFix | None = None) -> list[Finding]:
    """Findings for one of /etc/subuid (kind "uid") or /etc/subgid (kind "gid").

    ``rootless`` is given for a rootless engine: it needs subordinate ranges but no ``OWNER:ID:1``
    line (Podman refuses one), and the fixes are usermod commands, not ``devbox remap --apply``."""
    name = Path(f.path).name  # subuid / subgid
    out: list[Finding] = []
    fix_apply = rootless.add(kind) if rootless else FIX_APPLY
    if f.problems:
        out.append(Finding(
            f"{name}.syntax", "fail",
            tuple(f"{f.where(p.line)}: {p.message}" for p in f.problems),
            f"fix or remove line {f.problems[0].line} of {f.path} (devbox will not rewrite a file it cannot parse)",
        ))
    mine = f.owned_by(owner)
    shown = tuple(f"{f.where(e.line)}: {e.text()}" for e in mine) or (f"no line for {owner} in {f.path}",)
    own = [e for e in mine if e.start == own_id and e.count == 1]
    if rootless is not None:
        out += rootless.own_line(f, mine, shown, own_id, kind)
    elif not own:
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
            fix_apply if rootless else f"{FIX_APPLY}  (replaces the range with a free one)",
        ))
    else:
        out.append(Finding(f"{name}.accounts", "ok"))
    others = [e for e in f.entries if e.owner != owner]
    clashes = range_overlaps(mine, others, f.path)
    if clashes:
        out.append(Finding(
            f"{name}.overlap", "fail",
            tuple(o.message(f.path) for o in clashes),
            fix_apply if rootless else f"{FIX_APPLY}  (gives {owner} a free range; other users' lines are left alone)",
        ))
    else:
        out.append(Finding(f"{name}.overlap", "ok"))
    bad = {id(e) for e in seeds} | {id(o.entry) for o in acc} | {id(o.entry) for o in clashes}
    subordinate = sum(e.count for e in mine if not (e.start == own_id and e.count == 1) and id(e) not in bad)
    size_ev = (f"{subordinate} usable subordinate {kind}s for {owner} (containers need {MIN_SUBORDINATE})",)
    if subordinate < MIN_SUBORDINATE:
        out.append(Finding(
            f"{name}.range", "fail", size_ev,
            fix_apply if rootless else f"{FIX_APPLY}  (allocates a free range)",
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


def assess_kind(state: HostState) -> Finding:
    """``engine.kind``: which engine, and the ownership strategy devbox uses on it (or why none can work)."""
    e = state.engine
    if e is None:
        if state.kind.startswith("podman"):
            rootless = state.kind == "podman-rootless"
            return Finding("engine.kind", "fail", (
                state.engine_error or "engine not checked", f"{state.endpoint} is a Podman socket: {state.kind}"),
                ("start it: systemctl --user start podman.socket (or: podman system service --time=0 &); "
                 "if Podman refuses to start, the checks below say why") if rootless else
                "start it: sudo systemctl start podman.socket")
        return Finding("engine.kind", "skip", (state.engine_error or "engine not checked",))
    ev = (f"{e.host}: {e.label}", f"engine kind: {e.kind}")
    c = state.choice
    if isinstance(c, Choice) and (runtime := idmap_runtime_refusal(e.kind, c.strategy, e.oci_runtime)) is not None:
        c = runtime
    if isinstance(c, Refusal):
        return Finding("engine.kind", "fail", ev + (c.message,), c.fix)
    how = {
        "remap": "dockerd's userns-remap maps container root to you",
        "keep-id": "containers run with --userns=keep-id: your uid inside is you; other container users "
                   "land in your subordinate range",
        "rootless": "the engine runs as you: container root is you; other container users land in your "
                    "subordinate range",
        "idmap": "idmapped views of your work dirs store what containers write as you; their processes still run "
                 "as host root (remap isolates them, idmap only fixes ownership)",
    }[c.strategy]
    return Finding("engine.kind", "ok", ev + (f"ownership strategy: {c.strategy} ({c.why}): {how}",))


def assess_probe(state: HostState) -> list[Finding]:
    u = state.user
    p = state.probe
    expectation = state.expectation
    if p is None or p.error is not None or expectation is None:
        why = state.probe_error or (p.error if p else None) or "engine unreachable"
        return [Finding(i, "skip" if state.engine is None or expectation is None else "fail", (why,),
                        None if state.engine is None or expectation is None else
                        "see the evidence; re-run with `devbox remap --verbose`")
                for i in PROBE_IDS]
    fix = FIX_APPLY if state.strategy == "remap" else "see the evidence: the engine does not map ids as predicted"
    out = []
    file_ev = (f"created by {expectation.runs_as}: host uid {p.file_uid}, gid {p.file_gid} (want {u.uid}, {u.gid})",)
    ok = p.file_uid == u.uid and p.file_gid == u.gid
    out.append(Finding("probe.file-owner", "ok" if ok else "fail", file_ev, None if ok else fix))
    proc_ev = (f"{expectation.runs_as}'s process: host uid {p.process_uid}, gid {p.process_gid}",)
    ok = p.process_uid == (0 if state.strategy == "idmap" else u.uid)  # idmap fixes ownership, not isolation
    out.append(Finding("probe.process", "ok" if ok else "fail", proc_ev, None if ok else fix))
    predicted = state.predicted_uid_map
    got = p.uid_map or ()
    map_ev = (
        "uid_map: " + format_map(got, "; "),
        f"predicted ({state.strategy}): " + (format_map(predicted, "; ") or "(no lines)"),
    )
    ok = tuple(got) == tuple(predicted) and tuple(p.gid_map or ()) == tuple(state.predicted_gid_map)
    restart = ("restart dockerd so it re-reads /etc/subuid and /etc/subgid" if state.strategy == "remap"
               else "podman system migrate  (Podman re-reads /etc/subuid and /etc/subgid)")
    out.append(Finding("probe.uid-map", "ok" if ok else "fail", map_ev, None if ok else restart))
    return out


def assess(state: HostState) -> list[Finding]:
    """Every finding for the state: the remap's layers on rootful Docker (or an unreachable engine),
    a rootless engine's needs elsewhere, and the probe under the chosen strategy."""
    u = state.user
    findings = [assess_kernel(state.kernel)]
    kind = state.kind
    if state.engine is not None or kind != "docker-rootful":
        findings.append(assess_kind(state))
    if kind == "docker-rootful":
        findings += assess_subid(state.subuid, u.name, u.uid, state.accounts, "uid")
        findings += assess_subid(state.subgid, u.group, u.gid, state.groups, "gid")
        findings += assess_daemon_config(state)
        findings += assess_engine(state)
    elif kind.endswith("-rootless"):
        findings += assess_subid(state.subuid, u.name, u.uid, state.accounts, "uid", rootless_fix(state, u.name))
        findings += assess_subid(state.subgid, u.group, u.gid, state.groups, "gid", rootless_fix(state, u.group))
        findings.append(assess_newuidmap(state.id_helpers))
    findings += assess_probe(state)
    return findings
