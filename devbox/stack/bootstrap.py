"""``devbox images``: the base images a project's builds start FROM, and ``--bootstrap`` to make Debian's locally.

With no registry (air-gapped, or a proxy that blocks it) ``FROM debian:bookworm-slim``
cannot be pulled.  ``devbox images --bootstrap`` makes the Debian base images with
mmdebstrap (minbase, from Debian's mirrors, which such networks usually still reach)
and imports them into the engine, Docker or Podman, under the names a pull would give.

* as root: mmdebstrap's root mode;
* as an ordinary user: its unshare mode, which maps the user's *first* /etc/subuid range
  (newuidmap): it needs 65,536 ids there, so Docker remap's ``NAME:UID:1`` first line makes it
  fail; devbox says so before starting and names ``sudo devbox images --bootstrap``.

Pure: :func:`from_images`, :func:`debian_release`, :func:`needed`; the rest runs tools.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from devbox import console
from devbox.core.idmap import SubidFile
from devbox.core.model import Project
from devbox.errors import DevboxError, Exit, HostError

_ARG_RE = re.compile(r"^\s*ARG\s+([A-Za-z_][A-Za-z0-9_]*)(?:=(\S*))?\s*$", re.IGNORECASE)
_FROM_RE = re.compile(r"^\s*FROM\s+(.*)$", re.IGNORECASE)
_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")
_DEBIAN_RE = re.compile(r"^(?:docker\.io/)?(?:library/)?debian:([a-z]+)(-slim)?$")


# --- what the builds need (pure) ---------------------------------------------------------------------------


def from_images(dockerfile: str, args: Mapping[str, str]) -> list[str]:
    """The images a Dockerfile's ``FROM`` lines pull, with ``ARG`` defaults and build ``args`` substituted
    (a ``FROM`` naming an earlier stage pulls nothing)."""
    values: dict[str, str] = {}
    stages: set[str] = set()
    out: list[str] = []
    seen_from = False
    for line in dockerfile.splitlines():
        m = _ARG_RE.match(line)
        if m and not seen_from:  # global ARGs (before the first FROM) are what FROM lines can use
            values[m.group(1)] = args.get(m.group(1), m.group(2) or "")
            continue
        m = _FROM_RE.match(line)
        if not m:
            continue
        seen_from = True
        words = [w for w in m.group(1).split() if not w.startswith("--")]
        if not words:
            continue
        ref = _VAR_RE.sub(lambda v: values.get(v.group(1) or v.group(3), "") or (v.group(2) or ""), words[0])
        if len(words) >= 3 and words[1].lower() == "as":
            stages.add(words[2])
        if ref not in stages and ref != "scratch" and ref not in out:
            out.append(ref)
    return out


def debian_release(ref: str) -> str | None:
    """``bookworm`` for ``debian:bookworm-slim`` (what --bootstrap can make), else None."""
    m = _DEBIAN_RE.match(ref)
    return m.group(1) if m else None


@dataclasses.dataclass(frozen=True)
class BaseImage:
    ref: str
    used_by: tuple[str, ...]  # "profile/service"

    @property
    def release(self) -> str | None:
        return debian_release(self.ref)


def needed(project: Project) -> list[BaseImage]:
    """Every image the project's profiles build FROM or run directly, with who uses it."""
    users: dict[str, list[str]] = {}
    for profile in project.profiles.values():
        for svc in profile.services:
            who = f"{profile.name}/{svc.name}"
            if svc.build is not None:
                try:
                    text = Path(svc.build.context_dir, svc.build.dockerfile).read_text()
                except OSError:
                    continue
                refs = from_images(text, dict(svc.build.args))
            else:
                refs = [svc.image] if svc.image else []
            for ref in refs:
                users.setdefault(ref, []).append(who)
    return [BaseImage(ref, tuple(sorted(set(who)))) for ref, who in sorted(users.items())]


def unshare_problem(subuid: SubidFile, user: str) -> str | None:
    """Why mmdebstrap's unshare mode cannot run for ``user`` (it maps the first range only), or None."""
    mine = subuid.owned_by(user)
    if not mine:
        return f"{user} has no line in {subuid.path}"
    first = mine[0]
    if first.count < 65536:
        return (f"mmdebstrap's unshare mode maps {user}'s first {subuid.path} range only, and "
                f"{subuid.where(first.line)}: {first.text()} has {first.count} id(s), not 65,536 "
                "(Docker's remap wants that line first)")
    return None


# --- doing it ------------------------------------------------------------------------------------------------


def unshare_tmpdir(tmpdir: str | None) -> str | None:
    """The TMPDIR for mmdebstrap's unshare mode: it builds in a directory under TMPDIR as your
    subordinate root, which must be able to reach it.  A TMPDIR that others cannot traverse (a
    private 0700 one) gives way to /var/tmp; None keeps mmdebstrap's default (/tmp)."""
    if not tmpdir:
        return None
    path = Path(tmpdir).resolve()
    for d in (path, *path.parents):
        try:
            if not os.stat(d).st_mode & 0o001:
                return "/var/tmp"
        except OSError:
            return "/var/tmp"
    return tmpdir


def _mmdebstrap(release: str, out: Path) -> None:
    exe = shutil.which("mmdebstrap")
    if exe is None:
        raise HostError("mmdebstrap is not installed",
                        hint="sudo apt-get install mmdebstrap  (Fedora: sudo dnf install mmdebstrap)")
    argv = [exe, "--variant=minbase", *(["--mode=unshare"] if os.geteuid() != 0 else []), release, str(out)]
    started = time.monotonic()
    with console.Activity(f"bootstrapping debian:{release}-slim with mmdebstrap") as activity:
        env = dict(os.environ)
        if os.geteuid() != 0 and (tmp := unshare_tmpdir(env.get("TMPDIR"))) != env.get("TMPDIR"):
            env["TMPDIR"] = tmp or "/tmp"
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        assert proc.stderr is not None
        tail: list[str] = []
        for line in proc.stderr:
            line = line.rstrip()
            if line:
                tail = (tail + [line])[-8:]
                activity.update(f"{release}: {line[:100]}")
        code = proc.wait()
    if code != 0:
        raise HostError(f"mmdebstrap {release} failed (exit {code}): " + " | ".join(tail[-3:]),
                        hint="check that Debian's mirrors are reachable and the release name is right")
    console.info(f"debian:{release}-slim: bootstrapped in {time.monotonic() - started:.0f}s "
                 f"({out.stat().st_size / 1e6:.0f} MB)")


def bootstrap(releases: Iterable[str], *, force: bool = False, subuid: SubidFile | None = None,
              user: str | None = None) -> list[dict[str, object]]:
    """Make ``debian:RELEASE-slim`` (and ``debian:RELEASE``) in the engine for each release; report each."""
    from devbox.engine import client

    api = client.fast_api()
    info = client.inspect_engine(api)
    report: list[dict[str, object]] = []
    work = Path(tempfile.mkdtemp(prefix="devbox-bootstrap-", dir=os.environ.get("TMPDIR") or "/var/tmp"))
    try:
        for release in releases:
            ref = f"debian:{release}-slim"
            if not force and api.image_exists(ref):
                console.info(f"{ref}: already in the engine (--force makes it again)")
                report.append({"release": release, "image": ref, "made": False})
                continue
            if os.geteuid() != 0 and subuid is not None and user is not None:
                problem = unshare_problem(subuid, user)
                if problem:
                    raise HostError(problem, hint="run it as root: sudo devbox images --bootstrap " + release)
            tarball = work / f"{release}.tar"
            _mmdebstrap(release, tarball)
            started = time.monotonic()
            size = tarball.stat().st_size
            with console.Activity(f"importing {ref} into {info.label}") as activity:
                with open(tarball, "rb") as fh:
                    api.import_file(fh, size, "debian", f"{release}-slim",
                                    lambda done, ref=ref, size=size: activity.update(
                                        f"importing {ref}: {done * 100 // max(size, 1)}%"))
            api.tag(ref, "debian", release)
            seconds = time.monotonic() - started
            console.info(f"{ref}: imported in {seconds:.1f}s (also tagged debian:{release})")
            report.append({"release": release, "image": ref, "made": True, "bytes": size})
            tarball.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)
        api.close()
    return report


def images_command(*, releases: list[str], do_bootstrap: bool, force: bool, json_out: bool,
                   start: Path | None = None) -> Exit:
    """``devbox images [--bootstrap [RELEASE…]]``."""
    from devbox.config import resolve as config
    from devbox.engine import client
    from devbox.host import observe
    from devbox.host.user import resolve_user
    from devbox.paths import Paths

    base: list[BaseImage] = []
    if not releases:
        try:
            base = needed(config.find_project(start))
        except DevboxError:
            if do_bootstrap:
                raise DevboxError("no devbox.toml here to take the releases from",
                                  hint="name them: devbox images --bootstrap bookworm trixie") from None
            raise
    wanted = list(dict.fromkeys(releases or [b.release for b in base if b.release]))
    bad = [r for r in wanted if not re.fullmatch(r"[a-z]+", r)]
    if bad:
        raise DevboxError(f"'{bad[0]}' is not a Debian release name", hint="e.g. bookworm, trixie, sid")
    if do_bootstrap:
        user = resolve_user(None)
        made = bootstrap(wanted, force=force, subuid=observe.read_subid(Paths.from_env().subuid), user=user.name)
        if json_out:
            console.emit_json({"schema": "devbox.images-bootstrap/1", "images": made})
        return Exit.OK
    api = client.fast_api()
    try:
        rows = [{"image": b.ref, "used_by": list(b.used_by), "present": api.image_exists(b.ref),
                 "bootstrap": b.release} for b in base]
    finally:
        api.close()
    if json_out:
        console.emit_json({"schema": "devbox.images/1", "images": rows})
        return Exit.OK
    console.table(["image", "in the engine", "used by", "if missing"],
                  [[r["image"], "yes" if r["present"] else "no", ", ".join(r["used_by"]),  # type: ignore[arg-type]
                    f"devbox images --bootstrap {r['bootstrap']}" if r["bootstrap"] else "pull or load it"]
                   for r in rows])
    missing = [r for r in rows if not r["present"]]
    return Exit.PROBLEMS if missing else Exit.OK

