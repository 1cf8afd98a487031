"""The inference router: what the proxy hands a decrypted `inference.local` connection to.

    router = InferenceRouter(routes, recorder=recorder)        # once per supervisor
    ProxyServer(..., inference=router.handle_channel)          # the proxy calls it per connection
    await router.handle_connection(reader, writer, actor)      # or over asyncio streams
    await router.aclose()                                      # at shutdown

One connection carries any number of requests (keep-alive). Each is classified:
- a recognised inference shape → route → forward → relay → one InferenceEvent;
- an unknown `/v1/...` endpoint → 404 in the protocol's error shape, connection closed;
- anything else → 403, connection closed.
The last two end the connection even after successful inference requests on it (OpenShell
PR #819: otherwise a kept-alive connection becomes a tunnel for arbitrary requests).

Router failures are answered in the protocol's error shape and keep the connection:
no route 503, unreadable key 503, a key file not hidden from the sandbox at its start 503, backend unreachable 502, backend timeout 504, non-JSON body
400; a body over the cap is 413 and closes (its rest is never read). Backend statuses, 4xx and
5xx included, are relayed as the backend sent them (with the route's key redacted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from ..events.types import Action, Actor, HttpEvent, InferenceEvent, NullRecorder, Recorder
from ..network.limits import Limits
from ..records import Struct
from .backend import Backend, BackendFailure
from .body import MAX_BODY, BodyError, parse_body, rewrite_model
from .errors import RouterError, encode_error, encode_forbidden, encode_malformed
from .headers import client_response_headers, is_event_stream, upstream_request_headers
from .redact import Redactor
from .routes import KeyUnavailable, NoRoute, Route, join_url, resolve_key, select_route
from .shapes import HOST, NotInference, Refusal, Shape, classify, recognised, split_target
from .streaming import RelayResult, relay_body, relay_events
from .usage import Usage
from .wire import (
    BodyTooLarge,
    ChannelConnection,
    ClientGone,
    ClientStream,
    Connection,
    HttpError,
    Request,
    ResponseWriter,
    StreamConnection,
)

log = logging.getLogger("stockade.inference")

RouteSource = Sequence[Route] | Callable[[], Sequence[Route]]


class RouterConfig(Struct, frozen=True):
    max_body: int = MAX_BODY  # request body cap (413 beyond)
    stream_idle_timeout: float = 120.0  # longest silence of a backend mid-body
    connect_timeout: float = 10.0  # TCP + TLS connect to a backend (504 beyond)
    response_timeout: float = 600.0  # waiting for a backend's response head (504 beyond)
    head_timeout: float = 30.0  # a client's partial request head or stalled body (408)
    keepalive_timeout: float = 120.0  # an idle client connection is closed quietly
    verify: ssl.SSLContext | bool | str = True  # backend TLS: True = the system trust store
    max_backend_connections: int = 100


class InferenceRouter:
    def __init__(self, routes: RouteSource, *, recorder: Recorder | None = None,
                 config: RouterConfig | None = None, environ: Mapping[str, str] | None = None,
                 limits: Limits | None = None, key_files: Collection[str] | None = None) -> None:
        """`routes`: a fixed list (from `load_routes_file`) or a callable returning the current
        routes (e.g. `StoreRoutes()`), consulted per request. `environ`: where `api_key_env`
        keys are read (default: the supervisor's os.environ, read at request time).
        `key_files`: the only `api_key_file`s routes may use (real paths): those hidden from the
        sandbox when it started. A route added later with another key file is refused (503), as
        the sandbox may be able to read that file. None: any file (no sandbox beside it)."""
        self._routes = routes
        self.key_files = None if key_files is None else frozenset(key_files)
        self.recorder: Recorder = recorder or NullRecorder()
        self.config = config or RouterConfig()
        self._environ = environ
        self._limits = limits or Limits(head_timeout=self.config.head_timeout)
        self._backend: Backend | None = None

    @property
    def backend(self) -> Backend:
        if self._backend is None:  # created in the serving loop, on first use
            self._backend = Backend(connect_timeout=self.config.connect_timeout, verify=self.config.verify,
                                    max_connections=self.config.max_backend_connections)
        return self._backend

    def key_file_known(self, route: Route) -> bool:
        """Whether the route's key, if it comes from a file, comes from one hidden at start."""
        if self.key_files is None or not route.api_key_file:
            return True
        return os.path.realpath(route.api_key_file) in self.key_files

    def current_routes(self) -> Sequence[Route]:
        return self._routes() if callable(self._routes) else self._routes

    async def aclose(self) -> None:
        if self._backend is not None:
            await self._backend.aclose()
            self._backend = None

    async def __aenter__(self) -> InferenceRouter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- one connection --------------------------------------------------------------------

    async def handle_channel(self, channel: Any, actor: Actor, scheme: str) -> None:
        """The proxy's inference hook (stockade.network.server.InferenceHandler):
        `ProxyServer(..., inference=router.handle_channel)`. `channel` is the client connection,
        TLS already terminated for "https" (CONNECT inference.local:443), plain for "http"
        (forward requests to http://inference.local/ on port 80, the first one unread into it)."""
        await self.serve(ChannelConnection(channel), actor, port=443 if scheme == "https" else 80)

    async def handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                                actor: Actor, *, port: int = 443) -> None:
        """The same over asyncio streams (a listener of one's own, tests)."""
        await self.serve(StreamConnection(reader, writer), actor, port=port)

    async def serve(self, connection: Connection, actor: Actor, *, port: int = 443) -> None:
        """Serve every request of one client connection, then close it. Never raises.
        `port`: the intercepted port (443 TLS-terminated, 80 plain), for events."""
        conn = ClientStream(connection, self._limits)
        try:
            while True:
                try:
                    request = await conn.next_request(self.config.keepalive_timeout, self.config.head_timeout)
                except HttpError as exc:
                    self._deny(actor, port, "-", "-", exc.status, f"malformed request: {exc.detail}")
                    with contextlib.suppress(Exception):
                        await conn.send(encode_malformed(exc.detail, exc.status))
                    return
                if request is None:
                    return
                shape = classify(request.method, request.target, request.headers)
                if isinstance(shape, NotInference):
                    await self._refuse(conn, request, shape, actor, port)
                    return
                if not await self._exchange(conn, request, shape, actor):
                    return
        except Exception:  # noqa: BLE001 - one connection's bug must not reach the proxy
            log.exception("inference router: unexpected error on a connection")
        finally:
            await connection.close()

    async def _refuse(self, conn: ClientStream, request: Request, shape: NotInference,
                      actor: Actor, port: int) -> None:
        if shape.refusal is Refusal.UNKNOWN_API:
            known = ", ".join(recognised())
            err = RouterError(404, "unknown_endpoint",
                              f"{request.method} {shape.path} is not an inference endpoint stockade "
                              f"routes (recognised: {known}); the connection is closed", retryable=False)
            data = encode_error(shape.protocol, err, close=True, version=request.version)
        else:
            data = encode_forbidden(shape.path, version=request.version)
        status = 404 if shape.refusal is Refusal.UNKNOWN_API else 403
        self._deny(actor, port, request.method, shape.path, status, "not an inference request")
        with contextlib.suppress(Exception):
            await conn.send(data)

    def _deny(self, actor: Actor, port: int, method: str, path: str, status: int, reason: str) -> None:
        self.recorder.record(HttpEvent(action=Action.DENIED, method=method, host=HOST, port=port,
                                       path=path, actor=actor, reason=reason, status=status))

    # -- one inference request -------------------------------------------------------------

    async def _exchange(self, conn: ClientStream, request: Request, shape: Shape, actor: Actor) -> bool:
        """Answer one inference request; True when the connection may carry another."""
        call = _Call(self, conn, request, shape, actor)
        try:
            return await call.run()
        except ClientGone:
            call.record(call.status or 499, error="the client closed the connection")
            return False
        except Exception as exc:  # noqa: BLE001 - answered and recorded, then the connection ends
            log.exception("inference router: unexpected error")
            call.record(500, error=f"internal error: {type(exc).__name__}")
            if not call.responded:
                err = RouterError(500, "internal_error", "stockade's inference router failed on this request")
                with contextlib.suppress(Exception):
                    await conn.send(encode_error(shape.protocol, err, close=True, version=request.version))
            return False


class _Call:
    """The state of one routed request, so each step stays a short method."""

    def __init__(self, router: InferenceRouter, conn: ClientStream, request: Request, shape: Shape,
                 actor: Actor) -> None:
        self.router = router
        self.config = router.config
        self.conn = conn
        self.request = request
        self.shape = shape
        self.actor = actor
        self.started = time.perf_counter()
        self.route: Route | None = None
        self.model: str | None = None
        self.streamed = False
        self.usage = Usage()
        self.recorded = False
        self.responded = False  # the status line was sent
        self.status: int | None = None

    @property
    def keep_alive(self) -> bool:
        return self.request.keep_alive

    async def fail(self, err: RouterError, detail: str | None = None, *, close: bool = False) -> bool:
        close = close or not self.keep_alive
        self.status = err.status
        self.record(err.status, error=detail or err.message)
        self.responded = True
        await self.conn.send(encode_error(self.shape.protocol, err, close=close, version=self.request.version))
        return not close

    def record(self, status: int, *, error: str | None = None) -> None:
        if self.recorded:
            return
        self.recorded = True
        route = self.route
        self.router.recorder.record(InferenceEvent(
            route=route.name if route else None, backend_host=route.backend_host if route else None,
            model=self.model, status=status, latency_ms=(time.perf_counter() - self.started) * 1000,
            streamed=self.streamed, path=self.shape.path, actor=self.actor,
            input_tokens=self.usage.input_tokens, output_tokens=self.usage.output_tokens,
            error=error, method=self.request.method,
        ))

    async def run(self) -> bool:
        shape, request = self.shape, self.request
        try:
            raw = await self.conn.read_body(request, self.config.max_body, self.config.head_timeout)
        except BodyTooLarge:
            mib = self.config.max_body / (1024 * 1024)
            return await self.fail(RouterError(413, "request_too_large",
                                               f"the request body exceeds stockade's {mib:g} MiB limit",
                                               retryable=False), close=True)
        body: bytes | None = None
        requested: str | None = None
        parsed = None
        if shape.has_model:
            try:
                parsed = parse_body(raw)
            except BodyError as exc:
                return await self.fail(RouterError(400, "invalid_request", str(exc), retryable=False))
            requested, body = parsed.model, raw
        self.model = requested

        choice = select_route(self.router.current_routes(), shape.protocol, requested)
        if isinstance(choice, NoRoute):
            return await self.fail(RouterError(503, "inference_not_configured", choice.message, retryable=False))
        route = self.route = choice
        if not self.router.key_file_known(route):
            log.warning("inference route %r refused: its key file %s was not hidden from this "
                        "sandbox when it started", route.name, route.api_key_file)
            return await self.fail(RouterError(
                503, "api_key_unavailable", f"inference route {route.name!r} was added with a key "
                "file after this sandbox started, so the file was not hidden from it: the route is "
                "not used here (restart the sandbox, or give the route its key with --api-key-env)",
                retryable=False), f"key file {route.api_key_file} was not hidden when the sandbox "
                "started (route added later): refused")
        try:
            key = resolve_key(route, self.router._environ)
        except KeyUnavailable as exc:
            return await self.fail(RouterError(503, "api_key_unavailable", exc.public, retryable=False), exc.detail)
        if parsed is not None and route.model:
            body = rewrite_model(parsed, route.model)
            self.model = route.model

        _path, query, _host = split_target(request.target) or (shape.path, "", None)
        url = join_url(route.base_url, shape.path, query)
        headers = upstream_request_headers(request.headers, shape.protocol, key, has_body=body is not None)
        try:
            response = await self.router.backend.open(
                request.method, url, headers, body, response_timeout=self.config.response_timeout,
                host=route.backend_host)
        except BackendFailure as exc:
            return await self.fail(exc.error, exc.detail)
        try:
            return await self.relay(response, key.reveal() if key else None)
        finally:
            await response.aclose()

    async def relay(self, response, secret: str | None) -> bool:  # response: httpx.Response
        status = self.status = response.status_code
        upstream_headers = response.headers.multi_items()
        self.streamed = 200 <= status < 300 and is_event_stream(upstream_headers)
        out = ResponseWriter(self.conn, self.request.version, self.keep_alive)
        self.responded = True
        await out.start(status, client_response_headers(upstream_headers), defer=not self.streamed)
        chunks = response.aiter_bytes()
        result: RelayResult
        if self.streamed:
            result = await relay_events(chunks, out, protocol=self.shape.protocol,
                                        idle_timeout=self.config.stream_idle_timeout)
        else:
            redactor = Redactor(secret) if status >= 400 and secret else None
            result = await relay_body(chunks, out, idle_timeout=self.config.stream_idle_timeout,
                                      redactor=redactor)
        self.usage = result.usage
        if result.replace_with is not None:
            code_status, code, message = result.replace_with
            return await self.fail(RouterError(code_status, code, message))
        self.record(status, error=result.error)
        return out.keep_alive and result.complete

