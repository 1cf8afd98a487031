"""The proxy server: accept loop, per-connection identity, dispatch, concurrency cap.

Embedding (the supervisor, `stockade proxy`, tests):

    server = ProxyServer(PolicyHolder(engine), identity=resolver_or_None, leaf_cache=leaves,
                         secrets=store_or_None, recorder=recorder, limits=Limits(),
                         upstream_tls=ctx, inference=handler_or_None)
    await server.serve(listener_socket)      # returns after close()
    ...
    await server.close()

Every accepted connection starts as a forward-proxy session; a CONNECT (first request or a
later one) hands the connection to the CONNECT adapter. The caller's identity is resolved once
per connection, in a thread (procfs reads and first-time hashing block), overlapping with the
arrival of the first request head.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..events.types import Action, Actor, FindingEvent, NetworkEvent, NullRecorder, Recorder
from .connect import ConnectHandler, RawTunnel
from .exchange import answer
from .forward import HandOver, ForwardSession, SwitchToConnect, UpstreamPool
from .httphead import encode_request_head
from .limits import (DEFAULT_LIMITS, Limits, connection_limit_notice, fit_to_descriptors,
                     raise_descriptor_limit)
from .pipeline import Caller, EgressPipeline, EngineSource
from .relay import Channel
from .responses import ErrorResponse, ProxyError, inference_unavailable
from .ssrf import Resolver, SystemResolver
from .target import INFERENCE_HOST

log = logging.getLogger("stockade.proxy")

# The inference router's entry point: it owns `stream` (plaintext, positioned at the start of an
# HTTP request) until it returns, then the proxy closes the connection. `scheme` is "https"
# (CONNECT inference.local:443, TLS terminated by the proxy) or "http" (forward requests to
# http://inference.local/, absolute-form targets). It must answer non-inference requests itself
# (403) and must not serve requests for other hosts.
InferenceHandler = Callable[[Channel, Actor, str], Awaitable[None]]

_IDENTITY_CHANGE_CODES = frozenset({"binary_changed", "ancestor_changed"})


class _ClientChannel(Channel):
    def __init__(self, server: ProxyServer) -> None:
        super().__init__(server.limits)
        self.server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.server._accepted(self)


class ProxyServer:
    def __init__(
        self,
        policy: EngineSource,
        *,
        identity: Any = None,
        leaf_cache: Any = None,
        secrets: Any = None,
        recorder: Recorder | None = None,
        limits: Limits = DEFAULT_LIMITS,
        upstream_tls: ssl.SSLContext | asyncio.Future[ssl.SSLContext] | None = None,
        inference: InferenceHandler | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self.policy = policy
        self.identity = identity  # an IdentityResolver, or None: binaries are not checked
        self.leaf_cache = leaf_cache  # a LeafCache, None, or a future of one: leaves()
        self.secrets = secrets
        self.recorder: Recorder = recorder if recorder is not None else NullRecorder()
        # Every proxy is built here (stockade proxy, a sandbox's services, tests): the open-file
        # limit is raised toward what the connection limits need, and they are fitted into it.
        available = raise_descriptor_limit(limits)
        self.limit_notice = connection_limit_notice(limits, available)  # for the edges to print
        self.limits = limits = fit_to_descriptors(limits, available)
        if upstream_tls is None:
            from .tls import upstream_context  # cryptography: only when no context is given

            upstream_tls = upstream_context()
        self._upstream_tls = upstream_tls  # or a future: upstream_context()
        self.inference = inference
        self.pipeline = EgressPipeline(policy, resolver or SystemResolver(), limits, self.recorder)
        self.pool = UpstreamPool(limits)
        self._server: asyncio.AbstractServer | None = None
        self._closed: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._executor: ThreadPoolExecutor | None = None
        self.active = 0
        self.tunnels: set[RawTunnel] = set()  # open raw tunnels (L7 tunnels re-decide per request)

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, listener: socket.socket) -> None:
        """Start accepting on `listener` (a bound, listening TCP socket) and return."""
        loop = asyncio.get_running_loop()
        listener.setblocking(False)
        self._closed = loop.create_future()
        self._server = await loop.create_server(lambda: _ClientChannel(self), sock=listener)

    async def serve(self, listener: socket.socket) -> None:
        """Serve until close() is called."""
        await self.start(listener)
        assert self._closed is not None
        await asyncio.shield(self._closed)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.pool.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    def revalidate(self) -> int:
        """After a policy reload (holder swapped): end raw tunnels the new policy refuses.

        L7 tunnels and forward connections re-decide on their next request by themselves; a raw
        tunnel carries no requests to hook, so it is decided again here, the dialled address
        included. Returns how many tunnels were closed."""
        closed = 0
        for tunnel in list(self.tunnels):
            label = f"CONNECT {tunnel.host}:{tunnel.port}"
            try:
                decision = self.pipeline.decide(tunnel.host, tunnel.port, tunnel.caller,
                                                "connect", label)
                self.pipeline.recheck(decision, tunnel.host, tunnel.port, tunnel.address,
                                      tunnel.caller, "connect", label)
            except ProxyError:  # recorded by the pipeline
                tunnel.client.abort()
                tunnel.upstream.abort()
                self.tunnels.discard(tunnel)
                closed += 1
        return closed

    # The TLS material may still be in the making in a thread when serving starts (the services
    # import the TLS stack and parse the system roots, ~100 ms, while the first requests that
    # need neither are served): a tunnel that needs it waits here.

    async def leaves(self) -> Any:
        """The leaf cache (None: there is no CA and nothing is terminated), once built."""
        return await self._settle("leaf_cache", "tls_termination_unavailable")

    async def upstream_context(self) -> ssl.SSLContext:
        """The context TLS to upstreams is verified with, once built."""
        return await self._settle("_upstream_tls", "upstream_tls_failed")

    async def _settle(self, attribute: str, error: str) -> Any:
        value = getattr(self, attribute)
        if not isinstance(value, asyncio.Future):
            return value
        try:
            value = await asyncio.shield(value)
        except Exception as exc:  # noqa: BLE001 - the services fail on the same error
            raise ProxyError(ErrorResponse(
                502, error, f"the proxy's TLS settings did not load: {exc}")) from None
        setattr(self, attribute, value)
        return value

    @property
    def sockets(self) -> list[socket.socket]:
        return list(self._server.sockets) if self._server is not None else []

    # -- connections ---------------------------------------------------------------------

    def _accepted(self, client: _ClientChannel) -> None:
        if self.active >= self.limits.max_connections:
            client.write(ErrorResponse(
                503, "too_many_connections", f"the proxy already serves "
                f"{self.limits.max_connections} connections for this sandbox").encode())
            client.close()
            self.recorder.record(NetworkEvent(
                Action.DENIED, "-", 0, Actor(), "connect", stage="limit",
                reason="concurrent connection limit reached", reason_code="too_many_connections"))
            return
        self.active += 1
        identity = self._identify(client)
        task = asyncio.get_running_loop().create_task(self._handle(client, identity))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _identify(self, client: Channel) -> asyncio.Future[Caller] | None:
        if self.identity is None:
            return None
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="stockade-id")
        transport = client.transport
        assert transport is not None
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._executor, self._resolve, (peer[0], peer[1]),
                                    (local[0], local[1]))

    def _resolve(self, peer: tuple[str, int], local: tuple[str, int]) -> Caller:
        try:
            ident = self.identity.resolve(peer, local)
        except Exception as exc:  # IdentityError, or an unexpected procfs failure: deny
            code = getattr(exc, "code", "identity_failed")
            if code in _IDENTITY_CHANGE_CODES:
                # The process whose executable changed (the caller or one of its ancestors), as
                # the resolver saw it: its path, pid and the hash it has now; and the trusted one.
                binary = getattr(exc, "binary", None)
                actor = Actor(binary, getattr(exc, "pid", None),
                              sha256=getattr(exc, "observed", None)) if binary else Actor()
                self.recorder.record(FindingEvent(
                    "binary_changed", "executable changed since first use", "critical",
                    actor, getattr(exc, "message", str(exc)),
                    trusted_sha256=getattr(exc, "trusted", None)))
            return Caller(Actor(), identity_error=exc)
        actor = Actor(ident.binary, ident.pid, tuple(ident.ancestors), ident.sha256)
        return Caller(actor, ident.binary, tuple(ident.ancestors))

    async def _handle(self, client: _ClientChannel,
                      identity: asyncio.Future[Caller] | None) -> None:
        try:
            caller = await identity if identity is not None else Caller.anonymous()
            session = ForwardSession(self, client, caller)
            try:
                await session.run()
            except SwitchToConnect as switch:
                early = session.reader.take_buffer()
                error = await ConnectHandler(self, client, caller).handle(switch.request, early)
                if error is not None:
                    await answer(client, error)
                else:
                    client.close()
            except HandOver:
                await self._inference_forward(session, client, caller)
        except asyncio.CancelledError:
            client.abort()
            raise
        except Exception:
            log.exception("proxy connection failed")
            with contextlib.suppress(Exception):
                await answer(client, ErrorResponse(500, "internal_error",
                                                   "the proxy failed on this connection"))
            client.abort()
        finally:
            self.active -= 1

    async def _inference_forward(self, session: ForwardSession, client: Channel,
                                 caller: Caller) -> None:
        request = session.reader.current
        handler = self.inference
        if handler is None or request is None:
            await answer(client, inference_unavailable(INFERENCE_HOST, 80))
            return
        # Give the handler the connection positioned at the start of this request.
        head = encode_request_head(request.method, request.target, request.headers)
        client.unread(head + session.reader.take_buffer())
        try:
            await handler(client, caller.actor, "http")
        finally:
            client.close()
