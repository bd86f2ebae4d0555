"""Kernel checks: ``kernel.userns`` (remap's own assessment) and ``kernel.apparmor``."""

from __future__ import annotations

from devbox.core.findings import Finding
from devbox.doctor.context import Context
from devbox.remap.assess import assess_kernel

APPARMOR_SYSCTL = "/proc/sys/kernel/apparmor_restrict_unprivileged_userns"


def check_kernel(ctx: Context) -> list[Finding]:
    return [assess_kernel(ctx.state.kernel)]


def check_apparmor(ctx: Context) -> list[Finding]:
    value = ctx.state.kernel.apparmor_restrict_unprivileged
    if value is None:
        return [Finding("kernel.apparmor", "ok", (f"{APPARMOR_SYSCTL} does not exist: no such restriction on this kernel",))]
    ev = (f"{APPARMOR_SYSCTL} = {value}",)
    if value == 0:
        return [Finding("kernel.apparmor", "ok", ev)]
    rootless = ctx.state.engine is not None and ctx.state.engine.rootless
    if rootless:
        return [Finding("kernel.apparmor", "fail", ev + (
            "a rootless engine creates its user namespaces unprivileged: AppArmor denies that without a profile",),
            "install the distribution's AppArmor profile for rootlesskit/podman, or: "
            "sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0")]
    return [Finding("kernel.apparmor", "ok", ev + (
        "dockerd runs as root: userns-remap is not affected (rootless Docker and Podman would be)",))]
