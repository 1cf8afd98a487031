"""The client side of one inference.local connection: requests in, responses out.

Parsing is the proxy's strict sans-IO HTTP/1.1 reader (stockade/network/http1.py), so the router
and the egress proxy agree on every message boundary; this module is the only one that knows
it. Responses to HTTP/1.1 clients are chunked (a streamed body has no length up front);
HTTP/1.0 clients get a close-delimited body.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any, Protocol

from ..network.http1 import Data, EndOfMessage, RequestReader, Signal, encode_chunk
from ..network.httphead import HttpError, Request, encode_response_head
from ..network.limits import Limits
from .errors import reason_phrase

READ_SIZE = 64 * 1024
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

__all__ = ["BodyTooLarge", "ChannelConnection", "ClientGone", "ClientStream", "Connection", "HttpError",
           "Request", "ResponseWriter", "StreamConnection"]


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    """The client closed the connection (or it broke) while we were writing to it."""


class Connection(Protocol):
    """The client connection as the router needs it; adapters below for asyncio streams and
    for the proxy's Channel (plain, or TLS terminated by the proxy)."""

    async def recv(self, timeout: float) -> bytes | None:
        """Some bytes; b"" at end of stream; None when nothing arrived within `timeout`."""

    async def send(self, data: bytes) -> None:
        """Write and wait for the buffer to drain; raises ClientGone when the peer left."""

    async def close(self) -> None: ...


class StreamConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def recv(self, timeout: float) -> bytes | None:
        try:
            async with asyncio.timeout(timeout):
                return await self.reader.read(READ_SIZE)
        except TimeoutError:
            return None
        except (ConnectionError, OSError):
            return b""

    async def send(self, data: bytes) -> None:
        if self.writer.is_closing():
            raise ClientGone()
        self.writer.write(data)
        try:
            await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            raise ClientGone() from exc

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()
            async with asyncio.timeout(5):
                await self.writer.wait_closed()


class ChannelConnection:
    """The proxy's stockade.network.relay.Channel (duck-typed: read, write, drain, close)."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        channel.set_timeout()  # the router keeps its own timeouts from here on

    async def recv(self, timeout: float) -> bytes | None:
        try:
            async with asyncio.timeout(timeout):
                return await self.channel.read()
        except TimeoutError:
            return None

    async def send(self, data: bytes) -> None:
        channel = self.channel
        if channel.closed or (channel.transport is not None and channel.transport.is_closing()):
            raise ClientGone()
        channel.write(data)
        await channel.drain()
        if channel.closed:
            raise ClientGone()

    async def close(self) -> None:
        self.channel.close()


class ClientStream:
    """Reads the requests of one client connection, one at a time, and writes the answers."""

    def __init__(self, conn: Connection, limits: Limits) -> None:
        self.conn = conn
        self.limits = limits
        self._rr = RequestReader(limits)

    async def _fill(self, timeout: float) -> bool:
        """Read more bytes; False on timeout."""
        data = await self.conn.recv(timeout)
        if data is None:
            return False
        if data:
            self._rr.feed(data)
        else:
            self._rr.feed_eof()
        return True

    async def next_request(self, idle_timeout: float, head_timeout: float) -> Request | None:
        """The next request head; None when the client closed or stayed idle (a quiet close).
        Raises HttpError for a malformed head or one that does not arrive in time (408)."""
        while True:
            event = self._rr.next_event()
            if isinstance(event, Request):
                return event
            if event is Signal.CLOSED:
                return None
            if event is Signal.PAUSED:  # an ignored Upgrade on the previous request
                self._rr.resume()
                continue
            pending = self._rr.pending_head
            if not await self._fill(head_timeout if pending else idle_timeout):
                if pending:
                    raise HttpError(408, f"no complete request head within {head_timeout:g} s")
                return None

    async def read_body(self, request: Request, cap: int, timeout: float) -> bytes:
        """The whole body (at most `cap` bytes; BodyTooLarge beyond, without reading the rest)."""
        if request.content_length is not None and request.content_length > cap:
            raise BodyTooLarge()
        expect = request.get("expect")
        if expect and expect.lower() == "100-continue" and request.has_body:
            await self.send(CONTINUE)
        parts: list[bytes] = []
        size = 0
        while True:
            event = self._rr.next_event()
            if isinstance(event, Data):
                size += len(event.data)
                if size > cap:
                    raise BodyTooLarge()
                parts.append(event.data)
            elif isinstance(event, EndOfMessage):
                return b"".join(parts)
            elif event is Signal.NEED_DATA:
                if not await self._fill(timeout):
                    raise HttpError(408, f"the request body stalled for {timeout:g} s")
            else:  # pragma: no cover - the reader yields nothing else inside a body
                raise HttpError(400, "unexpected data inside a request body")

    async def send(self, data: bytes) -> None:
        await self.conn.send(data)


class ResponseWriter:
    """One streamed response: `start`, any number of `send`, then `finish`.

    `start(..., defer=True)` keeps the head until the first body bytes (or the end) so that a
    small response leaves in one write: every write to a local peer is a syscall and a wake-up,
    which is most of what the router adds to a request. Event streams start undeferred: the
    client sees the status as soon as the backend sent it."""

    def __init__(self, stream: ClientStream, version: str, keep_alive: bool) -> None:
        self.stream = stream
        self.chunked = version == "1.1"
        self.keep_alive = keep_alive and self.chunked
        self.version = version
        self.started = False
        self.sent_bytes = 0
        self._pending = b""

    async def start(self, status: int, headers: Iterable[tuple[str, str]], *, defer: bool = False) -> None:
        fields = list(headers)
        fields.append(("transfer-encoding", "chunked") if self.chunked else ("connection", "close"))
        if self.chunked and not self.keep_alive:
            fields.append(("connection", "close"))
        self.started = True
        head = encode_response_head(status, reason_phrase(status), fields, self.version)
        if defer:
            self._pending = head
        else:
            await self.stream.send(head)

    def _frame(self, data: bytes) -> bytes:
        if not data:
            return b""  # an empty chunk would end a chunked body
        self.sent_bytes += len(data)
        return encode_chunk(data) if self.chunked else data

    @property
    def unsent(self) -> bool:
        """Nothing reached the client yet: the response can still be replaced by an error."""
        return bool(self._pending) and self.sent_bytes == 0

    async def send(self, data: bytes) -> None:
        framed = self._frame(data)
        if framed or self._pending:
            out, self._pending = self._pending + framed, b""
            await self.stream.send(out)

    async def finish(self, data: bytes = b"") -> None:
        """End the body, with its last bytes if given (one write)."""
        out = self._pending + self._frame(data) + (b"0\r\n\r\n" if self.chunked else b"")
        self._pending = b""
        if out:
            await self.stream.send(out)
