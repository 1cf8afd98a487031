"""Address classification for SSRF protection (sans-IO).

Two tiers, as in OpenShell, over the union of the ranges smokescreen and ssrf_filter block
(reference/ecosystem.md A.10):

- BLOCKED: never reachable, not even through an endpoint's `allowed_ips` (loopback, link-local
  including the cloud metadata address, "this network" 0.0.0.0/8, ::, ::1, fe80::/10).
- INTERNAL: private and special-purpose ranges, reachable only where the endpoint's
  `allowed_ips` covers the address.
- PUBLIC: everything else.

IPv6 forms that carry an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo) are
unwrapped first and classified by the IPv4 they reach, so `::ffff:127.0.0.1` or
`64:ff9b::a9fe:a9fe` cannot smuggle a blocked destination past the table. The stdlib's
`is_global`/`is_private` are not used: on 3.11 they call multicast, NAT64 and 6to4 "global".
"""

from __future__ import annotations

import enum
import ipaddress

from ..records import Struct

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class AddressClass(enum.IntEnum):
    PUBLIC = 0
    INTERNAL = 1
    BLOCKED = 2


def _nets(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


BLOCKED_V4 = _nets("127.0.0.0/8", "169.254.0.0/16", "0.0.0.0/8")
BLOCKED_V6 = _nets("::1/128", "::/128", "fe80::/10")
INTERNAL_V4 = _nets(
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",  # RFC 1918
    "100.64.0.0/10",  # carrier-grade NAT
    "192.0.0.0/24",  # IETF protocol assignments
    "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",  # TEST-NET-1..3
    "198.18.0.0/15",  # benchmarking
    "192.88.99.0/24",  # 6to4 relay anycast
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, includes 255.255.255.255
)
INTERNAL_V6 = _nets(
    "fc00::/7",  # unique local
    "fec0::/10",  # deprecated site-local
    "ff00::/8",  # multicast
    "2001:db8::/32",  # documentation
    "100::/64",  # discard-only
)

# IPv6 prefixes that embed an IPv4 address in their low 32 bits.
_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64 = _nets("64:ff9b::/96", "64:ff9b:1::/48")
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")
_TEREDO = ipaddress.ip_network("2001::/32")

# Names that reach cloud metadata services without resolving to a link-local address everywhere.
METADATA_HOSTNAMES = frozenset({
    "metadata", "metadata.google.internal", "metadata.goog", "instance-data",
    "instance-data.ec2.internal", "metadata.azure.com", "metadata.platformequinix.com",
})

# Kubernetes and etcd control-plane ports, refused whenever `allowed_ips` opens internal ranges.
CONTROL_PLANE_PORTS = frozenset({2379, 2380, 6443, 10250, 10255})


def embedded_ipv4(addr: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address reaches through a transition mechanism, if any."""
    n = int(addr)
    if addr in _MAPPED or (addr in _COMPATIBLE and n > 1):
        return [ipaddress.IPv4Address(n & 0xFFFFFFFF)]
    if any(addr in net for net in _NAT64):
        return [ipaddress.IPv4Address(n & 0xFFFFFFFF)]
    if addr in _SIX_TO_FOUR:
        return [ipaddress.IPv4Address((n >> 80) & 0xFFFFFFFF)]
    if addr in _TEREDO:
        # The Teredo server (bits 32..63) and the client, stored bit-inverted in the low 32 bits.
        server = ipaddress.IPv4Address((n >> 64) & 0xFFFFFFFF)
        client = ipaddress.IPv4Address(~n & 0xFFFFFFFF)
        return [server, client]
    return []


class Classification(Struct, frozen=True):
    klass: AddressClass
    reason: str  # the range that decided it, e.g. "127.0.0.0/8 (loopback)"


_LABELS: dict[str, str] = {
    "127.0.0.0/8": "loopback", "169.254.0.0/16": "link-local, cloud metadata",
    "0.0.0.0/8": "this network", "::1/128": "loopback", "::/128": "unspecified",
    "fe80::/10": "link-local", "10.0.0.0/8": "private", "172.16.0.0/12": "private",
    "192.168.0.0/16": "private", "100.64.0.0/10": "carrier-grade NAT",
    "192.0.0.0/24": "IETF protocol assignments", "192.0.2.0/24": "documentation",
    "198.51.100.0/24": "documentation", "203.0.113.0/24": "documentation",
    "198.18.0.0/15": "benchmarking", "192.88.99.0/24": "6to4 relay", "224.0.0.0/4": "multicast",
    "240.0.0.0/4": "reserved", "fc00::/7": "unique local", "fec0::/10": "site-local",
    "ff00::/8": "multicast", "2001:db8::/32": "documentation", "100::/64": "discard-only",
}


def _label(net: IPNetwork) -> str:
    return f"{net} ({_LABELS.get(str(net), 'special-purpose')})"


def _classify_plain(addr: IPAddress) -> Classification:
    blocked, internal = (BLOCKED_V4, INTERNAL_V4) if addr.version == 4 else (BLOCKED_V6, INTERNAL_V6)
    for net in blocked:
        if addr in net:
            return Classification(AddressClass.BLOCKED, _label(net))
    for net in internal:
        if addr in net:
            return Classification(AddressClass.INTERNAL, _label(net))
    return Classification(AddressClass.PUBLIC, "public")


def classify(addr: IPAddress | str) -> Classification:
    """Classify one address; IPv6 forms embedding IPv4 take the strictest class they reach."""
    if isinstance(addr, str):
        addr = ipaddress.ip_address(addr)
    result = _classify_plain(addr)
    if addr.version == 6:
        for v4 in embedded_ipv4(addr):
            inner = _classify_plain(v4)
            if inner.klass > result.klass:
                result = Classification(inner.klass, f"{inner.reason} embedded in {addr}")
        if result.klass is AddressClass.PUBLIC and addr in _TEREDO:
            # Teredo tunnels to arbitrary IPv4 hosts through a relay: never a plain public dial.
            result = Classification(AddressClass.INTERNAL, "2001::/32 (Teredo)")
    return result


def unwrap(addr: IPAddress) -> IPAddress:
    """The address to compare with `allowed_ips`: an IPv4-mapped IPv6 address becomes its IPv4."""
    if addr.version == 6 and addr in _MAPPED:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return addr


def _v6_forms(net: ipaddress.IPv4Network) -> list[ipaddress.IPv6Network]:
    """The IPv4-mapped, IPv4-compatible, NAT64 and 6to4 forms of an IPv4 range (Teredo's is
    not one prefix: blocked_overlap checks it on its own)."""
    plen = 96 + net.prefixlen
    base = int(net.network_address)
    forms = [
        ipaddress.IPv6Network((int(prefix.network_address) | base, plen))
        for prefix in (_MAPPED, _COMPATIBLE, _NAT64[0])
    ]
    forms.append(ipaddress.IPv6Network((int(_SIX_TO_FOUR.network_address) | base << 80, 16 + net.prefixlen)))
    return forms


BLOCKED_ALL: tuple[IPNetwork, ...] = BLOCKED_V4 + BLOCKED_V6 + tuple(
    form for net in BLOCKED_V4 for form in _v6_forms(net)  # type: ignore[arg-type]
)


def blocked_overlap(net: IPNetwork) -> IPNetwork | None:
    """The always-blocked range an `allowed_ips` entry overlaps, or None (IPv6 forms that
    embed a blocked IPv4 address count: classify() refuses them at connect time anyway, and an
    allowed_ips entry that names one is a mistake to report at load)."""
    for blocked in BLOCKED_ALL:
        if blocked.version == net.version and net.overlaps(blocked):  # type: ignore[arg-type]
            return blocked
    if net.version == 6 and net.overlaps(_TEREDO):  # type: ignore[arg-type]
        return _teredo_overlap(net)  # type: ignore[arg-type]
    return None


def _teredo_overlap(net: ipaddress.IPv6Network) -> IPNetwork | None:
    """Teredo puts the server's IPv4 address in bits 32-63 and the client's, inverted, in the
    last 32 bits (classify() checks both): a range that leaves any client bit free holds the
    Teredo form of every client, loopback included; past /96 both addresses are fixed."""
    if net.prefixlen <= 96:
        return _TEREDO
    value = int(net.network_address)
    server = ipaddress.IPv4Network(((value >> 64) & 0xFFFFFFFF, 32))
    free = 128 - net.prefixlen
    clients = ipaddress.IPv4Network((((value & 0xFFFFFFFF) ^ 0xFFFFFFFF) >> free << free, 32 - free))
    for blocked in BLOCKED_V4:
        if clients.overlaps(blocked) or server.overlaps(blocked):
            return blocked
    return None


def is_blocked_hostname(host: str) -> bool:
    """A name that must never be dialled whatever it resolves to (metadata services, localhost)."""
    name = host.lower().rstrip(".")
    return name in METADATA_HOSTNAMES or name == "localhost" or name.endswith(".localhost")


def literal_address(host: str) -> IPAddress | None:
    """`host` as an IP address when it is a standard literal (brackets allowed for IPv6)."""
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
