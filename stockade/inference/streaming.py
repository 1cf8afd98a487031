"""Relaying a backend's response body to the client as it arrives.

Nothing is buffered beyond one read: each piece the backend sends is written (as one HTTP chunk)
and drained before the next read, so the first tokens reach the agent while the backend is
still generating. Between two reads the backend may stay silent at most `idle_timeout`.

How a body can end, and what the client sees:
- normally: the chunked terminator;
- an event stream that fails (idle gap, broken connection, a cut in the middle of an event):
  one error event in the protocol's format, then the terminator (never a silent truncation);
- any other body that fails: the connection is closed without the terminator, which every
  HTTP client reports as an incomplete response (JSON cannot carry an appended error).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx

from ..records import Struct, field
from .errors import sse_error_event
from .redact import Redactor
from .shapes import Protocol
from .sse import EventAligner, split_events
from .usage import MAX_JSON_CAPTURE, StreamUsage, Usage, usage_from_json
from .wire import ClientGone, ResponseWriter


class RelayResult(Struct):
    usage: Usage = field(default_factory=Usage)
    error: str | None = None  # why the body ended early (for the event), None when it did not
    complete: bool = True  # False: the response framing was not finished; close the connection
    client_gone: bool = False
    # Set when the backend failed before the client got a byte: answer this error instead.
    replace_with: tuple[int, str, str] | None = None  # (status, code, message)


class _Failure(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


async def _next(chunks: AsyncIterator[bytes], idle_timeout: float) -> bytes | None:
    """The next piece of the body; None at its end. Raises _Failure."""
    try:
        async with asyncio.timeout(idle_timeout):
            return await anext(chunks)
    except StopAsyncIteration:
        return None
    except TimeoutError:
        raise _Failure("stream_idle_timeout",
                       f"the model backend sent nothing for {idle_timeout:g} s; "
                       "stockade ended the response") from None
    except (httpx.HTTPError, OSError) as exc:
        raise _Failure("backend_stream_failed",
                       f"the connection to the model backend failed mid-response "
                       f"({type(exc).__name__})") from None


async def relay_events(chunks: AsyncIterator[bytes], out: ResponseWriter, *, protocol: Protocol,
                       idle_timeout: float) -> RelayResult:
    """An SSE body: complete events only, usage from the final events, an error event on failure."""
    result = RelayResult()
    aligner = EventAligner()
    tracker = StreamUsage()
    final_sent = False  # the stream's final event ([DONE], message_stop...) was written
    try:
        try:
            while (chunk := await _next(chunks, idle_timeout)) is not None:
                events = aligner.feed(chunk)
                if events:
                    for event in split_events(events):
                        tracker.observe(event)
                    await out.send(events)
                    final_sent = tracker.finished
            if aligner.pending:
                raise _Failure("backend_stream_truncated",
                               "the model backend ended the stream in the middle of an event")
        except _Failure as failure:
            result.error = failure.message
            aligner.discard()
            await out.finish(sse_error_event(protocol, failure.code, failure.message))
        else:
            await out.finish()
    except ClientGone:
        result.client_gone = True
        result.complete = False
        # A client may close once it has the stream's final event (the openai SDK stops at
        # [DONE]): the body then did not end early, only its chunked terminator is missing.
        if not (final_sent and result.error is None):
            result.error = result.error or "the client closed the connection"
    result.usage = tracker.usage
    return result


async def relay_body(chunks: AsyncIterator[bytes], out: ResponseWriter, *, idle_timeout: float,
                     redactor: Redactor | None) -> RelayResult:
    """Any other body: relayed as it comes, usage read from a JSON body of reasonable size."""
    result = RelayResult()
    captured: list[bytes] = []
    size = 0
    # Each piece is written once the next read returns, so the last one leaves together with
    # the terminator (a JSON answer is usually one piece: head, body and end in one write).
    held = b""
    try:
        try:
            while (chunk := await _next(chunks, idle_timeout)) is not None:
                size += len(chunk)
                if size <= MAX_JSON_CAPTURE:
                    captured.append(chunk)
                await out.send(held)
                held = redactor.feed(chunk) if redactor else chunk
            if redactor:
                held += redactor.flush()
        except _Failure as failure:
            result.error = failure.message
            if out.unsent and not held:
                status = 504 if failure.code == "stream_idle_timeout" else 502
                result.replace_with = (status, failure.code, failure.message)
                return result
            await out.send(held)
            result.complete = False
            return result
        await out.finish(held)
    except ClientGone:
        result.client_gone = True
        result.complete = False
        result.error = "the client closed the connection"
        return result
    if size <= MAX_JSON_CAPTURE:
        result.usage = usage_from_json(b"".join(captured))
    return result
