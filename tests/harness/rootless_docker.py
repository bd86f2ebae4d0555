"""A rootless Docker (``dockerd-rootless.sh``: dockerd in RootlessKit's user and network namespaces), run by
an ordinary account of an /etc sandbox, as a user would run it without systemd.

The account comes from :class:`~harness.podman.RootlessPodman` (a subordinate range without the own-id
line, a home and a runtime dir under ``/run/devbox-test``).  What this machine needs: slirp4netns and a
``/dev/net/tun`` the account can open (:func:`~harness.podman.open_tun`, in the sandbox only), and a data
root outside ``/run``: RootlessKit copies ``/run`` up (a tmpfs of symlinks to the real entries), and
runc refuses a rootfs whose path goes through a symlink ("invalid rootfs").
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from .daemon import SESSION
from .podman import RootlessPodman, open_tun
from .sandbox import EtcSandbox

CONTRIB = Path("/usr/share/docker.io/contrib")  # Debian's docker.io ships dockerd-rootless.sh here


class RootlessDocker:
    def __init__(self, sb: EtcSandbox, name: str, uid: int, first: int) -> None:
        self.account = RootlessPodman(sb, name, uid, first)  # the account; no Podman is started
        self.sb = sb
        self.uid = uid
        self.home = self.account.home
        self.socket = self.account.xdg / "docker.sock"
        self.data_root = Path("/var/tmp") / f"devbox-test-rootless-{name}-{SESSION}"
        self.log = self.account.base / "dockerd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def run(self, *argv: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return self.account.run(*argv, env={"DOCKER_HOST": self.host, **(env or {})}, timeout=timeout)

    def start(self, timeout: float = 60) -> None:
        open_tun(self.sb)
        shutil.rmtree(self.data_root, ignore_errors=True)
        self.data_root.mkdir(mode=0o700)
        os.chown(self.data_root, self.uid, self.uid)
        env = {**self.account.env, "PATH": f"{CONTRIB}:{self.account.env['PATH']}",
               "DOCKERD_ROOTLESS_ROOTLESSKIT_NET": "slirp4netns"}
        argv = ["dockerd-rootless.sh", "--data-root", str(self.data_root / "docker"),
                "--exec-root", str(self.account.xdg / "docker-exec"), "--pidfile", str(self.account.xdg / "docker.pid"),
                "-H", self.host]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.sb.argv(["setpriv", f"--reuid={self.uid}", f"--regid={self.uid}", "--init-groups", "env", "-C",
                              str(self.home), *[f"{k}={v}" for k, v in env.items()], *argv]),
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.socket.exists() and subprocess.run(
                    ["curl", "-sf", "--unix-socket", str(self.socket), "http://d/_ping"], capture_output=True).returncode == 0:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.3)
        raise RuntimeError(f"rootless dockerd for {self.account.name} did not come up:\n{self.log.read_text()[-3000:]}")

    def import_image(self, tar: Path, ref: str) -> None:
        readable = self.account.base / tar.name
        shutil.copyfile(tar, readable)
        readable.chmod(0o644)
        r = self.run("docker", "import", str(readable), ref)
        readable.unlink()
        if r.returncode != 0:
            raise RuntimeError(f"docker import into rootless dockerd failed: {r.stderr}")

    def destroy(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()
        self.account.destroy()  # every process of the account, its home and runtime dir
        # containers' files belong to the account's subordinate ids: removed as root
        shutil.rmtree(self.data_root, ignore_errors=True)
