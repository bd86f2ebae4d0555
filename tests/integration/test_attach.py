"""`devbox up` on a real pseudo-terminal, and a failing image build, against the remapped dockerd.

The terminal test drives `devbox up` (attached) the way a person's terminal would: the
pty is devbox's controlling terminal (so a window resize is the kernel's SIGWINCH, not
one the test fakes), keys are written to the master side and the container's answers
read back from it, always through select with a deadline.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.daemon import PrivateDaemon

from .test_stack import HOME, UID, USER, container_ids, devbox, engine, make_project, ok, projects_dir

__all__ = ["engine"]  # the module-scoped remapped dockerd of test_stack, shared here as a fixture

SHELL_PROFILE = """\
description = "one interactive shell: what matters here is the terminal, not a toolchain"
[services.editor]
image = "debian:bookworm-slim"
command = ["sh"]
interactive = true
"""


def _own(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            os.chown(name, UID, UID)


def _project_with_profile(name: str, profile: str, text: str) -> Path:
    root = make_project(name, f'name = "{name}"\nprofile = "{profile}"\n')
    (root / ".devbox" / "profiles").mkdir(parents=True)
    (root / ".devbox" / "profiles" / f"{profile}.toml").write_text(text)
    _own(root)
    return root


def _set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class Terminal:
    """A pty whose slave is stdin/stdout/stderr and controlling terminal of one `devbox` run."""

    def __init__(self, engine: PrivateDaemon, cwd: Path, *args: str, rows: int = 24, cols: int = 80) -> None:
        self.master, self.slave = os.openpty()
        _set_size(self.slave, rows, cols)
        self.before = termios.tcgetattr(self.slave)
        self.out = b""
        env = {"PATH": os.environ["PATH"], "HOME": HOME, "LANG": "C.UTF-8", "TERM": "xterm", **engine.env}
        # setsid --ctty: a new session whose controlling terminal is the pty (stdin), as a login shell has.
        self.proc = subprocess.Popen(
            ["setsid", "--ctty", "setpriv", "--reuid", USER, "--regid", USER, "--init-groups", "--",
             sys.executable, "-m", "devbox", *args],
            cwd=cwd, env=env, stdin=self.slave, stdout=self.slave, stderr=self.slave, close_fds=True,
        )

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def expect(self, pattern: bytes, timeout: float = 60, start: int = 0) -> re.Match[bytes]:
        """Read until ``pattern`` (a regex) matches the output from offset ``start``; fail at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            m = re.compile(pattern).search(self.out, start)
            if m:
                return m
            left = deadline - time.monotonic()
            assert left > 0, f"no {pattern!r} in {timeout}s (devbox rc={self.proc.poll()}); the terminal showed:\n{self.out!r}"
            self._drain(min(left, 0.5))

    def is_raw(self) -> bool:
        return not (termios.tcgetattr(self.slave)[3] & termios.ICANON)

    def wait_raw(self, timeout: float = 30) -> None:
        """devbox switches the terminal to raw mode when it starts pumping (typing earlier would be flushed)."""
        deadline = time.monotonic() + timeout
        while not self.is_raw():
            assert self.proc.poll() is None, f"devbox ended (rc={self.proc.returncode}) before attaching:\n{self.out!r}"
            assert time.monotonic() < deadline, f"the terminal never went raw:\n{self.out!r}"
            self._drain(0.05)

    def wait(self, timeout: float = 60) -> int:
        """devbox's exit code, draining the pty meanwhile (a full pty would block its writes)."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            assert time.monotonic() < deadline, f"devbox still running after {timeout}s:\n{self.out!r}"
            self._drain(0.1)
        self._drain(0)
        return self.proc.returncode

    def _drain(self, timeout: float) -> None:
        """Read what the pty has within ``timeout`` seconds (select: never blocks longer)."""
        ready, _, _ = select.select([self.master], [], [], timeout)
        if ready:
            try:
                self.out += os.read(self.master, 65536)
            except OSError:  # EIO: nobody holds the slave any more
                pass

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def terminals() -> Iterator[list[Terminal]]:
    made: list[Terminal] = []
    yield made
    for t in made:
        t.close()


def test_up_attaches_a_real_terminal(engine: PrivateDaemon, terminals: list[Terminal]) -> None:
    root = _project_with_profile("ptyattach", "shell", SHELL_PROFILE)
    t = Terminal(engine, root, "up", rows=24, cols=80)
    terminals.append(t)
    t.expect(rb"attached \(detach: Ctrl-P Ctrl-Q\)", timeout=180)
    t.wait_raw()

    # Keys reach the shell in the container, its output comes back.
    mark = len(t.out)
    t.write(b"echo hi-$((6*7))\n")
    t.expect(rb"hi-42\r?\n", start=mark)

    # On attach the container's TTY takes the terminal's size ... (the shell's "# " prompt may land after
    # the echo of a command typed before it was printed: a race between the TTY's echo and the shell)
    mark = len(t.out)
    t.write(b"stty size\n")
    t.expect(rb"(?:\n|# )24 80\r?\n", start=mark)
    # ... and follows a resize: the kernel signals devbox (SIGWINCH), devbox resizes the container.
    _set_size(t.master, 41, 123)
    mark = len(t.out)
    t.write(b"stty size\n")
    t.expect(rb"(?:\n|# )41 123\r?\n", start=mark)

    # Ctrl-P Ctrl-Q detaches: devbox ends with 0, the terminal is cooked again, the shell keeps running.
    t.write(b"\x10\x11")
    assert t.wait() == 0, t.out
    assert termios.tcgetattr(t.slave) == t.before
    cid = container_ids(engine, "ptyattach")["editor"]
    assert engine.docker("inspect", "-f", "{{.State.Status}}", cid).stdout.strip() == "running"

    # `up` again re-attaches to the same shell; `exit` ends the shell, the container and devbox.
    t2 = Terminal(engine, root, "up", rows=30, cols=100)
    terminals.append(t2)
    t2.expect(rb"up to date, nothing to do", timeout=120)
    t2.expect(rb"attached \(detach: Ctrl-P Ctrl-Q\)")
    t2.wait_raw()
    mark = len(t2.out)
    t2.write(b"stty size\n")
    t2.expect(rb"(?:\n|# )30 100\r?\n", start=mark)
    t2.write(b"exit\n")
    assert t2.wait() == 0, t2.out
    assert termios.tcgetattr(t2.slave) == t2.before
    assert b"Traceback" not in t.out + t2.out
    assert container_ids(engine, "ptyattach") == {"editor": cid}
    assert engine.docker("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", cid).stdout.strip() == "exited 0"

    ok(devbox(engine, root, "down", "--volumes"))


FAILING_DOCKERFILE = """\
FROM debian:bookworm-slim
RUN echo building-step && false
"""

FAILING_PROFILE = """\
description = "an image whose build fails"
[services.editor]
build = { context = "broken" }
command = ["sleep", "infinity"]
"""


def test_a_failing_build_names_the_step_and_shows_the_log_tail(engine: PrivateDaemon) -> None:
    # Build contexts live under images/ only (config: `context` is a directory name there), so
    # the test brings its own images/ and an empty shipped-profiles dir (the shipped profiles
    # name contexts this images/ lacks); the project-local profile builds from it.
    base = projects_dir() / "broken-shipped"
    images, profiles = base / "images", base / "profiles"
    (images / "broken").mkdir(parents=True, exist_ok=True)
    profiles.mkdir(exist_ok=True)
    (images / "broken" / "Dockerfile").write_text(FAILING_DOCKERFILE)
    for p in (base, images, images / "broken", profiles):
        p.chmod(0o755)
    root = _project_with_profile("brokenbuild", "broken", FAILING_PROFILE)

    r = devbox(engine, root, "up", "-d", env={"DEVBOX_IMAGES_DIR": str(images), "DEVBOX_PROFILES_DIR": str(profiles)})
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if "error" in ln.lower()]
    assert len(errors) == 1 and errors[0] == r.stderr.splitlines()[-1], r.stderr
    assert re.fullmatch(
        r"devbox: error: building devbox/broken:[0-9a-f]{12} failed at step 2/2 \(RUN echo building-step && false\): "
        r".*non-zero code: 1 — fix images/broken/Dockerfile", errors[0]), r.stderr
    # before the error: the failing step and the tail of its log
    lines = r.stderr.splitlines()
    at = next(i for i, ln in enumerate(lines) if ln.startswith("build of devbox/broken:"))
    assert lines[at].endswith("failed at step 2/2 (RUN echo building-step && false); last lines of its log:"), r.stderr
    assert "  building-step" in lines[at + 1:-1], r.stderr
    # nothing was started
    assert container_ids(engine, "brokenbuild") == {}
