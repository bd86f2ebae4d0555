"""The suite's own accounts, chosen around whatever the machine already has.

The suite creates its accounts in the /etc overlay that ``tests/run`` sets up,
over the machine's real /etc: a uid or gid already taken there (say, a real
user with uid 1500) would make ``useradd`` fail.  So the ids are picked here,
once, before anything runs: an account the machine already has under our name
is reused as it is; otherwise the first uid from 1500 up that is free as a uid
*and* as a gid.  Tests spell their expected strings with these constants.
"""

from __future__ import annotations

import grp
import os
import pwd

TEST_USER = "devbox-tester"
OTHER_USER = "devbox-other"  # a second real account, to catch ranges that overlap users
FIRST_ID = 1500


def _taken() -> set[int]:
    return {p.pw_uid for p in pwd.getpwall()} | {g.gr_gid for g in grp.getgrall()}


def _existing(name: str) -> int | None:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return entry.pw_uid if entry.pw_uid == entry.pw_gid else None


def _pick(names: tuple[str, ...]) -> dict[str, int]:
    # The choice is made once per test session and shared with subprocesses (ctl.py, workers).
    chosen: dict[str, int] = {}
    taken = _taken()
    for name in names:
        env = os.environ.get(f"DEVBOX_TEST_UID_{name.replace('-', '_').upper()}")
        uid = int(env) if env else _existing(name)
        if uid is None:
            uid = FIRST_ID
            while uid in taken or uid in chosen.values():
                uid += 1
        chosen[name] = uid
        os.environ[f"DEVBOX_TEST_UID_{name.replace('-', '_').upper()}"] = str(uid)
    return chosen


def free_id(start: int = 1600) -> int:
    """The first id from ``start`` that is free as a uid and as a gid (for a benchmark's own account)."""
    taken = _taken()
    while start in taken:
        start += 1
    return start


_IDS = _pick((TEST_USER, OTHER_USER))
TEST_UID = _IDS[TEST_USER]
OTHER_UID = _IDS[OTHER_USER]
