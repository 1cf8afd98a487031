"""The SSRF stage: resolve once, validate every address, hand back exactly what may be dialled.

Runs after the policy allowed (host, port) and before any byte leaves for the upstream. The
addresses returned are the only ones the proxy connects to (DNS pinning): a resolver that
answers differently a second later cannot redirect the connection, because there is no second
lookup. A name whose answers mix public and internal addresses is refused as a whole.

Two modes, decided by the matched endpoint:
- allowlist: the endpoint lists `allowed_ips` (or names the very IP literal it is asked for,
  OpenShell's "implicit allowed_ips"). Every address must lie inside one entry and never be
  BLOCKED; Kubernetes/etcd control-plane ports are refused.
- default: every address must be PUBLIC.

Metadata names and localhost are refused by name before any lookup. A failed lookup is a
`DnsFailed` (502 dns_failed), not an SSRF denial: the user needs to fix a name, not a policy.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from collections.abc import Sequence
from typing import Protocol

from ..records import Struct
from .addresses import (
    CONTROL_PLANE_PORTS,
    AddressClass,
    IPAddress,
    IPNetwork,
    blocked_overlap,
    classify,
    is_blocked_hostname,
    literal_address,
    unwrap,
)


class SsrfDenied(Exception):
    """The destination may not be dialled; `reason` says why (one sentence, for the 403)."""

    def __init__(self, reason: str, address: IPAddress | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.address = address


class DnsFailed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Resolver(Protocol):
    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Every address `host` has for a TCP connection to `port`, in preference order."""
        ...


class SystemResolver:
    """getaddrinfo in the event loop's thread pool (it blocks); the result is never cached."""

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                           proto=socket.IPPROTO_TCP)
        except (socket.gaierror, UnicodeError) as exc:
            raise DnsFailed(str(exc)) from None
        out: list[IPAddress] = []
        for family, _, _, _, sockaddr in infos:
            if family not in (socket.AF_INET, socket.AF_INET6):
                continue
            text = str(sockaddr[0]).split("%", 1)[0]
            addr = ipaddress.ip_address(text)
            if addr not in out:
                out.append(addr)
        return out


class Allowlist(Struct, frozen=True):
    """An endpoint's `allowed_ips`, checked once (at first use) for always-blocked overlap."""

    networks: tuple[IPNetwork, ...]
    error: str | None  # set when the list itself is unusable: every connection is refused


@functools.lru_cache(maxsize=1024)
def allowlist(networks: tuple[IPNetwork, ...]) -> Allowlist:
    for net in networks:
        overlap = blocked_overlap(net)
        if overlap is not None:
            return Allowlist(networks, f"allowed_ips entry {net} overlaps the always-blocked "
                                       f"range {overlap}")
    return Allowlist(networks, None)


def effective_allowlist(
    host: str, endpoint_host: str | None, allowed_ips: Sequence[IPNetwork],
) -> Allowlist | None:
    """The allowlist for this destination, or None for default mode.

    An endpoint that names an IP literal and is asked for exactly that literal allows it as if
    it were listed in `allowed_ips` (OpenShell's implicit allowlist): writing `host: 10.0.0.5`
    is an explicit opt-in. BLOCKED literals never get one.
    """
    if allowed_ips:
        return allowlist(tuple(allowed_ips))
    if endpoint_host and endpoint_host == host:
        addr = literal_address(host)
        if addr is not None and classify(addr).klass is AddressClass.INTERNAL:
            net = ipaddress.ip_network(addr)
            return allowlist((net,))
    return None


@functools.lru_cache(maxsize=4096)
def check_address(addr: IPAddress, port: int, allow: Allowlist | None) -> str | None:
    """Why `addr:port` may not be dialled under `allow`, or None when it may (sans-IO).

    Pure, so cached: a pooled connection is re-checked on every request it carries."""
    verdict = classify(addr)
    if allow is None:
        if verdict.klass is AddressClass.PUBLIC:
            return None
        if verdict.klass is AddressClass.BLOCKED:
            return f"{addr} is {verdict.reason}, which is never allowed"
        return f"{addr} is {verdict.reason}; internal addresses need the endpoint's allowed_ips"
    if allow.error:
        return allow.error
    if verdict.klass is AddressClass.BLOCKED:
        return f"{addr} is {verdict.reason}, which is never allowed"
    if port in CONTROL_PLANE_PORTS:
        return f"port {port} is a control-plane port, refused whenever allowed_ips applies"
    target = unwrap(addr)
    for net in allow.networks:
        if target.version == net.version and target in net:
            return None
    listed = ", ".join(str(n) for n in allow.networks)
    return f"{addr} is not in allowed_ips ({listed})"


def check_name(host: str) -> None:
    if is_blocked_hostname(host):
        raise SsrfDenied(f"{host} is a metadata or loopback name, which is never allowed")


async def resolve_checked(
    host: str, port: int, allow: Allowlist | None, resolver: Resolver,
) -> list[IPAddress]:
    """Resolve once and validate every address; returns the addresses to dial, in order."""
    check_name(host)
    if allow is not None and allow.error:
        raise SsrfDenied(allow.error)
    literal = literal_address(host)
    if literal is not None:
        addresses = [literal]
    else:
        addresses = await resolver.resolve(host, port)
        if not addresses:
            raise DnsFailed("no addresses")
    for addr in addresses:
        reason = check_address(addr, port, allow)
        if reason is not None:
            if literal is None:
                reason = f"{host} resolves to {reason}"
            raise SsrfDenied(reason, addr)
    return addresses
