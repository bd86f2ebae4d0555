"""Files devbox mounts into containers: standalone scripts, standard library only, run by the
container's own python3 (3.11 and later).  Nothing here imports devbox.

- :mod:`devbox.payload.devbox_term`: a web IDE's terminals in the runtime container.
"""

from __future__ import annotations

from pathlib import Path


def relay_script() -> Path:
    """The host path of the terminal relay (mounted read-only into the IDE and the runtime)."""
    return Path(__file__).with_name("devbox_term.py")
