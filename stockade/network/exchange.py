"""One HTTP exchange through the proxy, and the request loop both HTTP adapters share.

`HttpSession` reads the requests of one client connection one at a time (pipelined requests
wait in the parser until the response to the previous one has been relayed: responses can
never be reordered or interleaved), asks its subclass to `route` each one (decide, pick or dial
the upstream, build the head to send), then relays the body up and the response down:

- the request body is streamed up by the session task, re-framed canonically;
- the response is relayed in callbacks of the upstream Protocol (no task wake-up per chunk),
  re-framed for the client (chunked for HTTP/1.1, close-delimited for HTTP/1.0);
- a 101 is honoured only when the request asked for that upgrade; then both sides are piped.

Every failure the client can still be told about is answered (JSON, then close); a failure in
the middle of a response body can only be signalled by closing the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

from ..events.types import Action, Actor, FindingEvent, HttpEvent, Recorder
from ..policy.l7 import INVALID_REQUEST, RequestDecision
from ..records import Struct
from .http1 import (
    Data,
    EndOfMessage,
    RequestReader,
    ResponseReader,
    Signal,
    encode_chunk,
    encode_last_chunk,
)
from .httphead import (
    HttpError,
    Request,
    Response,
    encode_request_head,
    encode_response_head,
    end_to_end,
)
from .limits import Limits
from .pipeline import Caller
from .relay import Channel, relay
from .responses import ErrorResponse, ProxyError, bad_request, denied, head_timeout
from .target import Authority

VIA = "stockade"


class Route(Struct):
    """Where a request goes and exactly what is sent: built by the adapter's `route`."""

    upstream: Channel
    head: bytes  # the request head for the upstream (already rewritten)
    allow_upgrade: bool  # the request asked for an upgrade and the policy allows it
    via: bool = False  # add Via to the response (forward proxy)
    tied: bool = False  # the client connection lives only as long as this upstream (tunnels)

    def __repr__(self) -> str:
        # head may carry substituted secret values: never in a repr
        return (f"Route(upstream={self.upstream!r}, head=<{len(self.head)} bytes redacted>, "
                f"allow_upgrade={self.allow_upgrade!r}, via={self.via!r}, tied={self.tied!r})")

    def __rich_repr__(self) -> Iterator[tuple[str, Any]]:  # Struct's default would list every field
        yield "upstream", self.upstream
        yield "allow_upgrade", self.allow_upgrade


class Outcome(Struct):
    status: int | None = None
    client_reusable: bool = False
    upstream_reusable: bool = False
    upgraded: bool = False
    error: ErrorResponse | None = None  # answered to the client instead of a response
    aborted: bool = False  # the client connection is unusable (a failure mid-response)
    retryable: bool = False  # failed before the upstream sent a byte (a stale pooled connection)


class ResponseRelay:
    """Upstream bytes → ResponseReader → re-framed response on the client (callback mode)."""

    def __init__(self, client: Channel, upstream: Channel, reader: ResponseReader,
                 request: Request, route: Route, on_unsolicited: callable) -> None:  # type: ignore[valid-type]
        self.client = client
        self.upstream = upstream
        self.reader = reader
        self.request = request
        self.route = route
        self.on_unsolicited = on_unsolicited
        self.done: asyncio.Future[Outcome] = upstream.loop.create_future()
        self.head_sent = False
        self.chunk_out = False
        self.close_client = False
        self.final: Response | None = None
        self.received = False  # any byte from the upstream (a stale pooled one sends none)
        self.idle_timeout = 600.0

    def on_data(self, data: bytes) -> None:
        self.received = True
        self.reader.feed(data)
        self.pump()

    def on_eof(self) -> None:
        self.reader.feed_eof()
        self.pump()

    def pump(self) -> None:
        if self.done.done():
            return
        reader = self.reader
        out: list[bytes] = []  # one write per batch of events: fewer syscalls per response
        try:
            while True:
                ev = reader.next_event()
                if isinstance(ev, Data):
                    out.append(encode_chunk(ev.data) if self.chunk_out else ev.data)
                elif ev is Signal.NEED_DATA:
                    break
                elif isinstance(ev, Response):
                    if ev.status == 101:
                        self._flush(out)
                        self._switch(ev)
                        return
                    out.append(self._head(ev))
                    self.head_sent = True
                    if ev.status >= 200:
                        self.final = ev
                        # From the final head on, the body may take long but never stall.
                        self.upstream.set_timeout(idle=self.idle_timeout, on_timeout=self.expired)
                elif isinstance(ev, EndOfMessage):
                    if self.chunk_out:
                        out.append(encode_last_chunk(ev.trailers))
                    self._flush(out)
                    self._finish()
                    return
                else:
                    break
        except HttpError as exc:
            self._flush(out)
            self._fail(ErrorResponse(exc.status if exc.status >= 500 else 502,
                                     "upstream_protocol_error", exc.detail))
            return
        self._flush(out)

    def _flush(self, out: list[bytes]) -> None:
        if out:
            self.client.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def expired(self) -> None:
        """The upstream did not answer in time (504), or stalled inside the body (abort)."""
        if not self.done.done():
            self._fail(ErrorResponse(504, "upstream_timeout", "the upstream did not respond "
                                     "in time"))

    def _head(self, resp: Response) -> bytes:
        headers = end_to_end(resp.headers, resp.connection, resp.names)
        req = self.request
        if resp.status >= 200:
            if resp.chunked and req.version == "1.1":
                self.chunk_out = True
                headers.append(("Transfer-Encoding", "chunked"))
            self.close_client = (not req.keep_alive or resp.close_delimited
                                 or (resp.chunked and req.version != "1.1")
                                 or (self.route.tied and not resp.keep_alive))
            if self.close_client:
                headers.append(("Connection", "close"))
            elif req.version == "1.0":
                headers.append(("Connection", "keep-alive"))
        if self.route.via:
            headers.append(("Via", f"{resp.version} {VIA}"))
        return encode_response_head(resp.status, resp.reason, headers)

    def _switch(self, resp: Response) -> None:
        if not self.route.allow_upgrade:
            self.on_unsolicited(self.request, resp)
            self._fail(ErrorResponse(502, "unsolicited_upgrade",
                                     "the upstream switched protocols without being asked to"))
            return
        headers = end_to_end(resp.headers, resp.connection)
        headers += [("Connection", "Upgrade"), ("Upgrade", resp.get("upgrade") or "")]
        self.client.write(encode_response_head(101, resp.reason, headers))
        leftover = self.reader.take_buffer()
        if leftover:
            self.client.write(leftover)
        # From here on upstream bytes belong to the new protocol: let them queue in the
        # channel until the raw relay takes over.
        self.upstream.on_data = self.upstream.on_eof = None
        self.done.set_result(Outcome(101, upgraded=True))

    def _finish(self) -> None:
        final = self.final
        assert final is not None
        upstream_ok = final.keep_alive and not self.upstream.eof and not self.reader.unsolicited
        self.done.set_result(Outcome(final.status, client_reusable=not self.close_client,
                                     upstream_reusable=upstream_ok))

    def _fail(self, error: ErrorResponse) -> None:
        if self.head_sent and self.final is not None:
            # Mid-body: the only honest signal left is closing the connection.
            self.done.set_result(Outcome(self.final.status, aborted=True))
        else:
            self.done.set_result(Outcome(error.status, error=error))


class TakeOver(Exception):  # noqa: N818 - control flow, not an error
    """Another handler takes the client connection over (CONNECT after forward requests,
    inference.local); the session returns without closing it."""


async def answer(client: Channel, response: ErrorResponse, *, head_only: bool = False) -> None:
    """Write an error response, half-close, and let the client read it before the close."""
    client.write(response.encode(head_only=head_only))
    client.write_eof()
    # Drain what the client still sends so that closing does not turn into a reset that could
    # destroy the unread answer.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(1.0):
            while not client.eof and await client.read():
                pass
    client.close()


class HttpSession:
    """The per-connection request loop; subclasses implement `route` and the bookkeeping."""

    via = "forward"

    def __init__(self, client: Channel, limits: Limits, recorder: Recorder, actor: Actor) -> None:
        self.client = client
        self.limits = limits
        self.recorder = recorder
        self.actor = actor
        self.reader = RequestReader(limits)
        self.loop = asyncio.get_running_loop()

    # -- subclass interface --------------------------------------------------------------

    async def route(self, request: Request) -> Route:
        raise NotImplementedError

    def finished(self, request: Request, route: Route, outcome: Outcome) -> None:
        """Called after each relayed exchange (events, returning the upstream to a pool)."""

    def host_port(self) -> tuple[str | None, int | None]:
        return None, None

    # -- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve requests until the connection ends; `TakeOver` leaves the client open."""
        try:
            await self._serve()
        except TakeOver:
            raise
        except BaseException:
            self.close()
            raise
        self.close()

    async def _serve(self) -> None:
        first = True
        while True:
            try:
                request = await self.next_request(first)
            except HttpError as exc:
                await self.answer(bad_request(exc.detail, status=exc.status,
                                              error=_error_code(exc.status)))
                return
            first = False
            if request is None:
                return
            try:
                route = await self.route(request)
                outcome = await self.exchange(request, route)
            except ProxyError as exc:
                await self.answer(exc.response, request)
                return
            except HttpError as exc:
                await self.answer(bad_request(exc.detail, status=exc.status,
                                              error=_error_code(exc.status)), request)
                return
            self.finished(request, route, outcome)
            if outcome.error is not None:
                await self.answer(outcome.error, request)
                return
            if outcome.upgraded:
                self.client.unread(self.reader.take_buffer())
                await relay(self.client, route.upstream, self.limits.idle_timeout)
                return
            if outcome.aborted or not outcome.client_reusable:
                return
            if route.tied and not outcome.upstream_reusable:
                return

    def close(self) -> None:
        self.client.close()

    async def answer(self, response: ErrorResponse, request: Request | None = None) -> None:
        await answer(self.client, response, head_only=request is not None and request.method == "HEAD")

    async def next_request(self, first: bool = False) -> Request | None:
        """The next request head; None when the client closed (or idled out) between requests.

        A new connection must send its first head within the head timeout; between requests
        on a kept-alive connection the idle timeout applies until a head starts.
        """
        reader, client = self.reader, self.client
        head_deadline: float | None = None
        try:
            while True:
                ev = reader.next_event()
                if isinstance(ev, Request):
                    return ev
                if ev is Signal.CLOSED:
                    return None
                if ev is Signal.PAUSED:
                    reader.resume()
                    continue
                if isinstance(ev, EndOfMessage | Data):  # pragma: no cover - exchange consumes them
                    raise AssertionError("body events outside an exchange")
                if first or reader.pending_head:
                    if head_deadline is None:
                        head_deadline = self.loop.time() + self.limits.head_timeout
                    client.set_timeout(deadline=head_deadline)
                else:
                    client.set_timeout(idle=self.limits.idle_timeout)
                try:
                    data = await client.read()
                except TimeoutError:
                    if first or reader.pending_head:
                        await self.answer(head_timeout(self.limits.head_timeout))
                    return None
                if data:
                    reader.feed(data)
                else:
                    reader.feed_eof()
        finally:
            client.set_timeout()

    async def exchange(self, request: Request, route: Route) -> Outcome:
        upstream, client = route.upstream, self.client
        if upstream.buffered or upstream.eof:
            # An idle upstream that spoke or closed: its bytes are no answer to this request.
            return Outcome(error=ErrorResponse(502, "upstream_protocol_error",
                                               "the upstream connection was not usable"),
                           retryable=True)
        responses = ResponseReader(self.limits)
        responses.start(request.method)
        rr = ResponseRelay(client, upstream, responses, request, route, self._unsolicited)
        rr.idle_timeout = self.limits.idle_timeout
        upstream.on_data = rr.on_data
        upstream.on_eof = rr.on_eof
        client.source = upstream
        upstream.set_timeout(deadline=self.loop.time() + self.limits.response_timeout,
                             on_timeout=rr.expired)
        upstream.write(route.head)
        body_done = True
        if request.has_body:
            body_done = await self._send_body(request, upstream, rr)
        else:
            ev = self.reader.next_event()  # the EndOfMessage of a bodiless request
            assert isinstance(ev, EndOfMessage)
        outcome = await rr.done
        upstream.set_timeout()
        if upstream.on_data == rr.on_data:
            upstream.on_data = upstream.on_eof = None
        client.source = None
        outcome.retryable = outcome.error is not None and not rr.received and not request.has_body
        if not body_done:
            outcome.client_reusable = False
            outcome.upstream_reusable = False
        return outcome

    async def _send_body(self, request: Request, upstream: Channel, rr: ResponseRelay) -> bool:
        """Stream the request body up; False when it could not be completed."""
        reader, client = self.reader, self.client
        chunked = request.chunked
        while True:
            ev = reader.next_event()
            if isinstance(ev, Data):
                upstream.write(encode_chunk(ev.data) if chunked else ev.data)
                await upstream.drain()
            elif isinstance(ev, EndOfMessage):
                if chunked:
                    # Request trailers are dropped: nothing decides or substitutes them (a
                    # placeholder, a second Host or Content-Length could ride there unchecked),
                    # and HTTP/1.1 lets a proxy discard them (RFC 9110 §6.5.1).
                    upstream.write(encode_last_chunk([]))
                return True
            elif ev is Signal.NEED_DATA:
                if rr.done.done() or upstream.closed:
                    return False  # the upstream answered (or left) before the body was sent
                client.set_timeout(idle=self.limits.idle_timeout)
                try:
                    data = await self._read_or_done(rr)
                except TimeoutError:
                    return False
                finally:
                    client.set_timeout()
                if data is None:
                    return False
                if data:
                    reader.feed(data)
                else:
                    reader.feed_eof()
            else:  # pragma: no cover - a body never pauses
                return True

    async def _read_or_done(self, rr: ResponseRelay) -> bytes | None:
        """Client bytes, or None if the response completed first (an early answer)."""
        read = asyncio.ensure_future(self.client.read())
        done, _ = await asyncio.wait({read, rr.done}, return_when=asyncio.FIRST_COMPLETED)
        if read in done:
            return read.result()
        read.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await read
        return None

    def _unsolicited(self, request: Request, response: Response) -> None:
        host, port = self.host_port()
        self.recorder.record(FindingEvent(
            "unsolicited_upgrade", f"Unsolicited 101 upgrade blocked: {request.method} "
            f"{request.target[:200]}", "high", self.actor,
            "the upstream answered 101 Switching Protocols to a request that did not ask for "
            "an upgrade; the connection was closed", host, port, Action.DENIED))


def _error_code(status: int) -> str:
    return {431: "request_header_too_large", 414: "uri_too_long", 505: "http_version_not_supported",
            413: "content_too_large", 421: "host_mismatch"}.get(status, "bad_request")


def upstream_head(request: Request, target: str, headers: list[tuple[str, str]], *,
                  upgrade: bool, via: bool) -> bytes:
    """The request head sent upstream, from end-to-end `headers` (see `forwarded_fields`),
    with the framing stated canonically."""
    out = list(headers)
    if request.chunked:
        out.append(("Transfer-Encoding", "chunked"))
    if upgrade and request.upgrade:
        out += [("Connection", "Upgrade"), ("Upgrade", request.upgrade)]
    if via:
        out.append(("Via", f"{request.version} {VIA}"))
    return encode_request_head(request.method, target, out)


def forwarded_fields(request: Request, host: str | None = None) -> list[tuple[str, str]]:
    """The request's end-to-end fields; with `host`, Host replaced by it (forward proxy)."""
    if host is None:
        return end_to_end(request.headers, request.connection, request.names)
    if request.names.count("host") > 1:
        raise HttpError(400, "more than one Host header")
    fields = end_to_end(request.headers, request.connection, request.names,
                        also=frozenset({"host"}))
    fields.insert(0, ("Host", host))
    return fields


def request_denied(recorder: Recorder, caller: Caller, authority: Authority,
                   rd: RequestDecision, shown: str) -> ProxyError:
    """Record a request the L7 rules refused; the error to answer: 400 for a request that
    cannot be evaluated, else 403 with the rule and hint."""
    invalid = rd.reason_code == INVALID_REQUEST
    recorder.record(HttpEvent(Action.DENIED, rd.method, authority.host, authority.port, shown,
                              caller.actor, rd.rule, rd.reason, 400 if invalid else 403))
    if invalid:
        return ProxyError(bad_request(rd.reason, error="invalid_target"))
    return ProxyError(denied(
        error="policy_denied", detail=f"{rd.method} {authority}{shown} denied by L7 policy",
        host=authority.host, port=authority.port, binary=caller.binary, policy=rd.rule,
        reason=rd.reason, hint=rd.hint, extra={"rule": f"{rd.method} {shown}"}))


def wants_websocket(request: Request) -> bool:
    """Only WebSocket upgrades of a GET are relayed; others (h2c...) are stripped, the request
    then proceeds as plain HTTP/1.1 and stays inspectable."""
    return (request.method == "GET" and request.upgrade is not None
            and request.upgrade.strip().lower() == "websocket")
