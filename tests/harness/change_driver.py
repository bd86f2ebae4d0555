"""Run one host-change transaction on files in a directory, for the crash and race suites.

    python change_driver.py DIR apply|revert|recover [STATE]

``DIR`` holds ``subuid``, ``subgid`` and ``daemon.json`` (``/etc`` in an /etc
sandbox, where a real ``usermod`` edits them too); devbox's state goes to
``STATE`` (default ``DIR/state``).
``apply`` makes devbox's usual edit for user ``mino`` (uid 1500): its own
line first, a subordinate range, the ``userns-remap`` key; ``revert`` undoes
what the journal recorded; ``recover`` finishes what a killed run left.  The
"restart" is ``true`` and DOCKER_HOST must answer ``/_ping`` (a stub engine):
what is under test is the files, the locks and the journal.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from devbox.errors import DevboxError
from devbox.host import change, journal
from devbox.host.journal import FileChange
from devbox.paths import Paths

USER, UID = "mino", 1500
OWN, RANGE = f"{USER}:{UID}:1", f"{USER}:100000:65536"


def paths_in(d: Path, state: Path | None = None) -> Paths:
    return Paths(subuid=d / "subuid", subgid=d / "subgid", daemon_json=d / "daemon.json",
                 system_state=state or d / "state")


def read(p: Path) -> str | None:
    try:
        return p.read_text()
    except FileNotFoundError:
        return None


def apply_changes_for(paths: Paths) -> tuple[FileChange, ...]:
    out = []
    for p in (paths.subuid, paths.subgid):
        old = read(p) or ""
        lines = [line for line in old.splitlines() if line not in (OWN, RANGE)]
        new = "\n".join([OWN, RANGE, *lines]) + "\n"
        out.append(FileChange(p, old, new, read(p) is not None, ("test",), added=(OWN, RANGE)))
    old = read(paths.daemon_json)
    data = json.loads(old) if old else {}
    before = data.get("userns-remap")
    data["userns-remap"] = USER
    out.append(FileChange(paths.daemon_json, old or "", json.dumps(data, indent=2) + "\n", old is not None, ("test",),
                          json_key="userns-remap", json_before=before))
    return tuple(c for c in out if c.changed)


def main() -> int:
    d, op = Path(sys.argv[1]), sys.argv[2]
    paths = paths_in(d, Path(sys.argv[3]) if len(sys.argv) > 3 else None)
    restart = [["true"]]
    try:
        if op == "recover":
            change.recover(paths, restart)
        elif op == "apply":
            change.recover(paths, restart)
            change.apply_changes(paths, apply_changes_for(paths), restart, verify=None, op="apply", user=USER)
        elif op == "revert":
            change.recover(paths, restart)
            changes = journal.plan_revert(paths)
            if changes:
                change.apply_changes(paths, changes, restart, verify=None, op="revert", user=USER)
        else:
            raise SystemExit(f"unknown op {op}")
    except DevboxError as exc:
        print(exc.one_line(), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
