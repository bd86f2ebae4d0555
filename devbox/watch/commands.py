"""``devbox watch`` and ``devbox leaks``: the project's view of the ownership watcher.

:mod:`devbox.watch.watcher` and :mod:`devbox.watch.leaks` know nothing about
projects; this module turns ``devbox.toml`` into what they take (roots, ignore
patterns, the host user, container uid -> services) and runs the ``--fix``
helper (:mod:`devbox.watch.fixhelper`) for them.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import stat as _stat
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devbox import console
from devbox.errors import ConfigError, DevboxError, Exit
from devbox.host.user import paths_for
from devbox.watch.leaks import HostUser, watch_user

if TYPE_CHECKING:
    from devbox.core.model import Project
    from devbox.watch.leaks import Attribution, FixResult, Leak
    from devbox.watch.watcher import Change


ROOTS_CHECK_INTERVAL = 5.0  # a watcher whose work dirs were all removed stops by itself


@dataclasses.dataclass(frozen=True)
class Target:
    """What to watch and how to attribute it."""

    roots: tuple[str, ...]
    user: HostUser
    services_by_uid: Mapping[int, tuple[str, ...]]
    host_ns_services: tuple[str, ...]
    ignore: tuple[str, ...]
    busy: tuple[str, ...]  # trees rescanned whole rather than followed per event (devbox.watch.busy)
    rescan_interval: float
    project: Project | None

    records: Path | None  # the leak records of the project's watcher

    def attribution(self) -> Attribution:
        from devbox.watch.leaks import load_attribution

        return load_attribution(self.user, self.services_by_uid, host_ns_services=self.host_ns_services)


def project_or_none(start: Path | None = None, *, required: bool) -> Project | None:
    from devbox.config.resolve import find_project as load
    from devbox.paths import project_root

    if project_root(start) is None:
        if required:
            raise ConfigError(f"no devbox.toml in {start or Path.cwd()} or any parent directory",
                              hint="run it in a project (devbox init writes one), or name the directories: devbox watch PATH...")
        return None
    return load(start)


def target(paths: Sequence[str] = (), *, profile: str | None = None, start: Path | None = None) -> Target:
    """The project's bind-mounted work dirs (or ``paths``), the user, and who runs as which container uid."""
    from devbox.core.model import WatchSettings
    from devbox.watch.leaks import service_uids

    project = project_or_none(start, required=not paths)
    settings = project.watch if project is not None else WatchSettings()
    by_uid, host_ns = service_uids(project.profile(profile).services if project is not None else ())
    if paths:
        roots = []
        for p in paths:
            full = os.path.abspath(p)
            if not os.path.isdir(full):
                raise DevboxError(f"{p}: not a directory", hint="devbox watch takes directories")
            roots.append(full)
    else:
        assert project is not None
        roots = [m.source for m in project.workdirs if not m.read_only]
        if not roots:
            raise ConfigError("the project bind-mounts no writable work dir: nothing to watch", where=str(project.file),
                              hint="name the directories: devbox watch PATH...")
    user = watch_user()
    return Target(
        roots=tuple(roots),
        user=HostUser.of(user, settings.allowed_gids),
        services_by_uid=by_uid,
        host_ns_services=host_ns,
        ignore=settings.ignore,
        busy=settings.busy,
        rescan_interval=settings.rescan_interval_s,
        project=project,
        records=paths_for(user).leak_records(project.name) if project is not None else None,
    )


# --- fixing -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FixOutcome:
    result: FixResult
    engine_refused: str | None  # why mapped paths were not handed to a helper container


def fix_leaks(leaks: Sequence[Leak], user: HostUser, roots: Sequence[str]) -> FixOutcome:
    """Give leaks back without ever reaching outside ``roots`` (:mod:`devbox.watch.contain`): as root
    devbox chowns them itself; otherwise a helper container does what it can (once the engine proves
    container root maps to ``user``) and the rest is left for ``sudo devbox leaks --fix``."""
    import shlex

    from devbox.engine.client import fast_api
    from devbox.watch import fixhelper
    from devbox.watch.leaks import ROOT_FIX_COMMAND, FixResult, fix, plan_fix

    if os.geteuid() == 0:
        return FixOutcome(fix(leaks, user, roots, lambda pairs: None, as_root=True), None)
    plan = plan_fix(leaks, user)
    if not plan.by_helper:
        return FixOutcome(fix(leaks, user, roots, lambda pairs: None), None)
    api = fast_api()
    try:
        fit = fixhelper.engine_fit(api, user)
        if not fit.ok:
            # The same command on this engine would give the files to real root: only root can help.
            every = sorted(leak.path for leak in leaks)
            return FixOutcome(FixResult((), (), (), tuple(every), shlex.join(ROOT_FIX_COMMAND)), fit.reason)
        return FixOutcome(fix(leaks, user, roots, lambda pairs: fixhelper.run_helper(api, pairs)), None)
    finally:
        api.close()


def report_fix(outcome: FixOutcome, shown: Any, *, say: Callable[[str], None] = console.say) -> bool:
    """Say what the fix did; ``True`` when nothing is left to do."""
    r = outcome.result
    if outcome.engine_refused:
        console.warn(f"no helper container: {outcome.engine_refused}, so it would chown to real root")
    if r.fixed:
        say(f"fixed {len(r.fixed):,} path(s): yours again (verified beneath the work dir)")
    for p, why in r.skipped:
        console.warn(f"{shown(p)}: skipped, not touched: {why} (a fix never reaches outside the work dir)")
    for p in r.failed:
        console.warn(f"{shown(p)}: still not yours after the helper container ran")
    if r.needs_root:
        why = "the engine cannot help" if outcome.engine_refused else "owned by ids not mapped into the containers (real root, other accounts)"
        say(f"{len(r.needs_root):,} path(s) need root ({why}); run:")
        say(r.root_command + "   (devbox, as root, chowns them beneath the work dir only)")
    return not r.failed and not r.needs_root and not r.skipped


def _record_fixed(records: Path | None, leaks: Sequence[Leak], result: FixResult) -> None:
    if records is None:
        return
    from devbox.watch.leaks import RecordLog, State

    log = RecordLog(records)
    by_path = {leak.path: leak for leak in leaks}
    now = time.time()
    try:
        for p in result.fixed:
            log.write(by_path[p], State.FIXED, at=now)
        for p in result.vanished:
            log.write(by_path[p], State.GONE, at=now)
    finally:
        log.close()


# --- devbox leaks ----------------------------------------------------------------------------


def _still_unreadable(directory: str) -> bool:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return False  # gone since
    except OSError:
        return True
    os.close(fd)
    return not os.access(directory, os.R_OK | os.X_OK)


def current_leaks(t: Target) -> tuple[list[Leak], str, list[str]]:
    """The leaks now, where they come from, and the directories that could not be read (their contents unknown).

    With the background watcher running: its records, re-checked with lstat (and the unreadable directories
    it last saw, re-checked).  Without it the records may have missed things: a fresh scan (first-seen times
    kept from the records)."""
    from devbox.watch import process
    from devbox.watch.contain import Escape, lstat_beneath, root_of
    from devbox.watch.leaks import from_iso, latest_records, load_records, load_unreadable
    from devbox.watch.scan import scan

    attr = t.attribution()
    records = t.records
    live = t.project is not None and process.status(t.project.name).state == "running"
    if records is not None and live:
        found = []
        for rec in load_records(records, under=t.roots):
            root = root_of(rec["path"], t.roots)
            try:
                # never through a link a container planted since: beneath the work dir, or gone
                st = lstat_beneath(root, rec["path"]) if root is not None else None
            except (Escape, OSError):
                st = None
            if st is None:
                continue  # gone since
            found.append((rec["path"], st.st_uid, st.st_gid, _stat.S_ISDIR(st.st_mode)))
        prefixes = tuple(r.rstrip("/") + "/" for r in t.roots)
        unreadable = [d for d in load_unreadable(records) if (d + "/").startswith(prefixes) and _still_unreadable(d)]
        source = f"the watcher's records ({records})"
    else:
        result = scan(t.roots, t.user, ignore=t.ignore)
        found = list(result.found)
        unreadable = sorted(result.unreadable)
        source = f"a scan of {', '.join(t.roots)} (no watcher running)"
    seen = latest_records(records) if records is not None else {}
    now = time.time()
    leaks = [
        attr.classify(p, u, g, is_dir=d, now=from_iso(seen[p].get("first_seen")) if p in seen else now)
        for p, u, g, d in found
        if not t.user.owns(u, g)
    ]
    return sorted(leaks, key=lambda leak: leak.path), source, unreadable


def leaks_command(*, json_out: bool, do_fix: bool, start: Path | None = None) -> Exit:
    from devbox.watch.leaks import unreadable_line

    t = target(start=start)
    leaks, source, unreadable = current_leaks(t)
    base = t.roots[0] if len(t.roots) == 1 else None

    def shown(p: str) -> str:
        return os.path.relpath(p, base) if base is not None and (p + "/").startswith(base.rstrip("/") + "/") else p

    if do_fix:
        if not leaks:
            console.info(f"no leaked files (from {source})")
            return Exit.OK
        outcome = fix_leaks(leaks, t.user, t.roots)
        _record_fixed(t.records, leaks, outcome.result)
        return Exit.OK if report_fix(outcome, shown) else Exit.PROBLEMS
    if json_out:
        # an object: the records under "leaks", the directories whose contents are unknown under "unreadable"
        console.emit_json({"leaks": [leak.to_record() for leak in leaks], "unreadable": unreadable})
        return Exit.PROBLEMS if leaks or unreadable else Exit.OK
    if leaks:
        rows = [[shown(leak.path) + ("/" if leak.is_dir else ""), leak.owner_text(), leak.kind.value, leak.service or "",
                 "yes" if leak.fixable else "sudo"] for leak in leaks]
        console.table(["path", "owner", "kind", "service", "fixable"], rows)
        console.info(f"{len(leaks):,} leaked path(s) from {source}; 'devbox leaks --fix' gives them back to you")
    elif not unreadable:
        console.info(f"no leaked files (from {source})")
        return Exit.OK
    else:
        console.info(f"no leaked files in what could be read (from {source})")
    if unreadable:
        console.warn(unreadable_line(unreadable, shown))
    return Exit.PROBLEMS


# --- devbox watch ----------------------------------------------------------------------------


class _AutoFixer:
    """``devbox watch --fix``: leaks collect for a short settle time, then one helper container takes them all."""

    def __init__(self, t: Target, settle: float = 0.3) -> None:
        self.t = t
        self.settle = settle
        self.pending: dict[str, Leak] = {}
        self.since = 0.0

    def add(self, leak: Leak) -> None:
        if not self.pending:
            self.since = time.monotonic()
        self.pending[leak.path] = leak

    def drop(self, path: str) -> None:
        self.pending.pop(path, None)

    def due(self) -> bool:
        return bool(self.pending) and time.monotonic() - self.since >= self.settle

    def run(self) -> None:
        leaks, self.pending = list(self.pending.values()), {}
        try:
            outcome = fix_leaks(leaks, self.t.user, self.t.roots)
        except DevboxError as exc:
            console.warn(f"--fix: {exc.one_line()}")
            return
        report_fix(outcome, lambda p: p, say=console.info)  # stdout is the leak stream


def watch_command(
    paths: Sequence[str],
    *,
    json_out: bool,
    do_fix: bool,
    background: bool = False,
    profile: str | None = None,
    ready_fd: int | None = None,
    start: Path | None = None,
) -> Exit:
    """Scan, then watch until interrupted (SIGINT/SIGTERM).  ``background``: the watcher ``devbox up`` starts."""
    from devbox.watch.leaks import RecordLog, State
    from devbox.watch.watcher import Reporter, Watcher

    t = target(paths, profile=profile, start=start)
    stop = threading.Event()
    fixer = _AutoFixer(t) if do_fix else None

    def on_change(change: Change) -> None:
        if json_out:
            console.json_line(change.leak.to_record(change.state, at=time.time()))
        if fixer is not None:
            if change.state is State.LEAK:
                fixer.add(change.leak)
            else:
                fixer.drop(change.leak.path)

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    records = t.records
    watcher = Watcher(
        t.roots,
        t.attribution(),
        records=RecordLog(records) if records is not None else None,
        ignore=t.ignore,
        sink=(lambda line: None) if json_out else console.leak,
        notice=console.warn,
        on_change=on_change,
        reporter=Reporter(t.roots),
        reconcile_interval=t.rescan_interval,
        busy=t.busy,
    )
    try:
        result = watcher.start()
        # leaks known from earlier runs are not re-reported by the scan: hand them to --fix as well
        if fixer is not None:
            for leak in watcher.tracker.leaks.values():
                fixer.add(leak)
        if ready_fd is not None:
            os.write(ready_fd, b"ready\n")
            os.close(ready_fd)
        mode = " (background)" if background else ""
        console.info(
            f"watching{mode} {', '.join(watcher.roots)}: {result.dirs:,} directories, {result.entries:,} entries scanned "
            f"in {result.seconds:.2f} s, {len(watcher.tracker.leaks):,} leak(s)"
            + (f"; records: {records}" if records is not None else "")
        )
        next_check = time.monotonic() + ROOTS_CHECK_INTERVAL
        while not stop.is_set():
            watcher.step(0.1 if fixer is not None and fixer.pending else 0.2)
            if fixer is not None and fixer.due():
                fixer.run()
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + ROOTS_CHECK_INTERVAL
                if not any(os.path.isdir(r) for r in watcher.roots):
                    console.warn(f"{', '.join(watcher.roots)}: gone (project removed?): nothing left to watch")
                    break
    finally:
        watcher.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    if background and t.project is not None:
        from devbox.watch import process

        process.forget_if_mine(paths_for(watch_user()).watcher_pidfile(t.project.name))
    console.info(f"stopped watching after {watcher.stats.leaks_found:,} new leak(s), {watcher.stats.resolved:,} resolved")
    return Exit.OK
