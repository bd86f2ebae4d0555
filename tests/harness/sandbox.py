"""An /etc sandbox: a mount namespace whose /etc is an overlay over the real one.

Writes, atomic renames and shadow-utils locks inside work; the machine's /etc
never changes.  A holder process keeps the namespace alive; commands enter it
with ``nsenter``.  Files are read and written through ``/proc/PID/root``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .daemon import DOCKERS, RUN, SESSION, PrivateDaemon

REPO = Path(__file__).resolve().parents[2]

SETUP = r"""
set -e
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$1/upper,workdir=$1/work" /etc
echo ready
exec sleep infinity
"""


class EtcSandbox:
    def __init__(self, name: str, docker_version: str = DOCKERS[0]) -> None:
        self.name = name
        self.docker_version = docker_version
        RUN.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix=f"etc-{name}-", dir=RUN))
        (self.dir / "upper").mkdir()
        (self.dir / "work").mkdir()
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", SETUP, "sh", str(self.dir)],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        assert self.holder.stdout is not None
        line = self.holder.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"could not set up the /etc sandbox (unshare/overlay): {line!r}")
        self.pid = self.holder.pid
        self.daemons: list[PrivateDaemon] = []

    # --- running things inside -------------------------------------------------

    def argv(self, argv: list[str]) -> list[str]:
        return ["nsenter", f"--target={self.pid}", "--mount", "--", *argv]

    def run(
        self, argv: list[str], *, env: dict[str, str] | None = None, check: bool = False, timeout: float = 300,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, **(env or {})}
        return subprocess.run(
            self.argv(argv), env=full_env, capture_output=True, text=True, check=check, timeout=timeout, input=input,
        )

    def devbox(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run the devbox CLI inside the sandbox (the same interpreter as the tests)."""
        return self.run([sys.executable, "-m", "devbox", *args], env=env, timeout=timeout)

    # --- files ---------------------------------------------------------------

    def path(self, inside: str) -> Path:
        """The sandbox's view of an absolute path, readable from outside."""
        return Path(f"/proc/{self.pid}/root") / inside.lstrip("/")

    def read(self, inside: str) -> str:
        return self.path(inside).read_text()

    def read_bytes(self, inside: str) -> bytes:
        return self.path(inside).read_bytes()

    def write(self, inside: str, text: str, mode: int | None = None) -> None:
        p = self.path(inside)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        if mode is not None:
            p.chmod(mode)

    def remove(self, inside: str) -> None:
        self.path(inside).unlink(missing_ok=True)

    # --- a daemon that lives in the sandbox ----------------------------------

    def daemon(self, name: str, config: dict[str, object] | None = None, extra_args: list[str] | None = None,
               version: str | None = None, storage_driver: str | None = "overlay2") -> PrivateDaemon:
        """A private dockerd reading the sandbox's /etc/docker/daemon.json, /etc/subuid and /etc/subgid.
        ``version`` is one of ``harness.daemon.DOCKERS`` (default: the sandbox's ``docker_version``)."""
        name = f"{name}-{SESSION}"
        d = PrivateDaemon(name, config_file=Path("/etc/docker/daemon.json"), extra_args=extra_args, in_namespace=self.pid,
                          version=version or self.docker_version, storage_driver=storage_driver)
        d.destroy()
        if config is not None:
            import json

            self.write("/etc/docker/daemon.json", json.dumps(config, indent=2) + "\n")
        self.daemons.append(d)
        return d

    def start_daemon(self, d: PrivateDaemon, timeout: float = 60) -> None:
        """Start ``d`` inside the namespace (via the same ctl script devbox's --restart-cmd uses)."""
        r = self.run(self.ctl_argv(d, "start"), timeout=timeout + 10)
        if r.returncode != 0:
            raise RuntimeError(f"sandbox dockerd {d.name} failed to start:\n{r.stdout}{r.stderr}")

    def ctl_argv(self, d: PrivateDaemon, action: str) -> list[str]:
        return [sys.executable, str(REPO / "tests" / "harness" / "ctl.py"), action, d.name, f"--docker={d.version}",
                f"--storage={d.storage_driver or 'default'}", *d.extra_args]

    def restart_cmd(self, d: PrivateDaemon) -> str:
        """A ``--restart-cmd`` for devbox: restarts ``d`` in place, as systemctl would."""
        import shlex

        return shlex.join(self.ctl_argv(d, "restart"))

    def remapped_daemon(self, name: str, user: str, uid: int, first: int = 300000) -> PrivateDaemon:
        """Create ``user`` (uid = gid = ``uid``) in the sandbox with ``USER:UID:1`` then a range from
        ``first``, and start a dockerd remapped to it: container root is host ``uid``."""
        self.run(["useradd", "--uid", str(uid), "--user-group", "--no-create-home", "--home-dir", "/nonexistent", user],
                 check=True)
        for f in ("/etc/subuid", "/etc/subgid"):
            self.write(f, f"{user}:{uid}:1\n{user}:{first}:65536\n")
        d = self.daemon(name, config={"userns-remap": user})
        self.start_daemon(d)
        return d

    def close(self) -> None:
        for d in self.daemons:
            d.in_namespace = self.pid
            try:
                d.destroy()
            except Exception:  # noqa: BLE001 - best-effort teardown
                pass
        self.holder.kill()
        self.holder.wait()
        time.sleep(0.05)
        shutil.rmtree(self.dir, ignore_errors=True)
