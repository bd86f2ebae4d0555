"""What the host's network needs, read once: its CA bundle, the stock certificates, the proxy settings.

Pure decisions are :mod:`devbox.core.network`'s.  The stock set is what the distribution ships
(Debian's ``/usr/share/ca-certificates``); a host bundle with certificates beyond it trusts an
extra CA (a TLS-intercepting proxy's, say), which images built from the same stock set lack.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from devbox.core.network import NetworkFacts, certificates, choose_bundle, proxy_settings
from devbox.errors import ConfigError

# Debian/Ubuntu, Fedora/RHEL, Arch/openSUSE, Alpine
HOST_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt",
                "/etc/ca-certificates/extracted/tls-ca-bundle.pem", "/etc/ssl/cert.pem")
STOCK_DIRS = ("/usr/share/ca-certificates",)


def host_bundle(environ: Mapping[str, str]) -> str | None:
    """``DEVBOX_CA_BUNDLE``, else the first of the distributions' bundles that exists."""
    given = environ.get("DEVBOX_CA_BUNDLE")
    if given:
        return given if os.path.isfile(given) else None
    return next((p for p in HOST_BUNDLES if os.path.isfile(p)), None)


def stock_certificates(dirs: tuple[str, ...] = STOCK_DIRS) -> set[bytes] | None:
    """The certificates the distribution ships (None when it keeps them nowhere devbox knows)."""
    found: set[bytes] = set()
    seen = False
    for d in dirs:
        for path in sorted(Path(d).rglob("*.crt")) if os.path.isdir(d) else ():
            seen = True
            try:
                found |= certificates(path.read_bytes())
            except OSError:
                continue
    return found if seen else None


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError:
        return None


def docker_config(environ: Mapping[str, str], home: str) -> dict[str, object] | None:
    path = Path(environ.get("DOCKER_CONFIG") or Path(home) / ".docker") / "config.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def network_facts(setting: str, home: str, environ: Mapping[str, str] | None = None,
                  project_root: Path | None = None) -> NetworkFacts:
    """The CA bundle under ``[network] ca_certificates`` and the proxy settings, read from this host."""
    env = os.environ if environ is None else environ
    custom = None
    if setting not in ("auto", "host", "image"):
        path = Path(setting).expanduser()
        if not path.is_absolute() and project_root is not None:
            path = project_root / path
        custom = _read(str(path))
        if custom is None or not certificates(custom):
            raise ConfigError(f"[network] ca_certificates = \"{setting}\": {path} is not a readable PEM bundle",
                              hint="give a PEM file of certificates, or \"auto\"")
        setting = str(path)
    bundle = host_bundle(env)
    ca = choose_bundle(setting, bundle, _read(bundle) if setting in ("auto", "host") else None,
                       stock_certificates() if setting == "auto" else None, custom)
    return NetworkFacts(ca, proxy_settings(env, docker_config(env, home)))
