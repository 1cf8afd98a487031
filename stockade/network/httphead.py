"""HTTP/1.x message heads (sans-IO): parsed into `Request` and `Response`, and written back.

Heads are parsed by llhttp (through httptools) in strict mode: bare LF, obs-fold, whitespace
before a colon, invalid tokens, CL+TE, duplicate or non-numeric Content-Length and unknown
versions are errors, never "repaired". The framing fields (Content-Length, Transfer-Encoding,
Connection, Upgrade) are interpreted here, once, so that the readers of http1.py know exactly
where each body ends. Header names and values are kept as `str` decoded as latin-1 (a lossless
view of the bytes); values that are not valid UTF-8 are rejected.
"""

from __future__ import annotations

import httptools

from ..records import Struct, field
from .limits import Limits

Headers = list[tuple[str, str]]

# Headers that describe one hop (RFC 9110 §7.6.1) plus the de-facto proxy ones; never forwarded.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authorization",
    "proxy-authenticate", "te", "transfer-encoding", "upgrade",
})


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


class Request(Struct):
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


class Response(Struct):
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


class _Fields(Struct):
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


def _feed(parser: httptools.HttpRequestParser | httptools.HttpResponseParser, c: _Collector,
          head: bytes, status: int, malformed: str) -> None:
    """Feed one complete head to llhttp; HttpError(status) unless it is well-formed."""
    try:
        parser.feed_data(head)
    except httptools.HttpParserUpgrade:
        pass  # CONNECT, an Upgrade request or a 101: only the head was fed, nothing is lost
    except httptools.HttpParserError as exc:
        # llhttp pauses after any 101 head, also one without `Connection: upgrade`; the head
        # itself is complete and valid then, and the caller decides what a 101 means.
        if not (c.done and str(exc).startswith("Pause on")):
            raise HttpError(status, f"{malformed}: {exc}") from None
    if not c.done:
        raise HttpError(status, malformed)


def _keep_alive(version: str, connection: frozenset[str]) -> bool:
    return ("close" not in connection) if version == "1.1" else ("keep-alive" in connection)


class ParserSlot:
    """A request parser kept between bodiless requests (llhttp is then ready for the next
    message), saving its construction on the hot path; dropped after anything else."""

    __slots__ = ("collector", "parser")

    def __init__(self) -> None:
        self.collector = _Collector()
        self.parser = httptools.HttpRequestParser(self.collector)


def parse_request_head(head: bytes, limits: Limits, slot: ParserSlot | None = None) -> Request:
    """Parse one complete request head (ending in CRLF CRLF)."""
    if slot is None:
        slot = ParserSlot()
    c, parser = slot.collector, slot.parser
    c.url, c.headers, c.done = b"", [], False
    _feed(parser, c, head, 400, "malformed request head")
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
    keep_alive = _keep_alive(version, connection)
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
    _feed(parser, c, head, 502, "malformed response head from upstream")
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
    keep_alive = _keep_alive(version, connection)
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


# -- writing -------------------------------------------------------------------------

def encode_request_head(method: str, target: str, headers: Headers) -> bytes:
    lines = [f"{method} {target} HTTP/1.1"]
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def encode_response_head(status: int, reason: str, headers: Headers, version: str = "1.1") -> bytes:
    lines = [f"HTTP/{version} {status} {reason}"]
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# Fields a `Connection` token may not remove. Content-Length delimits the body this proxy
# forwards: dropping it because the sender listed it (`Connection: Content-Length`) made the next
# hop see a bodiless message and read the body as the next request, unchecked (smuggling). Host
# was checked against the tunnel (or set from the URL); dropping it would let the upstream pick
# a default virtual host instead.
_NOT_NOMINABLE = frozenset({"content-length", "host"})


def end_to_end(headers: Headers, connection: frozenset[str],
               names: list[str] | None = None, *, also: frozenset[str] = frozenset()) -> Headers:
    """`headers` without hop-by-hop fields, the fields Connection names, and `also`.
    `names` are the lower-cased names when the parser already computed them."""
    drop = HOP_BY_HOP
    if connection or also:
        drop = drop | (connection - _NOT_NOMINABLE) | also
    if names is None or len(names) != len(headers):
        return [(k, v) for k, v in headers if k.lower() not in drop]
    return [h for h, n in zip(headers, names) if n not in drop]
