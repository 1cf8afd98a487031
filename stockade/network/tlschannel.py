"""TLS over an established Channel, with ssl.MemoryBIO (either side).

asyncio's start_tls cannot be handed bytes that were already read, and the proxy must read the
first bytes of a tunnel to classify them (ClientHello, plaintext HTTP, anything else) before
deciding to terminate. Doing TLS over memory BIOs lets the ClientHello that classification read
be fed straight into the handshake, and keeps one Channel interface for plain and TLS sides:
a TlsChannel is read, piped and written exactly like the Channel it wraps.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from .relay import Channel

# Below glibc's mmap threshold: SSLObject.read allocates this much on every call.
_READ_SIZE = 64 * 1024


class TlsError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TlsChannel(Channel):
    def __init__(self, inner: Channel, context: ssl.SSLContext, *, server_side: bool,
                 server_hostname: str | None = None) -> None:
        self.inner = inner  # set first: `source` below delegates to it
        super().__init__(inner.limits)
        self.transport = inner.transport
        self.last_activity = inner.last_activity
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.sslobj = context.wrap_bio(self._incoming, self._outgoing, server_side=server_side,
                                       server_hostname=server_hostname)
        self._handshaken = False
        self._handshake: asyncio.Future[None] = self.loop.create_future()
        inner.pipe = None
        inner.on_data = self._cipher_received
        inner.on_eof = self._cipher_ended
        inner.on_change = None

    # The inner transport is the one whose write buffer fills, so flow control is its own.
    @property  # type: ignore[override]
    def source(self) -> Channel | None:
        return self.inner.source

    @source.setter
    def source(self, value: Channel | None) -> None:
        self.inner.source = value

    @property
    def write_paused(self) -> bool:
        return self.inner.write_paused

    @property
    def alpn(self) -> str | None:
        return self.sslobj.selected_alpn_protocol()

    async def handshake(self, initial: bytes, timeout: float) -> None:
        """Run the handshake; `initial` holds ciphertext already read from the peer."""
        if initial:
            self._incoming.write(initial)
        self._advance()
        try:
            async with asyncio.timeout(timeout):
                await self._handshake
        except TimeoutError:
            raise TlsError("handshake timed out") from None
        pending = self.inner.take()  # ciphertext that arrived before on_data was installed
        if pending:
            self._cipher_received(pending)

    # -- ciphertext side -----------------------------------------------------------------

    def _cipher_received(self, data: bytes) -> None:
        self.last_activity = self.inner.last_activity
        self._incoming.write(data)
        self._advance()

    def _cipher_ended(self) -> None:
        self._incoming.write_eof()
        if not self._handshake.done():
            self._handshake.set_exception(TlsError("the peer closed during the handshake"))
        if self.inner.closed:
            Channel.connection_lost(self, None)
        elif not self.eof:
            self._advance()
            if not self.eof:  # a TCP FIN without close_notify: still the end of the stream
                Channel.eof_received(self)

    def _advance(self) -> None:
        if not self._handshaken:
            try:
                self.sslobj.do_handshake()
            except ssl.SSLWantReadError:
                self._flush()
                return
            except (ssl.SSLError, ssl.CertificateError, ValueError) as exc:
                self._flush()
                if not self._handshake.done():
                    self._handshake.set_exception(TlsError(_describe(exc)))
                self.inner.close()
                return
            self._handshaken = True
            self._flush()
            if not self._handshake.done():
                self._handshake.set_result(None)
        while not self.eof:
            try:
                data = self.sslobj.read(_READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                Channel.eof_received(self)  # close_notify
                break
            except ssl.SSLError:
                self.inner.abort()  # a corrupt or truncated record: nothing more is trustworthy
                break
            if not data:
                Channel.eof_received(self)
                break
            Channel.data_received(self, data)
        self._flush()

    def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            self.inner.write(data)

    # -- plaintext writes ----------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.closed or not self._handshaken or not data:
            return
        try:
            self.sslobj.write(data)
        except ssl.SSLError:
            self.inner.abort()
            return
        self._flush()

    async def drain(self) -> None:
        await self.inner.drain()

    def write_eof(self) -> None:
        """close_notify then a TCP half-close: TLS 1.3 peers may keep sending."""
        if self.closed:
            return
        with contextlib.suppress(ssl.SSLError, ValueError):
            self.sslobj.unwrap()
        self._flush()
        self.inner.write_eof()

    def close(self) -> None:
        if self._handshaken and not self.closed:
            with contextlib.suppress(ssl.SSLError, ValueError):
                self.sslobj.unwrap()
            self._flush()
        self.inner.close()

    def abort(self) -> None:
        self.inner.abort()

    def pause_reading(self) -> None:
        self.inner.pause_reading()
        self._reading_paused = True

    def resume_reading(self) -> None:
        self._reading_paused = False
        self.inner.resume_reading()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verification failed: {exc.verify_message}"
    reason = getattr(exc, "reason", None)
    return str(reason or exc)
