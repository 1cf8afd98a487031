"""Serving an InferenceRouter in an event loop of its own, two ways:

- "direct": a TLS Unix-socket listener with an `inference.local` leaf, `handle_connection` per
  accepted connection. The clients' httpx transports connect to it (`uds=`), so the SDKs use
  `https://inference.local/v1` verbatim (SNI, certificate check, Host) with no DNS at all;
- "proxy": the real egress proxy (`ProxyServer(inference=router.handle_channel)`) on
  127.0.0.1, and clients configured with it as their HTTP proxy: `CONNECT inference.local:443`
  is intercepted and TLS-terminated by the proxy, http://inference.local goes through its
  forward path. This is the production path minus the sandbox.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from stockade.events.types import Actor, ListRecorder
from stockade.inference import InferenceRouter, RouterConfig
from stockade.inference.routes import Route
from stockade.network.http1 import Data, EndOfMessage, ResponseReader, Signal
from stockade.network.limits import Limits

from ..support.threadloop import ThreadLoop

ACTOR = Actor(binary="/usr/bin/python3", pid=42)
CALLER_KEY = "sk-caller-key-that-must-never-reach-a-backend"


class TlsIdentity:
    """The sandbox CA and its leaf cache, as the supervisor mints them (stockade.network)."""

    def __init__(self) -> None:
        from stockade.network.ca import CertificateAuthority
        from stockade.network.tls import LeafCache

        self.ca = CertificateAuthority.generate("inference-tests")
        self.leaves = LeafCache(self.ca)

    def server_context(self) -> ssl.SSLContext:
        return self.leaves.server_context("inference.local")

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.ca.certificate_pem.decode())


class RouterServer:
    """An InferenceRouter served directly (TLS Unix socket) or behind the real proxy."""

    def __init__(self, routes: Sequence[Route] | Callable[[], Sequence[Route]], *,
                 config: RouterConfig | None = None, environ: dict[str, str] | None = None,
                 tls: TlsIdentity | None = None, use_uvloop: bool = True, plain_tcp: bool = False,
                 mode: str = "direct") -> None:
        assert mode in ("direct", "proxy")
        self.mode = mode
        self.proxy_port: int | None = None
        self.proxy: Any = None
        self.recorder = ListRecorder()
        self.tls = tls or TlsIdentity()
        self._dir = tempfile.TemporaryDirectory(prefix="stockade-inference-")
        self.path = os.path.join(self._dir.name, "inference.sock")
        self.router = InferenceRouter(routes, recorder=self.recorder, config=config, environ=environ)
        self._use_uvloop = use_uvloop
        self._loop: ThreadLoop | None = None
        self._plain_tcp = plain_tcp
        self.tcp_port: int | None = None
        self._servers: list[asyncio.AbstractServer] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.router.handle_connection(reader, writer, ACTOR)

    async def _serve_plain(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.router.handle_connection(reader, writer, ACTOR, port=80)

    def start(self) -> RouterServer:
        if self._use_uvloop:
            import uvloop
            self._loop = ThreadLoop(uvloop.new_event_loop())
        else:
            self._loop = ThreadLoop()

        async def listen() -> None:
            if self.mode == "proxy":
                await self._start_proxy()
                return
            self._servers.append(await asyncio.start_unix_server(
                self._serve, self.path, ssl=self.tls.server_context()))
            if self._plain_tcp:
                server = await asyncio.start_server(self._serve_plain, "127.0.0.1", 0)
                self.tcp_port = server.sockets[0].getsockname()[1]
                self._servers.append(server)

        self.call(listen())
        return self

    async def _start_proxy(self) -> None:
        from stockade.network.pipeline import PolicyHolder
        from stockade.network.server import ProxyServer
        from stockade.policy.engine import compile_policy
        from stockade.policy.loader import load_policy_text

        # No network policy at all: interception precedes the policy (network.md §9 case 102).
        holder = PolicyHolder(compile_policy(load_policy_text("version: 1\nnetwork_policies: {}\n")))
        self.proxy = ProxyServer(holder, recorder=self.recorder, leaf_cache=self.tls.leaves,
                                 inference=self.router.handle_channel)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        await self.proxy.start(sock)
        self.proxy_port = sock.getsockname()[1]

    def call(self, coro: Any, timeout: float = 30) -> Any:
        assert self._loop is not None, "start() the server first"
        return self._loop.run(coro, timeout)

    def stop(self) -> None:
        async def shutdown() -> None:
            for server in self._servers:
                server.close()
            if self.proxy is not None:
                await self.proxy.close()
            await self.router.aclose()

        try:
            self.call(shutdown(), timeout=10)
        finally:
            assert self._loop is not None
            self._loop.stop()
            self._dir.cleanup()

    def __enter__(self) -> RouterServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- clients ---------------------------------------------------------------------------

    def http_client(self, **kwargs: Any) -> Any:
        import httpx2

        if self.mode == "proxy":
            transport = httpx2.HTTPTransport(proxy=f"http://127.0.0.1:{self.proxy_port}",
                                             verify=self.tls.client_context())
        else:
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
        """A TLS connection to inference.local:443 (through a CONNECT in proxy mode)."""
        if self.mode == "proxy":
            sock = socket.create_connection(("127.0.0.1", self.proxy_port), timeout=20)
            sock.sendall(b"CONNECT inference.local:443 HTTP/1.1\r\nHost: inference.local:443\r\n\r\n")
            reply = b""
            while not reply.endswith(b"\r\n\r\n"):
                reply += sock.recv(1)
            assert reply.startswith(b"HTTP/1.1 200"), reply
        else:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(20)
            sock.connect(self.path)
        return RawConnection(self.tls.client_context().wrap_socket(sock, server_hostname="inference.local"))

    def raw_plain(self) -> RawConnection:
        """A plain connection for http://inference.local (port 80: the proxy's forward path)."""
        port = self.proxy_port if self.mode == "proxy" else self.tcp_port
        assert port is not None
        return RawConnection(socket.create_connection(("127.0.0.1", port), timeout=20))

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
