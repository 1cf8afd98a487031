"""SSE event alignment, error events, usage extraction and key redaction (sans-IO)."""

from __future__ import annotations

import asyncio
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from stockade.inference.errors import RouterError, error_payload, sse_error_event
from stockade.inference.redact import Redactor
from stockade.inference.shapes import Protocol
from stockade.inference.sse import EventAligner, parse_event, split_events
from stockade.inference.streaming import relay_events
from stockade.inference.usage import StreamUsage, usage_from_json
from stockade.inference.wire import ClientGone

STREAM = (b'data: {"a":1}\n\n'
          b'event: message_start\r\ndata: {"b":2}\r\n\r\n'
          b': comment\rdata: x\r\r'
          b'data: line1\ndata: line2\n\n')


def test_aligner_releases_complete_events_only():
    a = EventAligner()
    assert a.feed(b'data: {"a"') == b"" and a.pending
    assert a.feed(b':1}\n') == b""
    assert a.feed(b'\ndata: {"b"') == b'data: {"a":1}\n\n' and a.pending
    assert a.feed(b':2}\n\n') == b'data: {"b":2}\n\n' and not a.pending


def test_a_cr_at_the_end_of_a_read_waits_for_its_lf():
    a = EventAligner()
    assert a.feed(b"data: x\r\n\r") == b""  # could be CR CR (an event end) or CR LF
    assert a.feed(b"\ndata: y") == b"data: x\r\n\r\n"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=8))
def test_any_split_of_a_stream_gives_the_same_events(cuts):
    points = sorted(set(cuts))
    pieces = [STREAM[i:j] for i, j in zip([0, *points], [*points, len(STREAM)])]
    a = EventAligner()
    out = b""
    for piece in pieces:
        released = a.feed(piece)
        assert split_events(released) and b"".join(split_events(released)) == released or not released
        out += released
    assert out == STREAM and not a.pending
    assert [parse_event(e) for e in split_events(out)] == [
        (None, '{"a":1}'), ("message_start", '{"b":2}'), (None, "x"), (None, "line1\nline2")]


def test_an_oversized_event_is_released_unaligned():
    a = EventAligner(max_pending=10)
    assert a.feed(b"data: 0123456789") == b"data: 0123456789"
    assert a.unaligned == 1 and a.pending  # mid-line: the stream is not on a boundary
    assert a.feed(b"\n\ndata: y\n\n") == b"\n\ndata: y\n\n" and not a.pending


def test_discard_forgets_the_partial_event():
    a = EventAligner()
    a.feed(b"data: {half")
    a.discard()
    assert not a.pending and a.feed(b"data: z\n\n") == b"data: z\n\n"


# -- error shapes ----------------------------------------------------------------------------

def test_openai_error_event_is_a_data_frame_with_an_error_object():
    name, data = parse_event(sse_error_event(Protocol.OPENAI, "stream_idle_timeout", "idle"))
    assert name is None
    assert json.loads(data) == {"error": {"message": "idle", "type": "stream_error", "param": None,
                                          "code": "stream_idle_timeout"}}


def test_anthropic_error_event():
    raw = sse_error_event(Protocol.ANTHROPIC, "backend_stream_failed", "broken")
    assert raw.startswith(b"event: error\n") and raw.endswith(b"\n\n")
    name, data = parse_event(raw)
    assert name == "error" and json.loads(data) == {"type": "error", "error": {"type": "api_error", "message": "broken"}}
    idle = json.loads(parse_event(sse_error_event(Protocol.ANTHROPIC, "stream_idle_timeout", "x"))[1])
    assert idle["error"]["type"] == "timeout_error"


def test_error_payload_shapes():
    err = RouterError(503, "inference_not_configured", "no route")
    assert error_payload(Protocol.OPENAI, err) == {"error": {"message": "no route", "type": "server_error",
                                                             "param": None, "code": "inference_not_configured"}}
    assert error_payload(Protocol.ANTHROPIC, err) == {"type": "error", "error": {"type": "api_error", "message": "no route"}}
    assert error_payload(Protocol.ANTHROPIC, RouterError(404, "x", "m"))["error"]["type"] == "not_found_error"
    assert error_payload(Protocol.ANTHROPIC, RouterError(504, "x", "m"))["error"]["type"] == "timeout_error"
    assert error_payload(Protocol.OPENAI, RouterError(413, "x", "m"))["error"]["type"] == "invalid_request_error"


# -- usage -----------------------------------------------------------------------------------

def test_usage_from_json_bodies():
    chat = {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}}
    assert (usage_from_json(json.dumps(chat).encode()).input_tokens, usage_from_json(json.dumps(chat).encode()).output_tokens) == (11, 5)
    responses = {"output": [], "usage": {"input_tokens": 7, "output_tokens": 3}}
    u = usage_from_json(json.dumps(responses).encode())
    assert (u.input_tokens, u.output_tokens) == (7, 3)
    emb = usage_from_json(b'{"data":[],"usage":{"prompt_tokens":4,"total_tokens":4}}')
    assert (emb.input_tokens, emb.output_tokens) == (4, None)
    assert usage_from_json(b'{"input_tokens": 9}').input_tokens is None  # count_tokens is not usage
    assert usage_from_json(b"not json").input_tokens is None
    assert usage_from_json(b'{"usage":{"prompt_tokens":true,"completion_tokens":-1}}').output_tokens is None


def events(*raw):
    tracker = StreamUsage()
    for event in raw:
        tracker.observe(event)
    return tracker


def test_openai_chat_stream_usage_is_in_the_last_chunk():
    t = events(b'data: {"choices":[{"delta":{"content":"hi"}}],"usage":null}\n\n',
               b'data: {"choices":[],"usage":{"prompt_tokens":11,"completion_tokens":5}}\n\n',
               b"data: [DONE]\n\n")
    assert (t.usage.input_tokens, t.usage.output_tokens, t.finished) == (11, 5, True)


def test_openai_responses_stream_usage_is_in_response_completed():
    t = events(b'event: response.created\ndata: {"response":{"usage":null}}\n\n',
               b'event: response.completed\ndata: {"type":"response.completed","response":'
               b'{"usage":{"input_tokens":8,"output_tokens":2}}}\n\n')
    assert (t.usage.input_tokens, t.usage.output_tokens, t.finished) == (8, 2, True)


def test_anthropic_stream_usage_combines_message_start_and_message_delta():
    t = events(b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":12,"output_tokens":1}}}\n\n',
               b'event: content_block_delta\ndata: {"type":"content_block_delta","delta":{"text":"usage"}}\n\n',
               b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":6}}\n\n',
               b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    assert (t.usage.input_tokens, t.usage.output_tokens, t.finished) == (12, 6, True)


# -- redaction -------------------------------------------------------------------------------

def test_redactor_finds_a_key_split_across_reads():
    r = Redactor("sk-route-secret")
    out = b"".join(r.feed(p) for p in (b'{"error":"bad key sk-rou', b"te-secr", b'et"}')) + r.flush()
    assert out == b'{"error":"bad key [REDACTED]"}' and r.hits == 1


def test_redactor_finds_the_json_escaped_form_and_passes_other_bytes():
    r = Redactor("ab/cd")
    assert r.feed(b"x ab\\/cd y ab/cd z") + r.flush() == b"x [REDACTED] y [REDACTED] z"
    assert Redactor(None).feed(b"anything") == b"anything"


# -- relaying an event stream ------------------------------------------------------------------

class _ClientLeavesAtTheEnd:
    """A ResponseWriter whose client takes every event, then closes before the terminator
    (the openai SDK stops reading at `data: [DONE]` and closes the connection)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send(self, data: bytes) -> None:
        self.sent.append(data)

    async def finish(self, data: bytes = b"") -> None:
        raise ClientGone()


def relay(*chunks: bytes):
    async def body():
        for chunk in chunks:
            yield chunk

    out = _ClientLeavesAtTheEnd()
    result = asyncio.run(relay_events(body(), out, protocol=Protocol.OPENAI, idle_timeout=5))
    return result, out


def test_a_client_that_closes_after_the_final_event_ended_no_stream_early():
    result, out = relay(b'data: {"choices":[],"usage":{"prompt_tokens":11,"completion_tokens":5}}\n\n',
                        b"data: [DONE]\n\n")
    assert b"".join(out.sent).endswith(b"data: [DONE]\n\n")
    assert (result.error, result.client_gone, result.complete) == (None, True, False)
    assert (result.usage.input_tokens, result.usage.output_tokens) == (11, 5)


def test_a_client_that_closes_before_the_final_event_is_an_error():
    result, _ = relay(b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n')
    assert (result.error, result.client_gone, result.complete) == \
        ("the client closed the connection", True, False)
