"""The remap plan (pure): the exact new bytes of /etc/subuid, /etc/subgid and daemon.json, with a reason per edit.

:func:`plan_remap` decides; :func:`apply_remap` carries the plan out through
:func:`devbox.host.change.apply_changes` (locked, atomic, backed up, dockerd
restarted, proven by the probe, rolled back on failure) and records it so that
``devbox remap --revert`` can undo exactly that.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

from devbox.core.idmap import (
    MIN_SUBORDINATE,
    Account,
    SubidFile,
    account_overlaps,
    range_overlaps,
    seed_style,
    sub_bounds,
)
from devbox.errors import ConfigError, HostError
from devbox.host import change
from devbox.host.change import FileChange, json_indent
from devbox.host.observe import DaemonJson
from devbox.host.user import User
from devbox.paths import Paths
from devbox.remap.assess import (
    KEY,
    SNAPSHOTTER,
    HostState,
    assess_engine,
    assess_probe,
    free_range,
    observe_host,
    selects_user,
    snapshotter_key,
    store_under_remap,
)


@dataclasses.dataclass(frozen=True)
class RemapPlan:
    """The exact new content of each host file that must change, and whether dockerd must restart."""

    changes: tuple[FileChange, ...]
    restart: bool
    restart_reason: str | None

    @property
    def nothing_to_do(self) -> bool:
        return not self.changes and not self.restart


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
        if not all(selects_user(f.value, state) for f in flags):
            f = next(f for f in flags if not selects_user(f.value, state))
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
        if current is not None and selects_user(str(current), state):
            return None
        data = dict(dj.data)
        data[KEY] = want
        reason = (f"set \"{KEY}\": \"{want}\"" + (f" (was \"{current}\")" if current is not None else "")
                  + "; every other key is kept")
    reasons = (reason,) + _drop_ignored_snapshotter(state, data)
    indent = json_indent(dj.text)
    new = json.dumps(data, indent=indent) + "\n"
    return FileChange(path, dj.text, new, dj.exists, reasons, json_key=KEY, json_before=current)


def _drop_ignored_snapshotter(state: HostState, data: dict[str, object]) -> tuple[str, ...]:
    """On Docker 29+, an explicit ``"containerd-snapshotter": true`` is ignored under remap: take it out
    (like a duplicate flag), so the file says what dockerd does; the backup keeps it for --revert."""
    key = snapshotter_key(state)
    _, why = store_under_remap(state.engine.major if state.engine else None, key)
    features = data.get("features")
    if not key or why is None or not isinstance(features, dict):
        return ()
    rest = {k: v for k, v in features.items() if k != SNAPSHOTTER}
    if rest:
        data["features"] = rest
    else:
        del data["features"]
    return (f"removed \"features\": {{\"{SNAPSHOTTER}\": true}}: {why}; images in the containerd store stay on disk",)


def plan_remap(state: HostState, paths: Paths) -> RemapPlan:
    u = state.user
    free = free_range(state)
    if free is None:
        lo, hi, count = sub_bounds(state.login_defs, "SUB_UID")
        glo, ghi, gcount = sub_bounds(state.login_defs, "SUB_GID")
        raise HostError(f"no free range of {max(count, gcount, MIN_SUBORDINATE)} subordinate ids between "
                        f"{max(lo, glo)} and {min(hi, ghi)}", where=str(paths.login_defs),
                        hint="raise SUB_UID_MAX/SUB_GID_MAX or free a range")
    start, count = free
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
    return RemapPlan(tuple(changes), restart, reason)


# --- carrying it out ---------------------------------------------------------------


def verify_live(paths: Paths, user: User) -> str | None:
    """After a restart: does the daemon use the remap, and does the probe prove it?  The failure, or None."""
    state = observe_host(paths, user)
    bad = [f for f in assess_engine(state) + assess_probe(state) if f.status != "ok"]
    if bad:
        return "; ".join(f"{f.title}: {f.evidence[-1] if f.evidence else f.status}" for f in bad)
    return None


def apply_remap(paths: Paths, user: User, p: RemapPlan, restart_cmd: str | None,
                progress: Callable[[str], None] = lambda _: None) -> str:
    """Carry out ``p`` (safely, see :func:`devbox.host.change.apply_changes`), prove it; the journal records it
    for --revert.  The caller has run :func:`devbox.host.change.recover` before reading the state ``p`` is
    made from: a change an earlier, killed devbox left half-done must be put back first."""
    def precheck() -> str | None:
        problem = change.validate(paths.daemon_json)
        return None if problem is None else f"dockerd --validate rejects the new {paths.daemon_json}: {problem}"

    return change.apply_changes(paths, p.changes, change.restart_argv(paths, restart_cmd),
                                verify=lambda: verify_live(paths, user), precheck=precheck, op="apply",
                                user=user.name, progress=progress)


