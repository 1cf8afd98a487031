"""CONNECT tunnels, in process: raw relay, plaintext L7 inside the tunnel, classification,
WebSocket, SSRF, DNS pinning. network.md §9 cases 25-31, 60-61, 65, 71-73, 101, 103."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os

import pytest

from stockade.events.types import Action, FindingEvent, HttpEvent, NetworkEvent
from stockade.network.connect import classify
from stockade.network.limits import Limits

from .support.harness import (  # noqa: F401
    MapResolver,
    Net,
    Scene,
    SequenceResolver,
    engine_for,
    inference_echo,
    net,
    scene,
    start_proxy,
)
from .support.origins import Origin, RawServer, read_head, tcp_echo
from .support.wire import Wire, get

pytestmark = pytest.mark.netns

L7 = """
            protocol: rest
            enforcement: enforce
            rules:
              - allow: { method: GET, path: "/v1/**" }"""


def policy(host: str, port: int, ips: str, extra: str = "") -> str:
    return f"""
    version: 1
    network_policies:
      api:
        endpoints:
          - host: {host}
            port: {port}
            allowed_ips: [{ips}]{extra}
        binaries: [{{ path: /usr/bin/curl }}]
    """


async def connect(proxy, authority: str) -> tuple[Wire, object]:
    """CONNECT through `proxy` (a Proxy, or a Scene: then the connection closes with it)."""
    w = await (proxy.wire() if isinstance(proxy, Scene) else Wire.open(proxy.host, proxy.port))
    await w.send(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
    return w, await w.response(head_request=True)


def tunnelling(net: Net, upstream, host: str, extra: str = "", **proxy_kw):
    """`upstream` on net.a as `host`, allowed through the proxy (with `extra` endpoint config)."""
    return scene(net, upstream, lambda port: policy(host, port, f'"{net.a}"', extra),
                 names={host: [net.a]}, **proxy_kw)


@pytest.mark.parametrize("data,kind", [
    (b"GET / HTTP/1.1", "http"), (b"POST /api", "http"), (b"DELETE /foo", "http"),
    (b"\x00\x00\x00\x08", "other"), (b"HELLO", None), (b"HELLO!", "other"),
    (b"\x16\x03\x01", "tls"), (b"\x16\x03\x03", "tls"), (b"\x16\x03\x00", "tls"),
    (b"SSH-2.0-OpenSSH", "other"), (b"\xff\xfe\x00", "other"), (b"\x17\x03\x03", "other"),
    (b"\x16", None), (b"\x16\x03", None), (b"G", None), (b"GE", None), (b"", None),
])
def test_classification_waits_for_enough_bytes(data, kind):
    # §9 case 73, and Appendix A.5: a short first segment is "not known yet", never "raw".
    assert classify(data) == kind


def test_raw_tunnel_relays_bytes_both_ways(net: Net):
    async def main():
        async with tunnelling(net, tcp_echo(), "echo.test") as s:
            w, reply = await connect(s, f"echo.test:{s.port}")
            assert reply.status == 200 and reply.headers == []
            payload = os.urandom(300_000)
            await w.send(payload)
            assert await w.read_exactly(len(payload)) == payload
            w.writer.write_eof()  # half-close travels through; the echo server then closes
            assert await w.read_to_eof() == b""
            allowed = s.proxy.events(NetworkEvent)
            assert allowed[0].action is Action.ALLOWED and allowed[0].via == "connect"
    net.run(main)


def test_early_data_after_connect_is_not_lost(net: Net):
    # Appendix A.8: bytes sent right behind the CONNECT head reach the upstream.
    async def main():
        async with tunnelling(net, tcp_echo(), "echo.test") as s:
            w = await s.wire()
            await w.send(f"CONNECT echo.test:{s.port} HTTP/1.1\r\n\r\nearly bytes".encode())
            assert (await w.response(head_request=True)).status == 200
            assert await w.read_exactly(11) == b"early bytes"
    net.run(main)


def test_ipv6_authority(net: Net):
    async def main():
        echo = await tcp_echo().start(net.v6, 0)
        port = echo.server.sockets[0].getsockname()[1]
        proxy = await start_proxy(net.proxy, policy(f'"{net.v6}"', port, '"fd77::/64"'))
        w, reply = await connect(proxy, f"[{net.v6}]:{port}")
        assert reply.status == 200
        await w.send(b"ping")
        assert await w.read_exactly(4) == b"ping"
        await proxy.close()
        await echo.close()
    net.run(main)


@pytest.mark.parametrize("target", ["example.com", "example.com:0", "[::1]", "a b:443"])
def test_bad_connect_targets_are_answered(net: Net, target):
    async def main():
        proxy = await start_proxy(net.proxy, "version: 1\nnetwork_policies: {}\n")
        w, reply = await connect(proxy, target)
        w.buffer = b""
        assert reply.status == 400
        await proxy.close()
    net.run(main)


def test_connect_denials_carry_every_field(net: Net):
    async def main():
        proxy = await start_proxy(net.proxy, f"""
        version: 1
        network_policies:
          loop:
            endpoints:
              - {{ host: 127.0.0.1, port: 80 }}
              - {{ host: 169.254.169.254, port: 80 }}
              - {{ host: 10.0.0.5, port: 6443 }}
            binaries: [{{ path: /usr/bin/curl }}]
        """)
        w, reply = await connect(proxy, "api.example.com:443")
        body = json.loads(await w.read_exactly(int(reply.header("content-length"))))
        assert reply.status == 403 and body["error"] == "policy_denied"
        assert body["detail"] == "CONNECT api.example.com:443 not permitted by policy"
        assert body["host"] == "api.example.com" and body["port"] == 443
        assert body["binary"] == "-" and body["policy"] is None
        assert "api.example.com" in body["reason"] and "api.example.com" in body["hint"]
        for authority, fragment in [("127.0.0.1:80", "never allowed"),  # §9 25
                                    ("169.254.169.254:80", "never allowed"),  # §9 26
                                    ("10.0.0.5:6443", "control-plane")]:  # §9 31
            w, reply = await connect(proxy, authority)
            body = json.loads(await w.read_exactly(int(reply.header("content-length"))))
            assert reply.status == 403 and body["error"] == "ssrf_denied", body
            assert fragment in body["reason"] and body["policy"] == "loop"
        ssrf = [e for e in proxy.events(NetworkEvent) if e.stage == "ssrf"]
        assert len(ssrf) == 3
        await proxy.close()
    net.run(main)


def test_private_literal_and_hostless_endpoints(net: Net):
    # §9 cases 27-29: allowed_ips, a hostless endpoint, and an explicitly named private literal.
    async def main():
        echo = await tcp_echo().start(net.a, 0)
        port = echo.server.sockets[0].getsockname()[1]
        for endpoint in (f'{{ host: {net.a}, port: {port}, allowed_ips: ["10.77.0.0/24"] }}',
                         f'{{ port: {port}, allowed_ips: ["10.77.0.0/24"] }}',
                         f'{{ host: {net.a}, port: {port} }}'):
            proxy = await start_proxy(net.proxy, f"""
            version: 1
            network_policies:
              p:
                endpoints: [{endpoint}]
                binaries: [{{ path: /usr/bin/curl }}]
            """)
            w, reply = await connect(proxy, f"{net.a}:{port}")
            assert reply.status == 200, endpoint
            await proxy.close()
        await echo.close()
    net.run(main)


def test_numeric_spellings_of_loopback_are_refused(net: Net):
    # A hostless allowed_ips endpoint matches any name; what it resolves to is what counts.
    async def main():
        from stockade.network.ssrf import SystemResolver
        proxy = await start_proxy(net.proxy, """
        version: 1
        network_policies:
          any:
            endpoints: [{ port: 80, allowed_ips: ["10.0.0.0/8"] }]
            binaries: [{ path: /usr/bin/curl }]
        """, resolver=SystemResolver())
        for spelling in ("2130706433", "0177.0.0.1", "0x7f.1", "127.1"):
            w, reply = await connect(proxy, f"{spelling}:80")
            assert reply.status == 403, spelling
            body = json.loads(await w.read_exactly(int(reply.header("content-length"))))
            assert body["error"] == "ssrf_denied" and "127.0.0.1" in body["reason"]
        await proxy.close()
    net.run(main)


def test_dns_pinning_a_rebinding_resolver_cannot_redirect_the_dial(net: Net):
    async def main():
        good = await tcp_echo().start(net.a, 0)
        port = good.server.sockets[0].getsockname()[1]
        evil = await tcp_echo().start(net.b, port)
        # First answer: the allowed address. Every later answer: another one, then loopback.
        resolver = SequenceResolver([net.a], [net.b], ["127.0.0.1"])
        proxy = await start_proxy(net.proxy, policy("rebind.test", port, f'"{net.a}"'),
                                  resolver=resolver)
        w, reply = await connect(proxy, f"rebind.test:{port}")
        assert reply.status == 200 and resolver.calls == 1  # resolved exactly once
        await w.send(b"x")
        assert await w.read_exactly(1) == b"x"
        assert good.connections == 1 and evil.connections == 0
        # The next connection resolves again and is validated again: denied, nothing dialled.
        w, reply = await connect(proxy, f"rebind.test:{port}")
        assert reply.status == 403 and resolver.calls == 2
        w, reply = await connect(proxy, f"rebind.test:{port}")
        assert reply.status == 403 and resolver.calls == 3
        assert evil.connections == 0
        await proxy.close()
        await good.close()
        await evil.close()
    net.run(main)


def test_mixed_answers_are_refused_whole(net: Net):
    async def main():
        proxy = await start_proxy(net.proxy, policy("mixed.test", 443, f'"{net.a}"'),
                                  resolver=MapResolver({"mixed.test": [net.a, "127.0.0.1"]}))
        w, reply = await connect(proxy, "mixed.test:443")
        assert reply.status == 403
        await proxy.close()
    net.run(main)


@contextlib.asynccontextmanager
async def l7_tunnel(net: Net, enforcement: str = "enforce", limits=None):
    """An Origin as api.test with the L7 rules, and an open tunnel to it: (scene, wire)."""
    extra = L7.replace("enforcement: enforce", f"enforcement: {enforcement}")
    async with tunnelling(net, Origin(), "api.test", extra, limits=limits) as s:
        w, reply = await connect(s, f"api.test:{s.port}")
        assert reply.status == 200
        yield s, w


def test_l7_inside_a_plaintext_tunnel(net: Net):
    # §9 case 60: GET /v1/models passes, POST /v1/messages and GET /v2/anything get 403.
    async def main():
        async with l7_tunnel(net) as (s, w):
            await w.send(get("/v1/models", f"api.test:{s.port}"))
            assert (await w.response()).status == 200
            await w.send(get("/v2/anything", "api.test"))
            reply = await w.response()
            body = reply.json()
            assert reply.status == 403 and reply.header("x-stockade-policy") == "api"
            assert {"error", "detail", "policy", "rule", "reason", "hint"} <= set(body)
            assert body["error"] == "policy_denied" and body["rule"] == "GET /v2/anything"
            assert await w.closed()
            events = s.proxy.events(HttpEvent)
            assert [(e.action, e.path) for e in events] == [(Action.ALLOWED, "/v1/models"),
                                                             (Action.DENIED, "/v2/anything")]
    net.run(main)


def test_l7_pipelined_in_tunnel_first_answered_then_403(net: Net):
    async def main():
        async with l7_tunnel(net) as (s, w):
            await w.send(get("/v1/a", "api.test") + get("/v1/b", "api.test", method="POST", body=b"x")
                         + get("/v1/c", "api.test"))
            assert (await w.response()).json()["target"] == "/v1/a"
            assert (await w.response()).status == 403
            assert await w.closed()
            assert [seen.target for seen in s.upstream.seen] == ["/v1/a"]
    net.run(main)


def test_l7_audit_forwards(net: Net):
    async def main():
        async with l7_tunnel(net, "audit") as (s, w):
            await w.send(get("/v2/x", "api.test", method="DELETE"))
            assert (await w.response()).status == 200
            assert s.proxy.events(HttpEvent)[-1].action is Action.AUDIT
    net.run(main)


def test_one_byte_first_segment_is_still_inspected(net: Net):
    # Appendix A.5: OpenShell relays such a tunnel raw and skips the L7 rules.
    async def main():
        async with l7_tunnel(net) as (s, w):
            request = get("/admin", "api.test")
            await w.send(request[:1])
            await asyncio.sleep(0.05)
            await w.send(request[1:])
            assert (await w.response()).status == 403
            assert s.upstream.seen == []
    net.run(main)


@pytest.mark.parametrize("first", [b"SSH-2.0-OpenSSH_9.6\r\n", b"get /v1/x HTTP/1.1\r\n\r\n", b""])
def test_non_http_on_an_l7_endpoint_fails_closed(net: Net, first):
    async def main():
        async with l7_tunnel(net, limits=Limits(classify_timeout=0.3)) as (s, w):
            if first:
                await w.send(first)
            reply = await w.response()
            assert reply.status == 403 and "neither TLS nor" in reply.json()["detail"]
            assert s.upstream.connections <= 1 and s.upstream.seen == []
    net.run(main)


def test_host_header_must_match_the_tunnel(net: Net):
    async def main():
        async with l7_tunnel(net) as (s, w):
            await w.send(get("/v1/x", "evil.test"))
            reply = await w.response()
            assert reply.status == 421 and reply.json()["error"] == "host_mismatch"
    net.run(main)


def websocket_script():
    async def script(reader, writer):
        head = await read_head(reader)
        if b"upgrade: websocket" in head.lower():
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n")
            await writer.drain()
            frame = await reader.readexactly(2 + 4 + 5)  # masked text frame, 5 bytes
            mask, payload = frame[2:6], frame[6:]
            text = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            reply = b"echo: " + text
            writer.write(bytes([0x81, len(reply)]) + reply)
            await writer.drain()
        else:  # an unsolicited upgrade
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(1)
    return script


def test_websocket_upgrade_through_an_l7_tunnel(net: Net):
    # §9 cases 71-72: decided as a GET, then relayed raw.
    async def main():
        async with tunnelling(net, RawServer(websocket_script()), "ws.test", L7) as s:
            w, reply = await connect(s, f"ws.test:{s.port}")
            key = base64.b64encode(os.urandom(16)).decode()
            await w.send(get("/v1/socket", "ws.test", "Upgrade: websocket",
                             "Connection: keep-alive, Upgrade", f"Sec-WebSocket-Key: {key}",
                             "Sec-WebSocket-Version: 13"))
            switched = await w.response()
            assert switched.status == 101 and switched.header("upgrade") == "websocket"
            mask = b"\x01\x02\x03\x04"
            await w.send(bytes([0x81, 0x85]) + mask
                         + bytes(b ^ mask[i % 4] for i, b in enumerate(b"hello")))
            frame = await w.read_exactly(2 + 11)
            assert frame[2:] == b"echo: hello"
            # The same upgrade on a path the rules deny never reaches the upstream.
            w2, _ = await connect(s, f"ws.test:{s.port}")
            await w2.send(get("/admin/socket", "ws.test", "Upgrade: websocket", "Connection: Upgrade"))
            assert (await w2.response()).status == 403
            assert s.upstream.connections == 2  # the second tunnel was dialled, its request never sent
    net.run(main)


def test_unsolicited_101_is_a_finding_and_closes(net: Net):
    # §9 case 71: a 101 to a request that did not ask for an upgrade.
    async def main():
        async with tunnelling(net, RawServer(websocket_script()), "ws.test", L7) as s:
            w, _ = await connect(s, f"ws.test:{s.port}")
            await w.send(get("/v1/plain", "ws.test"))
            reply = await w.response()
            assert reply.status == 502 and reply.json()["error"] == "unsolicited_upgrade"
            assert await w.closed()
            findings = s.proxy.events(FindingEvent)
            assert findings and findings[0].kind == "unsolicited_upgrade"
    net.run(main)


def test_hot_reload_reaches_an_open_l7_tunnel(net: Net):
    async def main():
        async with l7_tunnel(net) as (s, w):
            await w.send(get("/v1/a", "api.test"))
            assert (await w.response()).status == 200
            s.proxy.holder.swap(engine_for("version: 1\nnetwork_policies: {}\n"))
            await w.send(get("/v1/b", "api.test"))
            reply = await w.response()
            assert reply.status == 403 and reply.json()["reason_code"] == "no_policies"
    net.run(main)


def test_inference_local_without_a_router(net: Net):
    # §10 #869: only port 443 is intercepted; other ports go through the policy.
    async def main():
        proxy = await start_proxy(net.proxy, "version: 1\nnetwork_policies: {}\n")
        w, reply = await connect(proxy, "inference.local:443")
        body = json.loads(await w.read_exactly(int(reply.header("content-length"))))
        assert reply.status == 503 and body["error"] == "inference_unavailable"
        w, reply = await connect(proxy, "inference.local:8080")
        assert reply.status == 403
        w = await Wire.open(proxy.host, proxy.port)
        await w.send(get("http://inference.local/v1/models", "inference.local"))
        assert (await w.response()).status == 503
        await proxy.close()
    net.run(main)


def test_inference_handler_gets_the_forward_connection(net: Net):
    async def main():
        proxy = await start_proxy(net.proxy, "version: 1\nnetwork_policies: {}\n",
                                  inference=inference_echo)
        w = await Wire.open(proxy.host, proxy.port)
        await w.send(get("http://inference.local/v1/models", "inference.local"))
        reply = await w.response()
        assert reply.json() == {"scheme": "http", "line": "GET http://inference.local/v1/models HTTP/1.1"}
        await proxy.close()
    net.run(main)


def test_connect_after_forward_requests_on_one_connection(net: Net):
    async def main():
        echo = await tcp_echo().start(net.a, 0)
        port = echo.server.sockets[0].getsockname()[1]
        origin = await Origin().start(net.a, 0)
        oport = origin.server.sockets[0].getsockname()[1]
        proxy = await start_proxy(net.proxy, f"""
        version: 1
        network_policies:
          p:
            endpoints:
              - {{ host: echo.test, port: {port}, allowed_ips: ["{net.a}"] }}
              - {{ host: echo.test, port: {oport}, allowed_ips: ["{net.a}"] }}
            binaries: [{{ path: /usr/bin/curl }}]
        """, resolver=MapResolver({"echo.test": [net.a]}))
        w = await Wire.open(proxy.host, proxy.port)
        await w.send(get(f"http://echo.test:{oport}/", "echo.test"))
        assert (await w.response()).status == 200
        await w.send(f"CONNECT echo.test:{port} HTTP/1.1\r\n\r\n".encode())
        assert (await w.response(head_request=True)).status == 200
        await w.send(b"tunnel")
        assert await w.read_exactly(6) == b"tunnel"
        await proxy.close()
        await origin.close()
        await echo.close()
    net.run(main)


def test_a_client_slow_to_start_is_still_inspected(net: Net):
    # A client may build its TLS context only after the 200: the first byte may take a while.
    async def main():
        async with l7_tunnel(net) as (s, w):
            await asyncio.sleep(1.0)
            await w.send(get("/v1/slow", "api.test"))
            assert (await w.response()).status == 200
            await w.send(get("/admin", "api.test"))
            assert (await w.response()).status == 403
    net.run(main)


def test_idle_tunnels_are_closed(net: Net):
    async def main():
        async with tunnelling(net, tcp_echo(), "echo.test", limits=Limits(idle_timeout=0.4)) as s:
            w, reply = await connect(s, f"echo.test:{s.port}")
            await w.send(b"a")
            assert await w.read_exactly(1) == b"a"
            started = asyncio.get_running_loop().time()
            assert await w.read_to_eof() == b""
            assert asyncio.get_running_loop().time() - started < 3
    net.run(main)


def test_revalidate_ends_raw_tunnels_the_new_policy_refuses(net: Net):
    async def main():
        async with tunnelling(net, tcp_echo(), "echo.test") as s:
            w, _ = await connect(s, f"echo.test:{s.port}")
            await w.send(b"1")
            assert await w.read_exactly(1) == b"1"
            assert s.proxy.server.revalidate() == 0  # same policy: nothing to end
            await w.send(b"2")
            assert await w.read_exactly(1) == b"2"
            s.proxy.holder.swap(engine_for("version: 1\nnetwork_policies: {}\n"))
            assert s.proxy.server.revalidate() == 1
            with pytest.raises((EOFError, ConnectionResetError)):
                await w.read_exactly(1)
            denied = [e for e in s.proxy.events(NetworkEvent) if e.action is Action.DENIED]
            assert denied and denied[-1].reason_code == "no_policies"
    net.run(main)


def test_upstream_closing_an_idle_l7_tunnel_closes_the_client_side(net: Net):
    async def script(reader, writer):
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.2)  # then the server's keep-alive timeout closes the connection

    async def main():
        async with tunnelling(net, RawServer(script), "api.test", L7) as s:
            w, _ = await connect(s, f"api.test:{s.port}")
            await w.send(get("/v1/a", "api.test"))
            assert (await w.response()).body == b"ok"
            assert await w.read_to_eof() == b""  # the close is passed on, not a later 502
    net.run(main)


@pytest.mark.parametrize("uvloop", [True, False], ids=["uvloop", "asyncio"])
def test_raw_tunnel_carries_bulk_bytes_both_ways_with_a_half_close(net: Net, uvloop: bool):
    """Every byte in order both ways, bytes sent with the CONNECT itself, and the client's
    half-close reaching the upstream, which answers after it."""
    up_payload = os.urandom(3 << 20)

    async def script(reader, writer):
        digest = hashlib.sha256()
        while chunk := await reader.read(1 << 16):
            digest.update(chunk)
        writer.write(digest.digest() + up_payload)  # only after our EOF: the half-close arrived
        await writer.drain()

    async def main():
        async with tunnelling(net, RawServer(script), "bulk.test") as s:
            sent = os.urandom(5 << 20)
            w = await Wire.open(s.proxy.host, s.proxy.port, timeout=20)
            head = f"CONNECT bulk.test:{s.port} HTTP/1.1\r\nHost: bulk.test:{s.port}\r\n\r\n".encode()
            await w.send(head + sent[:1000])  # early data, in the CONNECT's own segment
            assert (await w.read_until(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
            await w.send(sent[1000:])
            w.writer.write_eof()
            back = await w.read_to_eof()
            assert back[:32] == hashlib.sha256(sent).digest()
            assert back[32:] == up_payload
        assert not s.proxy.server.tunnels
    net.run(main, uvloop=uvloop)
