"""The CONNECT adapter: decide, validate, dial, answer 200, then pick the tunnel mode.

Tunnel modes, decided per endpoint after the policy allowed the CONNECT:
- raw relay: `tls: skip`, or nothing on this endpoint needs the plaintext (no L7 rules and no
  credential placeholder may travel to the host). Encrypted bytes pass untouched.
- inspected: the first bytes from the client are classified, waiting until enough have arrived
  (OpenShell classifies whatever the first segment holds, so a 1-byte write skipped L7):
  a TLS ClientHello is terminated with a leaf for the CONNECT host and TLS is opened to the
  upstream (verified against the system roots plus --upstream-ca); plaintext HTTP is inspected
  as is; anything else is refused when L7 rules apply (fail closed), else relayed raw.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING

from ..events.types import Action, NetworkEvent
from ..policy.model import Tls
from ..records import Struct
from .addresses import IPAddress
from .httphead import HttpError, Request
from .l7 import TunnelSession
from .limits import Limits
from .pipeline import Caller
from .relay import Channel, relay
from .placeholders import refuse_placeholder_host
from .responses import CONNECT_ESTABLISHED, ErrorResponse, ProxyError, denied, inference_unavailable
from .target import INFERENCE_HOST, Authority, parse_connect_target
from .tlschannel import TlsChannel, TlsError

if TYPE_CHECKING:
    from .server import ProxyServer

_HTTP_START = re.compile(rb"[A-Z]{1,20} ")
_UPPER = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def classify(data: bytes) -> str | None:
    """"tls", "http", "other", or None when more bytes are needed to tell."""
    if not data:
        return None
    if data[0] == 0x16:
        if len(data) < 3:
            return None
        return "tls" if data[1] == 0x03 and data[2] <= 0x04 else "other"
    if _HTTP_START.match(data):
        return "http"
    # Still only upper-case letters: a method name whose space has not arrived yet.
    if len(data) <= 20 and all(b in _UPPER for b in data):
        return None
    return "other"


async def read_first_bytes(client: Channel, limits: Limits) -> tuple[bytes, str]:
    """Read until the tunnel's protocol is known (or the client stops sending)."""
    data = client.take()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.classify_timeout
    try:
        while True:
            kind = classify(data)
            if kind is not None:
                return data, kind
            if client.eof:
                return data, "other"
            if data:  # a short start: the rest must follow promptly
                deadline = min(deadline, loop.time() + limits.classify_more_timeout)
            client.set_timeout(deadline=deadline)
            try:
                data += await client.read()
            except TimeoutError:
                return data, "other"
    finally:
        client.set_timeout()


class RawTunnel(Struct, eq=False):
    """An open raw tunnel: what `ProxyServer.revalidate` re-decides after a policy reload."""

    host: str
    port: int
    caller: Caller
    address: IPAddress
    client: Channel
    upstream: Channel


async def leaf_context(leaves, host: str):  # noqa: ANN001, ANN201 - a LeafCache, an SSLContext
    """The leaf context for `host`; a first-time leaf (key, signature, chain load: a few ms)
    is built in a thread so that the event loop keeps serving other connections."""
    if host in leaves:
        return leaves.server_context(host)
    return await asyncio.get_running_loop().run_in_executor(None, leaves.server_context, host)


class ConnectHandler:
    def __init__(self, server: ProxyServer, client: Channel, caller: Caller) -> None:
        self.server = server
        self.client = client
        self.caller = caller
        self.pipeline = server.pipeline
        self.limits = server.limits
        self.recorder = server.recorder

    async def handle(self, request: Request, early: bytes) -> ErrorResponse | None:
        """Serve one CONNECT; returns the error to answer, or None when the tunnel ended."""
        try:
            authority = parse_connect_target(request.target)
        except HttpError as exc:
            return ErrorResponse(400, "bad_request", f"invalid CONNECT target: {exc}")
        if early:
            self.client.unread(early)
        if authority.host == INFERENCE_HOST and authority.port == 443:
            return await self._inference(authority)
        try:
            await self._tunnel(authority)
        except ProxyError as exc:
            return exc.response
        return None

    async def _tunnel(self, authority: Authority) -> None:
        host, port, caller = authority.host, authority.port, self.caller
        refuse_placeholder_host(self.server, caller, host, port, self.recorder)
        label = f"CONNECT {authority}"
        decision = self.pipeline.decide(host, port, caller, "connect", label)
        admission = await self.pipeline.admit(decision, host, port, caller, "connect", label)
        endpoint = decision.endpoint
        rules = decision.l7_enabled
        secrets = self.server.secrets
        creds = secrets is not None and secrets.may_travel_to(host)
        inspect = (rules or creds) and (endpoint is None or endpoint.tls is not Tls.SKIP)
        upstream, address = await self.pipeline.dial(
            admission, caller, "connect", lambda: Channel(self.limits))
        self.client.write(CONNECT_ESTABLISHED)
        self.pipeline.allowed(admission, caller, "connect", address)
        if not inspect:
            await self._raw(authority, upstream, address)
            return
        first, kind = await read_first_bytes(self.client, self.limits)
        if kind == "tls":
            await self._terminate(authority, decision, upstream, address, first)
        elif kind == "http":
            self.client.unread(first)
            await TunnelSession(self.server, self.client, upstream, authority, decision,
                                caller, scheme="http", address=address).run()
        elif rules:
            upstream.close()
            self.recorder.record(NetworkEvent(
                Action.DENIED, host, port, caller.actor, "connect", rule=decision.rule,
                stage="policy", reason="the tunnel carries neither TLS nor HTTP, but the "
                "endpoint has L7 rules that can only be enforced on HTTP",
                reason_code="l7_uninspectable"))
            raise ProxyError(denied(
                error="policy_denied", detail=f"{label}: the tunnel traffic is neither TLS nor "
                "HTTP/1.x, so the endpoint's L7 rules cannot be enforced", host=host, port=port,
                binary=caller.binary, policy=decision.rule,
                reason="non-HTTP traffic on an endpoint with protocol: rest",
                hint="use HTTP/1.1 (or TLS carrying HTTP/1.1) to this endpoint, or remove its "
                     "L7 rules if it is not an HTTP API"))
        else:
            self.client.unread(first)
            await self._raw(authority, upstream, address)

    async def _raw(self, authority: Authority, upstream: Channel, address) -> None:  # noqa: ANN001
        """Relay encrypted (or opaque) bytes; registered so a policy reload can end it."""
        tunnel = RawTunnel(authority.host, authority.port, self.caller, address,
                           self.client, upstream)
        self.server.tunnels.add(tunnel)
        try:
            await relay(self.client, upstream, self.limits.idle_timeout)
        finally:
            self.server.tunnels.discard(tunnel)

    async def _terminate(self, authority: Authority, decision, upstream: Channel,  # noqa: ANN001
                         address, first: bytes) -> None:
        host, port = authority.host, authority.port
        try:
            leaves = await self.server.leaves()
            upstream_tls = await self.server.upstream_context()
        except ProxyError:
            upstream.close()
            raise
        if leaves is None:
            upstream.close()
            raise ProxyError(ErrorResponse(
                502, "tls_termination_unavailable", f"TLS to {authority} must be inspected but "
                "this proxy has no certificate authority", {"host": host, "port": port}))
        try:
            context = await leaf_context(leaves, host)
        except ValueError as exc:
            upstream.close()
            raise ProxyError(ErrorResponse(
                502, "tls_termination_unavailable", f"no certificate can be issued for {host}: "
                f"{exc}", {"host": host, "port": port})) from None
        tls_client = TlsChannel(self.client, context, server_side=True)
        tls_up = TlsChannel(upstream, upstream_tls, server_side=False, server_hostname=host)
        up_handshake = asyncio.ensure_future(tls_up.handshake(b"", self.limits.tls_handshake_timeout))
        try:
            await tls_client.handshake(first, self.limits.tls_handshake_timeout)
        except TlsError as exc:
            up_handshake.cancel()
            upstream.close()
            self.client.close()
            self.recorder.record(NetworkEvent(
                Action.DENIED, host, port, self.caller.actor, "connect", rule=decision.rule,
                stage="malformed", reason=f"client TLS handshake failed: {exc.reason} (does the "
                "client trust the sandbox CA?)", reason_code="client_tls_failed"))
            return
        upstream_error = None
        try:
            await up_handshake
        except TlsError as exc:
            upstream_error = ErrorResponse(
                502, "upstream_tls_failed", f"TLS handshake with {authority} failed: {exc.reason}",
                {"host": host, "port": port})
            self.recorder.record(NetworkEvent(
                Action.DENIED, host, port, self.caller.actor, "connect", rule=decision.rule,
                stage="upstream", reason=upstream_error.detail, reason_code="upstream_tls_failed"))
        session = TunnelSession(self.server, tls_client, tls_up, authority, decision,
                                self.caller, scheme="https", address=address,
                                upstream_error=upstream_error)
        await session.run()

    async def _inference(self, authority: Authority) -> ErrorResponse | None:
        handler = self.server.inference
        if handler is None:
            return inference_unavailable(authority.host, authority.port)
        try:
            leaves = await self.server.leaves()
        except ProxyError as exc:
            return exc.response
        if leaves is None:
            return ErrorResponse(503, "inference_unavailable",
                                 "inference.local needs TLS termination but there is no CA")
        self.client.write(CONNECT_ESTABLISHED)
        first, kind = await read_first_bytes(self.client, self.limits)
        if kind != "tls":
            self.client.close()
            return None
        tls_client = TlsChannel(self.client, await leaf_context(leaves, INFERENCE_HOST),
                                server_side=True)
        try:
            await tls_client.handshake(first, self.limits.tls_handshake_timeout)
        except TlsError:
            self.client.close()
            return None
        try:
            await handler(tls_client, self.caller.actor, "https")
        finally:
            tls_client.close()
        return None
