"""Hot-reload helpers: static differences and proposal merges (policy.md §2, §5.4, cases 84-88)."""

from __future__ import annotations

import ipaddress

import pytest

from stockade.policy import PolicyError, compile_policy, merge_rule, static_differences
from stockade.policy.model import (
    Access,
    Binary,
    Endpoint,
    Enforcement,
    L7Allow,
    NetworkRule,
    Protocol,
)

from .policies import CURL, T0, load, network

FS = "version: 1\nfilesystem_policy: {include_workdir: true, read_only: %s, read_write: [/tmp]}\n"


def rule(key, host, port, binaries=(CURL,), **endpoint) -> NetworkRule:
    return NetworkRule(key, key, (Endpoint(host=host, ports=(port,), **endpoint),),
                       tuple(Binary(b) for b in binaries))


def test_identical_and_network_only_changes_have_no_static_difference():  # case 88
    assert static_differences(load(T0), load(T0)) == []
    more = load(T0 + "  x:\n    endpoints: [{ host: x.example.com, port: 443 }]\n"
                "    binaries: [{ path: /x }]\n")
    assert static_differences(load(T0), more) == []


def test_static_differences_are_listed():  # case 88, plus landlock/process
    assert static_differences(load(FS % "[/usr]"), load(FS % "[/usr, /lib]")) == [
        "filesystem_policy.read_only: '/lib' added"]
    assert static_differences(load(FS % "[/usr, /lib]"), load(FS % "[/usr]")) == [
        "filesystem_policy.read_only: '/lib' removed"]
    assert static_differences(load(FS % "[/usr]"), load("version: 1\n")) == [
        "filesystem_policy removed"]
    assert static_differences(load("version: 1\n"), load(FS % "[/usr]")) == [
        "filesystem_policy added"]
    flipped = (FS % "[/usr]").replace("include_workdir: true", "include_workdir: false")
    assert any("include_workdir" in d for d in static_differences(load(FS % "[/usr]"),
                                                                 load(flipped)))
    a = load("version: 1\nlandlock: {compatibility: best_effort}\n"
             "process: {run_as_user: sandbox}\n")
    b = load("version: 1\nlandlock: {compatibility: hard_requirement}\n"
             "process: {run_as_user: nobody, seccomp: {allow: [memfd_create]}}\n")
    diffs = static_differences(a, b)
    assert len(diffs) == 3
    assert "landlock changed from compatibility best_effort to compatibility hard_requirement" \
        in diffs
    assert "process.run_as_user changed from sandbox to nobody" in diffs


def test_merge_into_an_empty_policy():  # case 84
    p = merge_rule(load("version: 1\n"), rule("google", "google.com", 443))
    assert list(p.network_policies) == ["google"]
    assert compile_policy(p).decide("google.com", 443, CURL).rule == "google"


def test_merge_into_a_rule_with_the_same_endpoint():  # case 85
    base = load(network("  test_server:\n    endpoints: [{ host: 192.168.1.100, port: 8567 }]\n"
                        "    binaries: [{ path: /usr/bin/curl }]\n"))
    p = merge_rule(base, rule("allow_192_168_1_100_8567", "192.168.1.100", 8567,
                              allowed_ips=(ipaddress.ip_network("192.168.1.100/32"),)))
    assert list(p.network_policies) == ["test_server"]
    assert [str(n) for n in p.network_policies["test_server"].endpoints[0].allowed_ips] == [
        "192.168.1.100/32"]


def test_merge_of_a_new_destination_inserts_a_rule():  # case 86
    base = load(network("  existing_rule:\n    endpoints: [{ host: api.example.com, port: 443 }]\n"
                        "    binaries: [{ path: /usr/bin/curl }]\n"))
    p = merge_rule(base, rule("allow_10_0_0_5_8080", "10.0.0.5", 8080,
                              allowed_ips=(ipaddress.ip_network("10.0.0.5/32"),)))
    assert sorted(p.network_policies) == ["allow_10_0_0_5_8080", "existing_rule"]


def test_merge_adds_missing_binaries_and_endpoints_by_key():
    base = load(T0)
    p = merge_rule(base, rule("claude_code", "API.anthropic.com", 443,
                              binaries=("/usr/bin/python3", "/usr/bin/node")))
    cc = p.network_policies["claude_code"]
    assert [b.path for b in cc.binaries] == ["/usr/local/bin/claude", "/usr/bin/node",
                                             "/usr/bin/python3"]
    assert len(cc.endpoints) == 2  # same host and port: nothing appended
    p = merge_rule(base, rule("claude_code", "console.anthropic.com", 443))
    assert len(p.network_policies["claude_code"].endpoints) == 3


@pytest.mark.parametrize("host,ips", [  # case 87
    ("127.0.0.1", ()), ("localhost", ()), ("169.254.169.254", ()),
    ("api.example.com", ("127.0.0.0/8",)), ("api.example.com", ("169.254.0.0/16",)),
])
def test_always_blocked_proposals_are_refused(host, ips):
    with pytest.raises(PolicyError, match="always"):
        merge_rule(load("version: 1\n"), rule("x", host, 80,
                                             allowed_ips=tuple(map(ipaddress.ip_network, ips))))


def test_rfc1918_proposals_are_accepted():
    p = merge_rule(load("version: 1\n"), rule("x", "db.internal", 5432,
                                             allowed_ips=(ipaddress.ip_network("10.0.0.0/24"),)))
    assert "x" in p.network_policies


def test_l7_proposals_extend_rest_endpoints_but_never_narrow_l4():
    base = load(network(
        "  api:\n    endpoints: [{ host: api.example.com, port: 443, protocol: rest, enforcement: "
        "enforce, access: read-only }]\n    binaries: [{ path: /usr/bin/curl }]\n"
        "  l4:\n    endpoints: [{ host: l4.example.com, port: 443 }]\n"
        "    binaries: [{ path: /usr/bin/curl }]\n"))
    post = (L7Allow(method="POST", path="/v1/items"),)
    p = merge_rule(base, rule("allow_api_example_com_443", "api.example.com", 443,
                              protocol=Protocol.REST, enforcement=Enforcement.ENFORCE, rules=post))
    ep = p.network_policies["api"].endpoints[0]
    assert ep.access is None and len(ep.rules) == 4
    d = compile_policy(p).decide("api.example.com", 443, CURL)
    assert d.check_request("POST", "/v1/items").allowed and d.check_request("GET", "/x").allowed
    assert not d.check_request("DELETE", "/x").allowed
    p = merge_rule(base, rule("allow_l4", "l4.example.com", 443, protocol=Protocol.REST,
                              enforcement=Enforcement.ENFORCE, rules=post))
    assert p.network_policies["l4"].endpoints[0].protocol is None
    assert compile_policy(p).decide("l4.example.com", 443, CURL).check_request("DELETE",
                                                                               "/x").allowed


def test_merged_policy_is_validated_and_normalised():
    p = merge_rule(load("version: 1\n"), rule("x", "API.Example.COM", 443,
                                             protocol=Protocol.REST, access=Access.FULL,
                                             enforcement=Enforcement.ENFORCE))
    ep = p.network_policies["x"].endpoints[0]
    assert ep.host == "api.example.com" and ep.rules == (L7Allow(method="*", path="**"),)
    assert ep.enforcement is Enforcement.ENFORCE
    with pytest.raises(PolicyError, match="TLD wildcard"):
        merge_rule(load("version: 1\n"), rule("bad", "*.com", 443))
