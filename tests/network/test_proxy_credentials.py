"""Credential placeholders through the proxy: substituted only toward bound hosts, refused
everywhere else, never logged (network.md §9 cases 93-98)."""

from __future__ import annotations

import ssl

import pytest
import trustme

from stockade.events.types import FindingEvent
from stockade.network.ca import CertificateAuthority
from stockade.network.credentials import SecretStore
from stockade.network.tls import LeafCache

from .support.harness import MapResolver, Net, net, start_proxy  # noqa: F401
from .support.origins import Origin
from .support.wire import Wire, get

pytestmark = pytest.mark.netns

SECRET = "sk-real-secret-value"


def store(binding: str = "origin.test") -> SecretStore:
    return SecretStore.from_specs([f"API_KEY={binding}"], {"API_KEY": SECRET})


def policy(port: int, ips: str, extra: str = "") -> str:
    return f"""
    version: 1
    network_policies:
      r:
        endpoints:
          - {{ host: origin.test, port: {port}, allowed_ips: [{ips}] {extra}}}
          - {{ host: other.test, port: {port}, allowed_ips: [{ips}] {extra}}}
        binaries: [{{ path: /usr/bin/curl }}]
    """


async def setup(net: Net, secrets: SecretStore, *, tls: ssl.SSLContext | None = None, **kw):
    origin = await Origin(tls=tls).start(net.a, 0)
    port = origin.server.sockets[0].getsockname()[1]
    proxy = await start_proxy(net.proxy, policy(port, f'"{net.a}"'), secrets=secrets,
                              resolver=MapResolver({"origin.test": [net.a], "other.test": [net.a]}),
                              **kw)
    return origin, port, proxy


def no_secret_in_events(proxy) -> None:
    assert SECRET not in repr(proxy.recorder.events)


def test_forward_substitutes_toward_the_bound_host(net: Net):
    secrets = store()
    ph = secrets.placeholder_env()["API_KEY"]

    async def main():
        origin, port, proxy = await setup(net, secrets)
        w = await Wire.open(proxy.host, proxy.port)
        await w.send(get(f"http://origin.test:{port}/v1/{ph}/x?key={ph}&q=1", "origin.test",
                         f"Authorization: Bearer {ph}", f"X-Api-Key: {ph}"))
        assert (await w.response()).status == 200
        seen = origin.seen[0]
        assert seen.header("authorization") == f"Bearer {SECRET}"
        assert seen.header("x-api-key") == SECRET
        assert seen.target == f"/v1/{SECRET}/x?key={SECRET}&q=1"
        no_secret_in_events(proxy)
        assert ph not in repr(proxy.recorder.events)  # redacted in event paths
        await proxy.close()
        await origin.close()
    net.run(main)


@pytest.mark.parametrize("where", ["header", "path", "query", "encoded"])
def test_placeholder_toward_an_unbound_host_is_refused(net: Net, where):
    secrets = store()
    ph = secrets.placeholder_env()["API_KEY"]

    async def main():
        origin, port, proxy = await setup(net, secrets)
        target, headers = f"http://other.test:{port}/x", []
        if where == "header":
            headers = [f"Authorization: Bearer {ph}"]
        elif where == "path":
            target = f"http://other.test:{port}/{ph}"
        elif where == "query":
            target = f"http://other.test:{port}/x?token={ph}"
        else:
            target = f"http://origin.test:{port}/x?token={ph.replace('-', '%2D')}"
        w = await Wire.open(proxy.host, proxy.port)
        await w.send(get(target, "x", *headers))
        reply = await w.response()
        body = reply.json()
        assert reply.status == 403 and body["error"] == "credential_refused", body
        assert origin.seen == []
        findings = proxy.events(FindingEvent)
        assert findings and findings[0].kind == "placeholder_misuse"
        no_secret_in_events(proxy)
        assert SECRET not in reply.body.decode()
        await proxy.close()
        await origin.close()
    net.run(main)


def test_unknown_placeholder_is_refused(net: Net):
    async def main():
        origin, port, proxy = await setup(net, store())
        w = await Wire.open(proxy.host, proxy.port)
        fake = "stockade-ph-API_KEY-" + "0" * 32
        await w.send(get(f"http://origin.test:{port}/x", "x", f"Authorization: Bearer {fake}"))
        assert (await w.response()).status == 403
        assert origin.seen == []
        await proxy.close()
        await origin.close()
    net.run(main)


def test_tls_is_terminated_only_toward_hosts_a_secret_may_travel_to(net: Net):
    # origin.test and other.test are L4-only endpoints: only origin.test has a bound secret,
    # so only its tunnel is terminated (the client must trust the sandbox CA for it).
    upstream_ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    upstream_ca.issue_cert("origin.test", "other.test").configure_cert(server_ctx)
    secrets = store()
    ph = secrets.placeholder_env()["API_KEY"]

    async def main():
        ca = CertificateAuthority.generate("test")
        upstream_tls = ssl.create_default_context()
        upstream_ca.configure_trust(upstream_tls)
        origin, port, proxy = await setup(net, secrets, tls=server_ctx, leaf_cache=LeafCache(ca),
                                          upstream_tls=upstream_tls)
        sandbox = ssl.create_default_context(cadata=ca.certificate_pem.decode())
        direct = ssl.create_default_context()
        upstream_ca.configure_trust(direct)
        for host, ctx in (("origin.test", sandbox), ("other.test", direct)):
            w = await Wire.open(proxy.host, proxy.port)
            await w.send(f"CONNECT {host}:{port} HTTP/1.1\r\n\r\n".encode())
            assert (await w.response(head_request=True)).status == 200
            await w.writer.start_tls(ctx, server_hostname=host)
            await w.send(get("/x", host, f"Authorization: Bearer {ph}"))
            reply = await w.response()
            assert reply.status == 200
        # Terminated: the secret went to origin.test. Relayed encrypted: other.test saw the
        # placeholder (the proxy could not read it; the placeholder is no secret).
        assert origin.seen[0].header("authorization") == f"Bearer {SECRET}"
        assert origin.seen[1].header("authorization") == f"Bearer {ph}"
        no_secret_in_events(proxy)
        await proxy.close()
        await origin.close()
    net.run(main)
