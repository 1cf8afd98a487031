"""Connections as asyncio Protocols, and the raw relay between two of them.

A `Channel` is one side of a proxied connection (the client, an upstream; plain or TLS). It is
read in one of three ways:
- buffered, `await channel.read()`, while a request head is parsed and decided;
- callback, `channel.on_data`, for the response relay (no task wake-up per chunk);
- piped, `relay(a, b)`, once the decision is made and bytes only need to flow: data_received
  writes straight into the other transport. asyncio Protocols with pause/resume backpressure
  are ~4x faster than streams here (reference/ecosystem.md B.3).

Flow control is the same in every mode: when a channel's transport buffer passes the high
water mark, the channel feeding it (its `source`) stops reading until it drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable

from .limits import Limits


def set_nodelay(sock: socket.socket | None) -> None:
    """TCP_NODELAY: small request/response writes must not wait for Nagle (OpenShell #2219)."""
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Channel(asyncio.Protocol):
    def __init__(self, limits: Limits, initial: bytes = b"") -> None:
        self.limits = limits
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray(initial)
        self.eof = False  # the peer will send nothing more
        self.closed = False  # connection_lost happened
        self._waiter: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self.source: Channel | None = None  # whose incoming bytes are written into us
        self.pipe: Channel | None = None  # piped mode: where our incoming bytes go
        self.on_data: Callable[[bytes], None] | None = None  # callback mode
        self.on_eof: Callable[[], None] | None = None
        self.on_change: Callable[[], None] | None = None  # relay watcher
        self.last_activity = self.loop.time()
        # Timeouts (set_timeout): one lazily re-armed timer, never one per read.
        self.timed_out = False
        self.on_timeout: Callable[[], None] | None = None
        self._deadline: float | None = None
        self._idle: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = 0.0

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        set_nodelay(transport.get_extra_info("socket"))
        transport.set_write_buffer_limits(self.limits.high_water, self.limits.low_water)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.loop.time()
        pipe = self.pipe
        if pipe is not None:
            pipe.write(data)
            return
        if self.on_data is not None:
            self.on_data(data)
            return
        self._buffer += data
        if len(self._buffer) > self.limits.high_water and not self._reading_paused:
            self.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        if self.pipe is not None:
            self.pipe.write_eof()
        elif self.on_eof is not None:
            self.on_eof()
        self._wake()
        self._changed()
        return True  # keep our write side open: the other direction may still flow

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.eof = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.on_eof is not None and self.pipe is None:
            self.on_eof()
        self._wake()
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)
        if self.source is not None and self.source._reading_paused:
            self.source.resume_reading()
        self._changed()

    def pause_writing(self) -> None:
        self._write_paused = True
        if self.source is not None:
            self.source.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.source is not None:
            self.source.resume_reading()
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    # -- helpers -------------------------------------------------------------------------

    @property
    def write_paused(self) -> bool:
        return self._write_paused

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = True
            with contextlib.suppress(RuntimeError, AttributeError):
                self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = False
            with contextlib.suppress(RuntimeError, AttributeError):
                self.transport.resume_reading()

    # -- timeouts ------------------------------------------------------------------------

    def set_timeout(self, *, deadline: float | None = None, idle: float | None = None,
                    on_timeout: Callable[[], None] | None = None) -> None:
        """Expire at `deadline` (loop time) or after `idle` seconds without incoming bytes,
        whichever is first: `read()` then raises TimeoutError and `on_timeout` is called.
        Without arguments, clears the timeout. Cheap enough to call for every request."""
        self._deadline, self._idle, self.on_timeout = deadline, idle, on_timeout
        self.timed_out = False
        if deadline is not None or idle is not None:
            self._arm()

    def _expiry(self) -> float | None:
        when = self._deadline
        if self._idle is not None:
            idle_end = self.last_activity + self._idle
            when = idle_end if when is None else min(when, idle_end)
        return when

    def _arm(self) -> None:
        when = self._expiry()
        if when is None or self.closed:
            return
        if self._timer is not None:
            if self._timer_when <= when:
                return  # an earlier timer is pending: it re-arms itself when it fires
            self._timer.cancel()
        self._timer = self.loop.call_at(when, self._fire)
        self._timer_when = when

    def _fire(self) -> None:
        self._timer = None
        when = self._expiry()
        if when is None:
            return
        if self.loop.time() < when:
            self._arm()
            return
        self.timed_out = True
        self._deadline = self._idle = None
        callback, self.on_timeout = self.on_timeout, None
        self._wake()
        if callback is not None:
            callback()

    # -- reading (buffered mode) ---------------------------------------------------------

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    async def read(self) -> bytes:
        """Whatever has arrived (waiting for at least one byte); b"" once the peer is done.

        Raises TimeoutError when the timeout set with `set_timeout` expires first."""
        while not self._buffer:
            if self.eof:
                return b""
            if self.timed_out:
                raise TimeoutError
            self._waiter = self.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self.take()

    def take(self) -> bytes:
        data = bytes(self._buffer)
        self._buffer.clear()
        if self._reading_paused and self.pipe is None:
            self.resume_reading()
        return data

    def unread(self, data: bytes) -> None:
        """Put bytes back in front of the buffer (a request handed over to another handler)."""
        self._buffer[:0] = data

    # -- writing -------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None and data:
            self.transport.write(data)

    async def drain(self) -> None:
        if self._write_paused and not self.closed:
            self._drain_waiter = self.loop.create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None

    def write_eof(self) -> None:
        """Half-close toward the peer when the transport can (TLS cannot: close after flush)."""
        if self.closed or self.transport is None:
            return
        try:
            if self.transport.can_write_eof():
                self.transport.write_eof()
                return
        except (OSError, RuntimeError, NotImplementedError):
            pass
        self.transport.close()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def relay(a: Channel, b: Channel, idle_timeout: float) -> None:
    """Pipe bytes both ways until both directions ended, either side was lost, or idleness.

    Bytes already buffered on either side (early data, the first bytes of an upgraded
    protocol) are sent first. Half-closes are forwarded where the transport supports them.
    """
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()
    for side in (a, b):
        side.on_change = changed.set
        side.on_data = None
        side.on_eof = None
    for src, dst in ((a, b), (b, a)):
        pending = src.take()
        if pending:
            dst.write(pending)
        src.pipe = dst
        dst.source = src
        if src.eof and not src.closed:
            dst.write_eof()
    # Re-apply back-pressure that may have been set before the pipe existed.
    for src, dst in ((a, b), (b, a)):
        if dst.write_paused:
            src.pause_reading()
        else:
            src.resume_reading()
    try:
        while True:
            if a.closed or b.closed or (a.eof and b.eof):
                break
            idle = loop.time() - max(a.last_activity, b.last_activity)
            remaining = idle_timeout - idle
            if remaining <= 0:
                break
            changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 60.0)):
                    await changed.wait()
    finally:
        for side in (a, b):
            side.on_change = None
            side.pipe = None
        # transport.close() flushes what is still buffered, then closes.
        a.close()
        b.close()
