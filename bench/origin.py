"""Benchmark origins: a keep-alive HTTP server with a fixed small response (optionally TLS) and a
TCP sink that discards bytes. One process, uvloop Protocols, so the origin costs every peer the
same. Run as: python -m bench.origin http|sink HOST PORT [CERT KEY]
"""

from __future__ import annotations

import asyncio
import ssl
import sys

BODY = b'{"object":"list","data":[]}'
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
)


class HttpOrigin(asyncio.Protocol):
    """Answers every request head with RESPONSE; requests carry no body in the benchmarks."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        count = self.buffer.count(b"\r\n\r\n")
        if count:
            self.buffer = self.buffer[self.buffer.rfind(b"\r\n\r\n") + 4:]
            self.transport.write(RESPONSE * count)  # type: ignore[attr-defined]


class Sink(asyncio.Protocol):
    """Discards the announced number of bytes, then answers with the count.

    The client announces the total in an 8-byte header instead of half-closing, because not
    every proxy relays a half-close (squid and tinyproxy close the whole tunnel).
    """

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.header = b""
        self.expected = -1
        self.count = 0

    def data_received(self, data: bytes) -> None:
        if self.expected < 0:
            self.header += data
            if len(self.header) < 8:
                return
            self.expected = int.from_bytes(self.header[:8], "big")
            data = self.header[8:]
        self.count += len(data)
        if self.count >= self.expected:
            self.transport.write(f"{self.count}\n".encode())  # type: ignore[attr-defined]


async def main(kind: str, host: str, port: int, cert: str | None, key: str | None) -> None:
    loop = asyncio.get_running_loop()
    tls = None
    if cert and key:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(cert, key)
    factory = HttpOrigin if kind == "http" else Sink
    server = await loop.create_server(factory, host, port, ssl=tls, backlog=1024)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    args = sys.argv[1:]
    asyncio.run(main(args[0], args[1], int(args[2]), *(args[3:5] if len(args) >= 5 else (None, None))))
