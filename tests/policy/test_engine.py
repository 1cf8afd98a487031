"""L4 decisions (policy.md §7 cases 27-46) and the Decision contract."""

from __future__ import annotations

import ipaddress

import pytest

from stockade.policy import compile_policy, load_policy_text
from stockade.policy.engine import BINARY_NOT_ALLOWED, NO_ENDPOINT, NO_POLICIES, _compile_l7
from stockade.policy.glob import path_glob
from stockade.policy.hosts import normalize_host
from stockade.policy.model import Enforcement, Protocol

from .policies import CURL, T0, engine, network

NODE, GIT, PY = "/usr/bin/node", "/usr/bin/git", "/usr/bin/python3"


@pytest.fixture(scope="module")
def t0():
    return engine(T0)


def one_rule(endpoints: str, binaries: str = "[{ path: /usr/bin/curl }]", key: str = "r") -> str:
    return network(f"  {key}:\n    endpoints: {endpoints}\n    binaries: {binaries}\n")


def test_listed_exe_is_allowed(t0):  # case 27
    d = t0.decide("api.anthropic.com", 443, NODE)
    assert d.allowed and d.rule == "claude_code" and d.reason_code is None
    assert d.endpoint.host == "api.anthropic.com" and d.hint is None


def test_unlisted_exe_is_denied(t0):  # case 28
    d = t0.decide("api.anthropic.com", 443, PY)
    assert not d.allowed and d.reason_code == BINARY_NOT_ALLOWED
    assert "not listed" in d.reason and "claude_code" in d.reason and PY in d.reason
    assert not t0.decide("api.anthropic.com", 443, "/tmp/malicious").allowed


def test_unknown_endpoint(t0):  # case 29
    d = t0.decide("evil.example.com", 443, NODE)
    assert not d.allowed and d.reason_code == NO_ENDPOINT and "endpoint" in d.reason
    assert "evil.example.com:443" in d.reason


def test_matched_rule_is_the_key_not_the_name(t0):  # case 30
    d = t0.decide("github.com", 443, GIT)
    assert d.allowed and d.rule == "github_ssh_over_https"


def test_host_is_case_insensitive_and_port_must_match(t0):  # case 31
    assert t0.decide("API.ANTHROPIC.COM", 443, NODE).allowed
    assert t0.decide("api.anthropic.com.", 443, NODE).allowed  # one trailing dot is ignored
    assert not t0.decide("api.anthropic.com..", 443, NODE).allowed
    d = t0.decide("api.anthropic.com", 80, NODE)
    assert not d.allowed and d.reason_code == NO_ENDPOINT
    assert "allows api.anthropic.com on port 443, not 80" in d.reason


def test_ancestors_grant(t0):  # case 32
    assert t0.decide("github.com", 443, PY, [GIT]).allowed
    d = t0.decide("github.com", 443, PY, ["/usr/bin/bash"])
    assert not d.allowed and "not listed" in d.reason and "/usr/bin/bash" in d.reason
    assert t0.decide("github.com", 443, PY, ["/usr/bin/sh", GIT]).allowed


def test_binary_glob_is_one_segment():  # case 33
    e = engine(one_rule("[{ host: example.com, port: 443 }]", '[{ path: "/usr/bin/*" }]',
                        "glob_test"))
    assert e.decide("example.com", 443, NODE).allowed
    assert not e.decide("example.com", 443, "/usr/bin/subdir/node").allowed


def test_binary_glob_matches_ancestors_only_not_argv():  # cases 34, 35
    e = engine(one_rule("[{ host: example.com, port: 443 }]", '[{ path: "/usr/local/bin/*" }]'))
    assert e.decide("example.com", 443, NODE, ["/usr/local/bin/claude"]).allowed
    assert not e.decide("example.com", 443, NODE).allowed  # argv is never an input
    e = engine(one_rule("[{ host: example.com, port: 443 }]", "[{ path: /usr/local/bin/my-tool }]"))
    assert not e.decide("example.com", 443, NODE, ["/usr/bin/bash"]).allowed


def test_globstar_binaries(t0):
    assert t0.decide("api.github.com", 443,
                     "/usr/lib/node_modules/@github/copilot/dist/bin/copilot").allowed
    assert t0.decide("api.github.com", 443, "/home/alice/.local/bin/copilot").allowed
    assert not t0.decide("api.github.com", 443, "/home/a/b/.local/bin/copilot").allowed


def test_multiple_ports():  # case 36
    e = engine(one_rule("[{ host: api.example.com, ports: [443, 8443] }]"))
    assert e.decide("api.example.com", 443, CURL).allowed
    assert e.decide("api.example.com", 8443, CURL).allowed
    assert not e.decide("api.example.com", 80, CURL).allowed


def test_wildcard_hosts():  # case 37
    e = engine(one_rule('[{ host: "*.example.com", port: 443 }]'))
    assert e.decide("api.example.com", 443, CURL).allowed
    d = e.decide("deep.sub.example.com", 443, CURL)
    assert not d.allowed and "'**.example.com' would match" in d.reason
    assert not e.decide("example.com", 443, CURL).allowed
    assert not e.decide("api.example.com", 80, CURL).allowed
    assert engine(one_rule('[{ host: "*.EXAMPLE.COM", port: 443 }]')).decide(
        "api.example.com", 443, CURL).allowed
    assert engine(one_rule('[{ host: "*.example.com", ports: [443, 8443] }]')).decide(
        "api.example.com", 8443, CURL).allowed
    deep = engine(one_rule('[{ host: "**.example.com", port: 443 }]'))
    assert deep.decide("a.b.example.com", 443, CURL).allowed
    assert not deep.decide("example.com", 443, CURL).allowed
    partial = engine(one_rule('[{ host: "*-ai.example.com", port: 443 }]'))
    assert partial.decide("us-ai.example.com", 443, CURL).allowed
    assert not partial.decide("x.us-ai.example.com", 443, CURL).allowed


def test_hostless_endpoints_with_allowed_ips():  # case 38
    e = engine(one_rule('[{ port: 9443, allowed_ips: ["172.16.0.0/12", "192.168.1.1"] }]',
                        key="private_network"))
    d = e.decide("anything.example.com", 9443, CURL)
    assert d.allowed and [str(n) for n in d.endpoint.allowed_ips] == ["172.16.0.0/12",
                                                                      "192.168.1.1/32"]
    assert not e.decide("anything.example.com", 12345, CURL).allowed
    e = engine(one_rule('[{ ports: [80, 443], allowed_ips: ["10.0.0.0/8"] }]'))
    assert e.decide("x", 80, CURL).allowed and e.decide("x", 443, CURL).allowed
    assert not e.decide("x", 8080, CURL).allowed


def test_allowed_ips_come_with_the_endpoint():  # case 39
    e = engine(network("  internal_api:\n    endpoints: [{ host: my-service.corp.net, port: 8080, "
                       'allowed_ips: ["10.0.5.0/24"] }]\n    binaries: [{ path: /usr/bin/curl }]\n'
                       "  public_api:\n    endpoints: [{ host: api.github.com, port: 443 }]\n"
                       "    binaries: [{ path: /usr/bin/curl }]\n"))
    d = e.decide("my-service.corp.net", 8080, CURL)
    assert d.rule == "internal_api" and d.endpoint.allowed_ips == (
        ipaddress.ip_network("10.0.5.0/24"),)
    assert e.decide("api.github.com", 443, CURL).endpoint.allowed_ips == ()


def test_empty_network_policies():  # case 40
    d = engine("version: 1\nnetwork_policies: {}\n").decide("api.example.com", 443, CURL)
    assert not d.allowed and d.reason_code == NO_POLICIES
    assert d.reason.startswith("network connections not allowed by policy")
    assert "allow_api_example_com_443" in d.hint


def test_rule_without_binaries_never_matches():  # case 41
    e = engine(one_rule("[{ host: api.example.com, port: 443 }]", "[]"))
    for binary in (CURL, None):
        d = e.decide("api.example.com", 443, binary)
        assert not d.allowed and d.reason_code == BINARY_NOT_ALLOWED
        assert "lists no binaries" in d.reason


def test_smallest_key_wins():  # case 42
    e = engine(network("  zeta:\n    endpoints: [{ host: api.example.com, port: 443 }]\n"
                       "    binaries: [{ path: /usr/bin/curl }]\n"
                       "  alpha:\n    endpoints: [{ host: api.example.com, port: 443 }]\n"
                       "    binaries: [{ path: /usr/bin/curl }]\n"))
    d = e.decide("api.example.com", 443, CURL)
    assert d.rule == "alpha" and d.matched_rules == ("alpha", "zeta")


def test_versioned_interpreters():  # case 43
    e = engine(one_rule("[{ host: pypi.org, port: 443 }]",
                        "[{ path: /usr/bin/python3 }, { path: /usr/bin/python3.11 }]",
                        "python_policy"))
    assert e.decide("pypi.org", 443, "/usr/bin/python3.11").rule == "python_policy"
    assert e.decide("pypi.org", 443, PY).allowed
    assert not e.decide("pypi.org", 443, CURL).allowed
    assert e.decide("pypi.org", 443, CURL, ["/usr/bin/python3.11"]).allowed


def test_symlink_hint(t0):  # case 44
    d = t0.decide("api.anthropic.com", 443, "/usr/bin/python3.11")
    assert "SYMLINK HINT" in d.reason and "readlink -f" in d.reason
    e = engine(one_rule("[{ host: pypi.org, port: 443 }]", "[{ path: /usr/bin/python3 }]"))
    d = e.decide("pypi.org", 443, "/usr/bin/python3.12")
    assert "lists '/usr/bin/python3', which may be a symlink" in d.reason
    assert "/usr/bin/python3.12" in d.reason


def test_reload_is_a_new_engine(t0):  # case 45
    assert t0.decide("api.anthropic.com", 443, NODE).allowed
    empty = engine(T0.split("network_policies:")[0] + "network_policies: {}\n")
    assert not empty.decide("api.anthropic.com", 443, NODE).allowed
    added = engine(T0 + "  python_api:\n    endpoints: [{ host: pypi.org, port: 443 }]\n"
                   "    binaries: [{ path: /usr/bin/python3 }]\n")
    assert added.decide("pypi.org", 443, PY).allowed
    assert added.decide("api.anthropic.com", 443, NODE).allowed
    assert t0.decide("api.anthropic.com", 443, NODE).allowed  # the old engine is untouched


def test_overlapping_l7_rules():  # case 46
    e = engine(network(
        "  test_server:\n    endpoints: [{ host: 192.168.1.100, port: 8567, protocol: rest, "
        "enforcement: enforce, rules: [{ allow: { method: GET, path: '**' } }] }]\n"
        "    binaries: [{ path: /usr/bin/curl }]\n"
        "  allow_192_168_1_100_8567:\n    endpoints: [{ host: 192.168.1.100, port: 8567, "
        "protocol: rest, enforcement: enforce, allowed_ips: [192.168.1.100], "
        "rules: [{ allow: { method: GET, path: '**' } }] }]\n"
        "    binaries: [{ path: /usr/bin/curl }]\n"))
    d = e.decide("192.168.1.100", 8567, CURL)
    assert d.allowed and d.endpoint is not None
    assert d.endpoint_rule == "allow_192_168_1_100_8567"  # the first endpoint with extended config
    assert d.check_request("GET", "/test").allowed
    assert not d.check_request("DELETE", "/test").allowed


def test_endpoint_config_prefers_extended_config_in_key_order():
    e = engine(network(
        "  zeta:\n    endpoints: [{ host: api.example.com, port: 443, protocol: rest, enforcement: "
        "audit, access: full }]\n    binaries: [{ path: /usr/bin/curl }]\n"
        "  alpha:\n    endpoints: [{ host: api.example.com, port: 443 }, { host: api.example.com, "
        "port: 443, protocol: rest, enforcement: enforce, access: read-only }]\n"
        "    binaries: [{ path: /usr/bin/curl }]\n"))
    d = e.decide("api.example.com", 443, CURL)
    assert d.rule == "alpha" and d.endpoint_rule == "alpha" and d.endpoint_index == 1
    assert d.endpoint.enforcement is Enforcement.ENFORCE and d.endpoint.protocol is Protocol.REST
    assert len(d.l7_rules) == 4  # read-only (3) from alpha + full (1) from zeta


def test_binary_none_means_identity_unavailable(t0):
    d = t0.decide("api.anthropic.com", 443, None)
    assert d.allowed and "identity unavailable" in d.reason
    assert not t0.decide("evil.example.com", 443, None).allowed


def test_ipv6_literals():
    e = engine(one_rule('[{ host: "2001:db8::1", port: 443 }]'))
    assert e.decide("[2001:DB8:0::1]", 443, CURL).allowed


def test_hints_are_the_smallest_change(t0):
    d = t0.decide("api.anthropic.com", 443, PY)
    assert d.hint == ("add the binary to rule 'claude_code':\nnetwork_policies:\n  claude_code:\n"
                      "    binaries:\n      - { path: /usr/bin/python3 }")
    d = t0.decide("api.anthropic.com", 8443, NODE)
    assert "replace its port with `ports: [443, 8443]`" in d.hint
    assert "network_policies.claude_code.endpoints[0]" in d.hint
    d = t0.decide("evil.example.com", 443, NODE)
    assert "add the endpoint to rule 'claude_code'" in d.hint
    assert "- { host: evil.example.com, port: 443 }" in d.hint
    d = t0.decide("pypi.org", 443, PY)
    assert d.hint.startswith("add a rule:\nnetwork_policies:\n  allow_pypi_org_443:")
    d = t0.decide("10.1.2.3", 8080, PY)
    assert "allowed_ips: [10.1.2.3]" in d.hint
    assert "always blocked" in t0.decide("127.0.0.1", 80, PY).hint


@pytest.mark.parametrize("host,port,binary", [
    ("pypi.org", 443, PY), ("10.1.2.3", 8080, CURL), ("2001:db8::5", 443, CURL),
    ("api.example.com", 443, None),
])
def test_a_new_rule_hint_is_valid_yaml_that_allows_the_request(host, port, binary):
    d = engine("version: 1\n").decide(host, port, binary)
    snippet = d.hint.split("\n", 1)[1]
    fixed = load_policy_text("version: 1\n" + snippet)
    after = compile_policy(fixed).decide(host, port, binary or "/usr/bin/YOUR-CLIENT")
    assert after.allowed, d.hint


def test_many_rules_index():
    rules = "".join(f"  r{i:04d}:\n    endpoints: [{{ host: h{i}.example.com, ports: [443, 8443] }}, "
                    f"{{ host: '*.w{i}.example.org', port: 443 }}]\n"
                    f"    binaries: [{{ path: /usr/bin/c{i} }}, {{ path: '/opt/t{i}/*' }}]\n"
                    for i in range(300))
    e = compile_policy(load_policy_text(network(rules)))
    assert e.decide("h123.example.com", 8443, "/usr/bin/c123").rule == "r0123"
    assert e.decide("x.w7.example.org", 443, "/opt/t7/tool").rule == "r0007"
    assert not e.decide("x.w7.example.org", 443, "/opt/t8/tool").allowed
    assert not e.decide("h1.example.com", 80, "/usr/bin/c1").allowed


def test_config_order_spans_exact_wildcard_and_hostless_indexes():
    e = engine(network(
        "  b_exact:\n    endpoints: [{ host: api.example.com, port: 443, protocol: rest, "
        "enforcement: enforce, access: read-only }]\n    binaries: [{ path: /usr/bin/curl }]\n"
        "  a_wild:\n    endpoints: [{ host: '*.example.com', port: 443, allowed_ips: [10.1.0.0/24] }]\n"
        "    binaries: [{ path: /usr/bin/curl }]\n"
        "  c_any:\n    endpoints: [{ port: 443, allowed_ips: [10.2.0.0/24] }]\n"
        "    binaries: [{ path: /usr/bin/curl }]\n"))
    d = e.decide("api.example.com", 443, CURL)
    assert d.matched_rules == ("a_wild", "b_exact", "c_any")
    assert d.endpoint_rule == "a_wild" and not d.l7_enabled  # first extended config by key
    assert len(d.l7_rules) == 3  # b_exact's read-only rules still take part in the union
    d = e.decide("other.example.org", 443, CURL)
    assert d.rule == "c_any"


def test_decisions_are_memoised_and_bounded():
    p = load_policy_text(T0)
    e = compile_policy(p, cache_size=2)
    first = e.decide("api.anthropic.com", 443, NODE)
    assert e.decide("api.anthropic.com", 443, NODE) is first
    assert e.decide("api.anthropic.com", 443, NODE, []) is first  # any sequence of ancestors
    e.decide("github.com", 443, GIT)
    e.decide("gitlab.com", 443, "/usr/bin/glab")
    assert len(e._cache) <= 2
    uncached = compile_policy(p, cache_size=0)
    assert uncached.decide("github.com", 443, GIT) is not uncached.decide("github.com", 443, GIT)


def test_engine_decisions_are_ordinary_frozen_decisions(t0):
    from stockade.policy.engine import Decision
    d = t0.decide("api.anthropic.com", 443, NODE, ("/bin/sh",))
    assert type(d) is Decision and not hasattr(d, "__dict__")
    assert d == Decision(True, None, "api.anthropic.com", 443, NODE, ("/bin/sh",), d.match, t0)
    with pytest.raises(AttributeError):
        d.allowed = False  # type: ignore[misc]
    assert "Engine(" in repr(d) and "rules)" in repr(d)  # the engine's repr is short


GLOB_POLICY = """
version: 1
network_policies:
  tools:
    endpoints: [{ host: api.example.com, port: 443 }]
    binaries: [{ path: "/opt/*/bin/**" }, { path: "/home/*/.local/bin/agent" }, { path: /usr/bin/curl }]
"""


def test_the_binary_memo_answers_exactly_as_the_globs_do():
    """Each rule remembers which paths its globs match: the same decisions with and without the
    memo, for first and repeated paths, as binary or ancestor, across the memo's clearing."""
    from stockade.policy import engine as engine_module

    policy = load_policy_text(GLOB_POLICY)
    memo = compile_policy(policy, cache_size=0)
    plain = compile_policy(policy, cache_size=0, binary_memo=False)
    paths = ["/opt/app/bin/node", "/opt/app/lib/node", "/opt/x/bin/a/b", "/home/al/.local/bin/agent",
             "/home/al/.local/bin/agent2", "/usr/bin/curl", "/usr/bin/wget", "/opt/bin/x"]
    paths += [f"/opt/n{i}/bin/tool" for i in range(engine_module.GLOB_MEMO_SIZE + 5)]  # past the bound
    for _ in range(2):
        for path in paths:
            for binary, ancestors in ((path, ()), ("/usr/bin/wget", (path,)), ("/bin/sh", ("/x", path))):
                got = memo.decide("api.example.com", 443, binary, ancestors).allowed
                assert got == plain.decide("api.example.com", 443, binary, ancestors).allowed, (binary, ancestors)
    rule = memo.rules[0]
    assert rule.glob_memo is not None and len(rule.glob_memo) <= engine_module.GLOB_MEMO_SIZE
    assert memo.decide("api.example.com", 443, "/opt/app/bin/node").allowed
    assert not memo.decide("api.example.com", 443, "/opt/app/lib/node").allowed


def _reference(policy, host, port, binary, ancestors):
    """policy.md §3.3-§3.5 by brute force over every rule and endpoint, no index: (reason code,
    matched rules, (rule, index) of the applying endpoint, l7 rules shown as text)."""
    from stockade.policy.hosts import parse_host

    h = normalize_host(host)
    rules = [policy.network_policies[k] for k in sorted(policy.network_policies)]
    if not rules:
        return NO_POLICIES, (), None, ()

    def binary_ok(rule):
        if not rule.binaries:
            return False
        if binary is None:
            return True
        return any(p == b.path or ("*" in b.path and _glob_matches(b.path, p))
                   for b in rule.binaries for p in (binary, *ancestors))

    def _glob_matches(pattern, path):
        return bool(path_glob(pattern).match(path))

    hits = [(r, i, ep) for r in rules for i, ep in enumerate(r.endpoints)
            if port in ep.ports and (not ep.host or parse_host(ep.host).match(h))]
    if not hits:
        return NO_ENDPOINT, (), None, ()
    passed = [(r, i, ep) for r, i, ep in hits if binary_ok(r)]
    if not passed:
        return BINARY_NOT_ALLOWED, (), None, ()
    config = next((x for x in passed if x[2].has_extended_config), passed[0])
    l7 = tuple(a.shown for r, _, ep in passed for a in _compile_l7(r.key, ep))
    return None, tuple(dict.fromkeys(r.key for r, _, _ in passed)), (config[0].key, config[1]), l7


def test_indexed_decisions_equal_a_brute_force_reference():
    """Random policies mixing exact, wildcard and hostless endpoints on shared hosts and ports,
    and random lookups (listed and unlisted hosts, other case, trailing dot, deep wildcard
    matches, ancestors, globs, binary=None): the indexed engine answers as the reference does."""
    import random

    rng = random.Random(5)
    for round_ in range(16):
        lines, hosts = [], []
        for i, key in enumerate(rng.sample(range(100), rng.randrange(0, 14))):  # keys out of order
            eps = []
            for _ in range(rng.randrange(1, 4)):
                base = rng.choice((f"own{key}.example.net",  # overlaps within the rule
                                   f"d{rng.randrange(4)}.example.{rng.choice(('com', 'org'))}"))
                ports = rng.choice(([443], [80, 443], [8443]))
                kind = rng.random()
                if kind < 0.45:
                    host = f"{rng.choice(('api', 'cdn'))}.{base}"
                    eps.append(f"{{ host: {host}, ports: {ports} }}")
                    hosts.append(host)
                elif kind < 0.65:
                    eps.append(f"{{ host: '*.{base}', ports: {ports}, protocol: rest, enforcement: enforce, "
                               "access: read-only }")
                    hosts.append(f"x.{base}")
                elif kind < 0.75:
                    eps.append(f"{{ host: '*-ai.{base}', ports: {ports} }}")
                    hosts.append(f"us-ai.{base}")
                elif kind < 0.93:
                    eps.append(f"{{ host: '**.{base}', ports: {ports}, allowed_ips: [10.0.0.0/8] }}")
                    hosts.append(f"a.b.{base}")
                else:
                    eps.append(f"{{ ports: {ports}, allowed_ips: [10.{i}.0.0/16] }}")
            bins = rng.choice(("[{ path: /usr/bin/curl }]", "[{ path: '/opt/*/bin/*' }]", "[]",
                               "[{ path: /usr/bin/curl }, { path: /usr/bin/git }]"))
            lines.append(f"  r{key:02d}:\n    endpoints: [{', '.join(eps)}]\n"
                         f"    binaries: {bins}\n")
        policy = load_policy_text(network("".join(lines)) if lines else "version: 1\n")
        e = compile_policy(policy, cache_size=rng.choice((0, 64)))
        hosts += ["api.d0.example.com", "other.example.com", "10.1.2.3", "x.y.d1.example.org",
                  "ai.d2.example.com", "x-ai.d3.example.org", "example.com", "com", "[2001:DB8::1]"]
        for _ in range(250):
            host = rng.choice(hosts)
            host = rng.choice((host, host, host.upper(), host + ".", "." + host, host + "..",
                               "x." + host, "x.y." + host, host.replace(".", "..", 1), "a..b." + host))
            port = rng.choice((443, 80, 8443, 22))
            binary = rng.choice(("/usr/bin/curl", "/usr/bin/git", "/opt/x/bin/y", "/usr/bin/wget", None))
            ancestors = rng.choice(((), ("/usr/bin/curl",), ("/bin/sh", "/opt/a/bin/b")))
            d = e.decide(host, port, binary, ancestors)
            code, matched, where, l7 = _reference(policy, host, port, binary, ancestors)
            args = (round_, host, port, binary, ancestors)
            assert d.allowed == (code is None) and d.reason_code == code, args
            assert d.matched_rules == matched, args
            assert (d.endpoint_rule, d.endpoint_index) == (where or (None, None)), args
            assert tuple(a.shown for a in d.l7_rules) == l7, args
            assert d.host == normalize_host(host) and d.port == port and d.ancestors == ancestors, args
