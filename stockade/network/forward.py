"""The forward-proxy adapter: absolute-form `http://` requests, with keep-alive.

Each request on a client connection is decided on its own (host, port, then the L7 rules and
the canonical target), so a kept-alive or pipelined connection cannot carry an unchecked
request to another host (OpenShell forwards everything after the first request unchecked).
The Host header is replaced by the URL's authority (RFC 9112 §3.2.2); hop-by-hop and Proxy-*
fields are dropped; Via is added.

Upstream connections are reused: the previous one stays with the client session while it asks
the same host:port, others wait in a pool shared by all client connections. Each carries the
address it was validated as, and is reused only after that address passes the SSRF rules of the
*current* decision, so a policy reload that removes `allowed_ips` stops reuse at once.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..events.types import Action, HttpEvent, NetworkEvent
from ..records import Struct
from .exchange import (
    HttpSession,
    Outcome,
    Route,
    TakeOver,
    forwarded_fields,
    request_denied,
    upstream_head,
    wants_websocket,
)
from .httphead import Request
from .limits import Limits
from .pipeline import Caller
from .placeholders import apply_secrets, refuse_placeholder_host, shown_path
from .relay import Channel
from .responses import ProxyError, use_connect
from .target import INFERENCE_HOST, Authority, is_https, parse_absolute_url

if TYPE_CHECKING:
    from .addresses import IPAddress
    from .server import ProxyServer
    from .ssrf import Allowlist

class SwitchToConnect(TakeOver):
    """A CONNECT arrived on a kept-alive forward connection: the CONNECT adapter takes over."""

    def __init__(self, request: Request) -> None:
        super().__init__(request.target)
        self.request = request


class HandOver(TakeOver):
    """A request for inference.local:80: the inference handler takes over the connection."""


class Upstream(Struct, eq=False):
    """An upstream connection and what it was validated as: reused only while the current
    decision's allowlist still admits `address` (re-checked unless `allow` is unchanged)."""

    host: str
    port: int
    channel: Channel
    address: IPAddress
    allow: Allowlist | None
    timer: asyncio.TimerHandle | None = None

    @property
    def usable(self) -> bool:
        ch = self.channel
        return not (ch.closed or ch.eof or ch.buffered)


class UpstreamPool:
    """Idle upstream connections, newest first, with an idle timeout and global bounds."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._idle: dict[tuple[str, int], list[Upstream]] = {}
        self._count = 0

    def take(self, host: str, port: int) -> Upstream | None:
        entries = self._idle.get((host, port))
        while entries:
            entry = entries.pop()
            self._count -= 1
            if entry.timer is not None:
                entry.timer.cancel()
                entry.timer = None
            ch = entry.channel
            ch.on_data = ch.on_eof = None
            if not entry.usable:
                ch.close()
                continue
            return entry
        return None

    def put(self, entry: Upstream) -> None:
        key = (entry.host, entry.port)
        entries = self._idle.setdefault(key, [])
        channel = entry.channel
        if (not entry.usable or len(entries) >= self.limits.pool_per_key
                or self._count >= self.limits.pool_total):
            channel.close()
            return
        # An idle upstream that speaks or closes is not reusable: drop it at once.
        channel.on_data = lambda _data: self._evict(key, entry)
        channel.on_eof = lambda: self._evict(key, entry)
        entry.timer = channel.loop.call_later(
            self.limits.pool_idle_timeout, self._evict, key, entry)
        entries.append(entry)
        self._count += 1

    def _evict(self, key: tuple[str, int], entry: Upstream) -> None:
        entries = self._idle.get(key)
        if entries and entry in entries:
            entries.remove(entry)
            self._count -= 1
        if entry.timer is not None:
            entry.timer.cancel()
        entry.channel.on_data = entry.channel.on_eof = None
        entry.channel.close()

    def close(self) -> None:
        for key, entries in list(self._idle.items()):
            for entry in list(entries):
                self._evict(key, entry)
        self._idle.clear()


class _Pending(Struct):
    authority: Authority
    path: str  # canonical path, credentials redacted (for events)
    method: str
    rule: str | None
    reason: str
    audit: bool
    upstream: Upstream
    reused: bool


class ForwardSession(HttpSession):
    via = "forward"

    def __init__(self, server: ProxyServer, client: Channel, caller: Caller) -> None:
        super().__init__(client, server.limits, server.recorder, caller.actor)
        self.server = server
        self.caller = caller
        self.pipeline = server.pipeline
        self.pool = server.pool
        self._pending: _Pending | None = None
        self._authority: Authority | None = None
        # The upstream of the previous request stays with the session while the client keeps
        # asking the same host:port (no pool round trip); it goes to the pool otherwise.
        self._attached: Upstream | None = None

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            self._detach()

    def _detach(self) -> None:
        if self._attached is not None:
            self.pool.put(self._attached)
            self._attached = None

    def host_port(self) -> tuple[str | None, int | None]:
        a = self._authority
        return (a.host, a.port) if a else (None, None)

    async def route(self, request: Request) -> Route:
        if request.method == "CONNECT":
            raise SwitchToConnect(request)
        url = parse_absolute_url(request.target)
        auth = url.authority
        self._authority = auth
        # The Host field becomes the URL's authority (RFC 9112 §3.2.2): the upstream cannot be
        # told another story than the policy was. Several Host fields: 400, before deciding.
        headers = forwarded_fields(request, auth.host_header(80))
        caller = self.caller
        if is_https(url):
            self.recorder.record(NetworkEvent(
                Action.DENIED, auth.host, auth.port, caller.actor, "forward", stage="malformed",
                reason="https:// URL sent to the forward proxy (needs CONNECT)",
                reason_code="use_connect"))
            raise ProxyError(use_connect(auth.host, auth.port))
        if auth.host == INFERENCE_HOST and auth.port == 80:
            raise HandOver()
        refuse_placeholder_host(self.server, caller, auth.host, auth.port, self.recorder)
        path = url.target.split("?", 1)[0]
        label = f"{request.method} {auth}{path}"
        decision = self.pipeline.decide(auth.host, auth.port, caller, "forward", label)
        if decision.l7_enabled:
            rd = decision.check_request(request.method, url.target)
            target, method, rule, reason, audit = rd.target, rd.method, rd.rule, rd.reason, rd.audit
            shown = shown_path(self.server.secrets, target)
            if not rd.allowed:
                raise request_denied(self.recorder, caller, auth, rd, shown)
        else:
            # No L7 rules: the path was not part of the decision and goes up as sent.
            target, method, rule, audit = url.target, request.method, decision.rule, False
            reason = "allowed (no L7 rules)"
            shown = shown_path(self.server.secrets, path)
        target, headers = apply_secrets(self.server, caller, auth.host, auth.port, target,
                                        headers, self.recorder)
        upgrade = wants_websocket(request)
        head = upstream_head(request, target, headers, upgrade=upgrade, via=True)
        upstream, reused = await self._upstream(decision, auth, label)
        self._pending = _Pending(auth, shown, method, rule or decision.rule, reason, audit,
                                 upstream, reused)
        return Route(upstream.channel, head, allow_upgrade=upgrade, via=True)

    async def _upstream(self, decision, auth: Authority, label: str) -> tuple[Upstream, bool]:  # noqa: ANN001
        """The attached upstream, a pooled one, or a new dial (SSRF-checked every time)."""
        host, port = auth.host, auth.port
        reuse = self._attached
        if reuse is not None and (reuse.host != host or reuse.port != port):
            self._detach()
            reuse = None
        self._attached = None
        if reuse is None:
            reuse = self.pool.take(host, port)
        if reuse is not None:
            if reuse.usable:
                try:
                    reuse.allow = self.pipeline.recheck(decision, host, port, reuse.address,
                                                        self.caller, "forward", label, reuse.allow)
                except ProxyError:
                    reuse.channel.close()
                    raise
                return reuse, True
            reuse.channel.close()
        return await self._dial(decision, auth, label), False

    async def _dial(self, decision, auth: Authority, label: str) -> Upstream:  # noqa: ANN001
        admission = await self.pipeline.admit(decision, auth.host, auth.port, self.caller,
                                              "forward", label)
        channel, address = await self.pipeline.dial(admission, self.caller, "forward",
                                                    lambda: Channel(self.limits))
        self.pipeline.allowed(admission, self.caller, "forward", address)
        return Upstream(auth.host, auth.port, channel, address, admission.allow)

    async def exchange(self, request: Request, route: Route) -> Outcome:
        outcome = await super().exchange(request, route)
        pending = self._pending
        if outcome.retryable and pending is not None and pending.reused:
            # The reused connection had gone stale; nothing reached the upstream's application.
            route.upstream.close()
            auth = pending.authority
            label = f"{request.method} {auth}{pending.path}"
            decision = self.pipeline.decide(auth.host, auth.port, self.caller, "forward", label)
            pending.upstream, pending.reused = await self._dial(decision, auth, label), False
            route.upstream = pending.upstream.channel
            outcome = await super().exchange(request, route)
        return outcome

    def finished(self, request: Request, route: Route, outcome: Outcome) -> None:
        pending = self._pending
        self._pending = None
        if pending is None:
            return
        action = Action.AUDIT if pending.audit else Action.ALLOWED
        self.recorder.record(HttpEvent(action, pending.method, pending.authority.host,
                                       pending.authority.port, pending.path, self.actor,
                                       pending.rule, pending.reason, outcome.status))
        if outcome.upstream_reusable and not outcome.upgraded:
            self._detach()
            self._attached = pending.upstream
        elif not outcome.upgraded:
            route.upstream.close()
