"""Adversarial HTTP through the real in-process proxy: an agent in the sandbox trying to reach
a method/path/host the policy does not allow, to move a credential placeholder somewhere it
may not go, or to desynchronise the proxy from the upstream (request smuggling).

Every test asserts what the ORIGIN received (Origin.seen, parsed by h11, independent of the
proxy's own parser), not only what the client was answered.
"""

from __future__ import annotations

import asyncio

import pytest

from stockade.events.types import FindingEvent
from stockade.network.credentials import SecretStore

from .support.harness import MapResolver, Net, net, scene, start_proxy  # noqa: F401
from .support.origins import Origin, RawServer, read_head
from .support.wire import Wire, get

pytestmark = pytest.mark.netns

RULES = """
            protocol: rest
            enforcement: enforce
            rules:
              - allow: { method: GET, path: "/v1/**" }
              - allow: { method: POST, path: "/v1/**" }"""


def policy(port: int, ips: str, extra: str = RULES) -> str:
    return f"""
    version: 1
    network_policies:
      api:
        endpoints:
          - host: api.test
            port: {port}
            allowed_ips: [{ips}]{extra}
          - host: other.test
            port: {port}
            allowed_ips: [{ips}]
        binaries: [{{ path: /usr/bin/curl }}]
    """


def staged(net: Net, upstream=None, extra: str = RULES, **kw):
    """An upstream (an Origin by default) as api.test (L7 rules) and other.test (L4 only)."""
    return scene(net, upstream or Origin(), lambda port: policy(port, f'"{net.a}"', extra),
                 names={"api.test": [net.a], "other.test": [net.a]}, **kw)


async def tunnel(s, host: str = "api.test") -> Wire:
    """A plaintext CONNECT tunnel to host (inspected: the endpoint has L7 rules)."""
    w = await s.wire()
    await w.send(f"CONNECT {host}:{s.port} HTTP/1.1\r\nHost: {host}:{s.port}\r\n\r\n".encode())
    assert (await w.response(head_request=True)).status == 200
    return w


def targets(s) -> list[str]:
    return [f"{seen.method} {seen.target}" for seen in s.upstream.seen]


# -- framing fields named by Connection ------------------------------------------------------

SMUGGLED = b"GET /admin HTTP/1.1\r\nHost: api.test\r\n\r\n"


@pytest.mark.parametrize("mode", ["tunnel", "forward"])
def test_connection_cannot_strip_content_length(net: Net, mode):
    # `Connection: Content-Length` names Content-Length as hop-by-hop. Were it dropped, the
    # upstream would see a bodiless POST and read the body as a second, unchecked request.
    async def main():
        async with staged(net) as s:
            if mode == "tunnel":
                w = await tunnel(s)
                target = "/v1/upload"
            else:
                w = await s.wire()
                target = f"http://api.test:{s.port}/v1/upload"
            await w.send(get(target, "api.test", "Connection: keep-alive, Content-Length",
                             method="POST", body=SMUGGLED))
            reply = await w.response()
            await asyncio.sleep(0.2)
            assert targets(s) == ["POST /v1/upload"], reply
            assert s.upstream.seen[0].body == SMUGGLED
    net.run(main)


def test_connection_cannot_strip_host_inside_a_tunnel(net: Net):
    # Without Host, a name-based upstream serves its default virtual host, not the one the
    # tunnel was checked against.
    async def main():
        async with staged(net) as s:
            w = await tunnel(s)
            await w.send(get("/v1/x", "api.test", "Connection: Host"))
            assert (await w.response()).status == 200
            assert s.upstream.seen[0].header("host") == "api.test"
    net.run(main)


def test_upstream_connection_cannot_strip_the_response_content_length(net: Net):
    # The same on the way back: a response whose Content-Length is dropped has no framing left,
    # and the client would read the next response as part of this body.
    async def script(reader, writer):
        while True:
            await read_head(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: Content-Length\r\n"
                         b"Content-Length: 5\r\n\r\nhello")
            await writer.drain()

    async def main():
        async with staged(net, RawServer(script)) as s:
            w = await tunnel(s)
            for _ in range(2):
                await w.send(get("/v1/x", "api.test"))
                reply = await asyncio.wait_for(w.response(), 3)
                assert reply.header("content-length") == "5" and reply.body == b"hello"
    net.run(main)


# -- malformed framing after an allowed request, inside the tunnel and on the forward path ------

ALLOWED = b"GET /v1/ok HTTP/1.1\r\nHost: api.test\r\n\r\n"
BAD_HEADS = [
    b"POST /v1/x HTTP/1.1\r\nHost: api.test\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST /v1/x HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n",
    b"POST /v1/x HTTP/1.1\r\nHost: api.test\r\nContent-Length: 40\r\nContent-Length: 0\r\n\r\n",
    b"POST /v1/x HTTP/1.1\r\nHost: api.test\r\nContent-Length: 40, 0\r\n\r\n",
    b"POST /v1/x HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
    b"POST /v1/x HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding : chunked\r\n\r\n",
    b"POST /v1/x HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: xchunked\r\n\r\n",
    b"POST /v1/x HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: \x0bchunked\r\n\r\n",
    b"POST /v1/x HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: identity\r\n chunked\r\n\r\n",
    b"POST /v1/x HTTP/1.1\r\nHost: api.test\r\nX: 1\r\n\tTransfer-Encoding: chunked\r\n\r\n",
    b"POST /v1/x HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST /v1/x HTTP/1.0\r\nHost: api.test\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST /v1/x HTTP/1.1\nHost: api.test\nContent-Length: 40\n\n",
    b"GET /v1/x HTTP/1.1\r\nHost: api.test\r\nX: a\rGET /admin\r\n\r\n",
    b"GET /v1/x HTTP/1.1\r\nHost: api.test\r\nX: a\x00b\r\n\r\n",
    b"GET /v1/x HTTP/1.1\r\nHost: api.test\r\nHost: other.test\r\n\r\n",
    b"GET /v1/x HTTP/1.1\r\nHost: api.test\r\n\x00X: 1\r\n\r\n",
    b"get /admin HTTP/1.1\r\nHost: api.test\r\n\r\n",
    b"GET /v1/x HTTP/1.1 \r\nHost: api.test\r\n\r\n",
    b"GET /v1/x /admin HTTP/1.1\r\nHost: api.test\r\n\r\n",
]
BAD_BODIES = [
    b"ffffffffffffffffff\r\n",  # chunk size overflow
    b"-1\r\nx\r\n0\r\n\r\n",
    b"+5\r\nhello\r\n0\r\n\r\n",
    b"5 5\r\nhello\r\n0\r\n\r\n",
    b"5\nhello\r\n0\r\n\r\n",
    b"5\r\nhello\n0\r\n\r\n",
    b"5\r\nhelloGET /admin HTTP/1.1\r\n\r\n",
    b"0x5\r\nhello\r\n0\r\n\r\n",
    b"5\r\nhello\r\n0\r\nX: 1\n\r\n",
]
CHUNKED = b"POST /v1/x HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("bad", BAD_HEADS + [CHUNKED + body for body in BAD_BODIES])
def test_malformed_framing_in_a_tunnel_is_400_and_nothing_unchecked_is_sent(net: Net, bad):
    async def main():
        async with staged(net) as s:
            w = await tunnel(s)
            await w.send(ALLOWED + bad)
            first = await w.response()
            assert first.status == 200 and first.json()["target"] == "/v1/ok"
            reply = await w.response()
            assert reply.status == 400 and reply.header("content-type") == "application/json"
            assert reply.json()["error"]
            assert await w.closed()
            await asyncio.sleep(0.1)
            # A chunked POST whose body goes bad after the head may have started upstream
            # (streamed); what matters is that no second request came out of its bytes.
            assert targets(s) in (["GET /v1/ok"], ["GET /v1/ok", "POST /v1/x"]), targets(s)
            assert all(seen.target != "/admin" for seen in s.upstream.seen)
    net.run(main)


@pytest.mark.parametrize("bad", BAD_HEADS[:13])
def test_malformed_framing_on_the_forward_path_is_400(net: Net, bad):
    async def main():
        async with staged(net) as s:
            w = await s.wire()
            absolute = bad.replace(b" /v1/x ", f" http://api.test:{s.port}/v1/x ".encode(), 1)
            await w.send(absolute)
            reply = await w.response()
            assert reply.status == 400 and reply.json()["error"]
            assert await w.closed()
            assert s.upstream.seen == []
    net.run(main)


def test_request_hidden_in_a_body_stays_in_the_body(net: Net):
    # Both framings: what the origin gets is one POST whose body holds the bytes verbatim.
    async def main():
        async with staged(net) as s:
            w = await tunnel(s)
            chunked = b"%x\r\n%b\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED)
            await w.send(CHUNKED + chunked)
            assert (await w.response()).status == 200
            await w.send(get("/v1/y", "api.test", method="POST", body=SMUGGLED))
            assert (await w.response()).status == 200
            assert targets(s) == ["POST /v1/x", "POST /v1/y"]
            assert [seen.body for seen in s.upstream.seen] == [SMUGGLED, SMUGGLED]
    net.run(main)


# -- paths, methods and hosts against the L7 rules -----------------------------------------------

@pytest.mark.parametrize("target,status", [
    ("/v1/../admin", 403), ("/v1/%2e%2e/admin", 403), ("/v1/%2E%2E/admin", 403),
    ("/v1/.%2e/admin", 403), ("//admin", 403), ("/V1/x", 403), ("/v1%2fadmin", 400),
    ("/v1%2Fadmin", 400), ("/v1/..%2fadmin", 400), ("/v1/%5c../admin", 400), ("/v1\\..\\admin", 400),
    ("/v1/..;/admin", 400), ("/v1/.;/x", 400), ("/v1/%2e%2e;x/admin", 400), ("/v1/../../admin", 400),
    ("/v1/x%00", 400), ("/v1/x#frag", 400), ("/v1/%zz", 400), ("*", 400),
    ("http://api.test/admin", 421), ("http://other.test:{port}/v1/x", 421),
    ("http://api.test:{port}/admin", 403),
])
def test_path_tricks_in_a_tunnel_never_reach_the_origin(net: Net, target, status):
    async def main():
        async with staged(net) as s:
            w = await tunnel(s)
            await w.send(ALLOWED + get(target.format(port=s.port), "api.test"))
            assert (await w.response()).status == 200
            reply = await w.response()
            assert reply.status == status, reply.body
            assert await w.closed()
            assert targets(s) == ["GET /v1/ok"]
    net.run(main)


def test_allowed_paths_are_forwarded_canonical(net: Net):
    async def main():
        async with staged(net) as s:
            w = await tunnel(s)
            for target in ["/v1/./a/../b", "/v1//c", "/v1/%7Ed%41", f"http://api.test:{s.port}/v1/e"]:
                await w.send(get(target, "api.test"))
                assert (await w.response()).status == 200
            await w.send(get("/admin", "api.test", method="HEAD"))
            assert (await w.response(head_request=True)).status == 403
            assert targets(s) == ["GET /v1/b", "GET /v1/c", "GET /v1/~dA", "GET /v1/e"]
    net.run(main)


@pytest.mark.parametrize("host,status", [
    ("other.test", 421), ("api.test:1", 421), ("api.test@other.test", 400),
    ("other.test#api.test", 400), ("api.test, other.test", 400), ("api.test/x", 400), ("", 400),
])
def test_host_header_tricks_in_a_tunnel(net: Net, host, status):
    async def main():
        async with staged(net) as s:
            w = await tunnel(s)
            await w.send(f"GET /v1/x HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            assert (await w.response()).status == status
            assert s.upstream.seen == []
    net.run(main)


@pytest.mark.parametrize("url", [
    "http://api.test:{port}@other.test/v1/x", "http://other.test:{port}\\@api.test/v1/x",
    "http://other.test:{port}#@api.test/v1/x", "http://api.test:{port}:{port}/v1/x",
    "http://user:pw@api.test:{port}/v1/x", "http://api.test%2eother.test:{port}/v1/x",
    "http://api.test:{port}/v1/../admin", "http://api.test:+{port}/v1/x",
])
def test_authority_tricks_on_the_forward_path(net: Net, url):
    async def main():
        async with staged(net) as s:
            reply = await s.ask(get(url.format(port=s.port), "api.test"))
            assert reply.status in (400, 403) and reply.json()["error"], reply.body
            assert s.upstream.seen == []
    net.run(main)


def test_absolute_url_decides_and_routes_not_the_host_header(net: Net):
    # The URL names other.test (L4 only), the Host header api.test: the request is decided and
    # sent as other.test; the upstream never sees api.test claimed.
    async def main():
        async with staged(net) as s:
            reply = await s.ask(get(f"http://other.test:{s.port}/admin", "api.test"))
            assert reply.status == 200
            assert s.upstream.seen[0].header("host") == f"other.test:{s.port}"
            reply = await s.ask(get(f"http://api.test:{s.port}/admin", "other.test"))
            assert reply.status == 403 and len(s.upstream.seen) == 1
    net.run(main)


@pytest.mark.parametrize("target", [
    "api.test:{port}:{port}", "api.test:{port}/x", "user@api.test:{port}", "api.test:+{port}",
    "api.test:{port}%00", "api.test :{port}", "[api.test]:{port}", "http://api.test:{port}",
])
def test_connect_target_tricks_are_400(net: Net, target):
    async def main():
        async with staged(net) as s:
            w = await s.wire()
            await w.send(f"CONNECT {target.format(port=s.port)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            reply = await w.response(head_request=True)
            assert reply.status == 400
            assert s.upstream.connections == 0
    net.run(main)


# -- keep-alive, HTTP/1.0 and upgrades ------------------------------------------------------------

def test_http10_without_keep_alive_ends_the_connection(net: Net):
    async def main():
        async with staged(net) as s:
            w = await tunnel(s)
            await w.send(b"GET /v1/a HTTP/1.0\r\nHost: api.test\r\n\r\n" + get("/admin", "api.test"))
            assert (await w.response()).status == 200
            assert await w.closed()
            w2 = await tunnel(s)
            await w2.send(b"GET /v1/b HTTP/1.0\r\nHost: api.test\r\nConnection: keep-alive\r\n\r\n"
                          + b"GET /admin HTTP/1.0\r\nHost: api.test\r\nConnection: keep-alive\r\n\r\n")
            assert (await w2.response()).status == 200
            assert (await w2.response()).status == 403
            assert targets(s) == ["GET /v1/a", "GET /v1/b"]
    net.run(main)


def recording_server(heads: list[bytes], *, switch: bool = False) -> RawServer:
    """Records every request head; answers 200 (or 101 to a WebSocket upgrade when `switch`)."""
    async def script(reader, writer):
        while True:
            head = await read_head(reader)
            heads.append(head)
            if switch and b"upgrade: websocket" in head.lower():
                writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\n\r\n")
                await writer.drain()
                await asyncio.sleep(2)
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
    return RawServer(script)


@pytest.mark.parametrize("upgrade", ["websocket", "h2c"])
def test_refused_upgrade_does_not_carry_a_second_request(net: Net, upgrade):
    # The upstream answers 200 to an upgrade request (or it was an h2c upgrade the proxy
    # strips): the bytes after it are HTTP again and are decided as such.
    heads: list[bytes] = []

    async def main():
        async with staged(net, recording_server(heads)) as s:
            w = await tunnel(s)
            await w.send(get("/v1/socket", "api.test", f"Upgrade: {upgrade}",
                             "Connection: Upgrade, HTTP2-Settings", "HTTP2-Settings: AAMAAABkAAQAAP__",
                             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13")
                         + get("/admin", "api.test"))
            assert (await w.response()).status == 200
            assert (await w.response()).status == 403
            assert [h.split(b" ")[1] for h in heads] == [b"/v1/socket"]
            if upgrade == "h2c":
                assert b"upgrade" not in heads[0].lower() and b"http2-settings" not in heads[0].lower()
    net.run(main)


def test_upgrade_on_a_denied_path_or_method_is_403(net: Net):
    heads: list[bytes] = []

    async def main():
        async with staged(net, recording_server(heads, switch=True)) as s:
            for req in [get("/admin", "api.test", "Upgrade: websocket", "Connection: Upgrade"),
                        get("/v1/s", "api.test", "Upgrade: websocket", "Connection: Upgrade",
                            method="PUT", body=b"x")]:
                w = await tunnel(s)
                await w.send(req + b"\x81\x05hello")
                assert (await w.response()).status == 403
            assert heads == []
    net.run(main)


# -- credential placeholders ------------------------------------------------------------------------

SECRET = "sk-real-secret-value"


@pytest.mark.parametrize("where", ["host-header", "connection", "name", "split-free", "authority"])
def test_placeholder_tricks_toward_an_unbound_host(net: Net, where):
    secrets = SecretStore.from_specs(["API_KEY=api.test"], {"API_KEY": SECRET})
    ph = secrets.placeholder_env()["API_KEY"]

    async def main():
        async with staged(net, extra="", secrets=secrets) as s:
            target, extra = f"http://other.test:{s.port}/x", []
            if where == "host-header":
                extra = [f"X-Forwarded-Host: {ph}"]
            elif where == "connection":  # named as hop-by-hop: must still not travel
                extra = ["Connection: X-Key", f"X-Key: {ph}", f"X-Other: {ph}"]
            elif where == "name":
                extra = [f"{ph}: 1"]
            elif where == "split-free":
                extra = [f"Authorization: Bearer {ph}", f"Authorization: Bearer {ph}"]
            else:
                target = f"http://{ph}@other.test:{s.port}/x"
            reply = await s.ask(get(target, f"other.test:{s.port}", *extra))
            assert reply.status in (400, 403), reply.body
            assert s.upstream.seen == []
            assert SECRET not in repr(s.proxy.recorder.events) and SECRET not in reply.body.decode()
    net.run(main)


def test_placeholder_in_host_header_does_not_pick_the_bound_host(net: Net):
    # Forward path: the URL names other.test, the Host header the bound api.test. The secret is
    # bound by the destination the URL names, so the placeholder is refused.
    secrets = SecretStore.from_specs(["API_KEY=api.test"], {"API_KEY": SECRET})
    ph = secrets.placeholder_env()["API_KEY"]

    async def main():
        async with staged(net, extra="", secrets=secrets) as s:
            reply = await s.ask(get(f"http://other.test:{s.port}/x", "api.test",
                                    f"Authorization: Bearer {ph}"))
            assert reply.status == 403 and reply.json()["error"] == "credential_refused"
            assert s.upstream.seen == []
            assert s.proxy.events(FindingEvent)
    net.run(main)


def test_request_trailers_are_not_forwarded(net: Net):
    """Nothing decides or substitutes trailers: a placeholder, a second Host or a Content-Length
    there never reaches the origin (the chunked body does)."""
    secrets = SecretStore.from_specs(["API_KEY=api.test"], {"API_KEY": SECRET})
    ph = secrets.placeholder_env()["API_KEY"]
    seen: list[bytes] = []

    async def script(reader, writer):
        data = b""
        while not data.endswith(b"0\r\n\r\n") and (more := await reader.read(65536)):
            data += more
        seen.append(data)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    async def main():
        async with staged(net, RawServer(script), extra="", secrets=secrets) as s:
            request = (f"POST http://other.test:{s.port}/x HTTP/1.1\r\nHost: other.test:{s.port}\r\n"
                       "Transfer-Encoding: chunked\r\nTrailer: X-Key, Host, Content-Length\r\n\r\n"
                       f"5\r\nhello\r\n0\r\nX-Key: {ph}\r\nHost: api.test\r\nContent-Length: 0\r\n\r\n")
            reply = await s.ask(request.encode())
            assert reply.status == 200
            assert len(seen) == 1 and seen[0].endswith(b"5\r\nhello\r\n0\r\n\r\n"), seen
            assert ph.encode() not in seen[0] and b"api.test" not in seen[0]
    net.run(main)


@pytest.mark.parametrize("path", ["connect", "forward"])
def test_a_placeholder_in_the_destination_host_is_refused_before_any_lookup(net: Net, path):
    """Under a wildcard rule, deciding `<placeholder>.example` would resolve it: the DNS query
    would carry the placeholder out. It is refused first, and nothing is resolved."""
    secrets = SecretStore.from_specs(["TOKEN=api.test"], {"TOKEN": SECRET})
    ph = secrets.placeholder_env()["TOKEN"]  # letters, digits and '-': a valid DNS label
    resolver = MapResolver()

    async def main():
        wildcard = """
        version: 1
        network_policies:
          any:
            endpoints: [{ host: "*.corp.test", port: 80 }]
            binaries: [{ path: /usr/bin/curl }]
        """
        proxy = await start_proxy(net.proxy, wildcard, resolver=resolver, secrets=secrets)
        try:
            w = await Wire.open(proxy.host, proxy.port)
            host = f"{ph.lower()}.corp.test"
            if path == "connect":
                await w.send(f"CONNECT {host}:80 HTTP/1.1\r\nHost: {host}:80\r\n\r\n".encode())
            else:
                await w.send(get(f"http://{host}/x", host))
            reply = await w.response()
            assert reply.status == 403 and reply.json()["error"] == "credential_refused"
            assert reply.json()["reason_code"] == "placeholder_in_host"
            assert ph.lower() not in reply.body.decode()
            assert resolver.calls == []
            assert [e for e in proxy.events(FindingEvent) if e.kind == "placeholder_misuse"]
        finally:
            await proxy.close()
    net.run(main)
