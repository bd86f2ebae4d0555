"""A rootless Podman, run by an ordinary account of an /etc sandbox, serving its docker-compatible socket.

The account is made inside the sandbox (``useradd``), with a subordinate range
and *no* ``NAME:UID:1`` line (rootless Podman refuses one).  Its home, runtime
dir and storage live under ``/run/devbox-test/podman-NAME``.  What this machine
needs (ENVIRONMENT.md): runc with the cgroupfs manager (crun refuses cgroups v1
hybrid); ``/dev/net/tun`` is root's, so plain containers default to ``--network=none``
and :func:`open_tun` gives the sandbox a node the account can open, for devbox's
pods (slirp4netns).  A user's machine with cgroups v2 keeps Podman's defaults.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path

from .daemon import RUN, SESSION
from .images import tarball
from .sandbox import EtcSandbox

CONTAINERS_CONF = """\
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"

[containers]
netns = "none"
"""

STORAGE_CONF = """\
[storage]
driver = "overlay"
"""


def open_tun(sb: EtcSandbox) -> None:
    """Inside the sandbox only: a ``/dev/net/tun`` the test account can open (slirp4netns needs one;
    this machine's is 0600 root).  A fresh 0666 node for the same device, bind-mounted over it in the
    sandbox's mount namespace: the machine's own node does not change.  Done before Podman starts,
    whose rootless mount namespace is a copy taken then."""
    tun = RUN / f"tun-{sb.pid}"
    script = """
    [ -c /dev/net/tun ] || exit 0                     # no tun device at all: pods get no network
    [ "$(stat -c %a /dev/net/tun)" = 666 ] && exit 0  # done already in this sandbox
    mkdir -p "$1"
    mountpoint -q "$1" || mount -t tmpfs -o mode=0755,size=16k tmpfs "$1"
    [ -e "$1/tun" ] || mknod -m 0666 "$1/tun" c 10 200
    mount --bind "$1/tun" /dev/net/tun
    """
    sb.run(["sh", "-euc", script, "sh", str(tun)], check=True)


class RootlessPodman:
    def __init__(self, sb: EtcSandbox, name: str, uid: int, first: int = 400000, count: int = 65536) -> None:
        self.sb = sb
        self.name = name
        self.uid = uid
        self.base = RUN / f"podman-{name}-{SESSION}"
        self.home = self.base / "home"
        # XDG_RUNTIME_DIR, short: Podman's runroot is XDG_RUNTIME_DIR/containers, and the cleanup process
        # conmon runs when a container exits refuses a runroot of over 50 characters ("the specified
        # runroot is longer than 50 characters"): its exit code is then never stored, and every stop,
        # wait and `run --rm` takes 20 s longer ("Exceeded conmon timeout waiting for container")
        self.xdg = RUN / f"xdg-{uid}-{SESSION}"
        assert len(str(self.xdg / "containers")) <= 50, f"{self.xdg}: too long for Podman's runroot (DEVBOX_TEST_RUN)"
        self.tmp = self.base / "tmp"  # TMPDIR: Podman's temporary files (e.g. image imports) go with the account
        self.socket = self.xdg / "podman" / "podman.sock"
        self.log = self.base / "service.log"
        self.service: subprocess.Popen[bytes] | None = None
        shutil.rmtree(self.base, ignore_errors=True)
        shutil.rmtree(self.xdg, ignore_errors=True)
        sb.run(["useradd", "--uid", str(uid), "--user-group", "--no-create-home", "--home-dir", str(self.home),
                "--shell", "/bin/sh", name], check=True)
        for f in ("/etc/subuid", "/etc/subgid"):
            sb.write(f, f"{name}:{first}:{count}\n")
        for d, mode in ((self.base, 0o755), (self.home, 0o755), (self.xdg, 0o700), (self.tmp, 0o700)):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(mode)
        conf = self.home / ".config" / "containers"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "containers.conf").write_text(CONTAINERS_CONF)
        (conf / "storage.conf").write_text(STORAGE_CONF)
        subprocess.run(["chown", "-R", f"{uid}:{uid}", str(self.home), str(self.xdg), str(self.tmp)], check=True)

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def env(self) -> dict[str, str]:
        return {"HOME": str(self.home), "XDG_RUNTIME_DIR": str(self.xdg), "TMPDIR": str(self.tmp),
                "USER": self.name, "LOGNAME": self.name,
                "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

    def argv(self, argv: list[str]) -> list[str]:
        """``argv`` as the account, inside the sandbox, from its home."""
        return self.sb.argv(["setpriv", f"--reuid={self.uid}", f"--regid={self.uid}", "--init-groups",
                             "env", "-C", str(self.home), *[f"{k}={v}" for k, v in self.env.items()], *argv])

    def run(self, *argv: str, env: dict[str, str] | None = None, check: bool = False,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
        extra = [f"{k}={v}" for k, v in (env or {}).items()]
        return subprocess.run(self.argv(["env", *extra, *argv]), capture_output=True, text=True, check=check,
                              timeout=timeout, env={k: v for k, v in os.environ.items() if k != "DOCKER_HOST"})

    def popen(self, *argv: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """:meth:`run`, in the background."""
        extra = [f"{k}={v}" for k, v in (env or {}).items()]
        return subprocess.Popen(self.argv(["env", *extra, *argv]), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, stdin=subprocess.DEVNULL,
                                env={k: v for k, v in os.environ.items() if k != "DOCKER_HOST"})

    def leftover_temp_files(self) -> list[str]:
        """What Podman left in the account's TMPDIR (a compatible-API image import leaves ``api_load.tar*``)."""
        return sorted(p.name for p in self.tmp.iterdir()) if self.tmp.is_dir() else []

    def podman(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return self.run("podman", *args, check=check, timeout=timeout)

    def start(self, timeout: float = 30, network: bool = True, nice: int = 0) -> None:
        """Serve the account's socket.  ``network``: pods get slirp4netns (a tun node the account can
        open, in the sandbox); without it they have no network beyond their own namespace.  ``nice``:
        the service, and so every build and container it runs, yields the CPU by that much."""
        if network and shutil.which("slirp4netns"):
            open_tun(self.sb)
        (self.xdg / "podman").mkdir(exist_ok=True)
        os.chown(self.xdg / "podman", self.uid, self.uid)
        with open(self.log, "ab") as log:
            self.service = subprocess.Popen(
                self.argv(["nice", "-n", str(nice), "podman", "system", "service", "--time=0", self.host]),
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = subprocess.run(["curl", "-sf", "--unix-socket", str(self.socket), "http://d/_ping"],
                               capture_output=True, text=True)
            if r.returncode == 0:
                return
            if self.service.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"podman service for {self.name} did not come up:\n{self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        stop_service(self.service)
        self.service = None

    def import_base_images(self, releases: tuple[str, ...] = ("bookworm",)) -> None:
        for release in releases:
            ref = f"debian:{release}-slim"
            if self.podman("image", "exists", ref, check=False).returncode == 0:
                continue
            readable = self.readable_tarball(release)
            self.podman("import", str(readable), f"docker.io/library/{ref}")
            readable.unlink()

    def readable_tarball(self, release: str) -> Path:
        """The base image tarball of ``release``, copied where the account can read it."""
        src = tarball(release)
        readable = self.base / src.name
        shutil.copyfile(src, readable)
        readable.chmod(0o644)
        return readable

    def destroy(self, background: bool = False) -> None:
        """Stop everything of the account and remove its files (``background``: by a detached ``rm``, for
        a session's end: a storage with built images takes seconds to remove)."""
        if self.service is not None and self.service.poll() is None:
            # containers run as the account's subordinate ids, which pkill -u below does not reach
            self.podman("pod", "rm", "--all", "--force", "--time", "0", check=False, timeout=120)
            self.podman("rm", "--all", "--force", "--time", "0", check=False, timeout=120)
        self.stop()
        # the pause process and any conmon of this account
        subprocess.run(["pkill", "-9", "-u", str(self.uid)], capture_output=True)
        # storage holds files of subordinate ids: remove as root
        with contextlib.suppress(OSError):
            (RUN / f"tun-{self.sb.pid}").rmdir()  # open_tun's mount point (empty outside the sandbox)
        if background:
            subprocess.Popen(["rm", "-rf", "--one-file-system", str(self.base), str(self.xdg)], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        else:
            shutil.rmtree(self.base, ignore_errors=True)
            shutil.rmtree(self.xdg, ignore_errors=True)


def stop_service(service: subprocess.Popen[bytes] | None) -> None:
    """TERM a ``podman system service`` (its process group), KILL it after 10 s."""
    if service is not None and service.poll() is None:
        os.killpg(service.pid, 15)
        try:
            service.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(service.pid, 9)
            service.wait()


def _has_cap_sys_resource() -> bool:
    """Can this process raise rlimits (rootful Podman's defaults are higher than this machine's root may set)?"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) & (1 << 24))
    return False


class RootfulPodman:
    """A rootful ``podman system service`` with its own storage, runtime dir, socket and network, under
    the test state dir (in memory, see tests/run): the machine's own Podman state is never touched.

    What this machine needs (ENVIRONMENT.md, and checked here): crun, which makes idmapped binds (runc
    1.1 does not), refuses cgroups v1 *hybrid* while the v2 hierarchy holds a controller (here: hugetlb).
    The service runs in a private mount namespace that mounts each such controller on a v1 hierarchy of
    its own: the kernel moves the controller there for as long as the mount stands, the v2 hierarchy is
    left without controllers, and crun runs.  The mount goes with the service.  And root here lacks
    CAP_SYS_RESOURCE, so containers get rlimits no higher than ours.  A user's machine (cgroups v2,
    systemd) needs none of this.

    The network is a CNI bridge of its own (``dbxpod-SESSION``, a free 172.31.N.0/24, its IPAM state
    beside the storage), named as Podman's default network."""

    def __init__(self, name: str = "rootful") -> None:
        from .daemon import STATE

        self.name = f"{name}-{SESSION}"
        self.base = STATE / f"podman-{self.name}"
        self.socket = self.base / "podman.sock"
        self.log = self.base / "service.log"
        self.bridge = self._free_bridge_name()
        self.network = f"devbox-test-{self.name}"
        self.service: subprocess.Popen[bytes] | None = None
        self.allowed: int | None = None
        self.cni_before: set[tuple[str, str]] = set()
        self.cni_cache_before = True

    @staticmethod
    def _free_bridge_name() -> str:
        """``dbxpod-SESSION``, or with a suffix when a link of that name is there already (never taken over)."""
        for n in range(100):
            name = f"dbxpod-{SESSION}" + (f"-{n}" if n else "")
            if subprocess.run(["ip", "link", "show", name], capture_output=True).returncode != 0:
                return name[:15]
        raise RuntimeError("no free dbxpod-SESSION-N link name for the rootful Podman bridge")

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def env(self) -> dict[str, str]:
        return {"CONTAINERS_CONF": str(self.base / "containers.conf"),
                "CONTAINERS_STORAGE_CONF": str(self.base / "storage.conf"), "TMPDIR": str(self.base / "tmp")}

    def podman(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["podman", *args], capture_output=True, text=True, check=check, timeout=timeout,
                              env={**os.environ, **self.env})

    @staticmethod
    def v2_controllers() -> list[str]:
        """Controllers the cgroup v2 hierarchy holds on a v1 hybrid host (crun refuses while there are any)."""
        unified = Path("/sys/fs/cgroup/unified/cgroup.controllers")
        return unified.read_text().split() if unified.exists() else []

    def _write_config(self) -> None:
        from .daemon import _free_subnet

        shutil.rmtree(self.base, ignore_errors=True)
        for d in ("tmp", "cni", "ipam", "libpod"):
            (self.base / d).mkdir(parents=True, exist_ok=True)
        gateway = _free_subnet()  # 172.31.N.1/24: the bridge is made with it now, so nothing else takes it
        subprocess.run(["ip", "link", "add", self.bridge, "type", "bridge"], check=True)
        subprocess.run(["ip", "addr", "add", gateway, "dev", self.bridge], check=True)
        subnet = gateway.rsplit(".", 1)[0] + ".0/24"
        limits = "" if _has_cap_sys_resource() else 'default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]\n'
        (self.base / "containers.conf").write_text(
            f'[engine]\nruntime = "crun"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
            f'tmp_dir = "{self.base / "libpod"}"\n\n[containers]\n{limits}\n'
            f'[network]\nnetwork_backend = "cni"\nnetwork_config_dir = "{self.base / "cni"}"\n'
            f'default_network = "{self.network}"\ndefault_subnet = "{subnet}"\n')
        (self.base / "storage.conf").write_text(
            f'[storage]\ndriver = "overlay"\ngraphroot = "{self.base / "storage"}"\nrunroot = "{self.base / "run"}"\n')
        conflist = {"cniVersion": "0.4.0", "name": self.network, "plugins": [
            {"type": "bridge", "bridge": self.bridge, "isGateway": True, "ipMasq": True, "hairpinMode": True,
             "ipam": {"type": "host-local", "dataDir": str(self.base / "ipam"), "routes": [{"dst": "0.0.0.0/0"}],
                      "ranges": [[{"subnet": subnet, "gateway": gateway.split("/")[0]}]]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "firewall"}, {"type": "tuning"}]}
        import json

        (self.base / "cni" / f"{self.network}.conflist").write_text(json.dumps(conflist, indent=1))

    # What CNI's firewall and portmap plugins add to the host's iptables and leave there (empty chains,
    # and the rules jumping to them): removed after the run unless the machine had them before.
    CNI_RULES = (("filter", "FORWARD", "-m comment --comment \"CNI firewall plugin rules\" -j CNI-FORWARD"),
                 ("nat", "PREROUTING", "-m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT"),
                 ("nat", "OUTPUT", "-m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT"),
                 ("nat", "POSTROUTING", "-m comment --comment \"CNI portfwd requiring masquerade\" -j CNI-HOSTPORT-MASQ"))
    CNI_CHAINS = (("filter", "CNI-FORWARD"), ("filter", "CNI-ADMIN"), ("nat", "CNI-HOSTPORT-DNAT"),
                  ("nat", "CNI-HOSTPORT-MASQ"), ("nat", "CNI-HOSTPORT-SETMARK"))

    @staticmethod
    def _cni_chains() -> set[tuple[str, str]]:
        found = set()
        for table in ("filter", "nat"):
            listing = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True).stdout
            found |= {(table, line.split()[1]) for line in listing.splitlines() if line.startswith("-N CNI-")}
        return found

    CNI_CACHE = Path("/var/lib/cni")  # libcni's result cache (Podman 4.3 does not move it)

    def start(self, timeout: float = 30) -> None:
        self.cni_before = self._cni_chains()
        self.cni_cache_before = self.CNI_CACHE.exists()
        self._write_config()
        self._serve(timeout)

    def _remove_cni_rules(self) -> None:
        import shlex

        if not self.cni_cache_before:
            for d in (self.CNI_CACHE / "results", self.CNI_CACHE / "networks", self.CNI_CACHE):
                with contextlib.suppress(OSError):
                    d.rmdir()  # only when empty: nothing of anyone else's goes
        if self.CNI_CHAINS[0] in self.cni_before:
            return  # the machine's own CNI (a Podman of its own) uses them
        for table, chain, rule in self.CNI_RULES:
            subprocess.run(["iptables", "-t", table, "-D", chain, *shlex.split(rule)], capture_output=True)
        for table, chain in self.CNI_CHAINS:
            subprocess.run(["iptables", "-t", table, "-F", chain], capture_output=True)
        for table, chain in self.CNI_CHAINS:
            subprocess.run(["iptables", "-t", table, "-X", chain], capture_output=True)

    def use_runtime(self, runtime: str) -> None:
        """Serve again with ``runtime`` as the OCI runtime (storage, images and network stay)."""
        self._stop()
        conf = self.base / "containers.conf"
        conf.write_text("\n".join(f'runtime = "{runtime}"' if line.startswith("runtime =") else line
                                  for line in conf.read_text().splitlines()) + "\n")
        self._serve(30)

    def _stop(self) -> None:
        stop_service(self.service)
        self.socket.unlink(missing_ok=True)

    def _serve(self, timeout: float) -> None:
        hierarchies = self.base / "cgroup-v1"
        script = "set -e\n" + "".join(
            f'mkdir -p "{hierarchies}/{c}"; mount -t cgroup -o {c} devbox-test "{hierarchies}/{c}"\n'
            for c in self.v2_controllers()) + f'exec podman system service --time=0 "{self.host}"\n'
        with open(self.log, "ab") as log:
            self.service = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                                            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
                                            env={**os.environ, **self.env})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = subprocess.run(["curl", "-sf", "--unix-socket", str(self.socket), "http://d/_ping"], capture_output=True)
            if r.returncode == 0:
                if self.allowed is not None:
                    self.allow(self.allowed)
                return
            if self.service.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"rootful podman service did not come up:\n{self.log.read_text()[-2000:]}")

    def allow(self, uid: int) -> None:
        """Let ``uid`` use the socket (what membership of a group the socket belongs to gives on a real host)."""
        self.allowed = uid
        os.chown(self.socket, 0, uid)
        self.socket.chmod(0o660)

    def import_base(self, release: str = "bookworm") -> None:
        self.podman("import", str(tarball(release)), f"docker.io/library/debian:{release}-slim")

    def destroy(self) -> None:
        if self.service is not None and self.service.poll() is None:
            self.podman("pod", "rm", "--all", "--force", "--time", "0", check=False, timeout=120)
            self.podman("rm", "--all", "--force", "--time", "0", check=False, timeout=120)
        self._stop()
        # conmon and containers outlive the service: kill what names this storage
        subprocess.run(["pkill", "-9", "-f", str(self.base)], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        self._remove_cni_rules()
        for mnt in sorted((m.split()[4] for m in Path("/proc/self/mountinfo").read_text().splitlines()
                           if m.split()[4].startswith(str(self.base))), reverse=True):
            subprocess.run(["umount", "-l", mnt], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)
