"""The L7 relay inside a CONNECT tunnel (TLS-terminated, or plaintext HTTP).

Every request on the tunnel is parsed and decided on its own with the engine's
`check_request`, on the canonical target, which is what gets forwarded: the upstream serves
exactly the path the rules were checked against (`/public/../secret` is checked and sent as
`/secret`). `enforce` answers 403 JSON and closes, after the responses to earlier pipelined
requests have been relayed in order; `audit` forwards and records. WebSocket upgrades are
decided as the GET they are, then relayed raw. The Host header must name the tunnel's host.

A hot reload applies to open tunnels: when the engine changed since the last request, the
connection is decided again (and its dialled address re-validated) before the next request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..events.types import Action, HttpEvent
from ..policy.engine import Decision
from .exchange import (
    HttpSession,
    Outcome,
    Route,
    forwarded_fields,
    request_denied,
    upstream_head,
    wants_websocket,
)
from .httphead import HttpError, Request
from .pipeline import Caller
from .placeholders import apply_secrets, shown_path
from .relay import Channel
from .responses import ErrorResponse, ProxyError, bad_request
from .target import Authority, check_tunnel_host, parse_absolute_url

if TYPE_CHECKING:
    from ..policy.l7 import RequestDecision
    from .addresses import IPAddress
    from .server import ProxyServer


class TunnelSession(HttpSession):
    via = "connect"

    def __init__(self, server: ProxyServer, client: Channel, upstream: Channel,
                 authority: Authority, decision: Decision, caller: Caller, *, scheme: str,
                 address: IPAddress | None = None,
                 upstream_error: ErrorResponse | None = None) -> None:
        super().__init__(client, server.limits, server.recorder, caller.actor)
        self.server = server
        self.upstream = upstream
        self.authority = authority
        self.decision = decision
        self.caller = caller
        self.scheme = scheme
        self.address = address
        self.upstream_error = upstream_error
        self._current: tuple[RequestDecision, str] | None = None

    def host_port(self) -> tuple[str | None, int | None]:
        return self.authority.host, self.authority.port

    async def next_request(self, first: bool = False) -> Request | None:
        # Between requests, the upstream closing (its keep-alive timeout) must look to the
        # client like the server closing, so that it reconnects instead of sending its next
        # request into a dead tunnel. Unsolicited bytes end the tunnel the same way.
        upstream = self.upstream
        if upstream.eof and not first:
            return None
        upstream.on_data = lambda _data: self._upstream_gone()
        upstream.on_eof = self._upstream_gone
        try:
            return await super().next_request(first)
        finally:
            upstream.on_data = upstream.on_eof = None

    def _upstream_gone(self) -> None:
        if not self.reader.pending_head:
            self.client.close()

    def close(self) -> None:
        super().close()
        self.upstream.close()

    def _origin_target(self, request: Request) -> str:
        target = request.target
        if target.startswith("/") or (target == "*" and request.method == "OPTIONS"):
            return target
        if "://" in target:
            url = parse_absolute_url(target)
            if url.authority != self.authority:
                raise HttpError(421, f"request for {url.authority} inside the tunnel to "
                                     f"{self.authority}")
            return url.target
        raise HttpError(400, f"invalid request-target {target[:80]!r}")

    def _current_decision(self) -> Decision:
        if self.server.policy.engine is self.decision.engine:
            return self.decision
        host, port = self.authority.host, self.authority.port
        label = f"CONNECT {self.authority}"
        decision = self.server.pipeline.decide(host, port, self.caller, "connect", label)
        if self.address is not None:
            self.server.pipeline.recheck(decision, host, port, self.address, self.caller,
                                         "connect", label)
        self.decision = decision
        return decision

    async def route(self, request: Request) -> Route:
        if self.upstream_error is not None:
            raise ProxyError(self.upstream_error)
        if request.method == "CONNECT":
            raise ProxyError(bad_request("CONNECT inside a tunnel is not supported"))
        target = self._origin_target(request)
        check_tunnel_host(request.headers, self.authority, request.version)
        decision = self._current_decision()
        rd = decision.check_request(request.method, target)
        host, port = self.authority.host, self.authority.port
        shown = shown_path(self.server.secrets, rd.target)
        if not rd.allowed:
            raise request_denied(self.recorder, self.caller, self.authority, rd, shown)
        forward_target, headers = apply_secrets(
            self.server, self.caller, host, port, rd.target, forwarded_fields(request),
            self.recorder)
        upgrade = wants_websocket(request)
        self._current = (rd, shown)
        head = upstream_head(request, forward_target, headers, upgrade=upgrade, via=False)
        return Route(self.upstream, head, allow_upgrade=upgrade, tied=True)

    def finished(self, request: Request, route: Route, outcome: Outcome) -> None:
        if self._current is None:
            return
        rd, shown = self._current
        self._current = None
        action = Action.AUDIT if rd.audit else Action.ALLOWED
        self.recorder.record(HttpEvent(action, rd.method, self.authority.host, self.authority.port,
                                       shown, self.actor, rd.rule, rd.reason, outcome.status))
