"""One client connection driven by hand: keep-alive refusal (PR #819), framing, port 80, sources."""

from __future__ import annotations

import json
import time

import pytest
import trustme

from stockade.events.store import Route as StoredRoute
from stockade.events.store import Store
from stockade.events.types import HttpEvent, InferenceEvent
from stockade.inference import RouterConfig, StoreRoutes
from stockade.inference.routes import make_route

from .backends import FakeBackend
from .conftest import OPENAI_KEY, openai_route

CHAT = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
JSON = [("Content-Type", "application/json")]


def test_a_non_inference_request_after_inference_is_403_and_closes(both, openai_backend):
    conn = both.raw()
    first = conn.request("POST", "/v1/chat/completions", CHAT, JSON)
    assert first.status == 200 and first.header("transfer-encoding") == "chunked"
    assert conn.request("POST", "/v1/chat/completions", CHAT, JSON).status == 200  # kept alive
    refused = conn.request("GET", "/admin/config")
    assert refused.status == 403 and refused.header("connection") == "close"
    assert json.loads(refused.body)["error"] == "not_inference"
    assert conn.closed_by_peer()
    assert len(openai_backend.received) == 2
    denial = [e for e in both.events(3) if isinstance(e, HttpEvent)]
    assert [(d.status, d.method, d.path, d.host, d.port) for d in denial] == \
        [(403, "GET", "/admin/config", "inference.local", 443)]


def test_an_unknown_api_path_after_inference_is_404_and_closes(both):
    conn = both.raw()
    assert conn.request("POST", "/v1/chat/completions", CHAT, JSON).status == 200
    refused = conn.request("POST", "/v1/chat/completions/", CHAT, JSON)  # trailing slash: not the same
    assert refused.status == 404 and json.loads(refused.body)["error"]["code"] == "unknown_endpoint"
    assert conn.closed_by_peer()


def test_a_first_request_that_is_not_inference_is_refused(both):
    conn = both.raw()
    assert conn.request("GET", "/").status == 403
    assert conn.closed_by_peer()


def test_no_route_keeps_the_connection_but_not_for_other_requests(serve):
    # network.md §9 case 87: the 503 is an inference answer; the next non-inference request is not.
    server = serve([])
    conn = server.raw()
    reply = conn.request("POST", "/v1/chat/completions", CHAT, JSON)
    assert reply.status == 503 and reply.header("connection") is None
    assert conn.request("POST", "/v1/messages", CHAT, [("anthropic-version", "2023-06-01")]).status == 503
    assert conn.request("GET", "/admin/config").status == 403
    assert conn.closed_by_peer()


def test_pipelined_requests_are_answered_in_order_and_the_refusal_still_closes(both, openai_backend):
    conn = both.raw()
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: inference.local\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(CHAT))
    conn.send(head + CHAT + head + CHAT + b"GET /secret HTTP/1.1\r\nHost: inference.local\r\n\r\n")
    assert [conn.response().status for _ in range(3)] == [200, 200, 403]
    assert conn.closed_by_peer() and len(openai_backend.received) == 2


def test_chunked_request_bodies_and_expect_continue(both, openai_backend):
    conn = both.raw()
    conn.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: inference.local\r\nTransfer-Encoding: chunked\r\n"
              b"Expect: 100-continue\r\nContent-Type: application/json\r\n\r\n")
    interim = conn.sock.recv(100)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    conn.send(b"%x\r\n%b\r\n0\r\n\r\n" % (len(CHAT), CHAT))
    assert conn.response().status == 200
    assert openai_backend.received[-1].json()["model"] == "llama3.2"


def test_a_declared_length_over_the_cap_is_refused_before_the_body_is_sent(openai_backend, serve):
    server = serve([openai_route(openai_backend)], config=RouterConfig(max_body=1000))
    conn = server.raw()
    conn.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: inference.local\r\nContent-Length: 5000\r\n"
              b"Expect: 100-continue\r\n\r\n")
    reply = conn.response()
    assert reply.status == 413 and reply.header("connection") == "close" and conn.closed_by_peer()


def test_http_1_0_clients_get_a_close_delimited_body(both):
    conn = both.raw()
    conn.send(b"POST /v1/chat/completions HTTP/1.0\r\nHost: inference.local\r\nContent-Length: %d\r\n\r\n%b"
              % (len(CHAT), CHAT))
    data = b""
    while chunk := conn.sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK") and b"transfer-encoding" not in head.lower()
    assert json.loads(body)["model"] == "llama3.2"


def test_malformed_requests_are_400_and_close(both):
    conn = both.raw()
    conn.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: inference.local\r\nContent-Length: 1\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n")
    reply = conn.response()
    assert reply.status == 400 and json.loads(reply.body)["error"] == "bad_request"
    assert conn.closed_by_peer()


def test_idle_and_slow_clients(openai_backend, serve):
    server = serve([openai_route(openai_backend)], config=RouterConfig(keepalive_timeout=0.3, head_timeout=0.3))
    idle = server.raw()
    assert idle.closed_by_peer(timeout=3)  # nothing sent: a quiet close
    slow = server.raw()
    slow.send(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert slow.response().status == 408


def test_plain_http_on_port_80_with_an_absolute_target(openai_backend, serve):
    server = serve([openai_route(openai_backend)], plain_tcp=True)
    conn = server.raw_plain()
    reply = conn.request("POST", "http://inference.local/v1/chat/completions", CHAT, JSON)
    assert reply.status == 200 and openai_backend.received[-1].header("authorization") == f"Bearer {OPENAI_KEY}"
    assert conn.request("GET", "http://example.com/").status == 403  # another host: not inference
    assert conn.closed_by_peer()
    denial = [e for e in server.events(2) if isinstance(e, HttpEvent)]
    assert denial[0].port == 80


def test_https_backend_verified_with_the_configured_trust(serve):
    ca = trustme.CA()
    with FakeBackend("openai", tls=_server_ctx(ca)) as backend:
        route = make_route("tls", "openai", backend.url + "/v1", no_api_key=True)
        trusted = serve([route], config=RouterConfig(verify=_client_ctx(ca)))
        assert trusted.raw().request("POST", "/v1/chat/completions", CHAT, JSON).status == 200
        untrusted = serve([route])  # the system store does not know this CA
        reply = untrusted.raw().request("POST", "/v1/chat/completions", CHAT, JSON)
        assert reply.status == 502 and json.loads(reply.body)["error"]["code"] in ("backend_unreachable", "backend_error")


def _server_ctx(ca):
    import ssl

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    return ctx


def _client_ctx(ca):
    import ssl

    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


def test_the_plain_asyncio_loop_works_too(openai_backend, serve):
    server = serve([openai_route(openai_backend)], use_uvloop=False)
    assert server.openai().chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}]).model == "x"


def test_routes_from_the_store_apply_without_a_restart(openai_backend, serve, tmp_path):
    db = tmp_path / "stockade.db"
    source = StoreRoutes(db, ttl=0.1)
    server = serve(source)
    conn = server.raw()
    assert conn.request("POST", "/v1/chat/completions", CHAT, JSON).status == 503
    with Store(db) as store:
        store.put_route(StoredRoute("local", "openai", openai_backend.url + "/v1", "llama3.2",
                                    api_key_env="OPENAI_ROUTE_KEY", is_default=True))
    time.sleep(0.2)
    assert conn.request("POST", "/v1/chat/completions", CHAT, JSON).status == 200
    assert openai_backend.received[-1].json()["model"] == "llama3.2"
    [_, ok] = [e for e in server.events(2) if isinstance(e, InferenceEvent)]
    assert ok.route == "local"


@pytest.mark.parametrize("path", ["/v1/models", "/v1/models/gpt-4.1"])
def test_get_requests_carry_no_body_upstream(both, openai_backend, path):
    assert both.raw().request("GET", path).status == 200
    got = openai_backend.received[-1]
    assert got.body == b"" and got.header("content-type") is None
