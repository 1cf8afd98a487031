"""The forward proxy (absolute-form http://), in process inside the test namespace.

Covers network.md §9 cases 32, 65, 76-81, 104 and the keep-alive fixes of Appendix A.7.
"""

from __future__ import annotations

import asyncio

import pytest

from stockade.events.types import Action, HttpEvent, NetworkEvent
from stockade.network.limits import Limits

from .support.harness import MapResolver, Net, engine_for, net, start_proxy  # noqa: F401
from .support.origins import Origin, RawServer, read_head
from .support.wire import Wire, get

pytestmark = pytest.mark.netns


def policy(host: str, port: int, *, extra: str = "", allowed_ips: str | None = None) -> str:
    ips = f"\n            allowed_ips: [{allowed_ips}]" if allowed_ips else ""
    return f"""
    version: 1
    network_policies:
      origin:
        endpoints:
          - host: {host}
            port: {port}{ips}{extra}
        binaries:
          - path: /usr/bin/curl
    """


async def origin_and_proxy(net: Net, handler=None, *, extra: str = "", limits=None,
                           names=None, **kw):
    origin = await Origin(**({"handler": handler} if handler else {})).start(net.a, 0)
    port = origin.server.sockets[0].getsockname()[1]
    resolver = MapResolver(names or {"origin.test": [net.a]})
    proxy = await start_proxy(net.proxy, policy("origin.test", port, extra=extra,
                                                allowed_ips=f'"{net.a}"'),
                              resolver=resolver, limits=limits, **kw)
    return origin, port, proxy


def test_forward_get_rewrites_the_request(net: Net):
    async def main():
        origin, port, proxy = await origin_and_proxy(net)
        w = await Wire.open(proxy.host, proxy.port)
        await w.send(get(f"http://origin.test:{port}/api?x=1", "evil.example",
                         "Proxy-Authorization: Basic Zm9vOmJhcg==", "Proxy-Connection: keep-alive",
                         "Connection: keep-alive, X-Hop", "X-Hop: 1", "Accept: */*"))
        reply = await w.response()
        assert reply.status == 200 and reply.header("via") == "1.1 stockade"
        seen = origin.seen[0]
        assert seen.target == "/api?x=1"
        assert seen.header("host") == f"origin.test:{port}"  # the URL wins over the Host header
        assert seen.header("proxy-authorization") is None and seen.header("proxy-connection") is None
        assert seen.header("x-hop") is None and seen.header("accept") == "*/*"
        assert seen.header("via") == "1.1 stockade"
        http = proxy.events(HttpEvent)
        assert http[0].action is Action.ALLOWED and http[0].path == "/api" and http[0].status == 200
        assert proxy.events(NetworkEvent)[0].upstream == f"{net.a}:{port}"
        await proxy.close()
        await origin.close()
    net.run(main)


def test_keep_alive_decides_every_request_and_reuses_the_upstream(net: Net):
    async def main():
        origin, port, proxy = await origin_and_proxy(net)
        w = await Wire.open(proxy.host, proxy.port)
        for i in range(3):
            await w.send(get(f"http://origin.test:{port}/r{i}", "origin.test"))
            assert (await w.response()).status == 200
        assert origin.connections == 1  # one upstream connection, pooled between requests
        # A later request on the same client connection to a host outside the policy: 403.
        await w.send(get("http://elsewhere.test/", "elsewhere.test"))
        reply = await w.response()
        assert reply.status == 403 and reply.json()["error"] == "policy_denied"
        assert await w.closed()
        await proxy.close()
        await origin.close()
    net.run(main)


def test_pipelined_allowed_then_denied(net: Net):
    # §9 case 65 / Appendix A.7: the second request is parsed and decided on its own.
    async def main():
        origin, port, proxy = await origin_and_proxy(net)
        w = await Wire.open(proxy.host, proxy.port)
        await w.send(get(f"http://origin.test:{port}/allowed", "origin.test")
                     + get(f"http://origin.test:{port + 1}/blocked", "origin.test")
                     + get(f"http://origin.test:{port}/never", "origin.test"))
        first = await w.response()
        assert first.status == 200 and first.json()["target"] == "/allowed"
        second = await w.response()
        assert second.status == 403 and second.json()["port"] == port + 1
        assert await w.closed()
        assert [s.target for s in origin.seen] == ["/allowed"]
        await proxy.close()
        await origin.close()
    net.run(main)


def test_pipelined_requests_answered_in_order(net: Net):
    async def main():
        origin, port, proxy = await origin_and_proxy(net)
        w = await Wire.open(proxy.host, proxy.port)
        body = b'{"key":"val"}'
        await w.send(b"".join(get(f"http://origin.test:{port}/p{i}", "origin.test",
                                  method="POST", body=body) for i in range(5)))
        for i in range(5):
            reply = await w.response()
            assert reply.json()["target"] == f"/p{i}" and reply.json()["body"] == body.decode()
        await proxy.close()
        await origin.close()
    net.run(main)


def test_chunked_request_body_is_reframed(net: Net):
    async def main():
        origin, port, proxy = await origin_and_proxy(net)
        w = await Wire.open(proxy.host, proxy.port)
        await w.send(f"POST http://origin.test:{port}/up HTTP/1.1\r\nHost: origin.test\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n".encode()
                     + b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        reply = await w.response()
        assert reply.json()["body"] == "hello world"
        await proxy.close()
        await origin.close()
    net.run(main)


def test_https_in_forward_form_is_told_to_use_connect(net: Net):
    async def main():
        _, port, proxy = await origin_and_proxy(net)
        w = await Wire.open(proxy.host, proxy.port)
        await w.send(get(f"https://origin.test:{port}/test", "origin.test"))
        reply = await w.response()
        body = reply.json()
        assert reply.status == 400 and body["error"] == "use_connect" and "CONNECT" in body["detail"]
        assert reply.header("content-length") == str(len(reply.body))
        await proxy.close()
    net.run(main)


@pytest.mark.parametrize("raw,status", [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 400),  # origin-form to a proxy (§9 104)
    (b"GET ftp://origin.test:21/x HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET example.com/path HTTP/1.1\r\n\r\n", 400),
    (b"GET http:///path HTTP/1.1\r\n\r\n", 400),
    (b"POST http://origin.test/ HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"GET http://origin.test/ HTTP/1.1\r\nX: a\nEvil: b\r\n\r\n", 400),
    (b"GET http://origin.test/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET http://origin.test/ HTTP/2.0\r\n\r\n", 505),
    (b"\x16\x03\x01\x00\x05hello\r\n\r\n", 400),
    (b"GET http://origin.test/ HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n", 431),  # §9 81
    (b"GET http://origin.test/ HTTP/1.1\r\nX: " + b"a" * 20000, 431),
])
def test_malformed_requests_are_answered(net: Net, raw, status):
    async def main():
        _, _, proxy = await origin_and_proxy(net)
        w = await Wire.open(proxy.host, proxy.port)
        await w.send(raw)
        reply = await w.response()
        assert reply.status == status, reply.body
        assert reply.header("content-type") == "application/json" and reply.json()["error"]
        assert await w.closed()
        await proxy.close()
    net.run(main)


def test_request_head_timeout_is_408(net: Net):
    async def main():
        _, _, proxy = await origin_and_proxy(net, limits=Limits(head_timeout=0.3))
        w = await Wire.open(proxy.host, proxy.port)
        await w.send(b"GET http://origin.test/ HTTP/1.1\r\nHost: ori")
        reply = await w.response()
        assert reply.status == 408 and reply.json()["error"] == "request_timeout"
        silent = await Wire.open(proxy.host, proxy.port)
        assert (await silent.response()).status == 408  # a new connection that sends nothing
        await proxy.close()
    net.run(main)


def test_ssrf_and_dns_failures_are_distinct(net: Net):
    async def main():
        origin, port, proxy = await origin_and_proxy(
            net, names={"origin.test": [net.a], "internal.test": ["10.1.2.3"],
                        "loop.test": ["127.0.0.1"]})
        proxy.holder.swap(engine_for(f"""
        version: 1
        network_policies:
          any:
            endpoints:
              - {{ host: internal.test, port: {port} }}
              - {{ host: loop.test, port: {port} }}
              - {{ host: missing.test, port: {port} }}
              - {{ host: 169.254.169.254, port: 80 }}
              - {{ host: metadata.google.internal, port: 80 }}
            binaries: [{{ path: /usr/bin/curl }}]
        """))
        cases = [
            (f"http://internal.test:{port}/", 403, "ssrf_denied"),
            (f"http://loop.test:{port}/", 403, "ssrf_denied"),
            (f"http://missing.test:{port}/", 502, "dns_failed"),
            ("http://169.254.169.254/latest/meta-data/", 403, "ssrf_denied"),
            ("http://metadata.google.internal/computeMetadata/v1/", 403, "ssrf_denied"),
        ]
        for url, status, error in cases:
            w = await Wire.open(proxy.host, proxy.port)
            await w.send(get(url, "x"))
            reply = await w.response()
            body = reply.json()
            assert (reply.status, body["error"]) == (status, error), (url, body)
            if status == 403:
                assert {"host", "port", "binary", "policy", "reason", "hint"} <= set(body)
                assert body["policy"] == "any" and body["binary"] == "-"
        internal = [b for b in proxy.recorder.events if getattr(b, "kind", None) == "ssrf"]
        assert len(internal) == 4
        assert origin.seen == []
        await proxy.close()
        await origin.close()
    net.run(main)


def test_allowed_ips_mismatch_is_403(net: Net):
    # §9 case 32: the name resolves outside allowed_ips.
    async def main():
        origin, port, proxy = await origin_and_proxy(net, names={"origin.test": [net.b]})
        w = await Wire.open(proxy.host, proxy.port)
        await w.send(get(f"http://origin.test:{port}/", "origin.test"))
        reply = await w.response()
        assert reply.status == 403 and "not in allowed_ips" in reply.json()["reason"]
        await proxy.close()
        await origin.close()
    net.run(main)


def test_upstream_unreachable_and_timeout(net: Net):
    async def main():
        proxy = await start_proxy(net.proxy, f"""
        version: 1
        network_policies:
          r:
            endpoints:
              - {{ host: closed.test, port: 9, allowed_ips: ["{net.b}"] }}
              - {{ host: hole.test, port: 80, allowed_ips: ["10.78.0.0/24"] }}
            binaries: [{{ path: /usr/bin/curl }}]
        """, resolver=MapResolver({"closed.test": [net.b], "hole.test": [net.blackhole]}),
            limits=Limits(connect_timeout=0.5))
        w = await Wire.open(proxy.host, proxy.port)
        await w.send(get("http://closed.test:9/", "closed.test"))
        reply = await w.response()
        assert reply.status == 502 and reply.json()["error"] == "upstream_unreachable"
        w = await Wire.open(proxy.host, proxy.port)
        await w.send(get("http://hole.test/", "hole.test"))
        reply = await w.response()
        assert reply.status == 504 and reply.json()["error"] == "upstream_timeout"
        await proxy.close()
    net.run(main)


def test_hot_reload_applies_to_the_next_request(net: Net):
    async def main():
        origin, port, proxy = await origin_and_proxy(net)
        w = await Wire.open(proxy.host, proxy.port)
        await w.send(get(f"http://origin.test:{port}/1", "origin.test"))
        assert (await w.response()).status == 200
        proxy.holder.swap(engine_for("version: 1\nnetwork_policies: {}\n"))
        await w.send(get(f"http://origin.test:{port}/2", "origin.test"))
        reply = await w.response()
        assert reply.status == 403 and reply.json()["reason_code"] == "no_policies"
        await proxy.close()
        await origin.close()
    net.run(main)


def test_pooled_address_rechecked_against_the_current_policy(net: Net):
    async def main():
        origin, port, proxy = await origin_and_proxy(net)
        w = await Wire.open(proxy.host, proxy.port)
        await w.send(get(f"http://origin.test:{port}/1", "origin.test"))
        assert (await w.response()).status == 200
        # Same host and port still allowed, but allowed_ips no longer covers the pooled address.
        proxy.holder.swap(engine_for(policy("origin.test", port, allowed_ips='"10.9.9.0/24"')))
        await w.send(get(f"http://origin.test:{port}/2", "origin.test"))
        reply = await w.response()
        assert reply.status == 403 and reply.json()["error"] == "ssrf_denied"
        assert len(origin.seen) == 1
        await proxy.close()
        await origin.close()
    net.run(main)


def test_l7_rules_on_the_forward_path(net: Net):
    # §9 case 80 and canonicalised targets: /public/../secret is checked (and sent) as /secret.
    rules = """
            protocol: rest
            enforcement: enforce
            rules:
              - allow: { method: GET, path: "/public/**" }"""
    async def main():
        origin, port, proxy = await origin_and_proxy(net, extra=rules)
        for target, status in [("/public/a", 200), ("/public/../secret", 403), ("/public/%2e%2e/secret", 403),
                               ("/public//b/./c", 200)]:
            w = await Wire.open(proxy.host, proxy.port)
            await w.send(get(f"http://origin.test:{port}{target}", "origin.test"))
            reply = await w.response()
            assert reply.status == status, (target, reply.body)
            if status == 403:
                body = reply.json()
                assert body["rule"] == "GET /secret" and body["policy"] == "origin"
                assert reply.header("x-stockade-policy") == "origin"
        w = await Wire.open(proxy.host, proxy.port)
        await w.send(get(f"http://origin.test:{port}/public/x", "origin.test", method="POST", body=b"x"))
        assert (await w.response()).status == 403
        assert [s.target for s in origin.seen] == ["/public/a", "/public/b/c"]
        await proxy.close()
        await origin.close()
    net.run(main)


def test_l7_audit_forwards_and_records(net: Net):
    rules = """
            protocol: rest
            enforcement: audit
            access: read-only"""
    async def main():
        origin, port, proxy = await origin_and_proxy(net, extra=rules)
        w = await Wire.open(proxy.host, proxy.port)
        await w.send(get(f"http://origin.test:{port}/x", "origin.test", method="POST", body=b"1"))
        assert (await w.response()).status == 200
        assert proxy.events(HttpEvent)[-1].action is Action.AUDIT
        await proxy.close()
        await origin.close()
    net.run(main)


def test_response_framing_variants(net: Net):
    # §9 cases 66-70: HEAD with a length, 204, chunked with trailers, close-delimited.
    async def script(reader, writer):
        while True:
            head = await read_head(reader)
            path = head.split(b" ")[1]
            if path == b"/head":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            elif path == b"/204":
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            elif path == b"/chunked":
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"5\r\nhello\r\n0\r\nx-checksum: abc123\r\n\r\n")
            elif path == b"/close":
                writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello world")
                await writer.drain()
                return
            await writer.drain()

    async def main():
        raw = await RawServer(script).start(net.a, 0)
        port = raw.server.sockets[0].getsockname()[1]
        proxy = await start_proxy(net.proxy, policy("origin.test", port, allowed_ips=f'"{net.a}"'),
                                  resolver=MapResolver({"origin.test": [net.a]}))
        w = await Wire.open(proxy.host, proxy.port)
        base = f"http://origin.test:{port}"
        await w.send(get(f"{base}/head", "o", method="HEAD"))
        head = await w.response(head_request=True)
        assert head.status == 200 and head.header("content-length") == "1000"
        await w.send(get(f"{base}/204", "o"))
        assert (await w.response()).status == 204
        await w.send(get(f"{base}/chunked", "o"))
        chunked = await w.response()
        assert chunked.body == b"hello" and chunked.extra["trailers"] == ["x-checksum: abc123"]
        await w.send(get(f"{base}/close", "o"))
        closing = await w.response()
        assert closing.body == b"hello world" and closing.header("connection") == "close"
        assert raw.connections == 1
        await proxy.close()
        await raw.close()
    net.run(main)


def test_expect_100_continue(net: Net):
    async def main():
        origin, port, proxy = await origin_and_proxy(net)
        w = await Wire.open(proxy.host, proxy.port)
        await w.send(f"PUT http://origin.test:{port}/up HTTP/1.1\r\nHost: o\r\nContent-Length: 4\r\n"
                     "Expect: 100-continue\r\n\r\n".encode())
        interim = await w.response()
        assert interim.status == 100
        await w.send(b"data")
        final = await w.response()
        assert final.status == 200 and final.json()["body"] == "data"
        await proxy.close()
        await origin.close()
    net.run(main)


def test_connection_cap_answers_503(net: Net):
    async def main():
        origin, port, proxy = await origin_and_proxy(net, limits=Limits(max_connections=1))
        first = await Wire.open(proxy.host, proxy.port)
        await first.send(get(f"http://origin.test:{port}/", "o"))
        assert (await first.response()).status == 200
        second = await Wire.open(proxy.host, proxy.port)
        reply = await second.response()
        assert reply.status == 503 and reply.json()["error"] == "too_many_connections"
        first.close()
        await asyncio.sleep(0.1)
        third = await Wire.open(proxy.host, proxy.port)
        await third.send(get(f"http://origin.test:{port}/", "o"))
        assert (await third.response()).status == 200
        await proxy.close()
        await origin.close()
    net.run(main)


def test_http10_client_gets_an_unchunked_body(net: Net):
    async def script(reader, writer):
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    async def main():
        raw = await RawServer(script).start(net.a, 0)
        port = raw.server.sockets[0].getsockname()[1]
        proxy = await start_proxy(net.proxy, policy("origin.test", port, allowed_ips=f'"{net.a}"'),
                                  resolver=MapResolver({"origin.test": [net.a]}))
        w = await Wire.open(proxy.host, proxy.port)
        await w.send(f"GET http://origin.test:{port}/ HTTP/1.0\r\n\r\n".encode())
        reply = await w.response()
        assert reply.header("transfer-encoding") is None and reply.header("connection") == "close"
        assert reply.body == b"hello"
        await proxy.close()
        await raw.close()
    net.run(main)


def test_upstream_silence_is_a_504(net: Net):
    async def script(reader, writer):
        await read_head(reader)
        await asyncio.sleep(5)

    async def main():
        raw = await RawServer(script).start(net.a, 0)
        port = raw.server.sockets[0].getsockname()[1]
        proxy = await start_proxy(net.proxy, policy("origin.test", port, allowed_ips=f'"{net.a}"'),
                                  resolver=MapResolver({"origin.test": [net.a]}),
                                  limits=Limits(response_timeout=0.3))
        w = await Wire.open(proxy.host, proxy.port)
        await w.send(get(f"http://origin.test:{port}/", "o"))
        reply = await w.response()
        assert reply.status == 504 and reply.json()["error"] == "upstream_timeout"
        await proxy.close()
        await raw.close()
    net.run(main)


def test_garbage_from_the_upstream_is_a_502(net: Net):
    async def script(reader, writer):
        await read_head(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()

    async def main():
        raw = await RawServer(script).start(net.a, 0)
        port = raw.server.sockets[0].getsockname()[1]
        proxy = await start_proxy(net.proxy, policy("origin.test", port, allowed_ips=f'"{net.a}"'),
                                  resolver=MapResolver({"origin.test": [net.a]}))
        w = await Wire.open(proxy.host, proxy.port)
        await w.send(get(f"http://origin.test:{port}/", "o"))
        reply = await w.response()
        assert reply.status == 502 and reply.json()["error"] == "upstream_protocol_error"
        await proxy.close()
        await raw.close()
    net.run(main)
