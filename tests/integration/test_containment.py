"""The leak fixer stays inside the work dir, even when a container plants a link after the leak was recorded.

A container leaves ``a/leak`` owned by container uid 5; the watcher records it
and stops.  The container then swaps ``a`` for a symbolic link to a directory
outside the work dir that holds a file of the same name, owned by the same
subordinate uid (the watcher's records are stale now).  `devbox leaks --fix`,
`devbox watch --fix` and `sudo devbox leaks --fix` (what devbox prints for
root's files) must change nothing outside the work dir, and say what they skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

from harness.daemon import RUN, SESSION, PrivateDaemon

from .test_watch_engine import IMAGE, UID, LiveWatch, devbox, env_for, make_project, no_traceback

LABEL = "devbox-test=containment"


def test_a_planted_link_never_leads_a_fix_outside_the_work_dir(remap_engine: PrivateDaemon) -> None:
    root, state = make_project("contain")
    outside = RUN / f"outside-{SESSION}"
    shutil.rmtree(outside, ignore_errors=True)
    outside.mkdir(mode=0o755)
    try:
        w = LiveWatch(remap_engine, root, state)
        remap_engine.docker("run", "--rm", "--label", LABEL, "-v", f"{root}:/work", IMAGE, "sh", "-c",
                            "mkdir /work/a && : > /work/a/leak && chown 5:5 /work/a/leak")
        w.wait_for(lambda recs: str(root / "a" / "leak") in {r["path"] for r in recs})
        w.stop()
        # outside the work dir: a file owned by the same subordinate uid (host 200004), and a root-owned one
        victim = outside / "leak"
        victim.write_text("not yours to take")
        os.chown(victim, 200004, 200004)
        rootfile = outside / "root-owned"
        rootfile.write_text("x")
        # the container swaps the directory for a link to it (as container root, i.e. as the user)
        remap_engine.docker("run", "--rm", "--label", LABEL, "-v", f"{root}:/work", "-v", f"{outside}:{outside}", IMAGE, "sh", "-c",
                            f"rm -r /work/a && ln -s {outside} /work/a && ln -s {outside}/root-owned /work/r")

        r = devbox(remap_engine, root, state, "leaks", "--fix")
        no_traceback(r)
        fix_w = LiveWatch(remap_engine, root, state, "--fix")
        fix_w.collect(2.0)
        err = fix_w.stop()
        assert f"{root}/a/leak: no longer inside the work dir ({root}/a is a symbolic link now): not followed, not fixed" in err
        # root, following the command devbox prints for files only root can give back
        r = subprocess.run([sys.executable, "-m", "devbox", "leaks", "--fix"], cwd=root, capture_output=True, text=True,
                           env={**env_for(remap_engine, state), "SUDO_USER": "devbox-tester"}, timeout=120)
        no_traceback(r)
        time.sleep(0.2)
        assert (os.lstat(victim).st_uid, os.lstat(victim).st_gid) == (200004, 200004)  # untouched
        assert (os.lstat(rootfile).st_uid, os.lstat(rootfile).st_gid) == (0, 0)
        assert os.lstat(root / "a").st_uid == UID  # the link itself is the user's (container root made it)
    finally:
        # this test's containers and the fix helpers only: an "ancestor" filter would also kill the
        # session's background builds (their RUN steps are containers of the same base image)
        for label in (LABEL, "devbox.helper"):
            for cid in remap_engine.docker("ps", "-aq", "--filter", f"label={label}").stdout.split():
                remap_engine.docker("rm", "-f", cid, check=False)
        shutil.rmtree(outside, ignore_errors=True)
