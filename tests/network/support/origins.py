"""Test origins that run inside the test namespace (on the in-process loop).

`Origin` is an HTTP/1.1 server built on h11 (not on the proxy's parser): it records every
request it receives and answers with a JSON echo, or with what a handler returns. `RawServer`
answers with scripted bytes, for responses no well-behaved server would send.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import h11


@dataclass
class Seen:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    connection: int  # which accepted connection it came on

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


Handler = Callable[[Seen], tuple[int, list[tuple[str, str]], bytes]]


def echo(seen: Seen) -> tuple[int, list[tuple[str, str]], bytes]:
    body = json.dumps({"method": seen.method, "target": seen.target,
                       "headers": seen.headers, "body": seen.body.decode("latin-1")}).encode()
    return 200, [("Content-Type", "application/json")], body


@dataclass
class Origin:
    handler: Handler = echo
    tls: ssl.SSLContext | None = None
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int) -> Origin:
        self.server = await asyncio.start_server(self._serve, host, port, ssl=self.tls)
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        conn = h11.Connection(h11.SERVER)
        request: h11.Request | None = None
        body = b""
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await asyncio.wait_for(reader.read(65536), 30)
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.Request):
                    request, body = event, b""
                    if conn.they_are_waiting_for_100_continue:
                        writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    assert request is not None
                    seen = Seen(request.method.decode(), request.target.decode(),
                                [(k.decode(), v.decode("latin-1")) for k, v in request.headers.raw_items()],
                                body, number)
                    self.seen.append(seen)
                    status, headers, payload = self.handler(seen)
                    headers = headers + [("Content-Length", str(len(payload)))]
                    writer.write(conn.send(h11.Response(status_code=status, headers=headers)))
                    if seen.method != "HEAD":
                        writer.write(conn.send(h11.Data(data=payload)))
                    writer.write(conn.send(h11.EndOfMessage()))
                    await writer.drain()
                    if conn.our_state is h11.MUST_CLOSE:
                        break
                    conn.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    break
        except (h11.RemoteProtocolError, ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@dataclass
class RawServer:
    """Answers each connection with `script(reader, writer)`: arbitrary bytes, any framing."""

    script: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
    connections: int = 0
    server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> RawServer:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.script(reader, writer)
            except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()
        self.server = await asyncio.start_server(serve, host, port, ssl=tls)
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)


def tcp_echo() -> RawServer:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await asyncio.wait_for(reader.read(65536), 10):
            writer.write(data)
            await writer.drain()
    return RawServer(script)
