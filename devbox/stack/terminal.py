"""A real terminal on a container's TTY: raw mode, window resize, clean restore.

Used by ``up`` (attach to the interactive editor), ``exec`` and ``shell`` when
stdin is a terminal.  The local terminal is put in raw mode so every key
(Ctrl-C included) goes to the program in the container; SIGWINCH resizes the
container's TTY; the terminal settings are restored on every way out.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import struct
import sys
import termios
import tty
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

from devbox import console


def window_size(fd: int) -> tuple[int, int]:
    """``(rows, columns)`` of the terminal on ``fd``."""
    packed = fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
    rows, cols, _, _ = struct.unpack("HHHH", packed)
    return rows, cols


@contextlib.contextmanager
def raw_mode(fd: int) -> Iterator[None]:
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _socket_of(sock: Any) -> Any:
    """docker-py hands back a SocketIO (unix) or a socket; we need the socket for send/recv."""
    return getattr(sock, "_sock", sock)


def pump(sock: Any, resize: Callable[[int, int], None], stdin_fd: int | None = None) -> None:
    """Connect the local terminal to a container TTY socket until either side closes."""
    stdin_fd = sys.stdin.fileno() if stdin_fd is None else stdin_fd
    raw_sock = _socket_of(sock)
    sock_fd = raw_sock.fileno()

    def on_winch(_sig: int, _frame: FrameType | None) -> None:
        try:
            resize(*window_size(stdin_fd))
        except Exception:  # noqa: BLE001 - a failed resize must not kill the session
            pass

    previous = signal.signal(signal.SIGWINCH, on_winch)
    try:
        with raw_mode(stdin_fd):
            rows, cols = window_size(stdin_fd)
            # A full-screen program that started detached only redraws when the size changes.
            with contextlib.suppress(Exception):
                resize(rows + 1, cols + 1)
            with contextlib.suppress(Exception):
                resize(rows, cols)
            stdin_open = True
            while True:
                watched = [sock_fd] + ([stdin_fd] if stdin_open else [])
                try:
                    ready, _, _ = select.select(watched, [], [])
                except InterruptedError:
                    continue
                if sock_fd in ready:
                    try:
                        data = raw_sock.recv(65536)
                    except (ConnectionResetError, OSError):
                        data = b""
                    if not data:
                        break
                    console.raw(data)
                if stdin_open and stdin_fd in ready:
                    data = os.read(stdin_fd, 65536)
                    if not data:
                        stdin_open = False
                        continue
                    raw_sock.sendall(data)
    finally:
        signal.signal(signal.SIGWINCH, previous)
        with contextlib.suppress(Exception):
            raw_sock.close()
