"""VS Code in the browser (the ide-code profiles), driven step by step in headless Chromium.

The code-server image is built by ``devbox build`` in the background from the start of the
session (conftest: ``prebuilt_images``), and these tests run last.  The browser is Debian's
Chromium over the DevTools protocol (tests/harness/browser.py); what the UI does is checked on
the host: the saved file is the user's, the terminal ran in the runtime's Python.  Screenshots
of each step are kept in artifacts/.
"""

from __future__ import annotations

import json
import re
import stat
import time
from pathlib import Path

from harness import vscode
from harness.browser import Browser
from harness.daemon import PrivateDaemon

from .conftest import Prebuild
from .test_stack import ARTIFACTS, HOME, UID, container_ids, devbox, host_engine, make_project, ok, owners  # noqa: F401


def _wait_healthy(engine: PrivateDaemon, root: Path, service: str, timeout: float = 180) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        report = json.loads(ok(devbox(engine, root, "ps", "--json")).stdout)
        row = {s["service"]: s for s in report["services"]}[service]
        if row["health"] != "starting" or time.monotonic() > deadline:
            assert row["health"] == "healthy", row
            return row
        time.sleep(1)


def _relay(engine: PrivateDaemon, root: Path, command: str) -> str:
    """``command`` run through the IDE's terminal relay (what its integrated terminal and tasks do)."""
    return ok(devbox(engine, root, "exec", "ide", "--", "/usr/local/lib/devbox/devbox-term", "-c", command)).stdout


def test_vscode_in_the_browser_edits_your_files_and_its_terminal_runs_the_runtime(
        host_engine: PrivateDaemon, prebuilt_images: Prebuild) -> None:  # noqa: F811
    engine = host_engine
    root = make_project("idecode", 'name = "idecode"\nprofile = "ide-code"\n')
    hello = root / "hello_from_devbox.py"
    hello.write_text("print('hi')\n")
    import os

    os.chown(hello, UID, UID)

    up = ok(devbox(engine, root, "up", "-d"))
    m = re.search(r"^ide: (http://127\.0\.0\.1:(\d+)/)  \(password: devbox open ide prints it\)$", up.stdout, re.MULTILINE)
    assert m, up.stdout + up.stderr
    url = m.group(1)
    row = _wait_healthy(engine, root, "ide")
    assert row["url"] == url and row["ports"] == [f"127.0.0.1:{m.group(2)}->8080/tcp"]  # loopback only
    opened = json.loads(ok(devbox(engine, root, "open", "ide", "--json")).stdout)
    assert opened["url"] == url and opened["login"] == "PASSWORD"
    secret = Path(HOME) / ".local/state/devbox/secrets/idecode/PASSWORD"
    st = secret.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (UID, 0o600) and secret.read_text().strip() == opened["secret"]
    assert row["login"] == {"variable": "PASSWORD", "secret": opened["secret"]}
    text = ok(devbox(engine, root, "ps")).stdout
    assert f"ide: {url}  (password: {opened['secret']})" in text

    ARTIFACTS.mkdir(exist_ok=True)
    with Browser(artifacts=ARTIFACTS) as b:
        vscode.login(b, url, opened["secret"])
        b.screenshot(ARTIFACTS / "ide-code-1-workbench.png")
        names = vscode.explorer_names(b)
        assert "hello_from_devbox.py" in names and "devbox.toml" in names, names
        vscode.new_file(b, "notes/from-the-browser.md", "written in VS Code\n")
        vscode.new_file(b, ".vscode/settings.json", '{"editor.tabSize": 2}\n')
        b.screenshot(ARTIFACTS / "ide-code-2-saved.png")
        vscode.terminal_run(b, "python3 -c 'import sys; print(sys.version)'", r"^3\.11\.\d+ ", 60)
        b.screenshot(ARTIFACTS / "ide-code-3-terminal.png")
        vscode.terminal_run(b, 'echo "host=$(hostname)"', "host=runtime", 30)  # the runtime's container, not the IDE's
        vscode.terminal_run(b, "psql -tAc 'select 6*7' | sed 's/^/answer=/'", "answer=42", 60)

    saved = root / "notes" / "from-the-browser.md"
    assert saved.read_text() == "written in VS Code\n"
    assert json.loads((root / ".vscode" / "settings.json").read_text()) == {"editor.tabSize": 2}
    assert owners(root) == {}  # everything the IDE created, saved and the folders it made: yours
    leaks = json.loads(devbox(engine, root, "leaks", "--json").stdout)
    assert leaks["leaks"] == [], leaks

    # switch the toolchain: the IDE container, its settings and the database rows stay
    _relay(engine, root, "psql -qc 'create table kept (x int); insert into kept values (1)'")
    ok(devbox(engine, root, "exec", "ide", "--", "sh", "-c", "mkdir -p /root/.local/share/code-server/User && "
              "echo '{\"workbench.colorTheme\": \"Default Light Modern\"}' > /root/.local/share/code-server/User/settings.json"))
    before = container_ids(engine, "idecode")
    ok(devbox(engine, root, "switch", "ide-code-3.13"))
    after = container_ids(engine, "idecode")
    assert after["ide"] == before["ide"] and after["db"] == before["db"] and after["runtime"] != before["runtime"]
    _wait_healthy(engine, root, "ide")
    assert _relay(engine, root, "python3 -c 'import sys; print(sys.version_info[:2])'; psql -tAc 'select count(*) from kept'") \
        .replace("\r", "") == "(3, 13)\n1\n"

    # down and up again: a new IDE container, the same settings (volume code-server)
    ok(devbox(engine, root, "down"))
    ok(devbox(engine, root, "up", "-d"))
    assert container_ids(engine, "idecode")["ide"] != after["ide"]
    settings = ok(devbox(engine, root, "exec", "ide", "--", "cat", "/root/.local/share/code-server/User/settings.json")).stdout
    assert "Default Light Modern" in settings

    # ide-code-node: the same IDE container, its terminals now reach Node 20 (and Redis)
    ids = container_ids(engine, "idecode")
    ok(devbox(engine, root, "switch", "ide-code-node"))
    assert container_ids(engine, "idecode")["ide"] == ids["ide"]
    assert _relay(engine, root, "node -p 'process.versions.node.split(\".\")[0]' && redis-cli -h db ping").replace("\r", "") \
        == "20\nPONG\n"

    ok(devbox(engine, root, "down", "--volumes"))
    assert owners(root) == {}
