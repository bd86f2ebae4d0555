"""Watcher check: ``watcher.running`` (the background watcher of a running stack, from its pidfile)."""

from __future__ import annotations

from devbox.core.findings import Finding
from devbox.doctor.context import Context
from devbox.watch.process import status


def check_watcher(ctx: Context) -> list[Finding]:
    st = status(ctx.project.name, ctx.paths)
    pidfile, pid = st.pidfile, st.pid
    running = [str(c.get("Name", "")).lstrip("/") for c in ctx.containers if (c.get("State") or {}).get("Running")]
    stack = f"{len(running)} running container(s) of {ctx.project.name}" if running else f"no running container of {ctx.project.name}"
    if st.state == "running":
        return [Finding("watcher.running", "ok", (f"{pidfile}: pid {pid} is running", stack))]
    if st.state == "crashed":
        what = f"pid {pid} is not running" if pid is not None else "holds no pid"
        return [Finding("watcher.running", "warn" if running else "ok",
                        (f"{pidfile}: {what} (the watcher died; its log: {st.log})", stack),
                        "devbox up  (restarts the watcher; its first scan finds what happened meanwhile)" if running else None)]
    if running:
        return [Finding("watcher.running", "warn", (f"{pidfile} does not exist: no watcher", stack),
                        "devbox up  (starts the watcher), or run devbox watch in a terminal")]
    return [Finding("watcher.running", "ok", (f"{pidfile} does not exist", stack + ": no watcher needed"))]
