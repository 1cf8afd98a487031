"""The egress pipeline shared by the CONNECT and forward adapters.

    identity (once per client connection) → policy decision → SSRF (resolve once, validate
    every address) → dial exactly those addresses → tunnel mode

Each step either returns what the next needs or raises `ProxyError` carrying the response the
client gets; the event is recorded at the point of failure, so the adapters only write the
response and close. A deny never dials. The engine is read from the holder once per decision,
so a hot reload (holder.swap) applies to every later decision without locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable
from typing import Any, Protocol

from ..events.types import Action, Actor, FindingEvent, NetworkEvent, Recorder
from ..policy.engine import Decision, Engine
from ..records import Struct
from .addresses import AddressClass, IPAddress, classify
from .limits import Limits
from .relay import Channel, set_nodelay
from .responses import (
    ErrorResponse,
    ProxyError,
    denied,
    dns_failed,
    upstream_timeout,
    upstream_unreachable,
)
from .ssrf import (
    Allowlist,
    DnsFailed,
    Resolver,
    SsrfDenied,
    check_address,
    effective_allowlist,
    resolve_checked,
)


class EngineSource(Protocol):
    """What the proxy reads the current policy from (hot reload swaps `engine` atomically)."""

    @property
    def engine(self) -> Engine: ...


class PolicyHolder:
    """The simplest EngineSource: one attribute, replaced whole on reload."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.generation = 0

    def swap(self, engine: Engine) -> None:
        self.engine = engine
        self.generation += 1


class Caller(Struct, frozen=True):
    """Who is behind a client connection; `binary` None when identity is not available."""

    actor: Actor
    binary: str | None = None
    ancestors: tuple[str, ...] = ()
    identity_error: Any = None  # an IdentityError: every decision on this connection is a deny

    @classmethod
    def anonymous(cls) -> Caller:
        return cls(Actor())


class Admission(Struct, frozen=True):
    """An allowed destination: the decision and the validated addresses to dial."""

    decision: Decision
    host: str
    port: int
    addresses: tuple[IPAddress, ...]
    allow: Allowlist | None


def identity_denied(host: str, port: int, caller: Caller, label: str) -> ErrorResponse:
    err = caller.identity_error
    code = getattr(err, "code", "identity_unavailable")
    message = getattr(err, "message", str(err))
    return denied(
        error="identity_denied", detail=f"{label} denied: the calling process could not be "
        f"identified ({code})", host=host, port=port, binary=caller.binary, policy=None,
        reason=message, hint=None, extra={"reason_code": code},
    )


class EgressPipeline:
    def __init__(self, policy: EngineSource, resolver: Resolver, limits: Limits,
                 recorder: Recorder) -> None:
        self.policy = policy
        self.resolver = resolver
        self.limits = limits
        self.recorder = recorder
        self._allow_engine: object = None
        self._allow_cache: dict[tuple[int, str], tuple[Any, Allowlist | None]] = {}

    # -- decision ------------------------------------------------------------------------

    def decide(self, host: str, port: int, caller: Caller, via: str, label: str) -> Decision:
        """The L4 decision; raises ProxyError (403) on a deny, after recording it."""
        if caller.identity_error is not None:
            response = identity_denied(host, port, caller, label)
            self.recorder.record(NetworkEvent(
                Action.DENIED, host, port, caller.actor, via, stage="identity",
                reason=response.fields["reason"], reason_code=response.fields["reason_code"]))
            raise ProxyError(response)
        decision = self.policy.engine.decide(host, port, caller.binary, caller.ancestors)
        if not decision.allowed:
            reason = decision.reason
            self.recorder.record(NetworkEvent(
                Action.DENIED, host, port, caller.actor, via, stage="policy", reason=reason,
                reason_code=decision.reason_code))
            raise ProxyError(denied(
                error="policy_denied", detail=f"{label} not permitted by policy", host=host,
                port=port, binary=caller.binary, policy=None, reason=reason,
                hint=decision.hint, extra={"reason_code": decision.reason_code}))
        return decision

    def allowlist_for(self, decision: Decision, host: str) -> Allowlist | None:
        """The SSRF allowlist of the decision's endpoint, computed once per policy generation
        (hashing IP networks is slow in Python; the endpoint objects live with the engine)."""
        ep = decision.endpoint
        if ep is None:
            return None
        if decision.engine is not self._allow_engine:
            self._allow_engine, self._allow_cache = decision.engine, {}
        key = (id(ep), host)
        hit = self._allow_cache.get(key)
        if hit is not None and hit[0] is ep:
            return hit[1]
        allow = effective_allowlist(host, ep.host, ep.allowed_ips)
        if len(self._allow_cache) < 4096:
            self._allow_cache[key] = (ep, allow)
        return allow

    # -- SSRF ----------------------------------------------------------------------------

    async def admit(self, decision: Decision, host: str, port: int, caller: Caller, via: str,
                    label: str) -> Admission:
        """Resolve once and validate every address (DNS pinning); raises ProxyError."""
        allow = self.allowlist_for(decision, host)
        try:
            addresses = await resolve_checked(host, port, allow, self.resolver)
        except SsrfDenied as exc:
            raise self.ssrf_denied(decision, host, port, caller, via, label, exc) from None
        except DnsFailed as exc:
            self.recorder.record(NetworkEvent(
                Action.DENIED, host, port, caller.actor, via, rule=decision.rule, stage="dns",
                reason=f"DNS lookup failed: {exc.reason}", reason_code="dns_failed"))
            raise ProxyError(dns_failed(host, port, exc.reason)) from None
        return Admission(decision, host, port, tuple(addresses), allow)

    def ssrf_denied(self, decision: Decision, host: str, port: int, caller: Caller, via: str,
                    label: str, exc: SsrfDenied) -> ProxyError:
        blocked = exc.address is None or classify(exc.address).klass is AddressClass.BLOCKED
        self.recorder.record(NetworkEvent(
            Action.DENIED, host, port, caller.actor, via, rule=decision.rule, stage="ssrf",
            reason=exc.reason, reason_code="ssrf_denied"))
        self.recorder.record(FindingEvent(
            "ssrf", f"SSRF attempt blocked: {host}:{port}", "high" if blocked else "medium",
            caller.actor, exc.reason, host, port))
        ep = decision.endpoint
        hint = None
        if not blocked and ep is not None and not ep.allowed_ips and exc.address is not None:
            hint = (f"if {host} is meant to reach {exc.address}, add allowed_ips: "
                    f"['{exc.address}'] to the endpoint {ep.host or '(hostless)'}:{port} of "
                    f"rule '{decision.endpoint_rule or decision.rule}'")
        return ProxyError(denied(
            error="ssrf_denied", detail=f"{label} blocked: {exc.reason}", host=host, port=port,
            binary=caller.binary, policy=decision.rule, reason=exc.reason, hint=hint))

    def recheck(self, decision: Decision, host: str, port: int, address: IPAddress,
                caller: Caller, via: str, label: str, checked: object = None) -> Allowlist | None:
        """A reused connection's address against the current decision's SSRF rules (sync).

        `checked` is the allowlist the address was last validated under: when the current one
        is the very same object (same policy generation), nothing needs checking again."""
        allow = self.allowlist_for(decision, host)
        if allow is checked and checked is not None:
            return allow
        reason = check_address(address, port, allow)
        if reason is not None:
            raise self.ssrf_denied(decision, host, port, caller, via, label,
                                   SsrfDenied(f"{host} resolves to {reason}", address))
        return allow

    # -- dialling ------------------------------------------------------------------------

    async def dial(
        self, admission: Admission, caller: Caller, via: str,
        factory: Callable[[], Channel], *, tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> tuple[Channel, IPAddress]:
        """Connect to the first validated address that answers (never resolving again)."""
        host, port = admission.host, admission.port
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.connect_timeout
        errors: list[str] = []
        for address in admission.addresses:
            family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            set_nodelay(sock)
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                async with asyncio.timeout(remaining):
                    await loop.sock_connect(sock, (str(address), port))
            except TimeoutError:
                sock.close()
                self._fail(admission, caller, via, "upstream", f"connect to {address}:{port} "
                           f"timed out", "upstream_timeout")
                raise ProxyError(upstream_timeout(host, port, self.limits.connect_timeout)) from None
            except OSError as exc:
                sock.close()
                errors.append(f"{address}: {exc.strerror or exc}")
                continue
            try:
                _, channel = await loop.create_connection(
                    factory, sock=sock, ssl=tls, server_hostname=server_hostname if tls else None,
                    ssl_handshake_timeout=self.limits.tls_handshake_timeout if tls else None)
            except (ssl.SSLError, ssl.CertificateError, OSError, TimeoutError) as exc:
                with contextlib.suppress(OSError):
                    sock.close()
                why = _tls_reason(exc)
                self._fail(admission, caller, via, "upstream", f"TLS to {address}:{port} "
                           f"failed: {why}", "upstream_tls_failed")
                raise ProxyError(ErrorResponse(
                    502, "upstream_tls_failed", f"TLS handshake with {host}:{port} failed: {why}",
                    {"host": host, "port": port})) from None
            return channel, address
        why = "; ".join(errors) or "no address"
        self._fail(admission, caller, via, "upstream", f"connect failed: {why}",
                   "upstream_unreachable")
        raise ProxyError(upstream_unreachable(host, port, why))

    def _fail(self, admission: Admission, caller: Caller, via: str, stage: str, reason: str,
              code: str) -> None:
        self.recorder.record(NetworkEvent(
            Action.DENIED, admission.host, admission.port, caller.actor, via,
            rule=admission.decision.rule, stage=stage, reason=reason, reason_code=code))

    def allowed(self, admission: Admission, caller: Caller, via: str, address: IPAddress) -> None:
        self.recorder.record(NetworkEvent(
            Action.ALLOWED, admission.host, admission.port, caller.actor, via,
            rule=admission.decision.rule, upstream=_addr_text(address, admission.port)))


def _addr_text(address: IPAddress, port: int) -> str:
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


def _tls_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verification failed: {exc.verify_message}"
    if isinstance(exc, TimeoutError):
        return "handshake timed out"
    return str(exc) or type(exc).__name__
