"""The router end to end, driven by the real `openai` and `anthropic` SDKs over TLS to
`https://inference.local`, against fake backends that speak the real wire formats."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from stockade.events.ocsf import to_ocsf
from stockade.events.types import HttpEvent, InferenceEvent
from stockade.inference import RouterConfig

from .backends import FakeBackend, Scenario
from .conftest import ANTHROPIC_KEY, OPENAI_KEY, anthropic_route, openai_route
from .harness import CALLER_KEY

HI = [{"role": "user", "content": "hi"}]


def inference_events(server, count=1):
    return [e for e in server.events(count) if isinstance(e, InferenceEvent)]


def assert_only_route_key(received, protocol):
    """The backend saw the route's key in exactly one header, and nothing of the caller's."""
    text = repr(received.headers) + received.body.decode()
    assert CALLER_KEY not in text
    names = {k.lower() for k, _ in received.headers}
    assert "cookie" not in names and "openai-organization" not in names
    if protocol == "openai":
        assert received.headers_named("authorization") == [f"Bearer {OPENAI_KEY}"]
        assert "x-api-key" not in names
    else:
        assert received.headers_named("x-api-key") == [ANTHROPIC_KEY]
        assert "authorization" not in names


# -- routing, rewriting, credentials ---------------------------------------------------------

def test_openai_chat_is_routed_with_the_model_rewritten_and_the_key_swapped(both, openai_backend):
    client = both.openai(default_headers={"OpenAI-Organization": "org-agent", "Cookie": "a=b"})
    reply = client.chat.completions.create(model="gpt-4o", messages=HI)
    assert reply.choices[0].message.content == "Hello from the fake backend"
    assert reply.model == "llama3.2"  # the backend answered for the route's model
    got = openai_backend.received[-1]
    assert got.path == "/v1/chat/completions"
    assert got.json() == {"model": "llama3.2", "messages": HI}
    assert_only_route_key(got, "openai")
    assert got.header("user-agent").startswith("OpenAI/Python")
    [event] = inference_events(both)
    assert (event.route, event.model, event.status, event.streamed, event.path) == \
        ("openai", "llama3.2", 200, False, "/v1/chat/completions")
    assert event.backend_host == f"127.0.0.1:{openai_backend.port}"
    assert (event.input_tokens, event.output_tokens, event.error) == (11, 5, None)
    # Direct: the listener's actor; through the proxy: its identity (none configured here).
    assert event.actor.binary == ("/usr/bin/python3" if both.mode == "direct" else "-")
    assert event.latency_ms > 0


def test_anthropic_messages_get_x_api_key_and_the_clients_version(both, anthropic_backend):
    client = both.anthropic()
    message = client.messages.create(model="claude-x", max_tokens=64, messages=HI)
    assert message.content[0].text == "Hello from the fake backend"
    got = anthropic_backend.received[-1]
    assert got.json()["model"] == "claude-x"  # this route names no model: kept
    assert_only_route_key(got, "anthropic")
    assert got.header("anthropic-version")  # the SDK's own
    [event] = inference_events(both)
    assert (event.route, event.model, event.input_tokens, event.output_tokens) == ("anthropic", "claude-x", 11, 5)


def test_routing_by_requested_model_then_default(openai_backend, serve):
    with FakeBackend("openai", expected_key=OPENAI_KEY) as other:
        server = serve([openai_route(openai_backend, "small", model="llama3.2"),
                        openai_route(other, "big", model="qwen3:32b", default=True)])
        client = server.openai()
        client.chat.completions.create(model="llama3.2", messages=HI)
        assert len(openai_backend.received) == 1 and not other.received
        client.chat.completions.create(model="gpt-4o", messages=HI)  # named by no route
        assert other.received[-1].json()["model"] == "qwen3:32b"
        assert [e.route for e in inference_events(server, 2)] == ["small", "big"]


def test_every_openai_shape(both, openai_backend):
    client = both.openai()
    assert client.completions.create(model="x", prompt="hi").choices[0].text == "Hello from the fake backend"
    assert client.responses.create(model="x", input="hi").output_text == "Hello from the fake backend"
    emb = client.embeddings.create(model="x", input=["a", "b"])  # the SDK asks for base64 itself
    assert len(emb.data) == 2 and emb.data[0].embedding == [0.25, -0.5, 1.0]
    assert [m.id for m in client.models.list()] == ["fake-model"]
    assert client.models.retrieve("gpt-4.1").id == "gpt-4.1"
    paths = [r.path for r in openai_backend.received]
    assert paths == ["/v1/completions", "/v1/responses", "/v1/embeddings", "/v1/models",
                     "/v1/models/gpt-4.1"]
    assert all(r.json()["model"] == "llama3.2" for r in openai_backend.received[:3])
    for r in openai_backend.received:
        assert_only_route_key(r, "openai")
    events = inference_events(both, 5)
    assert [(e.input_tokens, e.output_tokens) for e in events] == [(11, 5), (11, 5), (11, None), (None, None), (None, None)]
    assert [e.method for e in events] == ["POST", "POST", "POST", "GET", "GET"]


def test_every_anthropic_shape(both, anthropic_backend):
    client = both.anthropic()
    assert client.messages.count_tokens(model="claude-x", messages=HI).input_tokens == 11
    assert [m.id for m in client.models.list()] == ["claude-fake"]
    assert [r.path for r in anthropic_backend.received] == ["/v1/messages/count_tokens", "/v1/models?limit=20"] or \
        [r.path.split("?")[0] for r in anthropic_backend.received] == ["/v1/messages/count_tokens", "/v1/models"]
    for r in anthropic_backend.received:
        assert_only_route_key(r, "anthropic")


def test_gzip_from_the_backend_reaches_the_client_decoded(both, openai_backend):
    openai_backend.script(Scenario(gzip=True))
    raw = both.openai().chat.completions.with_raw_response.create(model="x", messages=HI)
    assert raw.headers.get("content-encoding") is None and raw.headers.get("set-cookie") is None
    assert raw.headers.get("x-request-id") == "req_fake_1"
    assert raw.parse().choices[0].message.content == "Hello from the fake backend"


# -- streaming -------------------------------------------------------------------------------

def test_openai_stream_with_usage(both):
    chunks = list(both.openai().chat.completions.create(
        model="x", messages=HI, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from the fake backend"
    assert chunks[-1].usage.prompt_tokens == 11
    [event] = inference_events(both)
    assert (event.streamed, event.status, event.input_tokens, event.output_tokens, event.error) == (True, 200, 11, 5, None)


def test_openai_responses_stream(both):
    with both.openai().responses.stream(model="x", input="hi") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == "Hello from the fake backend" and final.usage.output_tokens == 5
    [event] = inference_events(both)
    assert (event.path, event.streamed, event.input_tokens, event.output_tokens) == ("/v1/responses", True, 11, 5)


def test_anthropic_stream_with_usage(both):
    with both.anthropic().messages.stream(model="claude-x", max_tokens=32, messages=HI) as stream:
        assert "".join(stream.text_stream) == "Hello from the fake backend"
    [event] = inference_events(both)
    assert (event.streamed, event.input_tokens, event.output_tokens) == (True, 11, 5)


def test_the_first_openai_chunk_arrives_while_the_backend_is_still_generating(both, openai_backend):
    openai_backend.script(Scenario(hold_last=True))
    stream = both.openai().chat.completions.create(model="x", messages=HI, stream=True)
    first = next(iter(stream))
    # The backend holds its last events until released: nothing buffered the whole response.
    assert first.choices[0].delta.role == "assistant"
    # wait(): the backend's thread sets the flag just after its write, which the client may beat.
    assert openai_backend.first_event_sent.wait(5) and not openai_backend.finished.is_set()
    openai_backend.release()
    rest = list(stream)
    assert rest[-1].choices[0].finish_reason == "stop" and openai_backend.finished.wait(5)


def test_the_first_anthropic_event_arrives_while_the_backend_is_still_generating(both, anthropic_backend):
    anthropic_backend.script(Scenario(hold_last=True))
    stream = both.anthropic().messages.create(model="claude-x", max_tokens=32, messages=HI, stream=True)
    first = next(iter(stream))
    assert first.type == "message_start" and not anthropic_backend.finished.is_set()
    anthropic_backend.release()
    assert [e.type for e in stream][-1] == "message_stop"


@pytest.mark.parametrize("cut", [False, True])
def test_openai_mid_stream_failure_ends_with_an_error_the_sdk_raises(both, openai_backend, cut):
    openai_backend.script(Scenario(fail_after=3, cut_mid_event=cut))
    seen = []
    with pytest.raises(openai.APIError) as info:
        for chunk in both.openai().chat.completions.create(model="x", messages=HI, stream=True):
            seen.append(chunk)
    assert len(seen) == 3  # everything before the failure arrived; half an event never does
    assert "failed mid-response" in info.value.message or "middle of an event" in info.value.message
    [event] = inference_events(both)
    assert event.status == 200 and event.streamed and event.error


def test_anthropic_mid_stream_failure_ends_with_an_error_the_sdk_raises(both, anthropic_backend):
    anthropic_backend.script(Scenario(fail_after=4, cut_mid_event=True))
    with pytest.raises(anthropic.APIStatusError) as info:
        list(both.anthropic().messages.create(model="c", max_tokens=32, messages=HI, stream=True))
    assert info.value.body["error"]["type"] == "api_error"
    assert inference_events(both)[0].error


def test_idle_stream_is_ended_with_an_error_event(openai_backend, anthropic_backend, serve):
    server = serve([openai_route(openai_backend), anthropic_route(anthropic_backend)],
                   config=RouterConfig(stream_idle_timeout=0.5))
    openai_backend.script(Scenario(stall_after=2))
    anthropic_backend.script(Scenario(stall_after=3))
    with pytest.raises(openai.APIError, match="sent nothing for 0.5 s"):
        list(server.openai().chat.completions.create(model="x", messages=HI, stream=True))
    with pytest.raises(anthropic.APIStatusError) as info:
        list(server.anthropic().messages.create(model="c", max_tokens=32, messages=HI, stream=True))
    assert info.value.body["error"]["type"] == "timeout_error"
    openai_backend.release()
    events = inference_events(server, 2)
    assert all("sent nothing" in e.error for e in events)


def test_a_client_that_leaves_mid_stream_is_recorded_and_the_backend_released(both, openai_backend):
    openai_backend.script(Scenario(chunk_delay=0.02, text="word " * 100))
    stream = both.openai().chat.completions.create(model="x", messages=HI, stream=True)
    next(iter(stream))
    stream.close()
    [event] = inference_events(both, 1)
    assert event.streamed and event.error == "the client closed the connection"
    assert not openai_backend.finished.wait(3)  # the router hung up on the backend too


# -- error shapes ----------------------------------------------------------------------------

def test_no_route_is_503_in_each_protocols_shape(serve, openai_backend):
    server = serve([openai_route(openai_backend)])
    with pytest.raises(anthropic.InternalServerError) as info:
        server.anthropic(max_retries=2).messages.create(model="c", max_tokens=8, messages=HI)
    assert info.value.status_code == 503
    assert info.value.body["error"]["type"] == "api_error"
    assert "no anthropic inference route" in info.value.body["error"]["message"]
    assert info.value.response.headers["x-should-retry"] == "false"
    empty = serve([])
    with pytest.raises(openai.InternalServerError) as info:
        empty.openai(max_retries=2).chat.completions.create(model="x", messages=HI)
    assert info.value.status_code == 503 and info.value.code == "inference_not_configured"
    assert len(inference_events(empty)) == 1  # not retried: x-should-retry false


def test_unknown_endpoint_is_404_in_each_protocols_shape(both):
    with pytest.raises(openai.NotFoundError) as info:
        both.openai().get("/fine_tuning/jobs", cast_to=object)
    assert info.value.code == "unknown_endpoint" and "POST /v1/chat/completions" in info.value.message
    with pytest.raises(anthropic.NotFoundError) as info:
        both.anthropic().post("/v1/messages/batches", cast_to=object, body={})
    assert info.value.body["error"]["type"] == "not_found_error"
    denials = [e for e in both.events(2) if isinstance(e, HttpEvent)]
    assert [(e.status, e.path) for e in denials] == [(404, "/v1/fine_tuning/jobs"), (404, "/v1/messages/batches")]


def test_unreachable_backend_is_502(serve):
    with FakeBackend("openai") as gone:
        url = gone.url
    server = serve([openai_route(type("B", (), {"url": url})())])
    with pytest.raises(openai.InternalServerError) as info:
        server.openai().chat.completions.create(model="x", messages=HI)
    assert info.value.status_code == 502 and info.value.code == "backend_unreachable"
    [event] = inference_events(server)
    assert event.status == 502 and "connect failed" in event.error


def test_backend_timeout_is_504(openai_backend, anthropic_backend, serve):
    server = serve([openai_route(openai_backend), anthropic_route(anthropic_backend)],
                   config=RouterConfig(response_timeout=0.3))
    openai_backend.script(Scenario(head_delay=1.0))
    anthropic_backend.script(Scenario(head_delay=1.0))
    with pytest.raises(openai.InternalServerError) as info:
        server.openai().chat.completions.create(model="x", messages=HI)
    assert info.value.status_code == 504 and info.value.code == "backend_timeout"
    with pytest.raises(anthropic.InternalServerError) as info:
        server.anthropic().messages.create(model="c", max_tokens=8, messages=HI)
    assert info.value.status_code == 504 and info.value.body["error"]["type"] == "timeout_error"


def test_a_json_body_that_fails_before_its_first_byte_becomes_an_error_answer(openai_backend, anthropic_backend, serve):
    # The backend sent its 200 head, then died (or went silent) before any body byte: nothing
    # reached the client yet, so it gets a proper 502/504 instead of a truncated 200.
    server = serve([openai_route(openai_backend), anthropic_route(anthropic_backend)],
                   config=RouterConfig(stream_idle_timeout=0.5))
    openai_backend.script(Scenario(fail_after=0), Scenario(stall_after=0))
    with pytest.raises(openai.InternalServerError) as info:
        server.openai().chat.completions.create(model="x", messages=HI)
    assert info.value.status_code == 502 and info.value.code == "backend_stream_failed"
    with pytest.raises(openai.InternalServerError) as info:
        server.openai().chat.completions.create(model="x", messages=HI)
    assert info.value.status_code == 504 and info.value.code == "stream_idle_timeout"
    openai_backend.release()
    anthropic_backend.script(Scenario(fail_after=10))  # some bytes got through: the body is cut
    with pytest.raises(anthropic.APIConnectionError):
        server.anthropic().messages.create(model="c", max_tokens=8, messages=HI)
    assert [e.status for e in inference_events(server, 3)] == [502, 504, 200]


def test_body_over_the_cap_is_413(openai_backend, anthropic_backend, serve):
    server = serve([openai_route(openai_backend), anthropic_route(anthropic_backend)],
                   config=RouterConfig(max_body=4096))
    big = [{"role": "user", "content": "x" * 5000}]
    with pytest.raises(openai.APIStatusError) as info:
        server.openai().chat.completions.create(model="x", messages=big)
    assert info.value.status_code == 413 and info.value.code == "request_too_large"
    with pytest.raises(anthropic.APIStatusError) as info:
        server.anthropic().messages.create(model="c", max_tokens=8, messages=big)
    assert info.value.status_code == 413 and info.value.body["error"]["type"] == "request_too_large"
    assert not openai_backend.received and not anthropic_backend.received


def test_a_body_that_is_not_json_is_400(both, openai_backend, anthropic_backend):
    with pytest.raises(openai.BadRequestError) as info:
        both.openai().post("/chat/completions", cast_to=object, content=b"model=gpt-4o")
    assert info.value.code == "invalid_request"
    with pytest.raises(anthropic.BadRequestError) as info:
        both.anthropic().post("/v1/messages", cast_to=object, content=b'{"model":"a","model":"b"}')
    assert "more than once" in info.value.body["error"]["message"]
    assert not openai_backend.received and not anthropic_backend.received


def test_backend_errors_pass_through_with_the_key_redacted(both, openai_backend, anthropic_backend):
    openai_backend.script(Scenario(status=429, error_type="rate_limit_error", echo_key=True))
    with pytest.raises(openai.RateLimitError) as info:
        both.openai().chat.completions.create(model="x", messages=HI)
    assert OPENAI_KEY not in info.value.message and "[REDACTED]" in info.value.message
    anthropic_backend.expected_key = "another-key"
    anthropic_backend.script(Scenario(echo_key=True))
    with pytest.raises(anthropic.AuthenticationError) as info:
        both.anthropic().messages.create(model="c", max_tokens=8, messages=HI)
    assert ANTHROPIC_KEY not in str(info.value.body) and "[REDACTED]" in str(info.value.body)
    events = inference_events(both, 2)
    assert [e.status for e in events] == [429, 401]


def test_unavailable_route_key_is_503_naming_the_variable_only(openai_backend, serve):
    server = serve([openai_route(openai_backend)], environ={})
    with pytest.raises(openai.InternalServerError) as info:
        server.openai().chat.completions.create(model="x", messages=HI)
    assert info.value.status_code == 503 and "OPENAI_ROUTE_KEY" in info.value.message
    assert not openai_backend.received


# -- no key anywhere but the backend ---------------------------------------------------------

def test_no_key_in_events_logs_or_error_bodies(both, openai_backend, anthropic_backend, caplog):
    caplog.set_level("DEBUG")
    client = both.openai()
    client.chat.completions.create(model="x", messages=HI)
    list(client.chat.completions.create(model="x", messages=HI, stream=True))
    openai_backend.script(Scenario(fail_after=2))
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model="x", messages=HI, stream=True))
    openai_backend.script(Scenario(status=500, echo_key=True))
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="x", messages=HI)
    assert OPENAI_KEY not in str(info.value.body)
    anthropic_backend.expected_key = "x"
    with pytest.raises(anthropic.AuthenticationError):
        both.anthropic().messages.create(model="c", max_tokens=8, messages=HI)
    dumped = json.dumps([to_ocsf(e, sandbox="t", run_id=1) for e in both.events(5)])
    for secret in (OPENAI_KEY, ANTHROPIC_KEY, CALLER_KEY, "Hello from the fake backend", '"hi"'):
        assert secret not in dumped and secret not in caplog.text
