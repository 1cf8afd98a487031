"""Serving an InferenceRouter the way the proxy will: a TLS listener with an `inference.local`
leaf, the router's `handle_connection` per accepted connection, in an event loop of its own.

The listener is a Unix socket, and the clients' httpx transports connect to it (`uds=`): the
SDKs use `https://inference.local/v1` verbatim (SNI, certificate check and Host header all say
inference.local) with no /etc/hosts entry and no DNS.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import trustme

from stockade.events.types import Actor, ListRecorder
from stockade.inference import InferenceRouter, RouterConfig
from stockade.inference.routes import Route
from stockade.network.http1 import Data, EndOfMessage, ResponseReader, Signal
from stockade.network.limits import Limits

ACTOR = Actor(binary="/usr/bin/python3", pid=42)
CALLER_KEY = "sk-caller-key-that-must-never-reach-a-backend"


class TlsIdentity:
    """A CA and the inference.local leaf it signed (what the sandbox CA does in production)."""

    def __init__(self) -> None:
        self.ca = trustme.CA()
        self.leaf = self.ca.issue_cert("inference.local")

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.leaf.configure_cert(ctx)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx


class RouterServer:
    """An InferenceRouter behind a TLS Unix-socket listener, on a uvloop loop in a thread."""

    def __init__(self, routes: Sequence[Route] | Callable[[], Sequence[Route]], *,
                 config: RouterConfig | None = None, environ: dict[str, str] | None = None,
                 tls: TlsIdentity | None = None, use_uvloop: bool = True, plain_tcp: bool = False) -> None:
        self.recorder = ListRecorder()
        self.tls = tls or TlsIdentity()
        self._dir = tempfile.TemporaryDirectory(prefix="stockade-inference-")
        self.path = os.path.join(self._dir.name, "inference.sock")
        self.router = InferenceRouter(routes, recorder=self.recorder, config=config, environ=environ)
        if use_uvloop:
            import uvloop
            self.loop = uvloop.new_event_loop()
        else:
            self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._plain_tcp = plain_tcp
        self.tcp_port: int | None = None
        self._servers: list[asyncio.AbstractServer] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.router.handle_connection(reader, writer, ACTOR)

    async def _serve_plain(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.router.handle_connection(reader, writer, ACTOR, port=80)

    def start(self) -> RouterServer:
        self._thread.start()

        async def listen() -> None:
            self._servers.append(await asyncio.start_unix_server(
                self._serve, self.path, ssl=self.tls.server_context()))
            if self._plain_tcp:
                server = await asyncio.start_server(self._serve_plain, "127.0.0.1", 0)
                self.tcp_port = server.sockets[0].getsockname()[1]
                self._servers.append(server)

        self.call(listen())
        return self

    def call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        async def shutdown() -> None:
            for server in self._servers:
                server.close()
            await self.router.aclose()

        try:
            self.call(shutdown(), timeout=10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self._dir.cleanup()

    def __enter__(self) -> RouterServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- clients ---------------------------------------------------------------------------

    def http_client(self, **kwargs: Any) -> Any:
        import httpx2

        transport = httpx2.HTTPTransport(uds=self.path, verify=self.tls.client_context())
        return httpx2.Client(transport=transport, **kwargs)

    def openai(self, **kwargs: Any) -> Any:
        import openai

        kwargs.setdefault("max_retries", 0)
        return openai.OpenAI(api_key=CALLER_KEY, base_url="https://inference.local/v1",
                             http_client=self.http_client(), **kwargs)

    def anthropic(self, **kwargs: Any) -> Any:
        import anthropic

        kwargs.setdefault("max_retries", 0)
        return anthropic.Anthropic(api_key=CALLER_KEY, base_url="https://inference.local",
                                   http_client=self.http_client(), **kwargs)

    def raw(self) -> RawConnection:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(20)
        sock.connect(self.path)
        return RawConnection(self.tls.client_context().wrap_socket(sock, server_hostname="inference.local"))

    def raw_plain(self) -> RawConnection:
        assert self.tcp_port is not None
        return RawConnection(socket.create_connection(("127.0.0.1", self.tcp_port), timeout=20))

    # -- events ----------------------------------------------------------------------------

    def events(self, count: int = 1, timeout: float = 5.0) -> list[Any]:
        """The recorded events once at least `count` exist (recording follows the response)."""
        deadline = time.monotonic() + timeout
        while len(self.recorder.events) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return list(self.recorder.events)


class RawResponse:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)


class RawConnection:
    """One client connection driven by hand: send bytes, read exactly one response."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._reader = ResponseReader(Limits())

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: Sequence[tuple[str, str]] = ()) -> RawResponse:
        lines = [f"{method} {path} HTTP/1.1", "Host: inference.local"]
        lines += [f"{k}: {v}" for k, v in headers]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b""))
        return self.response(method)

    def response(self, method: str = "POST") -> RawResponse:
        self._reader.start(method)
        head = None
        body = bytearray()
        while True:
            event = self._reader.next_event()
            if event is Signal.NEED_DATA:
                data = self.sock.recv(65536)
                if data:
                    self._reader.feed(data)
                else:
                    self._reader.feed_eof()
                continue
            if isinstance(event, Data):
                body += event.data
            elif isinstance(event, EndOfMessage):
                assert head is not None
                return RawResponse(head.status, head.headers, bytes(body))
            elif not isinstance(event, Signal):
                head = event

    def closed_by_peer(self, timeout: float = 5.0) -> bool:
        """True when the server closed the connection (EOF or reset) within `timeout`."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except (ConnectionError, ssl.SSLError):
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()
