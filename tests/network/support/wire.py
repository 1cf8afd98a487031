"""A raw HTTP/1.1 client for the proxy tests: exact bytes out, parsed responses back.

Deliberately independent of the proxy's own parser, so the tests do not grade it against itself.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field


@dataclass
class Reply:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    version: str = "HTTP/1.1"
    extra: dict = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def json(self) -> dict:
        return json.loads(self.body)


class Wire:
    """One client connection to the proxy (or anything), with a timeout on every read."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 timeout: float) -> None:
        self.reader, self.writer, self.timeout = reader, writer, timeout
        self.buffer = b""

    @classmethod
    async def open(cls, host: str, port: int, timeout: float = 5.0) -> Wire:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        return cls(reader, writer, timeout)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def _more(self) -> bytes:
        data = await asyncio.wait_for(self.reader.read(65536), self.timeout)
        return data

    async def read_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            data = await self._more()
            if not data:
                raise EOFError(f"closed before {marker!r}; got {self.buffer[:200]!r}")
            self.buffer += data
        head, _, self.buffer = self.buffer.partition(marker)
        return head + marker

    async def read_exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            data = await self._more()
            if not data:
                raise EOFError(f"closed after {len(self.buffer)} of {n} bytes")
            self.buffer += data
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    async def read_to_eof(self) -> bytes:
        while True:
            data = await self._more()
            if not data:
                out, self.buffer = self.buffer, b""
                return out
            self.buffer += data

    async def closed(self) -> bool:
        """True when the peer closes with nothing more to read."""
        try:
            rest = await self.read_to_eof()
        except (ConnectionResetError, TimeoutError):
            return False
        return rest == b""

    async def response(self, *, head_request: bool = False) -> Reply:
        head = await self.read_until(b"\r\n\r\n")
        lines = head[:-4].decode("latin-1").split("\r\n")
        version, status, *reason = lines[0].split(" ", 2)
        headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:]]
        reply = Reply(int(status), reason[0] if reason else "", headers, version=version)  # type: ignore[arg-type]
        if head_request or reply.status < 200 or reply.status in (204, 304):
            return reply
        te = (reply.header("transfer-encoding") or "").lower()
        cl = reply.header("content-length")
        if "chunked" in te:
            body, trailers = b"", []
            while True:
                size_line = await self.read_until(b"\r\n")
                size = int(size_line[:-2].split(b";")[0], 16)
                if size == 0:
                    while True:
                        line = await self.read_until(b"\r\n")
                        if line == b"\r\n":
                            break
                        trailers.append(line[:-2].decode())
                    break
                body += await self.read_exactly(size)
                await self.read_exactly(2)
            reply.body = body
            reply.extra["trailers"] = trailers
        elif cl is not None:
            reply.body = await self.read_exactly(int(cl))
        elif reply.status == 101:
            pass
        else:
            reply.body = await self.read_to_eof()
        return reply

    def close(self) -> None:
        self.writer.close()


def get(target: str, host: str, *extra: str, method: str = "GET", body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", *extra]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
