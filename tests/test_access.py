"""A web IDE's access (pure: devbox.core.access), its secret store (devbox.host.secrets) and the
terminal relay (devbox.payload.devbox_term) between two local processes."""

from __future__ import annotations

import dataclasses
import os
import select
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devbox.core import access
from devbox.core.model import Mount, Port, Service, Stack
from devbox.errors import DevboxError
from devbox.host import secrets
from devbox.payload import relay_script


def _stack(*services: Service) -> Stack:
    return Stack(project="app", profile="p", services=services)


IDE = Service(name="ide", image="i", ports=(Port(8080, 0),), web_port=8080, generated_env=("PASSWORD",), terminal="runtime")
RUNTIME = Service(name="runtime", image="r", env=(("PGHOST", "db"),))
DB = Service(name="db", image="d")


def test_secret_names_are_what_the_stack_generates() -> None:
    assert access.secret_names(_stack(IDE, RUNTIME, DB)) == ("PASSWORD", access.TOKEN_VARIABLE)
    own = dataclasses.replace(IDE, env=(("PASSWORD", "mine"),), terminal=None)
    assert access.secret_names(_stack(own, RUNTIME)) == ()  # the project's own value needs none
    assert access.secret_names(_stack(RUNTIME, DB)) == ()


def test_apply_wires_the_terminal_and_the_login() -> None:
    values = {"PASSWORD": "p" * 24, access.TOKEN_VARIABLE: "t" * 24}
    out = access.wire(_stack(IDE, RUNTIME, DB), values, "/opt/devbox/devbox_term.py")
    ide, runtime, db = (out.service(n) for n in ("ide", "runtime", "db"))
    relay = Mount("bind", "/opt/devbox/devbox_term.py", access.RELAY_TARGET, read_only=True, allow_outside_project=True)
    assert ide.env_dict == {"PASSWORD": "p" * 24, access.TOKEN_VARIABLE: "t" * 24, access.TERMINAL_VARIABLE: "runtime:7681"}
    assert relay in ide.mounts and relay in runtime.mounts
    assert runtime.env_dict == {"PGHOST": "db", access.TOKEN_VARIABLE: "t" * 24}
    assert db == DB  # the database gets neither the token nor the relay
    # without a relay the login is still set; the IDE's terminal falls back to its own shell
    bare = access.wire(_stack(IDE, RUNTIME), values, None)
    assert bare.service("ide").env_dict == {"PASSWORD": "p" * 24} and bare.service("runtime") == RUNTIME


def test_a_project_password_wins() -> None:
    own = dataclasses.replace(IDE, env=(("PASSWORD", "mine"),))
    out = access.wire(_stack(own, RUNTIME), {access.TOKEN_VARIABLE: "t" * 24}, "/r")
    assert out.service("ide").env_dict["PASSWORD"] == "mine"


@pytest.mark.parametrize(("ports", "url"), [
    (["127.0.0.1:49153->8080/tcp"], "http://127.0.0.1:49153/"),
    (["0.0.0.0:32768->8080/tcp", ":::32768->8080/tcp"], "http://127.0.0.1:32768/"),
    (["127.0.0.1:5432->5432/tcp"], None),
    ([], None),
])
def test_web_url_reads_the_engine_binding(ports: list[str], url: str | None) -> None:
    assert access.web_url(IDE, ports) == url
    assert access.web_url(RUNTIME, ports) is None
    assert access.login_variable(IDE) == "PASSWORD" and access.login_variable(RUNTIME) is None


# --- the secret store ------------------------------------------------------------------


def test_secrets_are_made_once_private_and_kept(tmp_path: Path) -> None:
    d = tmp_path / "state" / "secrets" / "app"
    first = secrets.load(d, ["PASSWORD", "DEVBOX_TERM_TOKEN"])
    assert len(first["PASSWORD"]) >= 24 and first["PASSWORD"] != first["DEVBOX_TERM_TOKEN"]
    assert stat.S_IMODE((d / "PASSWORD").stat().st_mode) == 0o600
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert secrets.load(d, ["PASSWORD"]) == {"PASSWORD": first["PASSWORD"]}
    assert sorted(p.name for p in d.iterdir()) == ["DEVBOX_TERM_TOKEN", "PASSWORD"]  # no temp files left
    (d / "PASSWORD").unlink()
    assert secrets.load(d, ["PASSWORD"])["PASSWORD"] != first["PASSWORD"]  # deleting it makes a new one


def test_a_damaged_secret_is_refused_in_one_line(tmp_path: Path) -> None:
    d = tmp_path / "s"
    d.mkdir(mode=0o700)
    (d / "PASSWORD").write_text("")
    with pytest.raises(DevboxError) as info:
        secrets.load(d, ["PASSWORD"])
    assert str(d / "PASSWORD") in info.value.one_line() and "remove the file" in info.value.one_line()
    (d / "PASSWORD").unlink()
    os.symlink("/etc/passwd", d / "PASSWORD")  # never followed
    with pytest.raises(DevboxError):
        secrets.load(d, ["PASSWORD"])


def test_racing_ups_agree_on_one_secret(tmp_path: Path) -> None:
    d = tmp_path / "s"
    code = ("import sys; from pathlib import Path; from devbox.host import secrets; "
            "print(secrets.load(Path(sys.argv[1]), ['PASSWORD'])['PASSWORD'])")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(d)], stdout=subprocess.PIPE, text=True) for _ in range(6)]
    values = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert len(values) == 1 and values == {(d / "PASSWORD").read_text().strip()}


# --- the relay, between two local processes --------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def relay_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    port = _free_port()
    env = {**os.environ, "DEVBOX_TERM_TOKEN": "s" * 24, "DEVBOX_TERM_PORT": str(port), "SECRET_IN_RUNTIME": "yes"}
    proc = subprocess.Popen([sys.executable, str(relay_script()), "serve"], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and "serving terminals" in proc.stdout.readline()
    yield port
    proc.terminate()
    proc.wait(timeout=10)


def _client(port: int, token: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEVBOX_TERMINAL": f"127.0.0.1:{port}", "DEVBOX_TERM_TOKEN": token}
    return subprocess.run([sys.executable, str(relay_script()), *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=30, stdin=subprocess.DEVNULL)


def test_a_command_runs_in_the_server_with_its_env_and_the_callers_directory(relay_server: int, tmp_path: Path) -> None:
    r = _client(relay_server, "s" * 24, "-c", 'echo "$SECRET_IN_RUNTIME $PWD ${DEVBOX_TERM_TOKEN:-no-token}"; tty; exit 7',
                cwd=tmp_path)
    assert r.returncode == 7, r.stderr
    lines = r.stdout.replace("\r", "").splitlines()
    assert lines[0] == f"yes {tmp_path} no-token"  # the runtime's env, without the token; the IDE's directory
    assert lines[1].startswith("/dev/pts/")  # a real terminal on the server side


def test_a_wrong_token_falls_back_to_the_local_shell_and_says_why(relay_server: int) -> None:
    r = _client(relay_server, "w" * 24, "-c", "echo local")
    assert r.returncode == 0 and r.stdout == "local\n"
    assert "refused: wrong token" in r.stderr and "runs in the IDE container" in r.stderr
    r = _client(_free_port(), "s" * 24, "-c", "echo local")  # nothing listens
    assert r.stdout == "local\n" and "cannot reach the runtime's terminal" in r.stderr


def test_an_interactive_shell_gets_the_window_size_and_its_exit_status(relay_server: int) -> None:
    import fcntl
    import pty
    import struct
    import termios

    env = {**os.environ, "DEVBOX_TERMINAL": f"127.0.0.1:{relay_server}", "DEVBOX_TERM_TOKEN": "s" * 24}
    pid, fd = pty.fork()
    if pid == 0:  # the IDE's terminal: a pty of 33 rows and 101 columns
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
        os.execve(sys.executable, [sys.executable, str(relay_script())], env)
    out = b""
    deadline = time.monotonic() + 30
    sent = False
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        if not sent and (b"$ " in out or b"# " in out):  # the remote shell's prompt
            os.write(fd, b"stty size; exit 5\r")
            sent = True
    _, status = os.waitpid(pid, 0)
    assert sent, out
    assert b"33 101" in out, out
    assert os.waitstatus_to_exitcode(status) == 5


def test_a_long_build_step_shows_its_latest_output_line(capsys: pytest.CaptureFixture[str]) -> None:
    from devbox import console

    with console.BuildProgress() as progress:  # no terminal here: one line per step, and a heartbeat
        progress.start("devbox/code-server:1")
        progress.step("devbox/code-server:1", 7, 22, "RUN npm install -g code-server")
        progress.output("devbox/code-server:1", "first line", every_s=3600)  # too soon after the step line
        progress.output("devbox/code-server:1", "> node-pty@1.1.0 install:   node-gyp rebuild", every_s=0)
        progress.output("devbox/code-server:1", "   ", every_s=0)
    err = capsys.readouterr().err
    assert "step 7/22: RUN npm install -g code-server" in err
    assert "first line" not in err and "devbox/code-server:1: … > node-pty@1.1.0 install: node-gyp rebuild" in err
