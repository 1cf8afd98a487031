"""SSRF: the address table (property-tested), IPv6 embeddings, numeric spellings, both modes."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stockade.network.addresses import (
    BLOCKED_V4,
    BLOCKED_V6,
    CONTROL_PLANE_PORTS,
    INTERNAL_V4,
    INTERNAL_V6,
    AddressClass,
    classify,
)
from stockade.network.ssrf import (
    DnsFailed,
    SsrfDenied,
    SystemResolver,
    allowlist,
    check_address,
    effective_allowlist,
    resolve_checked,
)

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address


def in_net(net):
    return st.integers(int(net.network_address), int(net.broadcast_address)).map(
        V4 if net.version == 4 else V6)


blocked_v4 = st.sampled_from(BLOCKED_V4).flatmap(in_net)
internal_v4 = st.sampled_from(INTERNAL_V4).flatmap(in_net)
any_v4 = st.integers(0, 2**32 - 1).map(V4)
public_v4 = any_v4.filter(lambda a: not any(a in n for n in BLOCKED_V4 + INTERNAL_V4))


def embeddings(v4: V4) -> list[V6]:
    """Every IPv6 form that reaches `v4`: mapped, compatible, NAT64 (both), 6to4, Teredo."""
    n = int(v4)
    forms = [
        V6((0xFFFF << 32) | n),  # ::ffff:a.b.c.d
        V6((0x64FF9B << 96) | n),  # 64:ff9b::/96
        V6((0x64FF9B0001 << 80) | n),  # 64:ff9b:1::/48
        V6((0x2002 << 112) | (n << 80)),  # 2002:AABB:CCDD::
        V6((0x20010000 << 96) | (0x01020304 << 64) | (~n & 0xFFFFFFFF)),  # Teredo client
    ]
    if n > 1:
        forms.append(V6(n))  # ::a.b.c.d (compatible)
    return forms


@given(blocked_v4)
def test_blocked_v4_and_every_embedding_are_blocked(addr):
    assert classify(addr).klass is AddressClass.BLOCKED
    for form in embeddings(addr):
        assert classify(form).klass is AddressClass.BLOCKED, form


@given(internal_v4)
def test_internal_v4_and_every_embedding_are_at_least_internal(addr):
    assert classify(addr).klass is AddressClass.INTERNAL
    for form in embeddings(addr):
        assert classify(form).klass >= AddressClass.INTERNAL, form


@given(public_v4)
def test_public_v4_is_public_and_only_teredo_wraps_it_as_internal(addr):
    assert classify(addr).klass is AddressClass.PUBLIC
    assert check_address(addr, 443, None) is None
    mapped = V6((0xFFFF << 32) | int(addr))
    assert classify(mapped).klass is AddressClass.PUBLIC


@given(st.sampled_from(BLOCKED_V6 + INTERNAL_V6).flatmap(in_net))
def test_v6_table(addr):
    assert classify(addr).klass is not AddressClass.PUBLIC
    assert check_address(addr, 443, None) is not None


@given(st.one_of(blocked_v4, blocked_v4.map(lambda a: embeddings(a)[0]), st.sampled_from(BLOCKED_V6).flatmap(in_net)),
       st.sampled_from(sorted(CONTROL_PLANE_PORTS) + [80, 443]))
@settings(max_examples=200)
def test_blocked_is_never_allowed_even_by_a_matching_allowlist(addr, port):
    net = ipaddress.ip_network(addr)
    # A hand-built allowlist that contains the address (the loader would refuse it).
    from stockade.network.ssrf import Allowlist
    assert check_address(addr, port, Allowlist((net,), None)) is not None
    assert check_address(addr, port, allowlist((net,))) is not None  # and it is flagged


@given(internal_v4, st.sampled_from(sorted(CONTROL_PLANE_PORTS)))
def test_control_plane_ports_refused_in_allowlist_mode(addr, port):
    allow = allowlist((ipaddress.ip_network(f"{addr}/32"),))
    assert "control-plane" in check_address(addr, port, allow)
    assert check_address(addr, 8080, allow) is None


# network.md §9 cases 1-12 (the parts that hold for our stricter table)
@pytest.mark.parametrize("addr,klass", [
    ("127.0.0.1", "BLOCKED"), ("127.0.0.2", "BLOCKED"), ("169.254.169.254", "BLOCKED"),
    ("169.254.0.1", "BLOCKED"), ("0.0.0.0", "BLOCKED"), ("::", "BLOCKED"), ("::1", "BLOCKED"),
    ("fe80::1", "BLOCKED"), ("::ffff:127.0.0.1", "BLOCKED"), ("::ffff:169.254.169.254", "BLOCKED"),
    ("0.1.2.3", "BLOCKED"), ("64:ff9b::a9fe:a9fe", "BLOCKED"), ("2002:7f00:1::", "BLOCKED"),
    ("10.0.0.1", "INTERNAL"), ("10.255.255.255", "INTERNAL"), ("172.16.0.1", "INTERNAL"),
    ("172.31.255.255", "INTERNAL"), ("192.168.0.1", "INTERNAL"), ("100.64.0.1", "INTERNAL"),
    ("100.127.255.255", "INTERNAL"), ("192.0.0.1", "INTERNAL"), ("198.18.0.1", "INTERNAL"),
    ("198.19.255.255", "INTERNAL"), ("198.51.100.1", "INTERNAL"), ("203.0.113.1", "INTERNAL"),
    ("192.0.2.1", "INTERNAL"), ("255.255.255.255", "INTERNAL"), ("224.0.0.1", "INTERNAL"),
    ("240.0.0.1", "INTERNAL"), ("fc00::1", "INTERNAL"), ("fd00::1", "INTERNAL"),
    ("fdc4:f303:9324::254", "INTERNAL"), ("::ffff:10.0.0.1", "INTERNAL"),
    ("::ffff:100.64.0.1", "INTERNAL"), ("64:ff9b::a00:1", "INTERNAL"), ("ff02::1", "INTERNAL"),
    ("2001:db8::1", "INTERNAL"), ("100::1", "INTERNAL"),
    ("172.32.0.1", "PUBLIC"), ("100.128.0.1", "PUBLIC"), ("100.63.255.255", "PUBLIC"),
    ("8.8.8.8", "PUBLIC"), ("1.1.1.1", "PUBLIC"), ("93.184.216.34", "PUBLIC"),
    ("2001:4860:4860::8888", "PUBLIC"), ("::ffff:8.8.8.8", "PUBLIC"),
])
def test_table_examples(addr, klass):
    assert classify(addr).klass is AddressClass[klass]


def run(coro):
    return asyncio.run(coro)


class FixedResolver:
    def __init__(self, *answers: str) -> None:
        self.answers = [ipaddress.ip_address(a) for a in answers]
        self.calls = 0

    async def resolve(self, host, port):
        self.calls += 1
        return list(self.answers)


class FailingResolver:
    async def resolve(self, host, port):
        raise DnsFailed("Name or service not known")


def test_default_mode_refuses_any_internal_answer():
    assert run(resolve_checked("ok.example", 443, None, FixedResolver("8.8.8.8", "1.1.1.1"))) == [
        V4("8.8.8.8"), V4("1.1.1.1")]
    with pytest.raises(SsrfDenied) as info:
        run(resolve_checked("mixed.example", 443, None, FixedResolver("8.8.8.8", "10.0.0.1")))
    assert "mixed.example resolves to 10.0.0.1" in info.value.reason


def test_allowlist_mode():
    allow = allowlist((ipaddress.ip_network("10.0.5.0/24"),))
    assert run(resolve_checked("svc", 8080, allow, FixedResolver("10.0.5.1")))
    with pytest.raises(SsrfDenied, match="not in allowed_ips"):
        run(resolve_checked("svc", 8080, allow, FixedResolver("10.0.6.1")))
    with pytest.raises(SsrfDenied, match="never allowed"):
        run(resolve_checked("svc", 8080, allow, FixedResolver("127.0.0.1")))
    with pytest.raises(SsrfDenied, match="control-plane"):
        run(resolve_checked("svc", 6443, allow, FixedResolver("10.0.5.1")))
    # A public address outside the list is refused too: the list is the whole truth.
    with pytest.raises(SsrfDenied, match="not in allowed_ips"):
        run(resolve_checked("svc", 443, allow, FixedResolver("8.8.8.8")))


def test_allowlist_overlapping_blocked_refuses_everything():
    allow = allowlist((ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.0/8")))
    assert allow.error and "always-blocked" in allow.error
    with pytest.raises(SsrfDenied, match="always-blocked"):
        run(resolve_checked("svc", 80, allow, FixedResolver("10.0.0.1")))


def test_dns_failure_is_not_an_ssrf_denial():
    with pytest.raises(DnsFailed):
        run(resolve_checked("nope.invalid", 80, None, FailingResolver()))
    with pytest.raises(DnsFailed):
        run(resolve_checked("empty.example", 80, None, FixedResolver()))


@pytest.mark.parametrize("name", ["metadata.google.internal", "METADATA.google.internal.", "metadata",
                                  "instance-data", "localhost", "foo.localhost"])
def test_metadata_and_loopback_names_refused_before_lookup(name):
    resolver = FixedResolver("8.8.8.8")
    allow = allowlist((ipaddress.ip_network("8.8.8.0/24"),))
    for mode in (None, allow):
        with pytest.raises(SsrfDenied):
            run(resolve_checked(name, 80, mode, resolver))
    assert resolver.calls == 0


@pytest.mark.parametrize("spelling", [
    "2130706433", "0177.0.0.1", "0x7f.1", "127.1", "0x7f000001", "017700000001", "127.0.1",
    "0x7f.0.0.1", "0177.1",
])
def test_numeric_spellings_resolve_to_loopback_and_are_refused(spelling):
    # glibc's getaddrinfo applies inet_aton rules to these: no DNS query is made.
    resolved = run(SystemResolver().resolve(spelling, 80))
    assert resolved == [V4("127.0.0.1")]
    for allow in (None, allowlist((ipaddress.ip_network("10.0.0.0/8"),))):
        with pytest.raises(SsrfDenied):
            run(resolve_checked(spelling, 80, allow, SystemResolver()))


def test_ip_literals_skip_the_resolver():
    resolver = FixedResolver("8.8.8.8")
    with pytest.raises(SsrfDenied):
        run(resolve_checked("::ffff:127.0.0.1", 80, None, resolver))
    with pytest.raises(SsrfDenied):
        run(resolve_checked("169.254.169.254", 80, None, resolver))
    assert resolver.calls == 0


def test_implicit_allowlist_for_an_explicitly_named_internal_literal():
    # network.md §9 cases 24, 29, 31
    allow = effective_allowlist("10.0.5.20", "10.0.5.20", ())
    assert allow is not None and [str(n) for n in allow.networks] == ["10.0.5.20/32"]
    assert run(resolve_checked("10.0.5.20", 8080, allow, FixedResolver()))
    with pytest.raises(SsrfDenied, match="control-plane"):
        run(resolve_checked("10.0.5.20", 6443, allow, FixedResolver()))
    # Not for blocked literals, names, or a hostless endpoint.
    assert effective_allowlist("127.0.0.1", "127.0.0.1", ()) is None
    assert effective_allowlist("169.254.169.254", "169.254.169.254", ()) is None
    assert effective_allowlist("api.github.com", "api.github.com", ()) is None
    assert effective_allowlist("10.0.5.20", "", ()) is None
