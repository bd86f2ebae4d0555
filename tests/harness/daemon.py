"""A private dockerd: own data root, exec root, socket, pidfile, bridge and subnet.

Never ``--bridge=none`` (it deletes the default daemon's docker0) and never the
default socket.  Each daemon gets a bridge ``dbx-NAME`` on its own /24.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

STATE = Path(os.environ.get("DEVBOX_TEST_STATE", "/var/lib/devbox-test"))
RUN = Path(os.environ.get("DEVBOX_TEST_RUN", "/run/devbox-test"))

# The Dockers the suite runs: Debian 12's own (the host's dockerd) and Debian trixie's, started from a
# root filesystem that tests/harness/bootstrap.py makes with mmdebstrap (harness.images.docker_rootfs).
DOCKERS = ("20.10", "26.1")

# dockerd from another root filesystem (ENVIRONMENT.md): a private mount namespace, a per-daemon
# overlay of the root (runc needs its root to be a mount point; each daemon gets its own /etc),
# /proc /sys /dev and the directories tests bind-mount at the same paths, the caller's /etc files
# copied in (dockerd reads /etc/subuid, /etc/subgid and the accounts at start), then pivot_root (not
# chroot: the kernel refuses user namespaces inside a chroot, so every remapped container would fail).
PIVOT = r"""
set -e
rootfs=$1 top=$2; shift 2
mkdir -p "$top/upper" "$top/work" "$top/root"
mount -t overlay overlay -o "lowerdir=$rootfs,upperdir=$top/upper,workdir=$top/work" "$top/root"
r=$top/root
for d in /proc /sys /dev; do mount --rbind "$d" "$r$d"; done
for d in /tmp /run /var/lib/devbox-test /home; do
  [ -d "$d" ] || continue
  mkdir -p "$r$d"; mount --rbind "$d" "$r$d"
done
for f in passwd group subuid subgid resolv.conf hosts; do
  if [ -e "/etc/$f" ]; then cp "/etc/$f" "$r/etc/$f"; else rm -f "$r/etc/$f"; fi
done
rm -rf "$r/etc/docker"; mkdir -p "$r/etc/docker"
[ -d /etc/docker ] && cp -a /etc/docker/. "$r/etc/docker/"
cd "$r"
mkdir -p .oldroot
pivot_root . .oldroot
exec "$@"
"""


# One id per test session, so concurrent runs (two developers' shells, CI) never share
# a daemon, a bridge or a subnet.
SESSION = os.environ.setdefault("DEVBOX_TEST_SESSION", f"{os.getpid() % 100000}")


def _free_subnet() -> str:
    """The first 172.31.N.1/24 no interface uses."""
    used = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True).stdout
    for n in range(0, 256):
        if f" 172.31.{n}." not in used:
            return f"172.31.{n}.1/24"
    raise RuntimeError("no free 172.31.N.0/24 subnet for a test bridge")


def _alive(pid: int) -> bool:
    """Is ``pid`` still running?  A dockerd this process started is its child: once it exits it is a
    zombie (``kill(pid, 0)`` still succeeds) until reaped, so reap it here."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass  # not our child (started by ctl.py): init reaps it
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _free_pool() -> str:
    """A 10.N.0.0/16 no host address or route touches: the pool a test daemon's networks come from, so they
    never compete with the machine's own Docker (172.17-31/16, 192.168/16) or with leftovers of it."""
    used = subprocess.run(["ip", "-o", "-4", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    used += subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True).stdout
    for n in range(199, 100, -1):
        # a route line starts with its prefix, an address line has it after "inet "
        if not re.search(rf"(^|\s)10\.{n}\.", used, re.MULTILINE):
            return f"base=10.{n}.0.0/16,size=24"
    raise RuntimeError("no free 10.N.0.0/16 for a test daemon's networks")


class PrivateDaemon:
    """One dockerd.  ``config`` is written to its own daemon.json (``--config-file``).

    ``in_namespace`` is a PID whose mount namespace the daemon must live in
    (an /etc sandbox); ``None`` means the caller's namespace.
    """

    def __init__(
        self,
        name: str,
        *,
        config_file: Path | None = None,
        extra_args: list[str] | None = None,
        in_namespace: int | None = None,
        version: str = DOCKERS[0],
        storage_driver: str | None = "overlay2",
    ) -> None:
        self.name = name
        self.version = version
        self.storage_driver = storage_driver  # None: dockerd's choice (the containerd store picks its snapshotter)
        self.data_root = STATE / name / "data"
        self.exec_root = RUN / name / "exec"
        self.socket = RUN / name / "docker.sock"
        self.pidfile = RUN / name / "docker.pid"
        self.log = STATE / name / "dockerd.log"
        self.config_file = config_file or (STATE / name / "daemon.json")
        self.bridge = "dbx" + hashlib.sha1(name.encode()).hexdigest()[:11]
        self.extra_args = list(extra_args or [])
        self.in_namespace = in_namespace

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def env(self) -> dict[str, str]:
        # DEVBOX_TEST_SESSION marks what devbox starts (its watchers) as this test session's
        # DEVBOX_IDMAP_RUN: the session's own idmap helper (tests/integration/test_idmap.py), never the machine's
        out = {"DOCKER_HOST": self.host, "DEVBOX_DOCKER_PIDFILE": str(self.pidfile), "DEVBOX_TEST_SESSION": SESSION,
               "DEVBOX_IDMAP_RUN": str(RUN / f"idmapd-{SESSION}")}
        if self.rootfs is not None:  # devbox's `dockerd --validate` is this daemon's own
            out["DEVBOX_DOCKERD"] = f"{Path(__file__).with_name('dockerd-in-rootfs')} {self.rootfs}"
        return out

    def argv(self) -> list[str]:
        return [
            "dockerd",
            f"--data-root={self.data_root}",
            f"--exec-root={self.exec_root}",
            f"--host={self.host}",
            f"--pidfile={self.pidfile}",
            f"--bridge={self.bridge}",
            f"--config-file={self.config_file}",
            *([f"--storage-driver={self.storage_driver}"] if self.storage_driver else []),
            f"--default-address-pool={_free_pool()}",
            "--log-level=warn",
            *self.extra_args,
        ]

    @property
    def rootfs(self) -> Path | None:
        """The root filesystem this daemon's dockerd comes from; None for the host's own."""
        if self.version == DOCKERS[0]:
            return None
        from .images import docker_rootfs

        return docker_rootfs(self.version)

    def launch_argv(self) -> list[str]:
        """How to start it: the host's dockerd, or one from its root filesystem after pivot_root."""
        rootfs = self.rootfs
        if rootfs is None:
            return self.argv()
        top = STATE / self.name / "root"
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", PIVOT, "sh", str(rootfs), str(top),
                "/usr/sbin/dockerd", *self.argv()[1:]]

    def _ns(self, argv: list[str]) -> list[str]:
        if self.in_namespace is None:
            return argv
        return ["nsenter", f"--target={self.in_namespace}", "--mount", "--", *argv]

    def ensure_bridge(self) -> None:
        if subprocess.run(["ip", "link", "show", self.bridge], capture_output=True).returncode != 0:
            subprocess.run(["ip", "link", "add", self.bridge, "type", "bridge"], check=True)
            subprocess.run(["ip", "addr", "add", _free_subnet(), "dev", self.bridge], check=True)
        subprocess.run(["ip", "link", "set", self.bridge, "up"], check=True)

    def write_config(self, config: dict[str, object]) -> None:
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(json.dumps(config, indent=2) + "\n")

    def start(self, timeout: float = 60) -> None:
        """Start dockerd and wait until it answers; raise with its log tail when it does not."""
        if self.running():
            return
        # A remapped daemon needs o+x on every parent of its data root (set once, on
        # creation: a test may take it away again to make the daemon fail).
        for d in (STATE, STATE / self.name, self.data_root):
            if not d.exists():
                d.mkdir(parents=True)
                d.chmod(0o711)
        self.exec_root.mkdir(parents=True, exist_ok=True)
        if not self.config_file.exists():
            self.write_config({})
        self.ensure_bridge()
        with open(self.log, "ab") as log:
            proc = subprocess.Popen(
                self._ns(self.launch_argv()), stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
            )
        self.wait(timeout, proc)

    def wait(self, timeout: float = 60, proc: subprocess.Popen[bytes] | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ping():
                return
            if proc is not None and proc.poll() is not None:  # dockerd gave up (a bad config, say): no use waiting
                raise RuntimeError(f"dockerd {self.name} exited with {proc.returncode}; log tail:\n{self.log_tail()}")
            time.sleep(0.2)
        raise RuntimeError(f"dockerd {self.name} did not come up in {timeout}s; log tail:\n{self.log_tail()}")

    def ping(self) -> bool:
        if not self.socket.exists():
            return False
        r = subprocess.run(
            ["docker", "-H", self.host, "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            timeout=20,
        )
        return r.returncode == 0

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def running(self) -> bool:
        return self.pid() is not None and self.ping()

    def stop(self, timeout: float = 30) -> None:
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _alive(pid):
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
            _alive(pid)
        # dockerd removes its pidfile on clean exit; a stale one confuses the next start
        self.pidfile.unlink(missing_ok=True)

    def restart(self, timeout: float = 60) -> None:
        self.stop()
        self.start(timeout)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "<no log>"

    def destroy(self) -> None:
        """Stop and remove everything this daemon owns (bridge, state).  Its containers are killed first:
        a graceful daemon stop gives each one 10 s, and these are disposable."""
        networks: list[str] = []
        if self.pid() is not None and self.socket.exists():
            ids = self.docker("ps", "-q", check=False, timeout=30).stdout.split()
            if ids:
                self.docker("rm", "-f", *ids, check=False, timeout=60)
            networks = self.docker("network", "ls", "-q", "--filter", "driver=bridge", check=False,
                                   timeout=30).stdout.split()
            self.docker("network", "prune", "-f", check=False, timeout=60)
        self.stop()
        self._kill_orphan_shims()
        # dockerd keeps a network's bridge across its own restarts: one it never removed stays on the host
        for net in networks:
            subprocess.run(["ip", "link", "del", f"br-{net[:12]}"], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        shutil.rmtree(STATE / self.name, ignore_errors=True)
        shutil.rmtree(RUN / self.name, ignore_errors=True)

    def _kill_orphan_shims(self) -> None:
        """A dockerd killed mid-run (the fault and crash tests do it) leaves its containers' shims running,
        and their containers with them: kill what still names this daemon's containerd socket."""
        found = subprocess.run(["pgrep", "-f", f"containerd-shim.* -address {RUN / self.name}/"],
                               capture_output=True, text=True).stdout.split()
        for pid in found:
            subprocess.run(["pkill", "-9", "-P", pid], capture_output=True)  # the container's init: its pid namespace goes
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)

    def docker(self, *args: str, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", "-H", self.host, *args], check=check, capture_output=True, text=True, **kw  # type: ignore[arg-type]
        )
