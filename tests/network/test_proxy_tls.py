"""TLS inside CONNECT tunnels, in process: termination only where needed, L7 inside TLS,
upstream verification failures answered inside the tunnel, passthrough left untouched."""

from __future__ import annotations

import asyncio
import os
import ssl

import pytest
import trustme

from stockade.events.types import Action, HttpEvent, NetworkEvent
from stockade.network.ca import CertificateAuthority
from stockade.network.tls import LeafCache

from .support.harness import MapResolver, Net, inference_echo, net, start_proxy  # noqa: F401
from .support.origins import Origin
from .support.wire import Wire, get

pytestmark = pytest.mark.netns

L7 = """
            protocol: rest
            enforcement: enforce
            rules:
              - allow: { method: GET, path: "/v1/**" }
              - allow: { method: POST, path: "/upload" }"""


class Leaves(LeafCache):
    """The proxy's real leaf cache over a fresh CA, plus a client context that trusts it."""

    def __init__(self) -> None:
        self.ca = CertificateAuthority.generate("test")
        super().__init__(self.ca)

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cadata=self.ca.certificate_pem.decode())
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        return ctx


def policy(port: int, ips: str, extra: str = "") -> str:
    return f"""
    version: 1
    network_policies:
      api:
        endpoints:
          - host: api.test
            port: {port}
            allowed_ips: [{ips}]{extra}
        binaries: [{{ path: /usr/bin/curl }}]
    """


async def setup(net: Net, *, extra: str = L7, trust_upstream: bool = True, handler=None,
                upstream_tls=None):
    upstream_ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    upstream_ca.issue_cert("api.test").configure_cert(server_ctx)
    origin = await Origin(tls=server_ctx, **({"handler": handler} if handler else {})).start(net.a, 0)
    port = origin.server.sockets[0].getsockname()[1]
    if upstream_tls is None:
        upstream_tls = ssl.create_default_context()
        if trust_upstream:
            upstream_ca.configure_trust(upstream_tls)
    leaves = Leaves()
    proxy = await start_proxy(net.proxy, policy(port, f'"{net.a}"', extra),
                              resolver=MapResolver({"api.test": [net.a]}), leaf_cache=leaves,
                              upstream_tls=upstream_tls)
    return origin, port, proxy, leaves, upstream_ca


async def tunnel(proxy, port: int, ctx: ssl.SSLContext) -> Wire:
    w = await Wire.open(proxy.host, proxy.port)
    await w.send(f"CONNECT api.test:{port} HTTP/1.1\r\nHost: api.test:{port}\r\n\r\n".encode())
    assert (await w.response(head_request=True)).status == 200
    await w.writer.start_tls(ctx, server_hostname="api.test", ssl_handshake_timeout=5)
    return w


def test_l7_endpoint_is_terminated_and_enforced(net: Net):
    async def main():
        origin, port, proxy, leaves, _ = await setup(net)
        w = await tunnel(proxy, port, leaves.client_context())
        assert w.writer.get_extra_info("ssl_object").selected_alpn_protocol() == "http/1.1"
        await w.send(get("/v1/models", "api.test"))
        ok = await w.response()
        assert ok.status == 200 and ok.json()["target"] == "/v1/models"
        await w.send(get("/v1/../admin", "api.test"))
        denied = await w.response()
        assert denied.status == 403 and denied.json()["rule"] == "GET /admin"
        assert [s.target for s in origin.seen] == ["/v1/models"]
        assert [e.action for e in proxy.events(HttpEvent)] == [Action.ALLOWED, Action.DENIED]
        await proxy.close()
        await origin.close()
    net.run(main)


def test_large_bodies_both_ways_through_terminated_tls(net: Net):
    def handler(seen):
        return 200, [], seen.body[::-1] * 2
    async def main():
        origin, port, proxy, leaves, _ = await setup(net, handler=handler)
        w = await tunnel(proxy, port, leaves.client_context())
        payload = os.urandom(1_500_000)
        await w.send(get("/upload", "api.test", method="POST", body=payload))
        reply = await w.response()
        assert reply.body == payload[::-1] * 2
        await proxy.close()
        await origin.close()
    net.run(main, timeout=60)


def test_untrusted_upstream_is_a_502_inside_the_tunnel(net: Net):
    async def main():
        origin, port, proxy, leaves, _ = await setup(net, trust_upstream=False)
        w = await tunnel(proxy, port, leaves.client_context())
        await w.send(get("/v1/models", "api.test"))
        reply = await w.response()
        body = reply.json()
        assert reply.status == 502 and body["error"] == "upstream_tls_failed"
        assert "certificate verify" in body["detail"] or "verification failed" in body["detail"]
        assert any(e.reason_code == "upstream_tls_failed" for e in proxy.events(NetworkEvent))
        assert origin.seen == []
        await proxy.close()
        await origin.close()
    net.run(main)


@pytest.mark.parametrize("pending", ["leaves", "upstream", "both"])
def test_a_terminated_tunnel_waits_for_tls_material_still_being_built(net: Net, pending: str):
    """The services import the TLS stack and parse the system roots in a thread while serving
    starts: a terminated tunnel that comes first waits for them instead of failing or skipping
    verification."""
    async def main():
        loop = asyncio.get_running_loop()
        leaves_future, upstream_future = loop.create_future(), loop.create_future()
        real_leaves = Leaves()
        kwargs = {}
        if pending in ("upstream", "both"):
            kwargs["upstream_tls"] = upstream_future
        origin, port, proxy, leaves, upstream_ca = await setup(net, **kwargs)
        if pending in ("leaves", "both"):
            proxy.server.leaf_cache = leaves_future
            leaves = real_leaves
        opening = asyncio.ensure_future(tunnel(proxy, port, leaves.client_context()))
        await asyncio.sleep(0.3)
        assert not opening.done()  # the client's handshake waits for the proxy's material
        built = ssl.create_default_context()
        upstream_ca.configure_trust(built)
        upstream_future.set_result(built)
        leaves_future.set_result(real_leaves)
        w = await asyncio.wait_for(opening, 10)
        await w.send(get("/v1/models", "api.test"))
        assert (await w.response()).status == 200
        await proxy.close()
        await origin.close()
    net.run(main)


@pytest.mark.parametrize("failed", ["leaves", "upstream"])
def test_tls_material_that_failed_to_build_ends_only_terminated_tunnels(net: Net, failed: str):
    async def main():
        building = asyncio.get_running_loop().create_future()
        building.set_exception(ssl.SSLError("no usable certificate in the bundle"))
        origin, port, proxy, leaves, _ = await setup(
            net, **({"upstream_tls": building} if failed == "upstream" else {}))
        if failed == "leaves":
            proxy.server.leaf_cache = building
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            w = await tunnel(proxy, port, leaves.client_context())
            await w.send(get("/v1/models", "api.test"))
            await w.response()
        assert origin.seen == []
        w = await Wire.open(proxy.host, proxy.port)  # the proxy still serves
        await w.send(b"CONNECT api.test:1 HTTP/1.1\r\nHost: api.test:1\r\n\r\n")
        assert (await w.response(head_request=True)).status == 403
        await proxy.close()
        await origin.close()
    net.run(main)


def test_inference_local_answers_502_when_the_leaves_failed_to_build(net: Net):
    async def main():
        building = asyncio.get_running_loop().create_future()
        building.set_exception(ValueError("the CA did not load"))
        proxy = await start_proxy(net.proxy, policy(443, f'"{net.a}"'), leaf_cache=building,
                                  inference=inference_echo)
        w = await Wire.open(proxy.host, proxy.port)
        await w.send(b"CONNECT inference.local:443 HTTP/1.1\r\nHost: inference.local:443\r\n\r\n")
        reply = await w.response()
        assert reply.status == 502 and reply.json()["error"] == "tls_termination_unavailable"
        assert "the CA did not load" in reply.json()["detail"]
        await proxy.close()
    net.run(main)


def test_l4_only_endpoint_is_relayed_encrypted(net: Net):
    async def main():
        origin, port, proxy, leaves, upstream_ca = await setup(net, extra="")
        ctx = ssl.create_default_context()
        upstream_ca.configure_trust(ctx)  # the origin's own certificate, not a proxy leaf
        w = await tunnel(proxy, port, ctx)
        await w.send(get("/anything", "api.test"))
        assert (await w.response()).status == 200
        assert proxy.events(HttpEvent) == []  # nothing was inspected
        await proxy.close()
        await origin.close()
    net.run(main)


def test_tls_skip_is_relayed_encrypted_despite_rules(net: Net):
    async def main():
        origin, port, proxy, leaves, upstream_ca = await setup(net, extra=L7 + "\n            tls: skip")
        ctx = ssl.create_default_context()
        upstream_ca.configure_trust(ctx)
        w = await tunnel(proxy, port, ctx)
        await w.send(get("/admin", "api.test"))
        assert (await w.response()).status == 200
        await proxy.close()
        await origin.close()
    net.run(main)


def test_client_that_distrusts_the_sandbox_ca_is_recorded(net: Net):
    async def main():
        origin, port, proxy, leaves, upstream_ca = await setup(net)
        ctx = ssl.create_default_context()
        upstream_ca.configure_trust(ctx)  # trusts the origin, not the proxy's CA
        with pytest.raises(ssl.SSLCertVerificationError):
            await tunnel(proxy, port, ctx)
        await asyncio.sleep(0.1)
        assert any(e.reason_code == "client_tls_failed" for e in proxy.events(NetworkEvent))
        await proxy.close()
        await origin.close()
    net.run(main)


def test_inference_local_is_terminated_and_handed_over(net: Net):
    async def main():
        leaves = Leaves()
        proxy = await start_proxy(net.proxy, "version: 1\nnetwork_policies: {}\n",
                                  leaf_cache=leaves, inference=inference_echo)
        w = await Wire.open(proxy.host, proxy.port)
        await w.send(b"CONNECT inference.local:443 HTTP/1.1\r\nHost: inference.local:443\r\n\r\n")
        assert (await w.response(head_request=True)).status == 200
        await w.writer.start_tls(leaves.client_context(), server_hostname="inference.local")
        await w.send(get("/v1/models", "inference.local"))
        reply = await w.response()
        assert reply.json() == {"scheme": "https", "line": "GET /v1/models HTTP/1.1"}
        await proxy.close()
    net.run(main)
