"""Driving code-server (VS Code in the browser) through its UI, with ``harness.browser.Browser``.

Every step waits for what it needs to see, and every wait is bounded; a failure raises
(TimeoutError or BrowserError) naming the step, with a screenshot and the page's HTML saved in
``b.artifacts`` when that is set.

    with Browser(artifacts=artifacts) as b:
        login(b, "http://127.0.0.1:18080", password)
        assert "hello.py" in explorer_names(b)
        new_file(b, "made_by_ui.txt", "written through the editor\\n")
        out = terminal_run(b, "stat -c %u made_by_ui.txt", re.compile(r"^\\d+$", re.M))

Selectors are VS Code 1.139's (code-server 4.139): the workbench ``.monaco-workbench``, the
Explorer's ``.explorer-folders-view`` tree (rows ``.monaco-list-row[aria-label]``), editor tabs
``.tab`` (``dirty`` while unsaved, unless auto-save is on), breadcrumbs, the quick input ``.quick-input-widget`` and the
terminal's xterm.js DOM renderer (``.xterm-rows``: Chromium started with ``--disable-3d-apis``
has no WebGL, so xterm.js draws rows as DOM text, one ``div`` per row of the viewport).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from .browser import CTRL, SHIFT, Browser, BrowserError

WORKBENCH_TIMEOUT = 120.0

# Fail-fast checks: an expression whose truthy value is the error to report.
_WORKBENCH_ERROR = r"""(() => {
    const err = document.querySelector('.login-form .error, .error-display');
    if (err && err.textContent.trim()) return 'login page says: ' + err.textContent.trim();
    const dlg = document.querySelector('.monaco-dialog-box');
    if (dlg && dlg.offsetParent !== null) return 'VS Code shows a dialog: ' + dlg.innerText.trim().replace(/\s+/g, ' ').slice(0, 300);
    return null;
})()"""
_FS_ERROR = r"""(() => {
    for (const t of document.querySelectorAll('.notification-toast, .notifications-center .notification-list-item')) {
        const s = (t.innerText || '').replace(/\s+/g, ' ');
        if (/failed to save|unable to write|unable to create|permission denied|EACCES|EPERM|EROFS|read-only file system/i.test(s))
            return 'notification: ' + s.trim().slice(0, 300);
    }
    const dlg = document.querySelector('.monaco-dialog-box');
    if (dlg && dlg.offsetParent !== null) return 'VS Code shows a dialog: ' + dlg.innerText.trim().replace(/\s+/g, ' ').slice(0, 300);
    return null;
})()"""


def _js(value: object) -> str:
    return json.dumps(value)


def _settle(seconds: float = 0.15) -> None:
    """A short pause for a UI transition that has no observable end state (an animation, a hover)."""
    time.sleep(seconds)


def _active_element(b: Browser) -> str:
    desc: str = b.evaluate("""(() => { const a = document.activeElement; if (!a) return 'nothing';
        return a.tagName.toLowerCase() + (a.className && typeof a.className === 'string' ? '.' + a.className.trim().split(/\\s+/).join('.') : '')
            + (a.getAttribute('aria-label') ? ' [' + a.getAttribute('aria-label') + ']' : ''); })()""")
    return desc


# ----- login -----


_NOT_LISTENING = ("ERR_CONNECTION_REFUSED", "ERR_CONNECTION_RESET", "ERR_CONNECTION_CLOSED", "ERR_CONNECTION_ABORTED",
                  "ERR_CONNECTION_FAILED", "ERR_EMPTY_RESPONSE", "ERR_SOCKET_NOT_CONNECTED")


def login(b: Browser, base_url: str, password: str, *, timeout: float = WORKBENCH_TIMEOUT) -> None:
    """Open code-server at ``base_url``, log in with ``password`` on its login page, and wait until the
    workbench has rendered (its activity bar and status bar are shown).  Retries for up to 60 s while
    nothing listens at ``base_url`` yet; fails at once on a login error (wrong password, code-server's
    rate limit) or a VS Code error dialog.

    The workbench shows before it is connected to code-server's backend: the Explorer fills a few
    seconds later and key bindings such as Ctrl+Shift+` do nothing until then; the functions below
    wait for what they need themselves."""
    base = base_url.rstrip("/")
    with b.step("open the code-server login page"):
        deadline = time.monotonic() + 60
        while True:  # a container just started may not listen yet
            try:
                b.navigate(base + "/")
                break
            except BrowserError as e:
                if not any(err in str(e) for err in _NOT_LISTENING) or time.monotonic() > deadline:
                    raise
                _settle(0.5)
        where = b.wait_for("""document.querySelector('.monaco-workbench') ? 'workbench'
                              : document.querySelector('.login-form input.password') ? 'login' : null""",
                           60, "the login page (or the workbench)")
    if where == "login":
        with b.step("fill in the password"):
            b.click(".login-form input.password")
            b.wait_for("document.activeElement && document.activeElement.matches('.login-form input.password')", 10,
                       "the password field to have focus")
            b.type_text(password)
            b.wait_for(f"document.querySelector('.login-form input.password').value.length === {len(password)}", 10,
                       "the password to be typed")
            b.click(".login-form input.submit")
    b.wait_for("""(() => { const w = document.querySelector('.monaco-workbench');
                   return !!w && !!w.querySelector('.part.activitybar, .part.sidebar') && !!w.querySelector('.part.statusbar .statusbar-item'); })()""",
               timeout, "the VS Code workbench to render after login", fail=_WORKBENCH_ERROR)


# ----- explorer -----

_FOLDERS_PANE = "document.querySelector('.explorer-folders-view') && document.querySelector('.explorer-folders-view').closest('.pane')"


def show_explorer(b: Browser, *, timeout: float = 30.0) -> None:
    """Make the Explorer visible (Ctrl+Shift+E when it is not) and its folder section expanded."""
    visible = "(() => { const v = document.querySelector('.explorer-viewlet'); return !!v && v.offsetParent !== null; })()"
    with b.step("show the Explorer"):
        if not b.evaluate(visible):
            b.press("E", CTRL | SHIFT)
            b.wait_for(visible, timeout, "the Explorer view to open (Ctrl+Shift+E)")
        b.wait_for(f"!!({_FOLDERS_PANE})", timeout, "the Explorer's folder section")
        if b.evaluate(f"({_FOLDERS_PANE}).querySelector('.pane-header').getAttribute('aria-expanded') !== 'true'"):
            b.evaluate(f"({_FOLDERS_PANE}).querySelector('.pane-header').setAttribute('data-dbx', 'folders-header')")
            b.click("[data-dbx='folders-header']")
            b.wait_for(f"({_FOLDERS_PANE}).querySelector('.pane-header').getAttribute('aria-expanded') === 'true'", timeout,
                       "the Explorer's folder section to expand")


_ROWS_JS = """[...document.querySelectorAll('.explorer-folders-view .monaco-list-row')]
    .filter(r => !r.querySelector('input'))
    .sort((a, b) => (parseFloat(a.style.top) || 0) - (parseFloat(b.style.top) || 0))
    .map(r => [r.getAttribute('aria-label') || (r.querySelector('.label-name') || r).textContent.trim(), parseInt(r.getAttribute('aria-level') || '1')])"""


def explorer_names(b: Browser, *, level: int | None = 1, allow_empty: bool = False, timeout: float = 60.0) -> list[str]:
    """The names the Explorer shows for the opened folder, top to bottom.

    ``level=1``: the folder's own entries (expanded sub-folders' entries left out); ``None``: every row
    shown.  Waits until the tree is populated (unless ``allow_empty``) and has stopped changing.  The
    tree is virtual: only rows scrolled into view exist, which is all of them for a small folder.
    """
    show_explorer(b, timeout=timeout)
    deadline = time.monotonic() + timeout
    progress = "!!document.querySelector('.explorer-viewlet .monaco-progress-container.active')"
    if not allow_empty:
        b.wait_for(f"{_ROWS_JS}.length > 0", timeout, "the Explorer to list the folder's files")
    previous: list[list[Any]] | None = None
    while True:  # stable across two reads 300 ms apart, and no progress bar
        rows: list[list[Any]] = b.evaluate(_ROWS_JS)
        if rows == previous and not b.evaluate(progress):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"the Explorer's rows kept changing for {timeout:g}s: {rows}{b.save_failure('explorer rows')}")
        previous = rows
        _settle(0.3)
    return [str(name) for name, lvl in rows if level is None or lvl == level]


# ----- command palette -----


def _quick_input_open() -> str:
    return "(() => { const w = document.querySelector('.quick-input-widget'); return !!w && getComputedStyle(w).display !== 'none'; })()"


def run_command(b: Browser, title: str, *, timeout: float = 30.0) -> None:
    """Run a command from the command palette (F1), by its exact title, e.g. ``Terminal: Create New Terminal``."""
    with b.step(f"run command {title!r}"):
        if b.evaluate(_quick_input_open()):
            b.press("Escape")
            b.wait_for(f"!{_quick_input_open()}", 10, "an open quick input to close")
        b.press("F1")
        b.wait_for("document.activeElement && document.activeElement.matches('.quick-input-widget input') && document.activeElement.value === '>'",
                   timeout, "the command palette to open (F1)")
        b.type_text(title)
        pick = f"""(() => {{
            for (const r of document.querySelectorAll('.quick-input-widget .monaco-list-row')) r.removeAttribute('data-dbx');
            const t = {_js(title)};
            const row = [...document.querySelectorAll('.quick-input-widget .monaco-list-row')]
                .find(r => {{ const l = r.getAttribute('aria-label') || ''; return l === t || l.startsWith(t + ', '); }});
            if (!row) return false;
            row.setAttribute('data-dbx', 'palette-pick');
            return true;
        }})()"""
        b.wait_for(pick, timeout, f"the command palette to offer {title!r}")
        b.click(".quick-input-widget .monaco-list-row[data-dbx='palette-pick']")
        b.wait_for(f"!{_quick_input_open()}", timeout, "the command palette to close")


# ----- editor -----


def _tab_state(name: str) -> str:
    """JS: 'dirty' / 'saved' for the active tab labelled ``name`` in the active group, null otherwise."""
    return f"""(() => {{
        const tab = document.querySelector('.editor-group-container.active .tab.active');
        if (!tab || tab.getAttribute('aria-label') !== {_js(name)}) return null;
        return tab.classList.contains('dirty') ? 'dirty' : 'saved';
    }})()"""


_EDITOR_FOCUSED = """(() => { const a = document.activeElement;
    return !!a && !!a.closest('.editor-group-container.active .monaco-editor') && !a.closest('.monaco-editor .find-widget'); })()"""

_EDITOR_LINES = """(() => {
    const ed = document.querySelector('.editor-group-container.active .monaco-editor .view-lines');
    if (!ed) return null;
    return [...ed.querySelectorAll('.view-line')]
        .sort((a, b) => (parseFloat(a.style.top) || 0) - (parseFloat(b.style.top) || 0))
        .map(l => l.textContent.replace(/\\u00a0/g, ' '));
})()"""


def _type_into_editor(b: Browser, text: str) -> None:
    """Type ``text`` at the cursor (the end of a new file), undoing what the editor adds by itself.

    ``Input.insertText`` goes through the editor as typing, character by character: brackets and
    quotes are auto-closed (the closer lands after the cursor, and is pushed along as typing goes
    on), a new line is auto-indented.  So: the newline is inserted as text too (an open suggestion
    list would take an Enter key as "accept"); after it, Shift+Home selects the indentation the editor
    added and the line's own text replaces it (an empty line deletes it); at the end, Ctrl+Shift+End
    and Delete remove the closers left after the cursor.  What remains possible is re-indentation as
    you type (``else:`` in Python, ``}`` in JavaScript); ``new_file`` reads the file back and says so.
    """
    for i, line in enumerate(text.split("\n")):
        if i > 0:
            b.type_text("\n")
            b.press("Home", SHIFT)
        if line:
            b.type_text(line)
        elif i > 0:
            b.press("Delete")
    b.press("End", CTRL | SHIFT)
    b.press("Delete")


def _paste_into_editor(b: Browser, text: str) -> None:
    """Put ``text`` on the clipboard and paste it with Ctrl+V: no auto-closing, no auto-indentation
    (unless the user turned on ``editor.formatOnPaste`` or ``editor.autoIndentOnPaste``)."""
    b.set_clipboard(text)
    b.press("v", CTRL)


def new_file(b: Browser, name: str, text: str, *, paste: bool = False, timeout: float = 60.0) -> None:
    """Create ``name`` (relative to the opened folder; ``a/b.txt`` makes ``a`` too) with the Explorer's
    "New File..." action, type ``text`` into its editor, save it with Ctrl+S, and wait until it is saved.
    Checks along the way: the name input took the name, the editor opened the file at the right place
    (its breadcrumbs are the path), and at the end the tab has no dirty mark and code-server itself
    reads the file back with exactly ``text``.

    ``text`` is typed (``Input.insertText``, then undoing the editor's auto-closing and
    auto-indentation, see ``_type_into_editor``), or with ``paste`` put on the clipboard and pasted
    with Ctrl+V, which the editor takes literally: use that for code whose indentation the editor
    would re-do as you type (``else:``, a closing ``}``).

    Why the read-back: in the browser VS Code defaults to ``files.autoSave: afterDelay`` (1 s), and with
    a short auto-save delay it never shows a dirty mark (a pending save counts as "saving"), so the tab
    alone proves nothing; and it catches whatever typing did that was not asked for.
    """
    parts = [p for p in name.split("/") if p]
    base = parts[-1]
    show_explorer(b, timeout=timeout)
    try:  # the tree is loaded (code-server's file system is connected); an empty folder never gets rows
        b.wait_for(f"{_ROWS_JS}.length > 0", min(timeout, 30.0), "the Explorer to list the folder's files", save_on_timeout=False)
    except TimeoutError:
        pass
    with b.step(f"start a new file {name!r} in the Explorer"):
        # a click on the tree's empty space clears the selection, so the file goes at the top of the folder
        spot = b.evaluate("""(() => {
            const list = document.querySelector('.explorer-folders-view .monaco-list');
            if (!list) return null;
            const r = list.getBoundingClientRect();
            const rows = [...list.querySelectorAll('.monaco-list-row')];
            const bottom = rows.reduce((m, row) => Math.max(m, row.getBoundingClientRect().bottom), r.top);
            return bottom < r.bottom - 12 ? {x: r.left + r.width / 2, y: (bottom + r.bottom) / 2} : null;
        })()""")
        if spot:
            b.click_at(spot["x"], spot["y"])
            _settle()
        b.evaluate(f"({_FOLDERS_PANE}).querySelector('.pane-header').setAttribute('data-dbx', 'folders-header')")
        b.hover("[data-dbx='folders-header']")  # the pane's actions show on hover
        _settle()
        b.click("[data-dbx='folders-header'] .action-label.codicon-new-file")
        b.wait_for("document.activeElement && document.activeElement.matches('.explorer-folders-view .monaco-list-row input')",
                   15, "the Explorer's file name input to have focus")
        b.type_text(name)
        b.wait_for(f"document.activeElement.value === {_js(name)}", 10, "the file name to be typed")
    with b.step(f"confirm the name {name!r}"):
        b.press("Enter")
        name_error = f"""(() => {{ const m = document.querySelector('.explorer-folders-view .monaco-inputbox-message, .monaco-inputbox-container .monaco-inputbox-message');
                           return m && m.textContent.trim() ? 'the Explorer refuses the name: ' + m.textContent.trim() : {_FS_ERROR}; }})()"""
        b.wait_for(f"{_tab_state(base)} !== null && {_EDITOR_FOCUSED}", timeout, f"an editor for {base} to open and take focus",
                   fail=name_error)
        crumbs = """[...document.querySelectorAll('.editor-group-container.active .breadcrumbs-control .monaco-breadcrumb-item')]
                    .map(e => e.textContent.trim())"""
        got = b.wait_for(f"(() => {{ const c = {crumbs}; return c.length && c[c.length - 1] === {_js(base)} ? c : null; }})()",
                         15, f"the breadcrumbs to show {base}")
        if [str(c) for c in got] != parts:
            raise BrowserError(f"new file {name!r}: the editor opened {'/'.join(got)!r}, not {name!r} (wrong folder?)"
                               f"{b.save_failure('new file breadcrumbs')}")
    with b.step(f"{'paste' if paste else 'type'} into {name!r}"):
        if text and paste:
            _paste_into_editor(b, text)
        elif text:
            _type_into_editor(b, text)
    with b.step(f"save {name!r}"):
        if b.evaluate("!!document.querySelector('.editor-widget.suggest-widget.visible, .monaco-editor .parameter-hints-widget.visible')"):
            b.press("Escape")
            b.wait_for("!document.querySelector('.editor-widget.suggest-widget.visible')", 10, "the suggestion list to close")
        b.press("s", CTRL)
        try:
            b.wait_for(f"""(async () => {{
                if ({_tab_state(base)} !== 'saved') return null;
                const got = await {_server_text(name)};
                return got === undefined || got === {_js(text)};
            }})()""", timeout, f"{base} to be saved (no dirty mark on its tab, and code-server reads back the text)", fail=_FS_ERROR)
        except TimeoutError as e:
            on_server = b.evaluate(_server_text(name))
            shown = b.evaluate(_EDITOR_LINES)
            hint = "" if paste else "\n  (typing is subject to the editor's auto-indentation; new_file(..., paste=True) is not)"
            raise TimeoutError(f"{e}\n  code-server reads: {on_server!r}\n  the editor shows: {shown!r}\n  expected: {text!r}{hint}") from e


def _server_text(name: str) -> str:
    """JS (a promise): the file ``name`` in the opened folder as code-server reads it now (its
    ``vscode-remote-resource`` route, with the login cookie); null if unreadable, undefined if the
    page has no ``?folder=`` path to resolve ``name`` against."""
    return f"""(async () => {{
        const folder = new URL(location.href).searchParams.get('folder');
        if (!folder || !folder.startsWith('/')) return undefined;
        const path = folder.replace(/\\/+$/, '') + '/' + {_js(name)};
        try {{
            const r = await fetch('./vscode-remote-resource?path=' + encodeURIComponent(path), {{cache: 'no-store'}});
            return r.status === 200 ? await r.text() : null;
        }} catch (e) {{ return null; }}
    }})()"""


# ----- terminal -----

_TERMINAL_EXITED = re.compile(r"terminal process .* terminated|terminal process failed to launch", re.I)
_PROMPT_END = ("$", "#", ">", "%")


def _terminal_rows(b: Browser, tag: str) -> tuple[list[str], int]:
    """The rows of the terminal ``tag``'s viewport (as drawn: trailing blanks dropped) and its width in columns."""
    got: dict[str, Any] | None = b.evaluate(f"""(() => {{
        const x = document.querySelector('.xterm[data-dbx-term={_js(tag)}]');
        if (!x || x.offsetParent === null) return null;
        const box = x.querySelector('.xterm-rows');
        const rows = [...x.querySelectorAll('.xterm-rows > div')];
        let cols = 0;
        if (box && rows.length) {{  // one character cell, measured in the rows' own font
            const probe = document.createElement('span');
            probe.textContent = 'W'.repeat(50);
            rows[0].appendChild(probe);
            const cell = probe.getBoundingClientRect().width / 50;
            probe.remove();
            cols = cell > 0 ? Math.round(rows[0].getBoundingClientRect().width / cell) : 0;
        }}
        return {{rows: rows.map(r => r.textContent.replace(/\u00a0/g, ' ')), cols}};
    }})()""")
    if got is None:
        raise BrowserError(f"the terminal {tag} is no longer shown (closed, or another terminal took its place)"
                           f"{b.save_failure('terminal gone')}")
    return [str(r) for r in got["rows"]], int(got["cols"])


def _lines(rows: list[str], cols: int) -> list[str]:
    """Rows joined back into lines: a row filled to the last column continues on the next one."""
    lines: list[str] = []
    full = False
    for row in rows:
        if full and lines:
            lines[-1] += row
        else:
            lines.append(row)
        full = cols > 0 and len(row) >= cols
    return [line.rstrip() for line in lines]


def _last_nonempty(lines: list[str]) -> int:
    return max((i for i, line in enumerate(lines) if line.strip()), default=-1)


def terminal_text(b: Browser, tag: str) -> str:
    """The text of the terminal ``tag`` (from ``open_terminal``): its viewport, wrapped lines joined, trailing blanks removed."""
    return "\n".join(_lines(*_terminal_rows(b, tag))).rstrip()


_CURRENT_TERMINAL = """(() => {
    // the shown terminal that was not there before (focused first), tagged on first sight
    const shown = [...document.querySelectorAll('.xterm')]
        .filter(x => x.offsetParent !== null && x.getAttribute('data-dbx-term') !== 'old');
    if (!shown.length) return null;
    const x = shown.find(e => e.contains(document.activeElement)) || shown[shown.length - 1];
    if (!x.hasAttribute('data-dbx-term'))
        x.setAttribute('data-dbx-term', 't' + Date.now().toString(36) + Math.random().toString(36).slice(2, 6));
    return x.getAttribute('data-dbx-term');
})()"""


def open_terminal(b: Browser, *, timeout: float = 60.0) -> str:
    """Open a new integrated terminal (command palette "Terminal: Create New Terminal", or Ctrl+Shift+`
    if the palette does not offer it), wait until it shows a prompt and has focus; return a tag naming
    it for ``terminal_text``.

    The first terminal of a session can come with a second one (the panel, opened while the
    terminal backend is still connecting, makes its own): the terminal used is the one *shown* once
    the set of terminals has settled, never one that a later one hid.
    """
    with b.step("open a new terminal"):
        b.evaluate("document.querySelectorAll('.xterm:not([data-dbx-term])').forEach(x => x.setAttribute('data-dbx-term', 'old'))")
        # The palette, not Ctrl+Shift+`: until the terminal backend is up (seconds after the workbench
        # shows) the key binding does nothing and the key press is lost, while the command waits for it.
        try:
            run_command(b, "Terminal: Create New Terminal", timeout=20)
            how = "Terminal: Create New Terminal"
        except TimeoutError:  # not offered (renamed?): nothing ran, so the key binding can't make a second one
            b.press("`", CTRL | SHIFT)
            how = "Ctrl+Shift+`"
        b.wait_for(_CURRENT_TERMINAL, timeout, f"a new terminal ({how})")
    with b.step("wait for the terminal's prompt"):
        deadline = time.monotonic() + timeout
        count = "document.querySelectorAll('.xterm').length"
        seen: tuple[str, int] | None = None
        since = time.monotonic()
        while True:
            tag = b.evaluate(_CURRENT_TERMINAL)
            state = (tag, b.evaluate(count))
            if state != seen:  # a (new) terminal, or one more: start over
                seen, since = state, time.monotonic()
            text = terminal_text(b, tag) if tag else ""
            if tag and not b.evaluate(f"!!document.querySelector('.xterm[data-dbx-term={_js(tag)}] .xterm-rows')"):
                raise BrowserError("the terminal has no .xterm-rows: not xterm.js's DOM renderer (WebGL or canvas?), so its text "
                                   f"is unreadable; start Chromium with --disable-3d-apis{b.save_failure('terminal renderer')}")
            if _TERMINAL_EXITED.search(text):
                raise BrowserError(f"the terminal's shell ended: {text.strip()[-500:]}{b.save_failure('terminal exited')}")
            last = text.rstrip().rsplit("\n", 1)[-1]
            if tag and last.rstrip().endswith(_PROMPT_END) and time.monotonic() - since >= 0.5:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"no shell prompt in the new terminal after {timeout:g}s; it shows {text.strip()[-500:]!r}"
                                   f"{b.save_failure('terminal prompt')}")
            _settle(0.2)
        assert isinstance(tag, str)
        focused = f"!!document.activeElement && !!document.activeElement.closest('.xterm[data-dbx-term={_js(tag)}]')"
        if not b.evaluate(focused):
            b.click(f".xterm[data-dbx-term={_js(tag)}] .xterm-screen", check_hit=False)
            b.wait_for(focused, 10, f"the terminal to take focus (focus is on {_active_element(b)})")
    return tag


def _found(expect: str | re.Pattern[str], text: str) -> bool:
    if isinstance(expect, re.Pattern):
        return expect.search(text) is not None
    if expect in text:
        return True
    try:
        return re.search(expect, text, re.M) is not None
    except re.error:
        return False


def terminal_run(b: Browser, command: str, expect: str | re.Pattern[str], timeout: float = 60.0) -> str:
    """Open a new terminal, run ``command`` in it, and wait until its output contains ``expect``; return
    the terminal's text (prompt, command and output; rows that the terminal wrapped joined back into lines).

    ``expect``: a compiled pattern (searched for), or a string, found as a substring or else as a
    regular expression (``re.M``; lines separated by newlines), so ``r"42\\s+db-ok"`` works as meant.

    Only what comes after the command line counts as output, so ``expect`` matching the echoed command
    does not end the wait.  The text is the terminal's viewport: output longer than the terminal's
    height (about a dozen rows) scrolls out of it, so expect something near the end.
    """
    tag = open_terminal(b, timeout=max(timeout, 60.0))
    squeeze = re.compile(r"\s+")
    want_echo = squeeze.sub("", command)
    with b.step(f"type {command!r} in the terminal"):
        prompt_at = _last_nonempty(_lines(*_terminal_rows(b, tag)))  # the prompt's line
        b.type_text(command)
        deadline = time.monotonic() + 15
        while True:  # the shell has echoed the whole command: it is reading the line
            lines = _lines(*_terminal_rows(b, tag))
            if want_echo in squeeze.sub("", "".join(lines[max(prompt_at, 0):])):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the terminal did not echo {command!r}; it shows {chr(10).join(lines).strip()[-500:]!r}"
                                   f"{b.save_failure('terminal echo')}")
            _settle(0.1)
        echo_line = lines[_last_nonempty(lines)]  # the prompt and the command
        b.press("Enter")
    with b.step(f"wait for {expect!r} from {command!r}"):
        deadline = time.monotonic() + timeout
        while True:
            lines = _lines(*_terminal_rows(b, tag))
            at = max((i for i, line in enumerate(lines) if line == echo_line), default=-1)  # -1: scrolled out
            out = "\n".join(lines[at + 1:])
            if _found(expect, out):
                return "\n".join(lines).rstrip()
            text = "\n".join(lines)
            if _TERMINAL_EXITED.search(text):
                raise BrowserError(f"the terminal's shell ended while running {command!r}: {text.strip()[-500:]}"
                                   f"{b.save_failure('terminal exited')}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{command!r} did not print {expect!r} in {timeout:g}s; the terminal shows:\n{text.strip()[-1500:]}"
                                   f"{b.save_failure('terminal output')}")
            _settle(0.2)
