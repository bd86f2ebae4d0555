"""Corporate networks (pure): the host's extra CA certificates and its proxy settings, given to a stack.

Behind a TLS-intercepting proxy the host trusts an extra CA that images do not.  devbox
gives every service a read-only mount of the host's CA bundle (never a copy in a layer or
in the work dir) and points the usual variables at it; it passes the proxy settings on,
with the stack's own service names and the loopback added to ``NO_PROXY``.  What the host
has is read by :mod:`devbox.host.network`; here it is only applied.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import urllib.parse
from collections.abc import Iterable, Mapping

from devbox.core.model import Mount, Stack

CA_TARGET = "/etc/devbox/ca-certificates.crt"
# the variables the toolchains devbox ships read (PGSSLROOTCERT only when asked: it changes libpq's behaviour)
CA_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT", "NODE_EXTRA_CA_CERTS", "CURL_CA_BUNDLE",
                "GIT_SSL_CAINFO")
CA_DIGEST_VARIABLE = "DEVBOX_CA_SHA256"  # in the env, so the config hash follows the bundle's content
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")
LOOPBACK = ("localhost", "127.0.0.1", "::1")
CA_SETTINGS = ("auto", "host", "image")  # or a path

_WHITESPACE = b" \t\n\r\f\v"  # what \s matches in a bytes pattern
_PEM_RE = re.compile(rb"-----BEGIN CERTIFICATE-----\s+(.*?)\s+-----END CERTIFICATE-----", re.DOTALL)


def certificates(pem: bytes) -> set[bytes]:
    """The certificates of a PEM bundle, each as its base64 body without whitespace (comparable)."""
    return {m.group(1).translate(None, _WHITESPACE) for m in _PEM_RE.finditer(pem)}


@dataclasses.dataclass(frozen=True)
class CaBundle:
    """The bundle services get: ``path`` on the host, its digest, and how many certificates are extra."""

    path: str
    sha256: str
    extra: int  # certificates the host trusts beyond the stock set (-1: stock set unknown)
    why: str


@dataclasses.dataclass(frozen=True)
class Proxy:
    values: tuple[tuple[str, str], ...]  # (HTTP_PROXY, value) … upper-case names
    sources: tuple[tuple[str, str], ...]  # (HTTP_PROXY, "environment" | "~/.docker/config.json")


@dataclasses.dataclass(frozen=True)
class NetworkFacts:
    ca: CaBundle | None
    proxy: Proxy


def choose_bundle(setting: str, host_path: str | None, host_pem: bytes | None, stock: set[bytes] | None,
                  custom_pem: bytes | None = None) -> CaBundle | None:
    """Which bundle services get under ``[network] ca_certificates``: ``auto`` (the host's, when it trusts
    certificates beyond the stock set), ``host`` (the host's, always), ``image`` (none), or a path."""
    if setting == "image":
        return None
    if setting not in ("auto", "host"):
        if custom_pem is None:
            return None
        return CaBundle(setting, hashlib.sha256(custom_pem).hexdigest(), len(certificates(custom_pem)),
                        f"{setting} (set in devbox.toml)")
    if host_path is None or host_pem is None:
        return None
    have = certificates(host_pem)
    extra = len(have - stock) if stock is not None else -1
    if setting == "auto" and extra == 0:
        return None
    why = (f"the host trusts {extra} certificate(s) beyond the stock set" if extra > 0 else
           "the stock set is unknown here: the host's bundle is given" if extra < 0 else "ca_certificates = \"host\"")
    return CaBundle(host_path, hashlib.sha256(host_pem).hexdigest(), extra, why)


def proxy_settings(environ: Mapping[str, str], docker_config: Mapping[str, object] | None) -> Proxy:
    """HTTP_PROXY, HTTPS_PROXY and NO_PROXY (either case) from the environment, else from the docker
    CLI's ``proxies.default`` (``httpProxy``, ``httpsProxy``, ``noProxy``), as the docker CLI would."""
    keys = {"HTTP_PROXY": "httpProxy", "HTTPS_PROXY": "httpsProxy", "NO_PROXY": "noProxy"}
    proxies = docker_config.get("proxies") if docker_config else None
    default = proxies.get("default") if isinstance(proxies, dict) else None
    values, sources = [], []
    for name, key in keys.items():
        value = environ.get(name) or environ.get(name.lower())
        source = "environment"
        if not value and isinstance(default, dict) and isinstance(default.get(key), str):
            value, source = str(default[key]), "~/.docker/config.json"
        if value:
            values.append((name, value))
            sources.append((name, source))
    return Proxy(tuple(values), tuple(sources))


def redact(url: str) -> str:
    """A proxy URL without its credentials: ``http://***@proxy:3128``."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def no_proxy(current: str | None, services: Iterable[str]) -> str:
    """``NO_PROXY`` with the stack's service names and the loopback added (runtime → db never via the proxy)."""
    items = [s.strip() for s in (current or "").split(",") if s.strip()]
    for extra in (*LOOPBACK, *services):
        if extra not in items:
            items.append(extra)
    return ",".join(items)


def apply(stack: Stack, facts: NetworkFacts) -> Stack:
    """The stack with the CA bundle mounted and the variables set in every service (a service's own
    value for a variable wins), and the proxy settings passed on."""
    names = [s.name for s in stack.services]
    proxy = dict(facts.proxy.values)
    if proxy:
        proxy["NO_PROXY"] = no_proxy(proxy.get("NO_PROXY"), names)
    services = []
    for svc in stack.services:
        env = dict(svc.env)
        mounts = list(svc.mounts)
        add: dict[str, str] = {}
        if facts.ca is not None:
            add.update({v: CA_TARGET for v in CA_VARIABLES})
            add[CA_DIGEST_VARIABLE] = facts.ca.sha256
            mounts.append(Mount("bind", facts.ca.path, CA_TARGET, read_only=True, allow_outside_project=True))
        for name, value in proxy.items():
            add[name] = add[name.lower()] = value
        for k, v in add.items():
            env.setdefault(k, v)
        services.append(dataclasses.replace(svc, env=tuple(sorted(env.items())), mounts=tuple(mounts)))
    return dataclasses.replace(stack, services=tuple(services))


def build_args(facts: NetworkFacts) -> dict[str, str]:
    """Docker's predefined proxy build args (they do not bust the build cache)."""
    out = {}
    for name, value in facts.proxy.values:
        out[name] = out[name.lower()] = value
    return out


def describe(facts: NetworkFacts) -> list[str]:
    """For people (ps, doctor): what was applied, credentials redacted."""
    lines = []
    if facts.ca is not None:
        lines.append(f"CA bundle {facts.ca.path} mounted read-only at {CA_TARGET} ({facts.ca.why}); "
                     + ", ".join(CA_VARIABLES) + " point at it")
    sources = dict(facts.proxy.sources)
    for name, value in facts.proxy.values:
        lines.append(f"{name}={redact(value)} (from {sources.get(name, '?')})")
    return lines


def to_json(facts: NetworkFacts) -> dict[str, object]:
    sources = dict(facts.proxy.sources)
    return {
        "ca_bundle": None if facts.ca is None else {"path": facts.ca.path, "target": CA_TARGET,
                                                     "sha256": facts.ca.sha256, "extra": facts.ca.extra},
        "proxy": {name: {"value": redact(value), "from": sources.get(name)} for name, value in facts.proxy.values},
    }
