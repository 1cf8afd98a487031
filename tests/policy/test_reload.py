"""Hot-reload helpers: static differences and proposal merges (policy.md §2, §5.4, cases 84-88)."""

from __future__ import annotations

import ipaddress

import pytest

from stockade.policy import PolicyError, compile_policy, merge_proposed_rule, static_differences
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


def merge_rule(policy, proposed):
    """The approved policy alone (what most cases check)."""
    return merge_proposed_rule(policy, proposed).policy


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


def test_merge_with_other_allowed_ips_adds_a_rule_and_leaves_the_existing_endpoint():  # case 85
    # OpenShell unions the allowed_ips into test_server's endpoint, which would hand them to
    # every binary of test_server; here the proposal becomes its own rule instead.
    base = load(network("  test_server:\n    endpoints: [{ host: 192.168.1.100, port: 8567 }]\n"
                        "    binaries: [{ path: /usr/bin/curl }, { path: /usr/bin/wget }]\n"))
    p = merge_rule(base, rule("allow_192_168_1_100_8567", "192.168.1.100", 8567,
                              allowed_ips=(ipaddress.ip_network("192.168.1.100/32"),)))
    assert sorted(p.network_policies) == ["allow_192_168_1_100_8567", "test_server"]
    assert p.network_policies["test_server"] == base.network_policies["test_server"]
    assert [b.path for b in p.network_policies["allow_192_168_1_100_8567"].binaries] == [CURL]


def test_merge_of_a_new_destination_inserts_a_rule():  # case 86
    base = load(network("  existing_rule:\n    endpoints: [{ host: api.example.com, port: 443 }]\n"
                        "    binaries: [{ path: /usr/bin/curl }]\n"))
    p = merge_rule(base, rule("allow_10_0_0_5_8080", "10.0.0.5", 8080,
                              allowed_ips=(ipaddress.ip_network("10.0.0.5/32"),)))
    assert sorted(p.network_policies) == ["allow_10_0_0_5_8080", "existing_rule"]


GH = network("  allow_api_github_com_443:\n    endpoints: [{ host: api.github.com, port: 443 }]\n"
             "    binaries: [{ path: /usr/bin/gh }]\n")


def grants(policy, hosts, binaries):
    engine = compile_policy(policy)
    return {(h, b) for h in hosts for b in binaries if engine.decide(h, 443, b).allowed}


@pytest.mark.parametrize("existing,proposed", [
    ("api.github.com", "api-github.com"), ("api-github.com", "api.github.com"),
    ("api.github.com", "api_github.com"), ("api_github.com", "api-github.com"),
])
def test_a_key_collision_never_merges_other_hosts(existing, proposed):
    # rule_name maps all three hosts to allow_api_github_com_443: approving curl's proposal for
    # one must not give gh the other, nor curl the existing one.
    base = load(GH.replace("api.github.com", existing))
    hosts = ("api.github.com", "api-github.com", "api_github.com")
    m = merge_proposed_rule(base, rule("allow_api_github_com_443", proposed, 443))
    assert (m.key, m.how) == ("allow_api_github_com_443_2", "renamed")
    assert m.policy.network_policies["allow_api_github_com_443"] == base.network_policies["allow_api_github_com_443"]
    assert grants(m.policy, hosts, ("/usr/bin/gh", CURL)) == {(existing, "/usr/bin/gh"), (proposed, CURL)}
    # The first free suffix: a third colliding host goes to _3.
    third = next(h for h in hosts if h not in (existing, proposed))
    m3 = merge_proposed_rule(m.policy, rule("allow_api_github_com_443", third, 443, binaries=("/usr/bin/wget",)))
    assert (m3.key, m3.how) == ("allow_api_github_com_443_3", "renamed")
    assert grants(m3.policy, hosts, ("/usr/bin/gh", CURL, "/usr/bin/wget")) == {
        (existing, "/usr/bin/gh"), (proposed, CURL), (third, "/usr/bin/wget")}


def test_a_binary_never_joins_a_rule_with_several_endpoints():
    base = load(T0)  # claude_code: api.anthropic.com and statsig.anthropic.com, claude and node
    hosts = ("api.anthropic.com", "statsig.anthropic.com", "console.anthropic.com")
    m = merge_proposed_rule(base, rule("claude_code", "API.anthropic.com", 443, binaries=("/usr/bin/python3",)))
    assert (m.key, m.how) == ("claude_code_2", "renamed")
    assert m.policy.network_policies["claude_code"] == base.network_policies["claude_code"]
    assert grants(m.policy, hosts, ("/usr/bin/python3",)) == {("api.anthropic.com", "/usr/bin/python3")}
    # A new endpoint under an existing key is not appended to that rule (claude and node would gain it).
    m = merge_proposed_rule(base, rule("claude_code", "console.anthropic.com", 443))
    assert m.key == "claude_code_2"
    assert grants(m.policy, hosts, ("/usr/local/bin/claude", "/usr/bin/node", CURL)) == (
        grants(base, hosts, ("/usr/local/bin/claude", "/usr/bin/node")) | {("console.anthropic.com", CURL)})


def test_an_identical_single_endpoint_rule_just_gains_the_binaries():
    base = load(GH)
    m = merge_proposed_rule(base, rule("allow_api_github_com_443", "API.github.com.", 443,
                                       binaries=(CURL, "/usr/bin/gh")))
    assert (m.key, m.how) == ("allow_api_github_com_443", "merged")
    assert list(m.policy.network_policies) == ["allow_api_github_com_443"]
    assert [b.path for b in m.policy.network_policies["allow_api_github_com_443"].binaries] == [
        "/usr/bin/gh", CURL]
    # Under another key too: a user's rule with exactly this endpoint gains the binary.
    named = load(GH.replace("allow_api_github_com_443", "github"))
    m = merge_proposed_rule(named, rule("allow_api_github_com_443", "api.github.com", 443))
    assert (m.key, m.how, list(m.policy.network_policies)) == ("github", "merged", ["github"])
    # Same host and port but other settings (L7 here) is not identical: a new rule.
    rest = load(GH.replace("port: 443 }", "port: 443, protocol: rest, access: read-only }"))
    m = merge_proposed_rule(rest, rule("allow_api_github_com_443", "api.github.com", 443))
    assert m.key == "allow_api_github_com_443_2"
    assert m.policy.network_policies["allow_api_github_com_443"] == rest.network_policies["allow_api_github_com_443"]
    assert not compile_policy(m.policy).decide("api.github.com", 443, CURL).l7_rules  # curl: L4 as proposed


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


def test_l7_proposals_become_their_own_rule_and_never_narrow_l4():
    base = load(network(
        "  api:\n    endpoints: [{ host: api.example.com, port: 443, protocol: rest, enforcement: "
        "enforce, access: read-only }]\n    binaries: [{ path: /usr/bin/curl }, { path: /usr/bin/gh }]\n"
        "  l4:\n    endpoints: [{ host: l4.example.com, port: 443 }]\n"
        "    binaries: [{ path: /usr/bin/curl }]\n"))
    post = (L7Allow(method="POST", path="/v1/items"),)
    p = merge_rule(base, rule("allow_api_example_com_443", "api.example.com", 443,
                              protocol=Protocol.REST, enforcement=Enforcement.ENFORCE, rules=post))
    assert p.network_policies["api"] == base.network_policies["api"]
    d = compile_policy(p).decide("api.example.com", 443, CURL)  # L7 rules: union over matching rules
    assert d.check_request("POST", "/v1/items").allowed and d.check_request("GET", "/x").allowed
    assert not d.check_request("DELETE", "/x").allowed
    gh = compile_policy(p).decide("api.example.com", 443, "/usr/bin/gh")
    assert not gh.check_request("POST", "/v1/items").allowed  # gh was not in the proposal
    p = merge_rule(base, rule("allow_l4", "l4.example.com", 443, protocol=Protocol.REST,
                              enforcement=Enforcement.ENFORCE, rules=post))
    assert p.network_policies["l4"].endpoints[0].protocol is None
    assert compile_policy(p).decide("l4.example.com", 443, CURL).check_request("DELETE",
                                                                               "/x").allowed
    m = merge_proposed_rule(base, rule("allow_l4", "l4.example.com", 443, protocol=Protocol.REST, rules=post))
    assert (m.key, m.how, m.policy) == ("l4", "covered", base)  # curl already has more


def test_merged_policy_is_validated_and_normalised():
    p = merge_rule(load("version: 1\n"), rule("x", "API.Example.COM", 443,
                                             protocol=Protocol.REST, access=Access.FULL,
                                             enforcement=Enforcement.ENFORCE))
    ep = p.network_policies["x"].endpoints[0]
    assert ep.host == "api.example.com" and ep.rules == (L7Allow(method="*", path="**"),)
    assert ep.enforcement is Enforcement.ENFORCE
    with pytest.raises(PolicyError, match="TLD wildcard"):
        merge_rule(load("version: 1\n"), rule("bad", "*.com", 443))
