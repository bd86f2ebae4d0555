"""A small headless-Chromium driver over the DevTools protocol on a pipe (standard library only).

Chromium runs with ``--remote-debugging-pipe``: it reads CDP messages (JSON, each ended by a NUL
byte) from its fd 3 and writes its own to fd 4, so no port, no websocket and no HTTP endpoint are
involved.  One page target is created and attached with a flattened session; every command waits
for its response with a timeout, a reader thread dispatches responses by id, and events are kept
only in a short ring buffer (``Browser.events``) for debugging.  JavaScript dialogs (``alert``,
``beforeunload``) are accepted at once so they never block a test.

    with Browser(artifacts=Path("artifacts/ui")) as b:
        b.navigate("http://127.0.0.1:8080/")
        b.wait_for("!!document.querySelector('.monaco-workbench')", 120, "the workbench")
        b.click("input.password")
        b.type_text("secret")
        b.press("Enter")

Failures of ``wait_for`` and ``click`` raise with what was waited for, and save a screenshot and the
page's HTML in ``artifacts`` when it is set.  ``close()`` always kills Chromium's process group.
"""

from __future__ import annotations

import base64
import collections
import fcntl
import itertools
import json
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

CHROMIUM = "/usr/bin/chromium"

# Input.dispatch*Event modifier bits
ALT = 1
CTRL = 2
META = 4
SHIFT = 8

DEFAULT_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    # no WebGL: xterm.js (VS Code's terminal) falls back to its DOM renderer, whose text is readable
    "--disable-3d-apis",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-breakpad",
    "--disable-features=Translate,MediaRouter,OptimizationHints",
    "--password-store=basic",
    "--use-mock-keychain",
    "--mute-audio",
    "--hide-scrollbars",
)


class BrowserError(RuntimeError):
    """Chromium failed to start, died, or a CDP command failed."""


class JavaScriptError(BrowserError):
    """An expression given to ``evaluate`` threw (or its promise rejected)."""


# key name -> (key, code, windowsVirtualKeyCode, text typed without modifiers)
_KEYS: dict[str, tuple[str, str, int, str]] = {
    "Enter": ("Enter", "Enter", 13, "\r"),
    "Escape": ("Escape", "Escape", 27, ""),
    "Tab": ("Tab", "Tab", 9, ""),
    "Backspace": ("Backspace", "Backspace", 8, ""),
    "Delete": ("Delete", "Delete", 46, ""),
    "Space": (" ", "Space", 32, " "),
    "ArrowUp": ("ArrowUp", "ArrowUp", 38, ""),
    "ArrowDown": ("ArrowDown", "ArrowDown", 40, ""),
    "ArrowLeft": ("ArrowLeft", "ArrowLeft", 37, ""),
    "ArrowRight": ("ArrowRight", "ArrowRight", 39, ""),
    "Home": ("Home", "Home", 36, ""),
    "End": ("End", "End", 35, ""),
    "PageUp": ("PageUp", "PageUp", 33, ""),
    "PageDown": ("PageDown", "PageDown", 34, ""),
    "Backquote": ("`", "Backquote", 192, "`"),
}
for _n in range(1, 13):
    _KEYS[f"F{_n}"] = (f"F{_n}", f"F{_n}", 111 + _n, "")
_ALIASES = {"Return": "Enter", "Esc": "Escape", "`": "Backquote", " ": "Space", "Up": "ArrowUp", "Down": "ArrowDown",
            "Left": "ArrowLeft", "Right": "ArrowRight"}
# US layout: the character Shift gives on the non-letter keys handled here
_SHIFTED = {"`": "~", "1": "!", "2": "@", "3": "#", "4": "$", "5": "%", "6": "^", "7": "&", "8": "*", "9": "(", "0": ")",
            "-": "_", "=": "+", "[": "{", "]": "}", "\\": "|", ";": ":", "'": '"', ",": "<", ".": ">", "/": "?"}
_PUNCT = {"-": ("Minus", 189), "=": ("Equal", 187), "[": ("BracketLeft", 219), "]": ("BracketRight", 221),
          "\\": ("Backslash", 220), ";": ("Semicolon", 186), "'": ("Quote", 222), ",": ("Comma", 188),
          ".": ("Period", 190), "/": ("Slash", 191)}


def key_event_fields(key: str, modifiers: int = 0) -> dict[str, Any]:
    """The ``Input.dispatchKeyEvent`` fields (``key``, ``code``, ``windowsVirtualKeyCode``, ``text``) for one key.

    ``key`` is a name from the table (``Enter``, ``Escape``, ``Tab``, ``Backspace``, ``F1``...,
    ``Backquote`` or a backquote character) or a single letter, digit or US-layout punctuation.
    ``text`` is only set when the key types something (no Ctrl, Alt or Meta held).
    """
    key = _ALIASES.get(key, key)
    shift = bool(modifiers & SHIFT)
    if key in _KEYS:
        k, code, vk, text = _KEYS[key]
        if key == "Backquote":
            k = text = "~" if shift else "`"
    elif len(key) == 1 and key.isascii() and key.isalpha():
        code, vk = f"Key{key.upper()}", ord(key.upper())
        k = text = key.upper() if shift or key.isupper() else key.lower()
    elif len(key) == 1 and key.isdigit():
        code, vk = f"Digit{key}", ord(key)
        k = text = _SHIFTED[key] if shift else key
    elif key in _PUNCT:
        code, vk = _PUNCT[key]
        k = text = _SHIFTED[key] if shift else key
    else:
        raise ValueError(f"press: unknown key {key!r}")
    if modifiers & (CTRL | ALT | META):
        text = ""
    fields: dict[str, Any] = {"key": k, "code": code, "windowsVirtualKeyCode": vk, "nativeVirtualKeyCode": vk,
                              "modifiers": modifiers}
    if text:
        fields["text"] = text
        fields["unmodifiedText"] = text
    return fields


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "failure"


def _high_fd(fd: int) -> int:
    """A close-on-exec duplicate of ``fd`` numbered 10 or more (so dup2 onto 3 and 4 in the child can't clobber it)."""
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return new


class _Pending:
    __slots__ = ("done", "error", "message")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.message: dict[str, Any] | None = None
        self.error: str | None = None


class Browser:
    """One headless Chromium and one page in it, driven over ``--remote-debugging-pipe``.

    ``artifacts``: where failures save ``[<prefix>-]<n>-<what>.png`` and ``.html`` (created on demand;
    None: nowhere).  ``timeout``: the default for single CDP commands.
    """

    def __init__(self, *, chromium: str = CHROMIUM, window: tuple[int, int] = (1400, 900), artifacts: Path | None = None,
                 prefix: str = "", timeout: float = 30.0, start_timeout: float = 60.0, extra_args: tuple[str, ...] = ()) -> None:
        self.chromium = chromium
        self.prefix = prefix
        self.window = window
        self.artifacts = artifacts
        self.timeout = timeout
        self.start_timeout = start_timeout
        self.extra_args = extra_args
        self.pid: int | None = None
        self.returncode: int | None = None
        self.session_id: str | None = None
        self.target_id: str | None = None
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=300)
        self.dialogs: list[str] = []
        self.start_seconds: float | None = None
        self._profile: str | None = None
        self._log_path: str | None = None
        self._to_chrome: int | None = None
        self._from_chrome: int | None = None
        self._reader: threading.Thread | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._lock = threading.Lock()  # _pending and _dead
        self._write_lock = threading.Lock()
        self._reap_lock = threading.Lock()
        self._dead: str | None = None
        self._page_dead: str | None = None
        self._failures = itertools.count(1)

    # ----- life cycle -----

    def __enter__(self) -> Browser:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def start(self) -> None:
        """Start Chromium, check the pipe answers, and open and attach one page (its window ``self.window``)."""
        if self.pid is not None:
            raise BrowserError("browser already started")
        t0 = time.monotonic()
        self._profile = tempfile.mkdtemp(prefix="devbox-chromium-")
        self._log_path = os.path.join(self._profile, "chromium.log")
        try:
            self._spawn()
            self._reader = threading.Thread(target=self._read_loop, name="cdp-reader", daemon=True)
            self._reader.start()
            self.send("Browser.getVersion", timeout=self.start_timeout)
            self._open_page()
        except BaseException:
            self.close()
            raise
        self.start_seconds = time.monotonic() - t0

    def _spawn(self) -> None:
        assert self._profile is not None and self._log_path is not None
        to_r, to_w = os.pipe()  # we write, chromium reads (its fd 3)
        from_r, from_w = os.pipe()  # chromium writes (its fd 4), we read
        to_r, from_w = _high_fd(to_r), _high_fd(from_w)
        log = os.open(self._log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        log = _high_fd(log)
        w, h = self.window
        argv = [self.chromium, *DEFAULT_ARGS, "--remote-debugging-pipe", f"--user-data-dir={self._profile}",
                f"--window-size={w},{h}", *self.extra_args, "about:blank"]
        try:
            # posix_spawn, not subprocess with preexec_fn: the dup2s onto 3 and 4 happen in the child with
            # no risk of clobbering subprocess's own error pipe, and the child leads its own process
            # group, so close() can kill the renderers and helpers with it.
            self.pid = os.posix_spawn(argv[0], argv, dict(os.environ), setpgroup=0, file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, log, 1),
                (os.POSIX_SPAWN_DUP2, log, 2),
                (os.POSIX_SPAWN_DUP2, to_r, 3),
                (os.POSIX_SPAWN_DUP2, from_w, 4),
            ])
        except OSError as e:
            for fd in (to_r, to_w, from_r, from_w):
                os.close(fd)
            raise BrowserError(f"cannot start {self.chromium}: {e}") from e
        finally:
            os.close(log)
        os.close(to_r)
        os.close(from_w)
        self._to_chrome, self._from_chrome = to_w, from_r

    def _open_page(self) -> None:
        initial = [t["targetId"] for t in self.send("Target.getTargets")["targetInfos"] if t.get("type") == "page"]
        self.target_id = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session_id = self.send("Target.attachToTarget", {"targetId": self.target_id, "flatten": True})["sessionId"]
        for target in initial:  # the tab Chromium opened itself
            try:
                self.send("Target.closeTarget", {"targetId": target}, session=False)
            except BrowserError:
                pass
        self.send("Page.enable")
        self.send("Runtime.enable")
        self.send("Page.bringToFront")
        self.send("Emulation.setFocusEmulationEnabled", {"enabled": True})

    def alive(self) -> bool:
        """Is the Chromium process still running?  (Reaps it when it has exited.)"""
        with self._reap_lock:  # the reader thread asks too, when the pipe ends
            if self.pid is None or self.returncode is not None:
                return False
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = -1
                return False
            if pid == 0:
                return True
            self.returncode = os.waitstatus_to_exitcode(status)
            return False

    def close(self) -> None:
        """Kill Chromium (its whole process group), reap it, close the pipes and delete the profile.  Idempotent."""
        if self.pid is not None:
            if self.alive():
                try:
                    self.send("Browser.close", timeout=3)
                except BrowserError:
                    pass
                deadline = time.monotonic() + 3
                while self.alive() and time.monotonic() < deadline:
                    time.sleep(0.05)
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.pid, sig)  # the group Chromium leads: its zygotes, renderers and helpers
                except (ProcessLookupError, PermissionError):
                    break
                deadline = time.monotonic() + 3
                while self.alive() and time.monotonic() < deadline:
                    time.sleep(0.05)
            if self.returncode is None:
                try:
                    os.waitpid(self.pid, 0)
                except ChildProcessError:
                    pass
                self.returncode = self.returncode if self.returncode is not None else -9
        self._set_dead("browser closed")
        with self._write_lock:
            if self._to_chrome is not None:
                os.close(self._to_chrome)
                self._to_chrome = None
        # the reader ends at EOF (Chromium is gone); close its fd only then, never under a blocked read
        if self._reader is not None:
            self._reader.join(timeout=5)
            if not self._reader.is_alive():
                self._reader = None
        if self._reader is None and self._from_chrome is not None:
            os.close(self._from_chrome)
            self._from_chrome = None
        if self._profile is not None:
            shutil.rmtree(self._profile, ignore_errors=True)
            self._profile = None

    def log_tail(self, lines: int = 30) -> str:
        """The end of Chromium's stderr (while the profile exists)."""
        if not self._log_path:
            return ""
        try:
            with open(self._log_path, errors="replace") as fh:
                return "".join(fh.readlines()[-lines:])
        except OSError:
            return ""

    # ----- the protocol -----

    def _set_dead(self, why: str) -> None:
        with self._lock:
            if self._dead is None:
                self._dead = why
            pending, self._pending = self._pending, {}
        for p in pending.values():
            p.error = why
            p.done.set()

    def _read_loop(self) -> None:
        fd = self._from_chrome
        assert fd is not None
        buf = b""
        why = "Chromium closed its end of the DevTools pipe"
        try:
            while True:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    break
                buf += chunk
                *messages, buf = buf.split(b"\0")
                for raw in messages:
                    if raw:
                        self._dispatch(json.loads(raw))
        except (OSError, ValueError) as e:
            why = f"DevTools pipe failed: {e}"
        if self.alive():
            self._set_dead(why)
        else:
            self._set_dead(f"{why} (Chromium exited with {self.returncode}); its log ends:\n{self.log_tail()}")

    def _dispatch(self, msg: dict[str, Any]) -> None:
        if "id" in msg:
            with self._lock:
                p = self._pending.pop(msg["id"], None)
            if p is not None:
                p.message = msg
                p.done.set()
            return
        self.events.append(msg)
        method = msg.get("method")
        if method == "Page.javascriptDialogOpening":
            self.dialogs.append(f"{msg['params'].get('type')}: {msg['params'].get('message')}")
            # answered from another thread: this one must keep reading, or a full pipe could deadlock the writer
            threading.Thread(target=self._answer_dialog, args=(msg.get("sessionId"),), daemon=True).start()
        elif (method == "Inspector.targetCrashed" and msg.get("sessionId") == self.session_id) or (
                method == "Target.targetCrashed" and msg.get("params", {}).get("targetId") == self.target_id):
            self._fail_session(f"the page crashed ({method})")
        elif method == "Target.detachedFromTarget" and msg.get("params", {}).get("sessionId") == self.session_id:
            self._fail_session("the page was detached (closed or crashed)")

    def _answer_dialog(self, session: str | None) -> None:
        try:
            self._write({"id": next(self._ids), "method": "Page.handleJavaScriptDialog", "params": {"accept": True},
                         **({"sessionId": session} if session else {})})
        except BrowserError:
            pass

    def _fail_session(self, why: str) -> None:
        with self._lock:
            self._page_dead = why
            pending, self._pending = self._pending, {}
        for p in pending.values():
            p.error = why
            p.done.set()

    def _write(self, msg: dict[str, Any]) -> None:
        data = json.dumps(msg).encode() + b"\0"
        with self._write_lock:
            fd = self._to_chrome
            if fd is None:
                raise BrowserError("browser is closed")
            try:
                while data:
                    data = data[os.write(fd, data):]
            except OSError as e:
                raise BrowserError(f"cannot write to Chromium's DevTools pipe: {e}") from e

    def send(self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None,
             session: bool = True) -> dict[str, Any]:
        """Send one CDP command (to the page's session unless ``session=False``) and return its result."""
        msg_id = next(self._ids)
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session and self.session_id is not None:
            msg["sessionId"] = self.session_id
        p = _Pending()
        with self._lock:
            if self._dead is not None:
                raise BrowserError(f"{method}: {self._dead}")
            if "sessionId" in msg and self._page_dead is not None:
                raise BrowserError(f"{method}: {self._page_dead}")
            self._pending[msg_id] = p
        try:
            self._write(msg)
        except BrowserError:
            with self._lock:
                self._pending.pop(msg_id, None)
            raise
        limit = self.timeout if timeout is None else timeout
        if not p.done.wait(limit):
            with self._lock:
                self._pending.pop(msg_id, None)
            raise BrowserError(f"{method}: no answer from Chromium in {limit:g}s")
        if p.error is not None:
            raise BrowserError(f"{method}: {p.error}")
        assert p.message is not None
        if "error" in p.message:
            err = p.message["error"]
            raise BrowserError(f"{method}: {err.get('message')} ({err.get('code')}) {err.get('data', '')}".rstrip())
        result: dict[str, Any] = p.message.get("result", {})
        return result

    # ----- the page -----

    def navigate(self, url: str, *, timeout: float = 60.0) -> None:
        """Load ``url`` and wait until its document has finished loading (``readyState == 'complete'``)."""
        result = self.send("Page.navigate", {"url": url}, timeout=timeout)
        if result.get("errorText"):
            raise BrowserError(f"navigate {url}: {result['errorText']}")
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'", timeout,
                      f"{url} to load")

    def evaluate(self, js: str, *, timeout: float | None = None) -> Any:
        """The value of the JavaScript expression ``js`` in the page (promises awaited, JSON-able values returned).

        Raises JavaScriptError if it throws or its promise rejects.
        """
        limit = self.timeout if timeout is None else timeout
        result = self.send("Runtime.evaluate", {"expression": js, "returnByValue": True, "awaitPromise": True,
                                                "userGesture": True, "timeout": int(limit * 1000)}, timeout=limit + 5)
        details = result.get("exceptionDetails")
        if details:
            exc = details.get("exception") or {}
            text = exc.get("description") or exc.get("value") or details.get("text") or "exception"
            first = js.strip().splitlines()[0] if js.strip() else js
            raise JavaScriptError(f"JavaScript threw: {text}\n  in: {first[:200]}")
        value = result.get("result", {})
        if value.get("subtype") == "error":
            raise JavaScriptError(f"JavaScript returned an error: {value.get('description')}")
        return value.get("value")

    def wait_for(self, js_predicate: str, timeout: float, what: str, *, fail: str | None = None,
                 interval: float = 0.1, save_on_timeout: bool = True) -> Any:
        """Poll the expression ``js_predicate`` until it is truthy (for JavaScript); return its value
        (awaited if a promise; True for a DOM node).

        A predicate that throws counts as false (the element may not exist yet).  ``fail`` is an
        optional expression polled alongside: a truthy value (say, the text of an error box) stops the
        wait at once with that value in the error.  On timeout raises TimeoutError naming ``what``
        (and the predicate's last exception), after saving a screenshot when ``artifacts`` is set
        (unless not ``save_on_timeout``: a wait whose timeout is an expected outcome).
        """
        # truthiness judged in JavaScript (a DOM node, [] and {} are true there); a node comes back as True
        probe = f"Promise.resolve(({js_predicate}\n)).then(v => v ? {{ok: true, value: v instanceof Node ? true : v}} : {{ok: false}})"
        deadline = time.monotonic() + timeout
        last_error = ""
        while True:
            remaining = deadline - time.monotonic()
            try:
                got = self.evaluate(probe, timeout=max(1.0, min(10.0, remaining)))
                if got["ok"]:
                    return got.get("value", True)
                last_error = ""
            except JavaScriptError as e:
                last_error = str(e).splitlines()[0]
            except BrowserError as e:
                # a navigation swaps the execution context under a running evaluate; anything else is fatal
                transient = ("context", "navigat", "no answer")
                if self._dead is not None or not any(t in str(e) for t in transient):
                    raise BrowserError(f"waiting for {what}: {e}") from e
                last_error = str(e)
            if fail is not None:
                try:
                    bad = self.evaluate(fail, timeout=5)
                except BrowserError:
                    bad = None
                if bad:
                    saved = self.save_failure(what)
                    raise BrowserError(f"while waiting for {what}: {bad}{saved}")
            if time.monotonic() >= deadline:
                saved = self.save_failure(what) if save_on_timeout else ""
                extra = f" (last error: {last_error})" if last_error else ""
                raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}{extra}{saved}")
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))

    def save_failure(self, what: str) -> str:
        """Save a screenshot and the page's HTML under ``artifacts``; return a note naming them ('' if none)."""
        if self.artifacts is None:
            return ""
        stem = f"{self.prefix + '-' if self.prefix else ''}{next(self._failures):02d}-{_slug(what)}"
        png, html_path = self.artifacts / f"{stem}.png", self.artifacts / f"{stem}.html"
        saved = []
        try:
            self.artifacts.mkdir(parents=True, exist_ok=True)
            try:
                self.screenshot(png, timeout=10)
            except BrowserError:  # mid-navigation ("not attached to an active page"): once more, a moment later
                time.sleep(0.5)
                self.screenshot(png, timeout=10)
            saved.append(str(png))
            html = self.evaluate("document.documentElement.outerHTML", timeout=10)
            html_path.write_text(str(html))
            saved.append(str(html_path))
        except (BrowserError, OSError) as e:
            saved.append(f"(could not save all: {e})")
        return f"; saved {', '.join(saved)}"

    @contextmanager
    def step(self, what: str) -> Iterator[None]:
        """Run a block; if it raises (other than a wait that already saved its artifacts), save a screenshot and say which step failed."""
        try:
            yield
        except (TimeoutError, BrowserError) as e:
            if "; saved " in str(e) or self.artifacts is None:
                raise
            raise type(e)(f"{what}: {e}{self.save_failure(what)}") from e

    def screenshot(self, path: Path | str, *, timeout: float | None = None) -> Path:
        """Save the page's viewport as a PNG."""
        data = self.send("Page.captureScreenshot", {"format": "png"}, timeout=timeout)["data"]
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(data))
        return out

    # ----- input -----

    _BOX_JS = """(() => {
        const el = document.querySelector(%s);
        if (!el) return null;
        el.scrollIntoView({block: 'center', inline: 'center'});
        const r = el.getBoundingClientRect();
        if (r.width < 1 || r.height < 1) return {x: 0, y: 0, w: r.width, h: r.height, hit: 'zero size'};
        const x = r.left + r.width / 2, y = r.top + r.height / 2;
        const at = document.elementFromPoint(x, y);
        const desc = n => n ? n.tagName.toLowerCase() + (n.id ? '#' + n.id : '') +
            (typeof n.className === 'string' && n.className ? '.' + n.className.trim().split(/\\s+/).join('.') : '') : 'nothing';
        return {x, y, w: r.width, h: r.height, hit: (at && el.contains(at)) ? '' : desc(at)};
    })()"""

    def _box(self, selector: str, timeout: float, check_hit: bool, action: str) -> dict[str, Any]:
        js = self._BOX_JS % json.dumps(selector)
        deadline = time.monotonic() + timeout
        while True:
            try:
                box: dict[str, Any] | None = self.evaluate(js, timeout=10)
            except JavaScriptError:
                box = None
            if box and box["w"] >= 1 and box["h"] >= 1 and (not check_hit or not box["hit"]):
                return box
            if time.monotonic() >= deadline:
                if not box:
                    why = "no such element"
                elif box["w"] < 1 or box["h"] < 1:
                    why = f"it has no size ({box['w']}x{box['h']})"
                else:
                    why = f"{box['hit']} covers it"
                raise TimeoutError(f"cannot {action} {selector!r} within {timeout:g}s: {why}{self.save_failure(action + ' ' + selector)}")
            time.sleep(0.1)

    def click(self, selector: str, *, timeout: float = 10.0, check_hit: bool = True) -> None:
        """Click the centre of the first element matching ``selector``, once it exists, has a size, and
        (``check_hit``) is not covered by another element; scrolls it into view first."""
        box = self._box(selector, timeout, check_hit, "click")
        self.click_at(box["x"], box["y"])

    def hover(self, selector: str, *, timeout: float = 10.0) -> None:
        """Move the mouse over the centre of the first element matching ``selector``."""
        box = self._box(selector, timeout, False, "hover over")
        self.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": box["x"], "y": box["y"]})

    def click_at(self, x: float, y: float, *, button: str = "left", modifiers: int = 0, count: int = 1) -> None:
        """Move the mouse to (x, y) in CSS pixels of the viewport, press and release ``button``."""
        self.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y, "modifiers": modifiers})
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": button, "buttons": 1 if kind == "mousePressed" else 0,
                                                   "clickCount": count, "modifiers": modifiers})

    def set_clipboard(self, text: str) -> None:
        """Put ``text`` on the (headless browser's own) clipboard, allowing the page's origin to read it."""
        origin = self.evaluate("location.origin")
        self.send("Browser.grantPermissions", {"origin": origin, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]},
                  session=False)
        self.evaluate(f"navigator.clipboard.writeText({json.dumps(text)}).then(() => true)")

    def type_text(self, text: str) -> None:
        """Insert ``text`` into the focused element, as an IME would (``Input.insertText``: no key events)."""
        self.send("Input.insertText", {"text": text})

    def press(self, key: str, modifiers: int = 0) -> None:
        """Press and release one key (see ``key_event_fields``) with ``modifiers`` (ALT | CTRL | META | SHIFT) held.

        The modifier keys themselves are pressed before and released after, as a keyboard would.
        """
        if len(key) == 1 and key.isascii() and key.isupper():
            modifiers |= SHIFT  # "A" is Shift+A, as on a keyboard
        fields = key_event_fields(key, modifiers)
        held = [(bit, name, code, vk) for bit, name, code, vk in
                ((CTRL, "Control", "ControlLeft", 17), (SHIFT, "Shift", "ShiftLeft", 16), (ALT, "Alt", "AltLeft", 18),
                 (META, "Meta", "MetaLeft", 91)) if modifiers & bit]
        state = 0
        for bit, name, code, vk in held:
            state |= bit
            self.send("Input.dispatchKeyEvent", {"type": "rawKeyDown", "key": name, "code": code, "windowsVirtualKeyCode": vk,
                                                 "nativeVirtualKeyCode": vk, "modifiers": state, "location": 1})
        self.send("Input.dispatchKeyEvent", {"type": "keyDown" if "text" in fields else "rawKeyDown", **fields})
        up = {k: v for k, v in fields.items() if k not in ("text", "unmodifiedText")}
        self.send("Input.dispatchKeyEvent", {"type": "keyUp", **up})
        for bit, name, code, vk in reversed(held):
            state &= ~bit
            self.send("Input.dispatchKeyEvent", {"type": "keyUp", "key": name, "code": code, "windowsVirtualKeyCode": vk,
                                                 "nativeVirtualKeyCode": vk, "modifiers": state, "location": 1})
