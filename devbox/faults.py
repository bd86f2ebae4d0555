"""Fault points: the places where the crash suite kills devbox, deterministically.

Every step that changes the host passes a :func:`point`.  Normally that is one
comparison.  With ``DEVBOX_FAULT_POINT=N`` in the environment, the Nth point
reached sends this process SIGKILL — no cleanup, no ``finally``, as a power
cut or the OOM killer would — so the suite can enumerate every point of an
apply or a revert and prove that each file is always whole and the next run
converges.  ``DEVBOX_FAULT_TRACE=FILE`` appends each point's name as it is
reached (that is how the suite counts them).  ``DEVBOX_FAULT_DELAY=NAME=SECONDS``
sleeps at every point of that name: it widens a race window so that a test
can show the window is closed.
"""

from __future__ import annotations

import os
import signal
import time

_KILL_AT = int(os.environ.get("DEVBOX_FAULT_POINT") or 0)
_TRACE = os.environ.get("DEVBOX_FAULT_TRACE")
_DELAY_NAME, _, _delay = (os.environ.get("DEVBOX_FAULT_DELAY") or "").partition("=")
_DELAY = float(_delay or 0)
_reached = 0


def point(name: str) -> None:
    global _reached
    if not _KILL_AT and not _TRACE and not _DELAY:
        return
    if name == _DELAY_NAME:
        time.sleep(_DELAY)
    _reached += 1
    if _TRACE:
        with open(_TRACE, "a", encoding="utf-8") as fh:
            fh.write(f"{_reached} {name}\n")
    if _reached == _KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)
