"""Header allowlist and credential injection, body checks and the model rewrite (sans-IO)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stockade.inference.body import BodyError, parse_body, rewrite_model
from stockade.inference.headers import client_response_headers, is_event_stream, upstream_request_headers
from stockade.inference.routes import ApiKey
from stockade.inference.shapes import Protocol

CLIENT = [
    ("Host", "inference.local"), ("Authorization", "Bearer sk-caller"), ("X-Api-Key", "sk-caller"),
    ("Cookie", "session=1"), ("Proxy-Authorization", "Basic eA=="), ("Content-Type", "application/json"),
    ("Accept", "text/event-stream"), ("Accept-Encoding", "gzip, br"), ("User-Agent", "OpenAI/Python 1.0"),
    ("Content-Length", "12"), ("Transfer-Encoding", "chunked"), ("Connection", "keep-alive"),
    ("OpenAI-Organization", "org-other"), ("OpenAI-Project", "proj-other"), ("OpenAI-Beta", "assistants=v2"),
    ("Anthropic-Version", "2024-10-22"), ("Anthropic-Beta", "prompt-caching-2024-07-31"),
    ("X-Stainless-OS", "Linux"), ("X-Forwarded-For", "10.0.0.1"), ("X-Goog-Api-Key", "AIza-caller"),
]


def names(headers):
    return [k for k, _ in headers]


def test_openai_requests_carry_only_allowed_headers_and_the_routes_bearer():
    out = upstream_request_headers(CLIENT, Protocol.OPENAI, ApiKey("sk-route"), has_body=True)
    assert out == [("content-type", "application/json"), ("accept", "text/event-stream"),
                   ("user-agent", "OpenAI/Python 1.0"), ("openai-beta", "assistants=v2"),
                   ("authorization", "Bearer sk-route")]
    assert "sk-caller" not in repr(out)


def test_anthropic_requests_get_x_api_key_and_keep_the_clients_version():
    out = upstream_request_headers(CLIENT, Protocol.ANTHROPIC, ApiKey("sk-ant-route"), has_body=True)
    assert out == [("content-type", "application/json"), ("accept", "text/event-stream"),
                   ("user-agent", "OpenAI/Python 1.0"), ("anthropic-version", "2024-10-22"),
                   ("anthropic-beta", "prompt-caching-2024-07-31"), ("x-api-key", "sk-ant-route")]
    assert "authorization" not in names(out)


def test_anthropic_version_is_added_when_the_client_sent_none():
    out = upstream_request_headers([("Authorization", "Bearer x")], Protocol.ANTHROPIC, None, has_body=True)
    assert out == [("content-type", "application/json"), ("anthropic-version", "2023-06-01")]


def test_a_keyless_route_injects_nothing_and_still_strips():
    out = upstream_request_headers(CLIENT, Protocol.OPENAI, None, has_body=False)
    assert not any(k in ("authorization", "x-api-key", "cookie") for k in names(out))


def test_repeated_beta_headers_are_all_forwarded():
    out = upstream_request_headers([("anthropic-beta", "a"), ("anthropic-beta", "b")], Protocol.ANTHROPIC,
                                   None, has_body=False)
    assert [v for k, v in out if k == "anthropic-beta"] == ["a", "b"]


def test_response_headers_lose_framing_encoding_cookies_and_connection_named_fields():
    upstream = [("Content-Type", "application/json"), ("Content-Length", "10"), ("Transfer-Encoding", "chunked"),
                ("Connection", "keep-alive, x-hop"), ("X-Hop", "1"), ("Keep-Alive", "timeout=5"),
                ("Content-Encoding", "gzip"), ("Set-Cookie", "a=b"), ("Cache-Control", "no-cache"),
                ("x-request-id", "req_1"), ("retry-after", "3"), ("x-ratelimit-remaining-tokens", "100"),
                ("Alt-Svc", 'h3=":443"')]
    assert client_response_headers(upstream) == [
        ("content-type", "application/json"), ("cache-control", "no-cache"), ("x-request-id", "req_1"),
        ("retry-after", "3"), ("x-ratelimit-remaining-tokens", "100")]


def test_event_stream_detection():
    assert is_event_stream([("Content-Type", "text/event-stream; charset=utf-8")])
    assert not is_event_stream([("content-type", "application/json")])
    assert not is_event_stream([])


# -- bodies ----------------------------------------------------------------------------------

def test_rewrite_replaces_only_the_model_value():
    raw = b'{ "temperature" : 1.0e0, "model":"gpt-4o" ,"messages":[{"content":"caf\\u00e9 \xc3\xa9"}], "n": 1 }'
    body = parse_body(raw)
    assert body.model == "gpt-4o"
    assert rewrite_model(body, "llama3.2") == raw.replace(b'"gpt-4o"', b'"llama3.2"')


def test_rewrite_inserts_a_missing_model():
    assert rewrite_model(parse_body(b'{"messages":[]}'), "m") == b'{"model":"m","messages":[]}'
    assert rewrite_model(parse_body(b' { } '), "m") == b' {"model":"m" } '
    assert rewrite_model(parse_body(b'{"model":null}'), "m") == b'{"model":"m"}'


def test_rewrite_escapes_the_route_model():
    assert json.loads(rewrite_model(parse_body(b'{"model":"a"}'), 'x"y\\')) == {"model": 'x"y\\'}


@pytest.mark.parametrize("raw,fragment", [
    (b"", "must be a JSON object"),
    (b"[]", "must be a JSON object"),
    (b"model=gpt", "must be a JSON object"),
    (b'{"model":"a","model":"b"}', "more than once"),
    (b'{"model":"a"} x', "extra data"),
    (b'{"model":"a",}', "invalid JSON"),
    (b'{"t": NaN}', "invalid JSON"),
    (b'{"t": 1', "invalid JSON"),
    (b'\xff{"a":1}', "not UTF-8"),
    (b'\xef\xbb\xbf{"a":1}', "must be a JSON object"),
])
def test_bodies_the_router_refuses(raw, fragment):
    with pytest.raises(BodyError, match=fragment):
        parse_body(raw)


def test_a_nested_model_key_is_not_the_model():
    body = parse_body(b'{"metadata":{"model":"x"},"model":"y"}')
    assert body.model == "y"
    assert parse_body(b'{"model": 5}').model is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=5), st.text(min_size=1, max_size=20),
       st.sampled_from([None, (",", ":"), (", ", ": ")]), st.booleans())
def test_rewrite_is_exactly_a_model_change(obj, model, separators, ascii_only):
    raw = json.dumps(obj, separators=separators, ensure_ascii=ascii_only).encode()
    out = json.loads(rewrite_model(parse_body(raw), model))
    assert out == {**obj, "model": model}
    assert list(out) == (list(obj) if "model" in obj else ["model", *obj])  # key order kept
