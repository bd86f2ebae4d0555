#!/usr/bin/env python3
"""devbox-term: an IDE's terminals, run in the runtime container (standard library only).

devbox mounts this file read-only at /usr/local/lib/devbox/devbox-term into a web IDE and the
runtime service its terminals belong to (``terminal = "runtime"`` in a profile):

    devbox-term serve            in the runtime: serve shells on DEVBOX_TERM_PORT (7681)
    devbox-term [-l] [-c CMD]    in the IDE: a shell (or CMD) in the runtime, relayed through
                                 this terminal; the IDE's terminal profile and its tasks use it

The client connects to ``DEVBOX_TERMINAL`` (``runtime:7681``, on the project's private
network; nothing is published), sends one JSON line (the token, the command, the working
directory, the terminal size and a few TERM variables) and then relays bytes in frames: one
type byte, a 4-byte big-endian length, the payload.  Client to server: ``d`` (input) and ``w``
(window size: rows, columns as two 16-bit numbers).  Server to client: ``d`` (output) and ``x``
(exit status, a 32-bit signed number).  The token (``DEVBOX_TERM_TOKEN``, which devbox
generates per project and gives to both containers only) is compared in constant time; a
wrong one gets one error line and the connection closed.

When the runtime cannot be reached, the client says why on stderr and runs the IDE
container's own shell instead, so a terminal always opens.
"""

from __future__ import annotations

import errno
import fcntl
import hmac
import json
import os
import select
import signal
import socket
import struct
import sys
import termios
import tty

PORT = int(os.environ.get("DEVBOX_TERM_PORT", "7681"))
HEADER_MAX = 65536
PASS_ENV = ("TERM", "COLORTERM", "LANG", "LC_ALL", "TERM_PROGRAM", "TERM_PROGRAM_VERSION")
_FRAME = struct.Struct(">cI")


def _frame(kind: bytes, payload: bytes) -> bytes:
    return _FRAME.pack(kind, len(payload)) + payload


class _Frames:
    """Splits a byte stream into (kind, payload) frames."""

    def __init__(self) -> None:
        self.buf = b""

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        self.buf += data
        out = []
        while len(self.buf) >= _FRAME.size:
            kind, size = _FRAME.unpack_from(self.buf)
            if size > 1 << 20:
                raise ValueError("frame too large")
            if len(self.buf) < _FRAME.size + size:
                break
            out.append((kind, self.buf[_FRAME.size:_FRAME.size + size]))
            self.buf = self.buf[_FRAME.size + size:]
        return out


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except InterruptedError:
            continue
        view = view[n:]


def _set_size(fd: int, rows: int, cols: int) -> None:
    if rows > 0 and cols > 0:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


# --- server (in the runtime) -------------------------------------------------------------


def serve_shells() -> int:
    token = os.environ.get("DEVBOX_TERM_TOKEN", "")
    if len(token) < 16:
        print("devbox-term serve: DEVBOX_TERM_TOKEN is not set (devbox sets it for the stack)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # sessions are forked children: reaped by the kernel
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        listener = socket.create_server(("0.0.0.0", PORT))  # the project network's service names are IPv4
    except OSError as exc:
        print(f"devbox-term serve: cannot listen on port {PORT}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"devbox-term: serving terminals on port {PORT}", flush=True)
    while True:
        try:
            conn, _ = listener.accept()
        except InterruptedError:
            continue
        pid = os.fork()
        if pid == 0:
            listener.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            try:
                code = _session(conn, token)
            except Exception as exc:  # noqa: BLE001  # one session's failure never takes the server down
                print(f"devbox-term: session failed: {exc}", file=sys.stderr, flush=True)
                code = 1
            os._exit(code)
        conn.close()


def _read_header(conn: socket.socket) -> tuple[dict[str, object], bytes]:
    conn.settimeout(10)
    buf = b""
    while b"\n" not in buf:
        chunk = conn.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the header")
        buf += chunk
        if len(buf) > HEADER_MAX:
            raise ValueError("header too long")
    line, rest = buf.split(b"\n", 1)
    header = json.loads(line)
    if not isinstance(header, dict):
        raise ValueError("header is not an object")
    conn.settimeout(None)
    return header, rest


def _session(conn: socket.socket, token: str) -> int:
    header, rest = _read_header(conn)
    given = header.get("token")
    if not isinstance(given, str) or not hmac.compare_digest(given.encode(), token.encode()):
        conn.sendall(b'{"ok": false, "error": "wrong token"}\n')
        return 1
    argv = header.get("argv")
    if argv is not None and not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
        conn.sendall(b'{"ok": false, "error": "argv must be a non-empty list of strings"}\n')
        return 1
    env = {k: v for k, v in os.environ.items() if k != "DEVBOX_TERM_TOKEN"}
    sent_env = header.get("env")
    if isinstance(sent_env, dict):
        env.update({k: v for k, v in sent_env.items() if k in PASS_ENV and isinstance(v, str)})
    cwd = header.get("cwd")
    rows, cols = header.get("rows"), header.get("cols")
    conn.sendall(b'{"ok": true}\n')
    pid, master = os.forkpty()
    if pid == 0:
        try:
            if isinstance(rows, int) and isinstance(cols, int):
                _set_size(0, rows, cols)
            for d in (cwd, os.environ.get("DEVBOX_WORKDIR"), "/work", "/"):
                if isinstance(d, str) and os.path.isdir(d):
                    os.chdir(d)
                    break
            if argv is None:
                own = env.get("SHELL", "")
                shell = own if own and os.path.exists(own) else "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"
                env["SHELL"] = shell
                os.execve(shell, [shell, "-l"], env)
            else:
                os.execvpe(str(argv[0]), [str(a) for a in argv], env)
        except OSError as exc:
            os.write(2, f"devbox-term: {exc}\r\n".encode())
        os._exit(127)
    frames = _Frames()
    pending = frames.feed(rest)
    status = 0
    open_in = True
    while True:
        for kind, payload in pending:
            if kind == b"d":
                _write_all(master, payload)
            elif kind == b"w" and len(payload) == 4:
                r, c = struct.unpack(">HH", payload)
                _set_size(master, r, c)
        pending = []
        watched: list[int] = [master, conn.fileno()] if open_in else [master]
        readable, _, _ = select.select(watched, [], [])
        if master in readable:
            try:
                out = os.read(master, 65536)
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                out = b""
            if not out:  # the shell and everything on its terminal are gone
                _, raw = os.waitpid(pid, 0)
                status = os.waitstatus_to_exitcode(raw)
                status = 128 - status if status < 0 else status
                break
            conn.sendall(_frame(b"d", out))
        if open_in and conn.fileno() in readable:
            data = conn.recv(65536)
            if not data:  # the IDE closed the terminal: hang up on the shell
                open_in = False
                os.kill(pid, signal.SIGHUP)
                continue
            pending = frames.feed(data)
    try:
        conn.sendall(_frame(b"x", struct.pack(">i", status)))
    except OSError:
        pass
    return 0


# --- client (in the IDE) -------------------------------------------------------------------


def _fallback(command: str | None, why: str) -> int:
    print(f"devbox-term: {why}; this shell runs in the IDE container, not the runtime", file=sys.stderr, flush=True)
    shell = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"
    os.execv(shell, [shell, "-c", command] if command is not None else [shell, "-l"])
    return 127


def _size() -> tuple[int, int]:
    try:
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8))
        return rows, cols
    except OSError:
        return 24, 80


def client(command: str | None) -> int:
    target = os.environ.get("DEVBOX_TERMINAL", "")
    token = os.environ.get("DEVBOX_TERM_TOKEN", "")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit() or not token:
        return _fallback(command, "no runtime terminal configured (DEVBOX_TERMINAL)")
    try:
        sock = socket.create_connection((host, int(port)), timeout=5)
    except OSError as exc:
        return _fallback(command, f"cannot reach the runtime's terminal at {target} ({exc.strerror or exc}); "
                                  "'devbox up' starts it")
    rows, cols = _size()
    header = {"v": 1, "token": token, "argv": ["/bin/sh", "-c", command] if command is not None else None,
              "cwd": os.getcwd(), "rows": rows, "cols": cols,
              "env": {k: os.environ[k] for k in PASS_ENV if k in os.environ}}
    sock.sendall(json.dumps(header).encode() + b"\n")
    reply = b""
    while not reply.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            return _fallback(command, f"the runtime's terminal at {target} closed the connection")
        reply += chunk
    answer = json.loads(reply)
    if not answer.get("ok"):
        return _fallback(command, f"the runtime's terminal refused: {answer.get('error')}")
    sock.settimeout(None)
    is_tty = os.isatty(0)
    saved = termios.tcgetattr(0) if is_tty else None

    def on_winch(*_: object) -> None:
        r, c = _size()
        try:
            sock.sendall(_frame(b"w", struct.pack(">HH", r, c)))
        except OSError:
            pass

    if is_tty:
        tty.setraw(0)
        signal.signal(signal.SIGWINCH, on_winch)
    frames = _Frames()
    status = 1
    stdin_open = True
    try:
        while True:
            try:
                watched: list[int] = [sock.fileno(), 0] if stdin_open else [sock.fileno()]
                readable, _, _ = select.select(watched, [], [])
            except InterruptedError:
                continue
            if 0 in readable:
                data = os.read(0, 65536)
                if data:
                    sock.sendall(_frame(b"d", data))
                else:  # no more input (not a hangup: closing the connection is one)
                    stdin_open = False
            if sock.fileno() in readable:
                data = sock.recv(65536)
                if not data:
                    break
                done = False
                for kind, payload in frames.feed(data):
                    if kind == b"d":
                        _write_all(1, payload)
                    elif kind == b"x":
                        (status,) = struct.unpack(">i", payload)
                        done = True
                if done:
                    break
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
    return status


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"]:
        return serve_shells()
    command = None
    args = list(argv)
    while args:  # what VS Code's terminal profiles and tasks pass: -l, -i, -c CMD
        a = args.pop(0)
        if a == "-c":
            if not args:
                print("devbox-term: -c needs a command", file=sys.stderr)
                return 2
            command = args.pop(0)
        elif a in ("-l", "--login", "-i"):
            continue
        else:
            print(f"devbox-term: unknown argument {a!r} (usage: devbox-term [serve | -l | -c COMMAND])", file=sys.stderr)
            return 2
    return client(command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
