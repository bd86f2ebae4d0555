"""Corporate networks (pure, and the host reader on files made here): which CA bundle services get, the
proxy settings and NO_PROXY, what the stack looks like with them, and the config hash following them."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from devbox.core.hashing import config_hash
from devbox.core.model import Mount, Service, Stack
from devbox.core.network import (
    CA_TARGET,
    CA_VARIABLES,
    NetworkFacts,
    Proxy,
    apply,
    build_args,
    certificates,
    choose_bundle,
    describe,
    no_proxy,
    proxy_settings,
    redact,
)
from devbox.errors import ConfigError
from devbox.host.network import network_facts


def pem(*bodies: bytes) -> bytes:
    out = b""
    for b in bodies:
        text = base64.encodebytes(b).replace(b"\n", b"")
        lines = [text[i:i + 64] for i in range(0, len(text), 64)]
        out += b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(lines) + b"\n-----END CERTIFICATE-----\n"
    return out


STOCK = pem(b"mozilla-1" * 40, b"mozilla-2" * 40)
CORP = pem(b"corporate-proxy-ca" * 30)


def test_certificates_compare_across_line_wrapping() -> None:
    rewrapped = CORP.replace(b"\n", b"\n\n")
    assert certificates(rewrapped) == certificates(CORP) and len(certificates(STOCK + CORP)) == 3


def test_auto_gives_the_host_bundle_only_when_it_trusts_more_than_the_stock_set() -> None:
    stock = certificates(STOCK)
    assert choose_bundle("auto", "/etc/ssl/certs/ca-certificates.crt", STOCK, stock) is None
    b = choose_bundle("auto", "/etc/ssl/certs/ca-certificates.crt", STOCK + CORP, stock)
    assert b is not None and b.extra == 1 and b.why == "the host trusts 1 certificate(s) beyond the stock set"
    assert choose_bundle("host", "/b", STOCK, stock) is not None
    assert choose_bundle("image", "/b", STOCK + CORP, stock) is None
    unknown = choose_bundle("auto", "/b", STOCK, None)
    assert unknown is not None and unknown.extra == -1
    assert choose_bundle("auto", None, None, stock) is None


def test_proxy_from_the_environment_then_the_docker_config() -> None:
    cfg = {"proxies": {"default": {"httpProxy": "http://cfg:3128", "httpsProxy": "http://cfg:3129", "noProxy": "corp.lan"}}}
    p = proxy_settings({"https_proxy": "http://u:secret@env:8080"}, cfg)
    assert dict(p.values) == {"HTTP_PROXY": "http://cfg:3128", "HTTPS_PROXY": "http://u:secret@env:8080",
                              "NO_PROXY": "corp.lan"}
    assert dict(p.sources)["HTTPS_PROXY"] == "environment"
    assert dict(p.sources)["HTTP_PROXY"] == "~/.docker/config.json"
    assert proxy_settings({}, None) == Proxy((), ())


def test_redact_and_no_proxy() -> None:
    assert redact("http://u:secret@proxy:3128/x") == "http://***@proxy:3128/x"
    assert redact("http://proxy:3128") == "http://proxy:3128"
    assert no_proxy("corp.lan, localhost", ["db", "runtime"]) == "corp.lan,localhost,127.0.0.1,::1,db,runtime"


def _stack() -> Stack:
    work = Mount("bind", "/home/me/app", "/work")
    return Stack("app", "python", (
        Service("runtime", "devbox/python:1", env=(("PIP_CERT", "/mine.pem"),), mounts=(work,)),
        Service("db", "devbox/postgres:1"),
    ))


def test_apply_mounts_the_bundle_read_only_and_sets_the_variables_without_overriding() -> None:
    ca = choose_bundle("host", "/etc/ssl/certs/ca-certificates.crt", STOCK + CORP, None)
    facts = NetworkFacts(ca, Proxy((("HTTPS_PROXY", "http://u:pw@p:3128"),), (("HTTPS_PROXY", "environment"),)))
    out = apply(_stack(), facts)
    runtime, db = out.services
    env = dict(runtime.env)
    assert env["PIP_CERT"] == "/mine.pem"  # the service's own value wins
    assert all(env[v] == CA_TARGET for v in CA_VARIABLES if v != "PIP_CERT")
    assert env["HTTPS_PROXY"] == env["https_proxy"] == "http://u:pw@p:3128"
    assert env["NO_PROXY"] == "localhost,127.0.0.1,::1,runtime,db"
    assert Mount("bind", "/etc/ssl/certs/ca-certificates.crt", CA_TARGET, read_only=True,
                 allow_outside_project=True) in db.mounts
    assert build_args(facts) == {"HTTPS_PROXY": "http://u:pw@p:3128", "https_proxy": "http://u:pw@p:3128"}
    assert describe(facts)[1] == "HTTPS_PROXY=http://***@p:3128 (from environment)"
    # nothing to give: the stack is unchanged
    assert apply(_stack(), NetworkFacts(None, Proxy((), ()))) == _stack()


def test_the_config_hash_follows_the_bundle_content_and_the_proxy() -> None:
    def h(ca_pem: bytes, proxy: str | None) -> str:
        ca = choose_bundle("host", "/b", ca_pem, None)
        values = (("HTTP_PROXY", proxy),) if proxy else ()
        return config_hash(apply(_stack(), NetworkFacts(ca, Proxy(values, ()))).services[1])

    base = h(STOCK + CORP, None)
    assert h(STOCK + CORP, None) == base
    assert h(STOCK + CORP + pem(b"another" * 30), None) != base
    assert h(STOCK + CORP, "http://p:1") != base


def test_network_facts_reads_a_given_bundle_and_refuses_a_bad_path(tmp_path: Path) -> None:
    good = tmp_path / "corp.pem"
    good.write_bytes(CORP)
    facts = network_facts("corp.pem", str(tmp_path), {}, project_root=tmp_path)
    assert facts.ca is not None and facts.ca.path == str(good) and facts.ca.extra == 1
    (tmp_path / "empty.pem").write_text("not a certificate\n")
    with pytest.raises(ConfigError) as exc:
        network_facts("empty.pem", str(tmp_path), {}, project_root=tmp_path)
    assert exc.value.one_line().startswith('[network] ca_certificates = "empty.pem": ')
    assert network_facts("image", str(tmp_path), {}).ca is None
    bundle = tmp_path / "bundle.crt"
    bundle.write_bytes(STOCK + CORP)
    home = tmp_path / "home"
    (home / ".docker").mkdir(parents=True)
    (home / ".docker" / "config.json").write_text(json.dumps({"proxies": {"default": {"httpProxy": "http://c:1"}}}))
    facts = network_facts("host", str(home), {"DEVBOX_CA_BUNDLE": str(bundle)})
    assert facts.ca is not None and facts.ca.path == str(bundle)
    assert dict(facts.proxy.values) == {"HTTP_PROXY": "http://c:1"}
