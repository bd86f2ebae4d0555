"""Network checks: ``network.proxy`` (the proxy settings in effect, and where each came from) and
``network.tls`` (a real HTTPS request from a running service to its package index)."""

from __future__ import annotations

from devbox.core.findings import Finding
from devbox.core.network import CA_TARGET, redact
from devbox.doctor.context import Context
from devbox.engine.errors import call
from devbox.errors import EngineError

# (program to look for, its package index, the request) — python first: pip's index; then node: npm's
PROBES = (
    ("python3", "https://pypi.org/simple/",
     "import urllib.request as u; u.urlopen('{url}', timeout=15).read(64); print('ok')"),
    ("node", "https://registry.npmjs.org/",
     "require('https').get('{url}', r => {{ console.log(r.statusCode < 500 ? 'ok' : 'HTTP ' + r.statusCode); "
     "process.exit(0) }}).on('error', e => {{ console.log(e.code + ': ' + e.message); process.exit(1) }})"),
)
CERT_ERRORS = ("CERTIFICATE_VERIFY_FAILED", "SELF_SIGNED_CERT_IN_CHAIN", "UNABLE_TO_GET_ISSUER_CERT",
               "UNABLE_TO_VERIFY_LEAF_SIGNATURE", "certificate verify failed")


def check_proxy(ctx: Context) -> list[Finding]:
    facts = ctx.network_facts
    sources = dict(facts.proxy.sources)
    if not facts.proxy.values:
        return [Finding("network.proxy", "ok", ("no HTTP_PROXY, HTTPS_PROXY or NO_PROXY in the environment or in "
                                                "~/.docker/config.json: services connect directly",))]
    ev = tuple(f"{name}={redact(value)} (from {sources.get(name, '?')}), given to builds and services"
               for name, value in facts.proxy.values)
    return [Finding("network.proxy", "ok", ev + ("NO_PROXY in services also names the stack's services and the loopback",))]


def _running(ctx: Context) -> list[str]:
    return [str(c.get("Id")) for c in ctx.containers if (c.get("State") or {}).get("Running")]


def _exec(ctx: Context, cid: str, argv: list[str]) -> tuple[int, str]:
    client = ctx.client
    assert client is not None
    container = call(lambda: client.docker.containers.get(cid))
    code, out = call(lambda: container.exec_run(argv, demux=False))
    text = out.decode(errors="replace") if isinstance(out, bytes) else ""
    return int(code if code is not None else 1), text.strip()


def check_tls(ctx: Context) -> list[Finding]:
    running = _running(ctx)
    if not running:
        return [Finding("network.tls", "skip", (f"no running container of {ctx.project.name}: devbox up first",))]
    facts = ctx.network_facts
    given = (f"services get {facts.ca.path} at {CA_TARGET} ({facts.ca.why})" if facts.ca is not None else
             f"services get no extra CA bundle ([network] ca_certificates = \"{ctx.project.ca_certificates}\")")
    for cid in running:
        for program, url, code in PROBES:
            try:
                found, _ = _exec(ctx, cid, ["sh", "-c", f"command -v {program}"])
            except EngineError:
                continue
            if found != 0:
                continue
            flag = "-c" if program == "python3" else "-e"
            status, out = _exec(ctx, cid, [program, flag, code.format(url=url)])
            name = next((str(c.get("Name", "")).lstrip("/") for c in ctx.containers if c.get("Id") == cid), cid[:12])
            where = f"{name}: {program} → {url}"
            if status == 0 and out.endswith("ok"):
                return [Finding("network.tls", "ok", (f"{where}: the TLS handshake and request succeed", given))]
            last = out.splitlines()[-1] if out else f"exit status {status}"
            if any(e in out for e in CERT_ERRORS):
                fix = ('set [network] ca_certificates = "auto" (or "host") in devbox.toml, then devbox up'
                       if facts.ca is None else
                       "the host does not trust the certificate either: add the proxy's CA to the host's trust store "
                       "(Debian: sudo cp CA.crt /usr/local/share/ca-certificates/ && sudo update-ca-certificates), "
                       "then devbox up")
                return [Finding("network.tls", "fail", (
                    f"{where}: the certificate chain is not trusted inside the container: {last[-200:]}", given), fix)]
            return [Finding("network.tls", "warn", (f"{where}: {last[-200:]}", given),
                            "check the network and the proxy settings (network.proxy)")]
    return [Finding("network.tls", "skip", ("no running service has python3 or node to make a request with",))]
