"""``devbox doctor``: every check that decides whether bind-mounted files stay yours, with evidence and a fix.

Shape: :func:`devbox.doctor.context.gather` reads everything once (host files,
the engine, the probe, the project, its containers, the watcher's files) into a
:class:`~devbox.doctor.context.Context`; :data:`devbox.doctor.checks.CHECKS`
turn it into :class:`~devbox.core.findings.Finding`\\ s (titles from the one
registry, :data:`devbox.core.findings.TITLES`);
:func:`devbox.doctor.runner.run_checks` runs them in dependency order (pure: a
check whose prerequisite failed or was skipped is reported as ``skip``, naming
that prerequisite).  The kernel, subordinate-id, daemon and probe findings are
:mod:`devbox.remap.assess`'s own (``assess_*``), with the same ids; ``--fix``
(:mod:`devbox.doctor.command`) applies :func:`devbox.remap.plan.plan_remap`
through :func:`devbox.remap.plan.apply_remap` (locked, atomic, backed up,
rolled back on failure, recorded so ``devbox remap --revert`` undoes it) and
then checks again.  :mod:`devbox.doctor.render` prints the report or its JSON.

Finding ids, in order (group: ids; module under :mod:`devbox.doctor.checks`):

* engine (``engine``): ``engine.socket``, ``engine.context``, ``engine.access``, ``engine.kind``
* kernel (``kernel``): ``kernel.userns``, ``kernel.apparmor``
* subordinate ids (``subid``): ``subuid.syntax``, ``subuid.own-line``, ``subuid.accounts``,
  ``subuid.overlap``, ``subuid.range``, ``subuid.map-lines`` and the same six for ``subgid.``
  (``*.syntax`` only when the file has a problem)
* daemon (``daemon``): ``daemon.json``, ``daemon.flags``, ``daemon.live``, ``daemon.parents``, ``daemon.old-images``
* proof (``daemon``): ``probe.file-owner``, ``probe.process``, ``probe.uid-map``
* project (``project``): ``project.config``, ``project.by-design``, ``project.containers``,
  ``project.leaks``, ``project.inotify``
* watcher (``watcher``): ``watcher.running``

``--json`` prints one object (schema ``devbox.doctor/1``, keys sorted;
:func:`devbox.doctor.render.doctor_report_json`)::

    {
      "schema": "devbox.doctor/1",
      "ok": true,                      # no finding has status "fail" (exit code 0, else 1)
      "status": "ok|warn|fail",        # the worst status
      "user": {"name": str, "uid": int, "gid": int, "group": str},
      "project": {"name": str, "root": str, "profile": str} | null,
      "counts": {"ok": int, "warn": int, "fail": int, "skip": int},
      "findings": [                    # in check order
        {"id": str, "group": str, "status": "ok|warn|fail|skip", "title": str,
         "evidence": [str, ...], "fix": str | null, "needs": [str, ...]}
      ],
      "probe": {...} | null,           # devbox.engine.probe.ProbeResult.to_json()
      "fixed": null | {                # --fix only: what was applied before the re-check
        "changes": [{"path": str, "reasons": [str, ...]}],
        "restarted": bool, "backup": str | null
      }
    }

Watcher contract (shared with :mod:`devbox.watch` and ``devbox up``/``down``):
the background watcher of project NAME writes its PID as decimal text to
``Paths.watcher_pidfile(NAME)`` (``$XDG_STATE_HOME/devbox/watch/NAME.pid``, the
*target user's* state dir: :func:`devbox.host.user.paths_for`) and its leak
records (:class:`devbox.watch.leaks.RecordLog`) to ``Paths.leak_records(NAME)``.
Doctor only reads them (:func:`devbox.watch.process.status`,
:func:`devbox.watch.leaks.load_records`).
"""
