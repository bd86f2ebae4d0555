"""Start/stop/restart a sandbox daemon from inside its namespace.

devbox runs this as ``--restart-cmd``, the way it would run ``systemctl restart
docker`` on a real host: it must come back with whatever /etc/docker/daemon.json
and /etc/subuid now say, or fail like dockerd fails.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.daemon import DOCKERS, PrivateDaemon


def main() -> int:
    action, name, *extra = sys.argv[1:]
    version = next((a.split("=", 1)[1] for a in extra if a.startswith("--docker=")), DOCKERS[0])
    storage = next((a.split("=", 1)[1] for a in extra if a.startswith("--storage=")), "overlay2")
    extra = [a for a in extra if not a.startswith(("--docker=", "--storage="))]
    d = PrivateDaemon(name, config_file=Path("/etc/docker/daemon.json"), extra_args=extra, version=version,
                      storage_driver=None if storage == "default" else storage)
    if action in ("stop", "restart"):
        d.stop()
    if action in ("start", "restart"):
        try:
            d.start(timeout=40)
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
