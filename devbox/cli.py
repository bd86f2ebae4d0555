"""The command line: options in, one call, an exit code out.  No logic lives here.

Heavy imports (docker, watchdog) happen inside the commands so that
``devbox --help`` stays fast.  :func:`main` is the single error boundary.
"""

from __future__ import annotations

import sys
import traceback
from typing import Optional

import typer

from devbox.errors import DevboxError, Exit

app = typer.Typer(
    name="devbox",
    help="Editor, runtime and database containers whose bind-mounted files stay yours.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from devbox import __version__

        typer.echo(f"devbox {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Editor, runtime and database containers whose bind-mounted files stay yours."""


# --- host remap (devbox.remap) ----------------------------------------------


@app.command()
def remap(
    apply: bool = typer.Option(False, "--apply", help="Configure the host remap (subuid, subgid, daemon.json) and restart dockerd."),
    revert: bool = typer.Option(False, "--revert", help="Undo every change devbox made to the host remap configuration."),
    user: Optional[str] = typer.Option(None, "--user", "-u", help="Target user (default: SUDO_USER, then you)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="With --apply/--revert: show the diff of every file, change nothing."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before changing the host."),
    restart_cmd: Optional[str] = typer.Option(None, "--restart-cmd", help="How to restart dockerd (default: systemctl, else service)."),
    no_probe: bool = typer.Option(False, "--no-probe", help="Skip the probe container (check only)."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable report on stdout."),
    verbose: bool = typer.Option(False, "--verbose", help="Show the evidence for every check."),
) -> None:
    """Check (default), apply or revert Docker's user-namespace remap for your user."""
    from devbox.remap import command as remap_mod

    if apply and revert:
        raise DevboxError("--apply and --revert cannot be combined", hint="pick one")
    if apply or revert:
        code = remap_mod.change_command(
            revert=revert, user=user, dry_run=dry_run, yes=yes, restart_cmd=restart_cmd, json_out=json_out
        )
    else:
        code = remap_mod.check_command(user=user, probe=not no_probe, json_out=json_out, verbose=verbose)
    raise typer.Exit(int(code))


# --- the stack (devbox.stack) ------------------------------------------------


@app.command()
def init(
    profile: Optional[str] = typer.Option(None, "--profile", "-p", help="Profile to use (default: ask on a terminal, else 'python')."),
) -> None:
    """Write devbox.toml in the current directory."""
    from pathlib import Path

    from devbox.stack import commands as stack

    raise typer.Exit(int(stack.init(Path.cwd(), profile)))


@app.command()
def up(
    detach: bool = typer.Option(False, "--detach", "-d", help="Do not attach to the interactive service."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan, change nothing."),
    profile: Optional[str] = typer.Option(None, "--profile", "-p", help="Run this profile instead of devbox.toml's (not saved)."),
) -> None:
    """Converge the stack: build what is missing, (re)create what changed, then attach to the editor."""
    from devbox.stack import commands as stack

    raise typer.Exit(int(stack.up(profile=profile, detach=detach, dry_run=dry_run)))


@app.command()
def build(
    services: Optional[list[str]] = typer.Argument(None, help="Only these services' images (default: all)."),
    profile: Optional[str] = typer.Option(None, "--profile", "-p", help="Build this profile's images instead of devbox.toml's."),
    nice: bool = typer.Option(False, "--nice", help="Yield the CPU to everything else (a build in the background)."),
) -> None:
    """Build the images the profile needs (what up builds first), starting nothing."""
    from devbox.stack import commands as stack

    raise typer.Exit(int(stack.build(profile=profile, services=services or (), nice=nice)))


@app.command()
def switch(profile: str = typer.Argument(..., help="The profile to switch to (see devbox profiles).")) -> None:
    """Switch toolchains: save PROFILE in devbox.toml and recreate only the services that change."""
    from devbox.stack import commands as stack

    raise typer.Exit(int(stack.switch(profile)))


@app.command()
def ps(json_out: bool = typer.Option(False, "--json", help="Machine-readable output on stdout.")) -> None:
    """The stack's containers: state, health, toolchain versions, userns mode."""
    from devbox.stack import commands as stack

    raise typer.Exit(int(stack.ps(json_out=json_out)))


@app.command(name="open")
def open_(
    service: Optional[str] = typer.Argument(None, help="The service (default: the profile's first web UI, e.g. ide)."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output on stdout."),
    browser: bool = typer.Option(False, "--browser", "-b", help="Also open the URL in a browser, where there is one."),
) -> None:
    """Print the URL and the login of a service's web UI (the IDE of the ide-code profiles)."""
    from devbox.stack import commands as stack

    raise typer.Exit(int(stack.open_(service, json_out=json_out, browser=browser)))


@app.command()
def logs(
    service: str = typer.Argument(..., help="Service name (editor, runtime, db, ...)."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep streaming new output."),
    tail: str = typer.Option("all", "--tail", "-n", help="Number of lines from the end, or 'all'."),
) -> None:
    """Print a service's output."""
    from devbox.stack import commands as stack

    raise typer.Exit(int(stack.logs(service, follow=follow, tail=tail)))


@app.command(name="exec", context_settings={"allow_interspersed_args": False})
def exec_(
    service: str = typer.Argument(..., help="Service name."),
    command: list[str] = typer.Argument(..., help="The command and its arguments (after --)."),
) -> None:
    """Run a command in a running service as container root (you, under the remap)."""
    from devbox.stack import commands as stack

    raise typer.Exit(stack.exec_(service, command))


@app.command()
def shell(service: str = typer.Argument(..., help="Service name.")) -> None:
    """An interactive shell in a running service."""
    from devbox.stack import commands as stack

    raise typer.Exit(stack.shell(service))


@app.command()
def down(volumes: bool = typer.Option(False, "--volumes", "-v", help="Also remove the project's named volumes (database data).")) -> None:
    """Remove the stack's containers and network; volumes are kept unless --volumes."""
    from devbox.stack import commands as stack

    raise typer.Exit(int(stack.down(volumes=volumes)))


@app.command()
def profiles(json_out: bool = typer.Option(False, "--json", help="Machine-readable output on stdout.")) -> None:
    """The profiles this project can run, with their toolchains."""
    from devbox.stack import commands as stack

    raise typer.Exit(int(stack.profiles(json_out=json_out)))


@app.command()
def images(
    releases: Optional[list[str]] = typer.Argument(None, help="Debian releases for --bootstrap (default: those the project's builds start FROM)."),
    bootstrap: bool = typer.Option(False, "--bootstrap", help="Make Debian base images locally with mmdebstrap and import them (no registry needed)."),
    force: bool = typer.Option(False, "--force", help="With --bootstrap: make them again even when the engine has them."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output on stdout."),
) -> None:
    """The base images the project's builds start FROM, whether the engine has them; --bootstrap makes Debian's."""
    from devbox.stack import bootstrap as images_cmd

    raise typer.Exit(int(images_cmd.images_command(releases=releases or [], do_bootstrap=bootstrap, force=force,
                                                   json_out=json_out)))


# --- Dev Containers and Compose (devbox.devcontainer) --------------------------

import_app = typer.Typer(help="Make a devbox project from another tool's file.", no_args_is_help=True)
export_app = typer.Typer(help="Write the current profile for another tool.", no_args_is_help=True)
app.add_typer(import_app, name="import")
app.add_typer(export_app, name="export")


@import_app.command("devcontainer")
def import_devcontainer(
    path: Optional[str] = typer.Argument(None, help="The devcontainer.json (default: .devcontainer/devcontainer.json, else .devcontainer.json)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing devbox.toml and imported profile."),
    json_out: bool = typer.Option(False, "--json", help="What was mapped, refused and ignored, as JSON on stdout (schema devbox.import/1)."),
) -> None:
    """Write devbox.toml and .devbox/profiles/devcontainer.toml from a devcontainer.json; say what was mapped, refused, ignored."""
    from devbox.devcontainer import command as dc

    raise typer.Exit(int(dc.import_command(path, force=force, json_out=json_out)))


@export_app.command("compose")
def export_compose(
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Write to FILE (default: stdout)."),
    profile: Optional[str] = typer.Option(None, "--profile", "-p", help="Export this profile instead of devbox.toml's."),
) -> None:
    """A compose file (format 2.4: Compose v1.29 and v2) with the profile's services, users resolved to numbers."""
    from devbox.devcontainer import command as dc

    raise typer.Exit(int(dc.export_compose_command(output=output, profile=profile)))


@export_app.command("devcontainer")
def export_devcontainer(
    output_dir: Optional[str] = typer.Option(None, "--output-dir", "-o", help="Directory to write into (default: .devcontainer)."),
    profile: Optional[str] = typer.Option(None, "--profile", "-p", help="Export this profile instead of devbox.toml's."),
    force: bool = typer.Option(False, "--force", help="Replace existing files."),
) -> None:
    """devcontainer.json for the profile (with compose.yaml beside it for a stack of services)."""
    from devbox.devcontainer import command as dc

    raise typer.Exit(int(dc.export_devcontainer_command(output_dir=output_dir, profile=profile, force=force)))


# --- idmapped views (devbox.idmapd) -------------------------------------------


@app.command()
def idmap(
    install: bool = typer.Option(False, "--install", help="Install and start the root helper that makes idmapped views (once, with sudo)."),
    uninstall: bool = typer.Option(False, "--uninstall", help="Stop and remove the helper, releasing every view."),
    serve: bool = typer.Option(False, "--serve", hidden=True),
    no_proof: bool = typer.Option(False, "--no-proof", help="Check only: no proof container."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable report on stdout (schema devbox.idmap/1)."),
    verbose: bool = typer.Option(False, "--verbose", help="Show the evidence for every check."),
) -> None:
    """Check and prove idmapped views of your work dirs (strategy "idmap"); --install sets up the helper.

    The helper (root) makes a view only of a directory you own, reached with no symlink or '..',
    mapped onto you, root or your own subordinate ids, under a root-only staging directory;
    anything else is refused and logged.
    """
    from devbox.idmapd import command as idmap_cmd

    if sum((install, uninstall, serve)) > 1:
        raise DevboxError("--install, --uninstall and --serve cannot be combined", hint="pick one")
    if install:
        code = idmap_cmd.install_command()
    elif uninstall:
        code = idmap_cmd.uninstall_command()
    elif serve:
        code = idmap_cmd.serve_command()
    else:
        code = idmap_cmd.status_command(json_out=json_out, verbose=verbose, prove=not no_proof)
    raise typer.Exit(int(code))


# --- doctor (devbox.doctor) ------------------------------------------------


@app.command()
def doctor(
    json_out: bool = typer.Option(False, "--json", help="Machine-readable report on stdout (schema devbox.doctor/1)."),
    fix: bool = typer.Option(False, "--fix", help="Apply the safe, reversible remap fixes (as remap --apply), then check again."),
    verbose: bool = typer.Option(False, "--verbose", help="Show the evidence for every check."),
    user: Optional[str] = typer.Option(None, "--user", "-u", help="Target user (default: SUDO_USER, then you)."),
    restart_cmd: Optional[str] = typer.Option(None, "--restart-cmd", help="With --fix: how to restart dockerd (default: systemctl, else service)."),
) -> None:
    """Diagnose every ownership problem: engine, kernel, subuid/subgid, daemon, probe, project, watcher."""
    from devbox.doctor import command as doctor_mod

    code = doctor_mod.doctor_command(user=user, json_out=json_out, fix=fix, verbose=verbose, restart_cmd=restart_cmd)
    raise typer.Exit(int(code))


# --- ownership watcher (devbox.watch) -----------------------------------------


@app.command()
def watch(
    paths: Optional[list[str]] = typer.Argument(None, help="Directories to watch (default: the project's bind-mounted work dirs)."),
    json_out: bool = typer.Option(False, "--json", help="One JSON record per line on stdout for every leak, fix and removal."),
    fix: bool = typer.Option(False, "--fix", help="Give leaked files back to you as they appear (a helper container; sudo command for real root's)."),
    profile: Optional[str] = typer.Option(None, "--profile", "-p", help="Name services from this profile (default: devbox.toml's)."),
    background: bool = typer.Option(False, "--background", hidden=True),
    ready_fd: Optional[int] = typer.Option(None, "--ready-fd", hidden=True),
) -> None:
    """Flag every file in the work dirs that stops being yours, as it happens, and say which service did it."""
    from devbox.watch import commands as watchcmd

    code = watchcmd.watch_command(paths or [], json_out=json_out, do_fix=fix, background=background, profile=profile, ready_fd=ready_fd)
    raise typer.Exit(int(code))


@app.command()
def leaks(
    json_out: bool = typer.Option(False, "--json", help="The current leaks and the directories that could not be read, as one JSON object on stdout."),
    fix: bool = typer.Option(False, "--fix", help="Chown them back to you: a helper container for container-owned files, a printed sudo command for root's."),
) -> None:
    """The files in the work dirs that are not yours (from the watcher's records, re-checked), and who wrote them."""
    from devbox.watch import commands as watchcmd

    raise typer.Exit(int(watchcmd.leaks_command(json_out=json_out, do_fix=fix)))


# --- the error boundary -----------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: DevboxError -> one line + exit 2, Ctrl-C -> 130, a bug -> 3 with the traceback logged."""
    from devbox import console

    try:
        # without standalone mode, an Exit raised by a command comes back as the return value
        code = app(args=argv, prog_name="devbox", standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except DevboxError as exc:
        console.error(exc.one_line())
        sys.exit(int(exc.exit_code))
    except (KeyboardInterrupt, typer.Abort):
        console.error("interrupted")
        sys.exit(int(Exit.INTERRUPTED))
    except Exception as exc:  # noqa: BLE001 - the one place that catches everything
        if hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()  # a usage error from typer's (vendored) click: already one line with a hint
            sys.exit(int(Exit.ERROR))
        log = _save_traceback()
        console.error(f"internal error: {type(exc).__name__}: {exc} (traceback saved to {log}; please report it)")
        sys.exit(int(Exit.INTERNAL))
    sys.exit(code if isinstance(code, int) else 0)


def _save_traceback() -> str:
    from devbox.paths import Paths

    path = Paths.from_env().error_log
    try:
        from devbox.host.files import open_private

        with open(open_private(path), "a", encoding="utf-8") as fh:
            fh.write(f"--- devbox {' '.join(sys.argv[1:])}\n{traceback.format_exc()}\n")
        return str(path)
    except OSError:
        return "<unwritable log>"
