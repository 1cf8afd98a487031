"""Sans-IO HTTP/1.1 message framing for the proxy: bytes in, heads and body pieces out.

Heads are parsed by llhttp (through httptools) in strict mode: bare LF, obs-fold, whitespace
before a colon, invalid tokens, CL+TE, duplicate or non-numeric Content-Length and unknown
versions are errors, never "repaired". Body framing (Content-Length counting, chunked decoding)
is done here so that a message boundary is always known exactly: every request of a kept-alive
or pipelined stream comes out on its own and is decided on its own (OpenShell forwards the bytes
after the first forward-proxy request unchecked, network.md Appendix A.7).

Bodies are re-framed on the way out (`encode_chunk`, `encode_last_chunk`): what the next hop
receives is canonical, so a parsing difference between us and it cannot smuggle a request.
Header names and values are kept as `str` decoded as latin-1 (a lossless view of the bytes);
values that are not valid UTF-8 are rejected.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import httptools

from .limits import Limits

Headers = list[tuple[str, str]]

# Headers that describe one hop (RFC 9110 §7.6.1) plus the de-facto proxy ones; never forwarded.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authorization",
    "proxy-authenticate", "te", "transfer-encoding", "upgrade",
})
_TOKEN_CHARS = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_HEX = frozenset(b"0123456789abcdefABCDEF")


class HttpError(Exception):
    """A message that cannot be handled; `status` is what a client would be answered."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _header(headers: Headers, name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


@dataclass(slots=True)
class Request:
    method: str
    target: str
    version: str  # "1.0" | "1.1"
    headers: Headers
    content_length: int | None = None
    chunked: bool = False
    keep_alive: bool = True
    connection: frozenset[str] = frozenset()  # tokens of the Connection field(s)
    upgrade: str | None = None  # the Upgrade value when Connection also names "upgrade"
    head_size: int = 0
    names: list[str] = field(default_factory=list)  # lower-cased names, parallel to headers

    def get(self, name: str) -> str | None:
        return _header(self.headers, name)

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)


@dataclass(slots=True)
class Response:
    status: int
    reason: str
    version: str
    headers: Headers
    content_length: int | None = None
    chunked: bool = False
    close_delimited: bool = False  # the body runs until the upstream closes
    bodiless: bool = False  # HEAD, 1xx, 204, 304
    keep_alive: bool = True
    connection: frozenset[str] = frozenset()
    head_size: int = 0
    names: list[str] = field(default_factory=list)

    def get(self, name: str) -> str | None:
        return _header(self.headers, name)


@dataclass(slots=True)
class Data:
    data: bytes


@dataclass(slots=True)
class EndOfMessage:
    trailers: Headers = field(default_factory=list)


class Signal(enum.Enum):
    NEED_DATA = "need-data"  # feed more bytes
    PAUSED = "paused"  # after an upgrade/CONNECT request or a 101: the caller decides
    CLOSED = "closed"  # the peer closed cleanly between messages


Event = Request | Response | Data | EndOfMessage | Signal


# -- head parsing (llhttp) ---------------------------------------------------------------

class _Collector:
    __slots__ = ("url", "reason", "headers", "done")

    def __init__(self) -> None:
        self.url = b""
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.done = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.done = True


_FRAMING = frozenset({b"transfer-encoding", b"content-length", b"connection", b"upgrade"})


@dataclass(slots=True)
class _Fields:
    headers: Headers
    names: list[str]  # the field names lower-cased, parallel to headers
    te: list[str]  # Transfer-Encoding codings, lower-cased, in order
    te_seen: bool
    cl: list[str]  # Content-Length values
    connection: list[str]  # Connection tokens, lower-cased
    upgrade: str | None


def _tokens_of(value: str) -> list[str]:
    return [t.strip().lower() for t in value.split(",") if t.strip()]


def _scan(raw: list[tuple[bytes, bytes]], limits: Limits) -> _Fields:
    """Decode the fields and pick out the framing ones, in one pass over the head."""
    if len(raw) > limits.max_header_count:
        raise HttpError(431, f"more than {limits.max_header_count} header fields")
    f = _Fields([], [], [], False, [], [], None)
    headers, names = f.headers, f.names
    for name, value in raw:
        if not value.isascii():
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                raise HttpError(400, f"header {name.decode('latin-1')} is not valid UTF-8") from None
        text = value.decode("latin-1")
        headers.append((name.decode("latin-1"), text))
        lower = name.lower()
        names.append(lower.decode("latin-1"))
        if lower in _FRAMING:
            if lower == b"transfer-encoding":
                f.te_seen = True
                f.te += _tokens_of(text)
            elif lower == b"content-length":
                f.cl.append(text)
            elif lower == b"connection":
                f.connection += _tokens_of(text)
            elif f.upgrade is None:
                f.upgrade = text
    return f


def _transfer_coding(f: _Fields, version: str, *, request: bool) -> bool | None:
    """True for a chunked body, None without Transfer-Encoding; raises on anything else."""
    codings = f.te
    if not codings:
        if f.te_seen:
            raise HttpError(400, "empty Transfer-Encoding")
        return None
    if version == "1.0":
        raise HttpError(400, "Transfer-Encoding in an HTTP/1.0 message")
    if codings.count("chunked") > 1 or ("chunked" in codings and codings[-1] != "chunked"):
        raise HttpError(400, "chunked must be the last and only once in Transfer-Encoding")
    if codings[-1] != "chunked":
        if request:
            raise HttpError(400, "request Transfer-Encoding does not end with chunked")
        return False  # a response body then runs until close (RFC 9112 §6.3)
    return True


def _content_length(f: _Fields) -> int | None:
    values = f.cl
    if not values:
        return None
    # llhttp already rejects duplicates and non-digits; this keeps the rule local and explicit.
    if len(values) > 1 or not values[0].isdigit() or not values[0].isascii() or len(values[0]) > 18:
        raise HttpError(400, "invalid or repeated Content-Length")
    return int(values[0])


def _is_pause(exc: Exception) -> bool:
    return str(exc).startswith("Pause on")


class _ParserSlot:
    """A request parser kept between bodiless requests (llhttp is then ready for the next
    message), saving its construction on the hot path; dropped after anything else."""

    __slots__ = ("collector", "parser")

    def __init__(self) -> None:
        self.collector = _Collector()
        self.parser = httptools.HttpRequestParser(self.collector)


def parse_request_head(head: bytes, limits: Limits, slot: _ParserSlot | None = None) -> Request:
    """Parse one complete request head (ending in CRLF CRLF)."""
    if slot is None:
        slot = _ParserSlot()
    c, parser = slot.collector, slot.parser
    c.url, c.headers, c.done = b"", [], False
    try:
        parser.feed_data(head)
    except httptools.HttpParserUpgrade:
        pass  # CONNECT or an Upgrade request: only the head was fed, nothing is lost
    except httptools.HttpParserError as exc:
        if not (c.done and _is_pause(exc)):
            raise HttpError(400, f"malformed request head: {exc}") from None
    if not c.done:
        raise HttpError(400, "malformed request head")
    version = parser.get_http_version()
    if version not in ("1.1", "1.0"):
        raise HttpError(505 if version.startswith(("2", "3")) else 400,
                        f"HTTP/{version} is not supported by this proxy (HTTP/1.x only)")
    if len(c.url) > limits.max_target_size:
        raise HttpError(414, f"request-target longer than {limits.max_target_size} bytes")
    f = _scan(c.headers, limits)
    headers = f.headers
    chunked = _transfer_coding(f, version, request=True)
    length = _content_length(f)
    if chunked and length is not None:
        raise HttpError(400, "both Transfer-Encoding and Content-Length")
    connection = frozenset(f.connection)
    keep_alive = ("close" not in connection) if version == "1.1" else ("keep-alive" in connection)
    upgrade = f.upgrade if "upgrade" in connection else None
    return Request(
        method=parser.get_method().decode("ascii"), target=c.url.decode("latin-1"),
        version=version, headers=headers, content_length=length, chunked=bool(chunked),
        keep_alive=keep_alive, connection=connection, upgrade=upgrade or None,
        head_size=len(head), names=f.names,
    )


def parse_response_head(head: bytes, limits: Limits, request_method: str) -> Response:
    c = _Collector()
    parser = httptools.HttpResponseParser(c)
    try:
        parser.feed_data(head)
    except httptools.HttpParserUpgrade:
        pass  # a 101: the caller switches protocols
    except httptools.HttpParserError as exc:
        # llhttp pauses after any 101 head, also one without `Connection: upgrade`; the head
        # itself is complete and valid then, and the caller decides what a 101 means.
        if not (c.done and _is_pause(exc)):
            raise HttpError(502, f"malformed response head from upstream: {exc}") from None
    if not c.done:
        raise HttpError(502, "malformed response head from upstream")
    version = parser.get_http_version()
    if version not in ("1.1", "1.0"):
        raise HttpError(502, f"upstream answered HTTP/{version}")
    status = parser.get_status_code()
    try:
        f = _scan(c.headers, limits)
        chunked = _transfer_coding(f, version, request=False)
        length = _content_length(f)
    except HttpError as exc:
        raise HttpError(502, f"upstream response: {exc.detail}") from None
    headers = f.headers
    if chunked is not None and length is not None:
        raise HttpError(502, "upstream response has both Transfer-Encoding and Content-Length")
    connection = frozenset(f.connection)
    keep_alive = ("close" not in connection) if version == "1.1" else ("keep-alive" in connection)
    bodiless = status < 200 or status in (204, 304) or request_method == "HEAD"
    close_delimited = not bodiless and (chunked is False or (chunked is None and length is None))
    if close_delimited:
        keep_alive = False
        length = None
    return Response(
        status=status, reason=c.reason.decode("latin-1"), version=version, headers=headers,
        content_length=None if bodiless else length, chunked=bool(chunked) and not bodiless,
        close_delimited=close_delimited, bodiless=bodiless, keep_alive=keep_alive,
        connection=connection, head_size=len(head), names=f.names,
    )


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
        self._slot: _ParserSlot | None = None

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
            slot = self._slot or _ParserSlot()
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


# -- writing -----------------------------------------------------------------------------

def encode_request_head(method: str, target: str, headers: Headers) -> bytes:
    lines = [f"{method} {target} HTTP/1.1"]
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def encode_response_head(status: int, reason: str, headers: Headers, version: str = "1.1") -> bytes:
    lines = [f"HTTP/{version} {status} {reason}"]
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def encode_chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def encode_last_chunk(trailers: Headers) -> bytes:
    if not trailers:
        return b"0\r\n\r\n"
    return ("0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in trailers) + "\r\n").encode("latin-1")


def end_to_end(headers: Headers, connection: frozenset[str],
               names: list[str] | None = None, *, also: frozenset[str] = frozenset()) -> Headers:
    """`headers` without hop-by-hop fields, the fields Connection names, and `also`.
    `names` are the lower-cased names when the parser already computed them."""
    drop = HOP_BY_HOP
    if connection or also:
        drop = drop | connection | also
    if names is None or len(names) != len(headers):
        return [(k, v) for k, v in headers if k.lower() not in drop]
    return [h for h, n in zip(headers, names) if n not in drop]
