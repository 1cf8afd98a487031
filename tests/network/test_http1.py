"""HTTP/1.1 framing (sans-IO): strict heads, exact message boundaries, smuggling attempts."""

from __future__ import annotations

import pytest

from stockade.network.http1 import (
    Data,
    EndOfMessage,
    RequestReader,
    ResponseReader,
    Signal,
    encode_chunk,
    encode_last_chunk,
)
from stockade.network.httphead import HttpError, Request, Response, end_to_end
from stockade.network.limits import Limits

LIMITS = Limits()


def drain(reader, data: bytes = b"", eof: bool = False) -> list:
    if data:
        reader.feed(data)
    if eof:
        reader.feed_eof()
    out = []
    while True:
        ev = reader.next_event()
        if isinstance(ev, Signal):
            out.append(ev)
            return out
        out.append(ev)


def requests_of(data: bytes) -> list:
    return drain(RequestReader(LIMITS), data)


def body_of(events) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, Data))


# -- requests ----------------------------------------------------------------------------

def test_simple_get():
    ev = requests_of(b"GET http://a.example/x HTTP/1.1\r\nHost: a.example\r\n\r\n")
    req = ev[0]
    assert isinstance(req, Request)
    assert (req.method, req.target, req.version) == ("GET", "http://a.example/x", "1.1")
    assert req.headers == [("Host", "a.example")]
    assert req.keep_alive and not req.has_body
    assert isinstance(ev[1], EndOfMessage) and ev[2] is Signal.NEED_DATA


def test_content_length_body_is_exact():
    ev = requests_of(b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 42\r\n\r\n" + b"x" * 42 + b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n")
    assert ev[0].content_length == 42
    assert body_of(ev) == b"x" * 42
    assert isinstance(ev[-3], Request) and ev[-3].target == "/b"


def test_pipelined_requests_come_out_one_by_one():
    # network.md §9 case 65: two requests in one write are two decisions.
    data = (b"GET /allowed HTTP/1.1\r\nHost: h\r\n\r\n"
            b"POST /blocked HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc")
    ev = requests_of(data)
    kinds = [type(e).__name__ for e in ev]
    assert kinds == ["Request", "EndOfMessage", "Request", "Data", "EndOfMessage", "Signal"]
    assert ev[0].target == "/allowed" and ev[2].target == "/blocked"
    assert ev[0].head_size == len(b"GET /allowed HTTP/1.1\r\nHost: h\r\n\r\n")


def test_byte_by_byte_feed_gives_the_same_events():
    data = (b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Sum: 1\r\n\r\nGET /d HTTP/1.1\r\nHost: h\r\n\r\n")
    reader = RequestReader(LIMITS)
    events = []
    for i in range(len(data)):
        events += [e for e in drain(reader, data[i:i + 1]) if not isinstance(e, Signal)]
    assert body_of(events) == b"hello world"
    ends = [e for e in events if isinstance(e, EndOfMessage)]
    assert ends[0].trailers == [("X-Sum", "1")]
    assert [e.target for e in events if isinstance(e, Request)] == ["/c", "/d"]


def test_no_framing_means_no_body():
    ev = requests_of(b"POST /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n")
    assert [e.target for e in ev if isinstance(e, Request)] == ["/a", "/b"]


@pytest.mark.parametrize("head", [
    # CL + TE in either order (request smuggling)
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
    # duplicate Content-Length, differing and identical
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nContent-Length: 50\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 42\r\nContent-Length: 42\r\n\r\n",
    # bad Content-Length
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: abc\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1 2\r\n\r\n",
    # unknown transfer codings
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunkedx\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
    b"POST / HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
    # bare LF inside and as the terminator, obs-fold, space before colon
    b"GET /api HTTP/1.1\r\nX-Injected: value\nEvil: header\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\nHost: h\n\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n folded\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost : h\r\n\r\n",
    # NUL and invalid UTF-8 in a value
    b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX: \xc0\xaf\r\n\r\n",
    # non-HTTP/1.x versions, junk request lines, unknown or lower-case methods
    b"GET / JUNK/9.9\r\n\r\n",
    b"GET / HTTP/1.2\r\n\r\n",
    b"GET / HTTP/0.9\r\n\r\n",
    b"get / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
])
def test_malformed_requests_are_400(head):
    with pytest.raises(HttpError) as info:
        requests_of(head)
    assert info.value.status == 400


def test_http2_is_refused():
    with pytest.raises(HttpError) as info:
        requests_of(b"GET / HTTP/2.0\r\nHost: h\r\n\r\n")
    assert info.value.status == 505
    with pytest.raises(HttpError):
        requests_of(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")


@pytest.mark.parametrize("body", [
    b"5\r\nhello\r\n0\r\n\r\n"[:0] + b"zz\r\nhello\r\n0\r\n\r\n",  # non-hex size
    b"5\r\nhelloXX0\r\n\r\n",  # data not followed by CRLF
    b"5\nhello\r\n0\r\n\r\n",  # bare LF after size
    b" 5\r\nhello\r\n0\r\n\r\n",  # leading space
    b"-5\r\nhello\r\n0\r\n\r\n",
    b"0x5\r\nhello\r\n0\r\n\r\n",
    b"5;a\x00b\r\nhello\r\n0\r\n\r\n",
    b"0\r\nBad Trailer\r\n\r\n",
    b"11111111111111111\r\n",  # absurd size
])
def test_malformed_chunked_bodies_are_400(body):
    head = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    with pytest.raises(HttpError) as info:
        requests_of(head + body)
    assert info.value.status == 400


def test_chunked_smuggling_payload_stays_inside_the_body():
    smuggled = b"GET /admin HTTP/1.1\r\nHost: h\r\n\r\n"
    body = b"%x\r\n%b\r\n0\r\n\r\n" % (len(smuggled), smuggled)
    ev = requests_of(b"POST /ok HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    assert [e.target for e in ev if isinstance(e, Request)] == ["/ok"]
    assert body_of(ev) == smuggled


def test_head_size_limit_is_431():
    reader = RequestReader(Limits(max_head_size=1024))
    with pytest.raises(HttpError) as info:
        drain(reader, b"GET / HTTP/1.1\r\nX: " + b"a" * 2000)
    assert info.value.status == 431
    # A complete head over the limit too.
    with pytest.raises(HttpError) as info:
        drain(RequestReader(Limits(max_head_size=1024)),
              b"GET / HTTP/1.1\r\nX: " + b"a" * 2000 + b"\r\n\r\n")
    assert info.value.status == 431


def test_too_many_headers_is_431():
    head = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n"
    with pytest.raises(HttpError) as info:
        requests_of(head)
    assert info.value.status == 431


def test_long_target_is_414():
    with pytest.raises(HttpError) as info:
        drain(RequestReader(Limits(max_target_size=100)), b"GET /" + b"a" * 200 + b" HTTP/1.1\r\n\r\n")
    assert info.value.status == 414


def test_keep_alive_rules():
    def first(data):
        return requests_of(data)[0]
    assert first(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").keep_alive
    assert not first(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").keep_alive
    assert not first(b"GET / HTTP/1.0\r\n\r\n").keep_alive
    assert first(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive


def test_upgrade_request_pauses_the_reader():
    # network.md §9 case 71: Upgrade needs Connection: upgrade too.
    data = (b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\r\n"
            b"\x81\x05hello")
    reader = RequestReader(LIMITS)
    ev = drain(reader, data)
    assert ev[0].upgrade == "websocket"
    assert isinstance(ev[1], EndOfMessage) and ev[2] is Signal.PAUSED
    assert reader.take_buffer() == b"\x81\x05hello"
    plain = requests_of(b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n")[0]
    assert plain.upgrade is None


def test_refused_upgrade_resumes_http():
    reader = RequestReader(LIMITS)
    ev = drain(reader, b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n"
                       b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n")
    assert ev[-1] is Signal.PAUSED
    reader.resume()
    assert drain(reader)[0].target == "/next"


def test_eof_between_requests_is_clean_and_inside_is_not():
    assert drain(RequestReader(LIMITS), b"", eof=True) == [Signal.CLOSED]
    with pytest.raises(HttpError):
        drain(RequestReader(LIMITS), b"GET / HTTP/1.1\r\n", eof=True)
    with pytest.raises(HttpError):
        drain(RequestReader(LIMITS), b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab", eof=True)


def test_leading_empty_lines_are_ignored():
    assert requests_of(b"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n")[0].target == "/"


# -- responses ---------------------------------------------------------------------------

def responses_of(data: bytes, method: str = "GET", eof: bool = False):
    reader = ResponseReader(LIMITS)
    reader.start(method)
    return reader, drain(reader, data, eof)


def test_content_length_response_and_unsolicited_bytes():
    reader, ev = responses_of(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA")
    assert isinstance(ev[0], Response) and ev[0].content_length == 5
    assert body_of(ev) == b"hello" and isinstance(ev[-2], EndOfMessage)
    assert reader.unsolicited  # the connection must not be reused


def test_head_response_has_no_body_despite_content_length():
    # network.md §9 case 68
    reader, ev = responses_of(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", "HEAD")
    assert ev[0].bodiless and isinstance(ev[1], EndOfMessage)
    assert not reader.unsolicited


@pytest.mark.parametrize("status", [204, 304])
def test_bodiless_statuses(status):
    _, ev = responses_of(b"HTTP/1.1 %d X\r\n\r\n" % status)
    assert ev[0].bodiless and isinstance(ev[1], EndOfMessage) and ev[0].keep_alive


def test_interim_responses_precede_the_final_one():
    _, ev = responses_of(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
    assert [e.status for e in ev if isinstance(e, Response)] == [100, 201]
    assert body_of(ev) == b"ok"


def test_chunked_response_with_trailer_completes_without_eof():
    # network.md §9 case 69
    _, ev = responses_of(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-checksum: abc123\r\n\r\n")
    assert body_of(ev) == b"hello"
    end = [e for e in ev if isinstance(e, EndOfMessage)][0]
    assert end.trailers == [("x-checksum", "abc123")]


def test_close_delimited_response_runs_to_eof():
    # network.md §9 cases 66/67: without framing the body runs until close (RFC 9112 §6.3).
    reader, ev = responses_of(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello world")
    assert ev[0].close_delimited and not ev[0].keep_alive and ev[-1] is Signal.NEED_DATA
    rest = drain(reader, eof=True)
    assert isinstance(rest[0], EndOfMessage)
    assert body_of(ev) == b"hello world"


def test_101_pauses_with_the_new_protocol_bytes():
    reader, ev = responses_of(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello")
    assert ev[0].status == 101 and ev[1] is Signal.PAUSED
    assert reader.take_buffer() == b"\x81\x05hello"


@pytest.mark.parametrize("data", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"HTTP/1.1 200 OK\nContent-Length: 1\n\n",
    b"HTTP/2 200\r\n\r\n",
    b"SSH-2.0-OpenSSH\r\n\r\n",
])
def test_malformed_responses_are_502(data):
    with pytest.raises(HttpError) as info:
        responses_of(data)
    assert info.value.status == 502


def test_truncated_response_body_is_502():
    with pytest.raises(HttpError) as info:
        responses_of(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", eof=True)
    assert info.value.status == 502


# -- writing -----------------------------------------------------------------------------

def test_chunk_encoding():
    assert encode_chunk(b"hello") == b"5\r\nhello\r\n"
    assert encode_chunk(b"x" * 256).startswith(b"100\r\n")
    assert encode_last_chunk([]) == b"0\r\n\r\n"
    assert encode_last_chunk([("X-A", "1")]) == b"0\r\nX-A: 1\r\n\r\n"


def test_end_to_end_drops_hop_by_hop_and_connection_named_fields():
    headers = [("Host", "h"), ("Connection", "close, X-Secret"), ("X-Secret", "1"),
               ("Keep-Alive", "5"), ("Proxy-Authorization", "Basic x"), ("TE", "trailers"),
               ("Accept", "*/*")]
    assert end_to_end(headers, frozenset({"close", "x-secret"})) == [("Host", "h"), ("Accept", "*/*")]
