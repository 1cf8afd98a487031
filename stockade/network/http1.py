"""Sans-IO HTTP/1.1 message framing for the proxy: bytes in, heads and body pieces out.

The heads are parsed by httphead.py; body framing (Content-Length counting, chunked decoding)
is done here so that a message boundary is always known exactly: every request of a kept-alive
or pipelined stream comes out on its own and is decided on its own (OpenShell forwards the bytes
after the first forward-proxy request unchecked, network.md Appendix A.7).

Bodies are re-framed on the way out (`encode_chunk`, `encode_last_chunk`): what the next hop
receives is canonical, so a parsing difference between us and it cannot smuggle a request.
"""

from __future__ import annotations

import enum

from ..records import Struct, field
from .httphead import (
    Headers,
    HttpError,
    Request,
    Response,
    ParserSlot,
    parse_request_head,
    parse_response_head,
)
from .limits import Limits

_TOKEN_CHARS = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_HEX = frozenset(b"0123456789abcdefABCDEF")


class Data(Struct):
    data: bytes


class EndOfMessage(Struct):
    trailers: Headers = field(default_factory=list)


class Signal(enum.Enum):
    NEED_DATA = "need-data"  # feed more bytes
    PAUSED = "paused"  # after an upgrade/CONNECT request or a 101: the caller decides
    CLOSED = "closed"  # the peer closed cleanly between messages


Event = Request | Response | Data | EndOfMessage | Signal


# -- streaming readers -------------------------------------------------------------------

class _State(enum.Enum):
    HEAD = 0
    LENGTH = 1
    CHUNK_SIZE = 2
    CHUNK_DATA = 3
    CHUNK_END = 4
    TRAILERS = 5
    UNTIL_CLOSE = 6
    PAUSED = 7  # upgrade/CONNECT request or 101 response: bytes after it are not HTTP
    DONE = 8  # responses: the final response is complete; nothing may follow until start()


class _Reader:
    """The framing machinery shared by requests and responses."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.buffer = bytearray()
        self.eof = False
        self._state = _State.HEAD
        self._scanned = 0
        self._remaining = 0
        self._trailers: Headers = []
        self._trailer_size = 0

    def feed(self, data: bytes) -> None:
        self.buffer += data

    def feed_eof(self) -> None:
        self.eof = True

    def take_buffer(self) -> bytes:
        """The unparsed bytes (after an upgrade: the first bytes of the new protocol)."""
        data = bytes(self.buffer)
        self.buffer.clear()
        return data

    @property
    def pending_head(self) -> bool:
        """Part of a head has arrived (used to tell an idle connection from a slow client)."""
        return self._state is _State.HEAD and bool(self.buffer)

    def _split_head(self, status: int, malformed: int) -> bytes | None:
        buf = self.buffer
        start = max(0, self._scanned - 3)
        end = buf.find(b"\r\n\r\n", start)
        limit = self.limits.max_head_size
        if end < 0:
            if len(buf) > limit:
                raise HttpError(status, f"head exceeds {limit} bytes")
            if buf.find(b"\n\n", start) >= 0 or buf.find(b"\n\r\n", start) >= 0:
                raise HttpError(malformed, "bare LF line ending")
            self._scanned = len(buf)
            return None
        if end + 4 > limit:
            raise HttpError(status, f"head exceeds {limit} bytes")
        head = bytes(buf[:end + 4])
        del buf[:end + 4]
        self._scanned = 0
        return head

    def _start_body(self, length: int | None, chunked: bool, until_close: bool) -> None:
        if chunked:
            self._state = _State.CHUNK_SIZE
            self._trailers, self._trailer_size = [], 0
        elif until_close:
            self._state = _State.UNTIL_CLOSE
        else:
            self._state = _State.LENGTH
            self._remaining = length or 0

    def _body_event(self, truncated_status: int) -> Event:
        buf = self.buffer
        state = self._state
        if state is _State.LENGTH:
            if self._remaining == 0:
                return self._end([])
            if not buf:
                if self.eof:
                    raise HttpError(truncated_status, "connection closed inside a body")
                return Signal.NEED_DATA
            take = min(self._remaining, len(buf))
            data = bytes(buf) if take == len(buf) else bytes(buf[:take])
            del buf[:take]
            self._remaining -= take
            return Data(data)
        if state is _State.UNTIL_CLOSE:
            if buf:
                data = bytes(buf)
                buf.clear()
                return Data(data)
            return self._end([]) if self.eof else Signal.NEED_DATA
        if state is _State.CHUNK_DATA:
            if not buf:
                if self.eof:
                    raise HttpError(truncated_status, "connection closed inside a chunk")
                return Signal.NEED_DATA
            take = min(self._remaining, len(buf))
            data = bytes(buf) if take == len(buf) else bytes(buf[:take])
            del buf[:take]
            self._remaining -= take
            if self._remaining == 0:
                self._state = _State.CHUNK_END
            return Data(data)
        return self._chunk_framing(truncated_status)

    def _line(self, limit: int, truncated_status: int) -> bytes | None:
        buf = self.buffer
        end = buf.find(b"\r\n")
        if end < 0:
            if b"\n" in buf:
                raise HttpError(400, "bare LF in chunked framing")
            if len(buf) > limit:
                raise HttpError(400, "chunk framing line too long")
            if self.eof:
                raise HttpError(truncated_status, "connection closed inside chunked framing")
            return None
        if b"\n" in buf[:end] or b"\r" in buf[:end]:
            raise HttpError(400, "bare CR or LF in chunked framing")
        line = bytes(buf[:end])
        del buf[:end + 2]
        return line

    def _chunk_framing(self, truncated_status: int) -> Event:
        while True:
            state = self._state
            if state is _State.CHUNK_END:
                if len(self.buffer) < 2:
                    if self.eof:
                        raise HttpError(truncated_status, "connection closed inside a chunk")
                    return Signal.NEED_DATA
                if self.buffer[:2] != b"\r\n":
                    raise HttpError(400, "chunk data not followed by CRLF")
                del self.buffer[:2]
                self._state = _State.CHUNK_SIZE
            elif state is _State.CHUNK_SIZE:
                line = self._line(self.limits.max_chunk_line, truncated_status)
                if line is None:
                    return Signal.NEED_DATA
                self._remaining = _chunk_size(line)
                if self._remaining == 0:
                    self._state = _State.TRAILERS
                else:
                    self._state = _State.CHUNK_DATA
                    return self._body_event(truncated_status)
            elif state is _State.TRAILERS:
                line = self._line(self.limits.max_trailer_size, truncated_status)
                if line is None:
                    return Signal.NEED_DATA
                if not line:
                    return self._end(self._trailers)
                self._trailer_size += len(line) + 2
                if self._trailer_size > self.limits.max_trailer_size:
                    raise HttpError(431, "trailer section too large")
                self._trailers.append(_trailer_field(line))
            else:  # pragma: no cover - states above are exhaustive
                raise AssertionError(state)

    def _end(self, trailers: Headers) -> EndOfMessage:
        self._state = _State.HEAD
        return EndOfMessage(trailers)


def _chunk_size(line: bytes) -> int:
    size, _, ext = line.partition(b";")
    size = size.rstrip(b" \t")
    if not size or len(size) > 16 or not all(b in _HEX for b in size):
        raise HttpError(400, "invalid chunk size")
    if ext and any(b < 0x20 and b != 0x09 or b == 0x7F for b in ext):
        raise HttpError(400, "control character in a chunk extension")
    return int(size, 16)


def _trailer_field(line: bytes) -> tuple[str, str]:
    name, sep, value = line.partition(b":")
    if not sep or not name or not all(b in _TOKEN_CHARS for b in name):
        raise HttpError(400, "malformed trailer field")
    value = value.strip(b" \t")
    if any(b < 0x20 and b != 0x09 or b == 0x7F for b in value):
        raise HttpError(400, "control character in a trailer field")
    return name.decode("latin-1"), value.decode("latin-1")


class RequestReader(_Reader):
    """Requests of one client connection, one at a time, pipelined or not.

    After an Upgrade or CONNECT request the reader pauses: `resume()` continues with HTTP
    (the upgrade was refused), `take_buffer()` hands the bytes to a raw relay.
    """

    def __init__(self, limits: Limits) -> None:
        super().__init__(limits)
        self.current: Request | None = None
        self._slot: ParserSlot | None = None

    def next_event(self) -> Event:
        state = self._state
        if state is _State.HEAD:
            buf = self.buffer
            while buf[:2] == b"\r\n":  # RFC 9112 §2.2: ignore empty lines before a request
                del buf[:2]
            head = self._split_head(431, 400)
            if head is None:
                if self.eof:
                    if buf:
                        raise HttpError(400, "connection closed inside a request head")
                    return Signal.CLOSED
                return Signal.NEED_DATA
            slot = self._slot or ParserSlot()
            self._slot = None  # kept only if llhttp ended this message at the head
            request = parse_request_head(head, self.limits, slot)
            if not (request.has_body or request.upgrade or request.method == "CONNECT"):
                self._slot = slot
            self.current = request
            self._start_body(request.content_length, request.chunked, False)
            return request
        if state is _State.PAUSED:
            return Signal.PAUSED
        event = self._body_event(400)
        if isinstance(event, EndOfMessage):
            req = self.current
            if req is not None and (req.upgrade or req.method == "CONNECT"):
                self._state = _State.PAUSED
        return event

    def resume(self) -> None:
        """Continue parsing HTTP after a paused upgrade request that was not upgraded."""
        if self._state is _State.PAUSED:
            self._state = _State.HEAD


class ResponseReader(_Reader):
    """Responses of one upstream connection; `start(method)` before each request's response."""

    def __init__(self, limits: Limits) -> None:
        super().__init__(limits)
        self._method = "GET"
        self._state = _State.DONE
        self.current: Response | None = None

    def start(self, method: str) -> None:
        self._method = method
        self._state = _State.HEAD

    @property
    def unsolicited(self) -> bool:
        """Bytes arrived while no response was expected: the connection must not be reused."""
        return self._state is _State.DONE and bool(self.buffer)

    def next_event(self) -> Event:
        state = self._state
        if state is _State.HEAD:
            head = self._split_head(502, 502)
            if head is None:
                if self.eof:
                    raise HttpError(502, "upstream closed before a complete response head")
                return Signal.NEED_DATA
            response = parse_response_head(head, self.limits, self._method)
            self.current = response
            if response.status == 101:
                self._state = _State.PAUSED
            elif response.status < 200:
                self._state = _State.HEAD  # interim: the final response follows
            elif response.bodiless:
                self._state = _State.LENGTH
                self._remaining = 0
            else:
                self._start_body(response.content_length, response.chunked,
                                 response.close_delimited)
            return response
        if state is _State.PAUSED:
            return Signal.PAUSED
        if state is _State.DONE:
            return Signal.NEED_DATA
        event = self._body_event(502)
        if isinstance(event, EndOfMessage):
            self._state = _State.DONE
        return event

# -- writing -------------------------------------------------------------------------

def encode_chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def encode_last_chunk(trailers: Headers) -> bytes:
    if not trailers:
        return b"0\r\n\r\n"
    return ("0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in trailers) + "\r\n").encode("latin-1")
