"""The forward proxy (absolute-form http://), in process inside the test namespace.

Covers network.md §9 cases 32, 65, 76-81, 104 and the keep-alive fixes of Appendix A.7.
"""

from __future__ import annotations

import asyncio

import pytest

from stockade.events.types import Action, HttpEvent, NetworkEvent
from stockade.network.limits import Limits

from .support.harness import MapResolver, Net, engine_for, net, scene, start_proxy  # noqa: F401
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


def forwarding(net: Net, upstream=None, *, extra: str = "", names=None, **proxy_kw):
    """An Origin (or the RawServer given) on net.a as origin.test, and the proxy in front."""
    return scene(net, upstream or Origin(),
                 lambda port: policy("origin.test", port, extra=extra, allowed_ips=f'"{net.a}"'),
                 names=names or {"origin.test": [net.a]}, **proxy_kw)


def test_forward_get_rewrites_the_request(net: Net):
    async def main():
        async with forwarding(net) as s:
            reply = await s.ask(get(f"http://origin.test:{s.port}/api?x=1", "evil.example",
                                    "Proxy-Authorization: Basic Zm9vOmJhcg==",
                                    "Proxy-Connection: keep-alive", "Connection: keep-alive, X-Hop",
                                    "X-Hop: 1", "Accept: */*"))
            assert reply.status == 200 and reply.header("via") == "1.1 stockade"
            seen = s.upstream.seen[0]
            assert seen.target == "/api?x=1"
            assert seen.header("host") == f"origin.test:{s.port}"  # the URL wins over the Host header
            assert seen.header("proxy-authorization") is None and seen.header("proxy-connection") is None
            assert seen.header("x-hop") is None and seen.header("accept") == "*/*"
            assert seen.header("via") == "1.1 stockade"
            http = s.proxy.events(HttpEvent)
            assert http[0].action is Action.ALLOWED and http[0].path == "/api" and http[0].status == 200
            assert s.proxy.events(NetworkEvent)[0].upstream == f"{net.a}:{s.port}"
    net.run(main)


def test_keep_alive_decides_every_request_and_reuses_the_upstream(net: Net):
    async def main():
        async with forwarding(net) as s:
            w = await s.wire()
            for i in range(3):
                await w.send(get(f"http://origin.test:{s.port}/r{i}", "origin.test"))
                assert (await w.response()).status == 200
            assert s.upstream.connections == 1  # one upstream connection, pooled between requests
            # A later request on the same client connection to a host outside the policy: 403.
            await w.send(get("http://elsewhere.test/", "elsewhere.test"))
            reply = await w.response()
            assert reply.status == 403 and reply.json()["error"] == "policy_denied"
            assert await w.closed()
    net.run(main)


def test_pipelined_allowed_then_denied(net: Net):
    # §9 case 65 / Appendix A.7: the second request is parsed and decided on its own.
    async def main():
        async with forwarding(net) as s:
            w = await s.wire()
            await w.send(get(f"http://origin.test:{s.port}/allowed", "origin.test")
                         + get(f"http://origin.test:{s.port + 1}/blocked", "origin.test")
                         + get(f"http://origin.test:{s.port}/never", "origin.test"))
            first = await w.response()
            assert first.status == 200 and first.json()["target"] == "/allowed"
            second = await w.response()
            assert second.status == 403 and second.json()["port"] == s.port + 1
            assert await w.closed()
            assert [seen.target for seen in s.upstream.seen] == ["/allowed"]
    net.run(main)


def test_pipelined_requests_answered_in_order(net: Net):
    async def main():
        async with forwarding(net) as s:
            w = await s.wire()
            body = b'{"key":"val"}'
            await w.send(b"".join(get(f"http://origin.test:{s.port}/p{i}", "origin.test",
                                      method="POST", body=body) for i in range(5)))
            for i in range(5):
                reply = await w.response()
                assert reply.json()["target"] == f"/p{i}" and reply.json()["body"] == body.decode()
    net.run(main)


def test_chunked_request_body_is_reframed(net: Net):
    async def main():
        async with forwarding(net) as s:
            reply = await s.ask(f"POST http://origin.test:{s.port}/up HTTP/1.1\r\nHost: origin.test\r\n"
                                "Transfer-Encoding: chunked\r\n\r\n".encode()
                                + b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
            assert reply.json()["body"] == "hello world"
    net.run(main)


def test_https_in_forward_form_is_told_to_use_connect(net: Net):
    async def main():
        async with forwarding(net) as s:
            reply = await s.ask(get(f"https://origin.test:{s.port}/test", "origin.test"))
            body = reply.json()
            assert reply.status == 400 and body["error"] == "use_connect" and "CONNECT" in body["detail"]
            assert reply.header("content-length") == str(len(reply.body))
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
        async with forwarding(net) as s:
            w = await s.wire()
            await w.send(raw)
            reply = await w.response()
            assert reply.status == status, reply.body
            assert reply.header("content-type") == "application/json" and reply.json()["error"]
            assert await w.closed()
    net.run(main)


def test_request_head_timeout_is_408(net: Net):
    async def main():
        async with forwarding(net, limits=Limits(head_timeout=0.3)) as s:
            reply = await s.ask(b"GET http://origin.test/ HTTP/1.1\r\nHost: ori")
            assert reply.status == 408 and reply.json()["error"] == "request_timeout"
            silent = await s.wire()
            assert (await silent.response()).status == 408  # a new connection that sends nothing
    net.run(main)


def test_ssrf_and_dns_failures_are_distinct(net: Net):
    async def main():
        async with forwarding(net, names={"origin.test": [net.a], "internal.test": ["10.1.2.3"],
                                          "loop.test": ["127.0.0.1"]}) as s:
            port = s.port
            s.proxy.holder.swap(engine_for(f"""
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
                reply = await s.ask(get(url, "x"))
                body = reply.json()
                assert (reply.status, body["error"]) == (status, error), (url, body)
                if status == 403:
                    assert {"host", "port", "binary", "policy", "reason", "hint"} <= set(body)
                    assert body["policy"] == "any" and body["binary"] == "-"
            internal = [b for b in s.proxy.recorder.events if getattr(b, "kind", None) == "ssrf"]
            assert len(internal) == 4
            assert s.upstream.seen == []
    net.run(main)


def test_allowed_ips_mismatch_is_403(net: Net):
    # §9 case 32: the name resolves outside allowed_ips.
    async def main():
        async with forwarding(net, names={"origin.test": [net.b]}) as s:
            reply = await s.ask(get(f"http://origin.test:{s.port}/", "origin.test"))
            assert reply.status == 403 and "not in allowed_ips" in reply.json()["reason"]
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
        try:
            w = await Wire.open(proxy.host, proxy.port)
            await w.send(get("http://closed.test:9/", "closed.test"))
            reply = await w.response()
            assert reply.status == 502 and reply.json()["error"] == "upstream_unreachable"
            w.close()
            w = await Wire.open(proxy.host, proxy.port)
            await w.send(get("http://hole.test/", "hole.test"))
            reply = await w.response()
            assert reply.status == 504 and reply.json()["error"] == "upstream_timeout"
            w.close()
        finally:
            await proxy.close()
    net.run(main)


def test_hot_reload_applies_to_the_next_request(net: Net):
    async def main():
        async with forwarding(net) as s:
            w = await s.wire()
            await w.send(get(f"http://origin.test:{s.port}/1", "origin.test"))
            assert (await w.response()).status == 200
            s.proxy.holder.swap(engine_for("version: 1\nnetwork_policies: {}\n"))
            await w.send(get(f"http://origin.test:{s.port}/2", "origin.test"))
            reply = await w.response()
            assert reply.status == 403 and reply.json()["reason_code"] == "no_policies"
    net.run(main)


def test_pooled_address_rechecked_against_the_current_policy(net: Net):
    async def main():
        async with forwarding(net) as s:
            w = await s.wire()
            await w.send(get(f"http://origin.test:{s.port}/1", "origin.test"))
            assert (await w.response()).status == 200
            # Same host and port still allowed, but allowed_ips no longer covers the pooled address.
            s.proxy.holder.swap(engine_for(policy("origin.test", s.port, allowed_ips='"10.9.9.0/24"')))
            await w.send(get(f"http://origin.test:{s.port}/2", "origin.test"))
            reply = await w.response()
            assert reply.status == 403 and reply.json()["error"] == "ssrf_denied"
            assert len(s.upstream.seen) == 1
    net.run(main)


def test_l7_rules_on_the_forward_path(net: Net):
    # §9 case 80 and canonicalised targets: /public/../secret is checked (and sent) as /secret.
    rules = """
            protocol: rest
            enforcement: enforce
            rules:
              - allow: { method: GET, path: "/public/**" }"""
    async def main():
        async with forwarding(net, extra=rules) as s:
            for target, status in [("/public/a", 200), ("/public/../secret", 403),
                                   ("/public/%2e%2e/secret", 403), ("/public//b/./c", 200)]:
                reply = await s.ask(get(f"http://origin.test:{s.port}{target}", "origin.test"))
                assert reply.status == status, (target, reply.body)
                if status == 403:
                    body = reply.json()
                    assert body["rule"] == "GET /secret" and body["policy"] == "origin"
                    assert reply.header("x-stockade-policy") == "origin"
            reply = await s.ask(get(f"http://origin.test:{s.port}/public/x", "origin.test",
                                    method="POST", body=b"x"))
            assert reply.status == 403
            assert [seen.target for seen in s.upstream.seen] == ["/public/a", "/public/b/c"]
    net.run(main)


def test_l7_audit_forwards_and_records(net: Net):
    rules = """
            protocol: rest
            enforcement: audit
            access: read-only"""
    async def main():
        async with forwarding(net, extra=rules) as s:
            reply = await s.ask(get(f"http://origin.test:{s.port}/x", "origin.test", method="POST",
                                    body=b"1"))
            assert reply.status == 200
            assert s.proxy.events(HttpEvent)[-1].action is Action.AUDIT
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
        async with forwarding(net, RawServer(script)) as s:
            w = await s.wire()
            base = f"http://origin.test:{s.port}"
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
            assert s.upstream.connections == 1
    net.run(main)


def test_expect_100_continue(net: Net):
    async def main():
        async with forwarding(net) as s:
            w = await s.wire()
            await w.send(f"PUT http://origin.test:{s.port}/up HTTP/1.1\r\nHost: o\r\n"
                         "Content-Length: 4\r\nExpect: 100-continue\r\n\r\n".encode())
            interim = await w.response()
            assert interim.status == 100
            await w.send(b"data")
            final = await w.response()
            assert final.status == 200 and final.json()["body"] == "data"
    net.run(main)


def test_connection_cap_answers_503(net: Net):
    async def main():
        async with forwarding(net, limits=Limits(max_connections=1)) as s:
            first = await s.wire()
            await first.send(get(f"http://origin.test:{s.port}/", "o"))
            assert (await first.response()).status == 200
            second = await s.wire()
            reply = await second.response()
            assert reply.status == 503 and reply.json()["error"] == "too_many_connections"
            first.close()
            await asyncio.sleep(0.1)
            reply = await s.ask(get(f"http://origin.test:{s.port}/", "o"))
            assert reply.status == 200
    net.run(main)


def test_http10_client_gets_an_unchunked_body(net: Net):
    async def script(reader, writer):
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    async def main():
        async with forwarding(net, RawServer(script)) as s:
            reply = await s.ask(f"GET http://origin.test:{s.port}/ HTTP/1.0\r\n\r\n".encode())
            assert reply.header("transfer-encoding") is None and reply.header("connection") == "close"
            assert reply.body == b"hello"
    net.run(main)


def test_upstream_silence_is_a_504(net: Net):
    async def script(reader, writer):
        await read_head(reader)
        await asyncio.sleep(5)

    async def main():
        async with forwarding(net, RawServer(script), limits=Limits(response_timeout=0.3)) as s:
            reply = await s.ask(get(f"http://origin.test:{s.port}/", "o"))
            assert reply.status == 504 and reply.json()["error"] == "upstream_timeout"
    net.run(main)


def test_garbage_from_the_upstream_is_a_502(net: Net):
    async def script(reader, writer):
        await read_head(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()

    async def main():
        async with forwarding(net, RawServer(script)) as s:
            reply = await s.ask(get(f"http://origin.test:{s.port}/", "o"))
            assert reply.status == 502 and reply.json()["error"] == "upstream_protocol_error"
    net.run(main)
