"""Canonical form and hash: independent of map order and spelling, sensitive to behaviour."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from stockade.policy import canonical_json, dump_policy, policy_sha256
from stockade.policy.default import default_policy

from .policies import ANNOTATED, T0, load, network

RULES = {
    "b": "  b:\n    endpoints: [{ host: b.example.com, port: 443 }]\n"
         "    binaries: [{ path: /usr/bin/curl }, { path: /usr/bin/git }]\n",
    "a": "  a:\n    endpoints: [{ host: a.example.com, ports: [443, 80], protocol: rest, "
         "enforcement: enforce, rules: [{ allow: { method: GET, path: /x, query: "
         "{ p: x, q: { any: [1, 2] } } } }] }]\n    binaries: [{ path: /usr/bin/curl }]\n",
    "c": "  c:\n    endpoints: [{ host: db.example.com, port: 5432, allowed_ips: [10.0.0.0/24, "
         "10.1.0.0/24] }]\n    binaries: [{ path: /usr/bin/psql }]\n",
}


@settings(max_examples=30, deadline=None)
@given(st.permutations(list(RULES)))
def test_hash_is_independent_of_rule_order(order):
    reference = policy_sha256(load(network("".join(RULES[k] for k in sorted(RULES)))))
    assert policy_sha256(load(network("".join(RULES[k] for k in order)))) == reference


def test_hash_is_independent_of_spelling():
    def h(text):
        return policy_sha256(load(text))
    one = "  r:\n    endpoints: [{ host: a.example.com, %s }]\n    binaries: [{ path: /x }]\n"
    assert h(network(one % "port: 443")) == h(network(one % "ports: [443]"))
    assert h(network(one % "ports: [80, 443]")) == h(network(one % "ports: [443, 80]"))
    assert h(network(one % "port: 443")) == h(network(one % "port: 443, tls: terminate"))
    assert h(network(one % "port: 443")) == h(network(one.replace("a.example", "A.Example")
                                                      % "port: 443"))
    preset = "port: 443, protocol: rest, enforcement: enforce, access: read-only"
    rules = ("port: 443, protocol: rest, enforcement: enforce, rules: [{allow: {method: OPTIONS, "
             "path: '**'}}, {allow: {method: get, path: '**'}}, {allow: {method: HEAD, path: '**'}}]")
    assert h(network(one % preset)) == h(network(one % rules))
    audit = "port: 443, protocol: rest, access: full"
    assert h(network(one % audit)) == h(network(one % (audit + ", enforcement: audit")))
    query_ab = ("port: 443, protocol: rest, enforcement: enforce, rules: [{allow: {method: GET, "
                "path: /x, query: {a: x, b: {any: [y, z]}}}}]")
    query_ba = query_ab.replace("a: x, b: {any: [y, z]}", "b: {any: [z, y]}, a: {glob: x}")
    assert h(network(one % query_ab)) == h(network(one % query_ba))
    named = network(one % "port: 443").replace("  r:\n", "  r:\n    name: r\n")
    assert h(named) == h(network(one % "port: 443"))
    fs = "version: 1\nfilesystem_policy: {read_only: [/usr, /etc], read_write: [/tmp]}\n"
    assert h(fs) == h(fs.replace("[/usr, /etc]", "[/etc, /usr/]"))


def test_hash_changes_with_behaviour():
    base = network(RULES["a"])
    changed = [base.replace("enforcement: enforce", "enforcement: audit"), base.replace("/x", "/y"),
               base.replace("443, 80", "443"), base.replace("/usr/bin/curl", "/usr/bin/wget"),
               base + "  z:\n    endpoints: []\n    binaries: []\n",
               base.replace("{ any: [1, 2] }", "{ any: [1, 3] }")]
    hashes = {policy_sha256(load(t)) for t in [base, *changed]}
    assert len(hashes) == len(changed) + 1


def test_endpoint_order_matters_because_the_first_extended_config_wins():
    two = ("  r:\n    endpoints: [{ host: a.example.com, port: 443, allowed_ips: [10.0.0.1] }, "
           "{ host: a.example.com, port: 443, protocol: rest, enforcement: enforce, access: full }]\n"
           "    binaries: [{ path: /x }]\n")
    swapped = ("  r:\n    endpoints: [{ host: a.example.com, port: 443, protocol: rest, enforcement: "
               "enforce, access: full }, { host: a.example.com, port: 443, allowed_ips: "
               "[10.0.0.1] }]\n    binaries: [{ path: /x }]\n")
    assert policy_sha256(load(network(two))) != policy_sha256(load(network(swapped)))


def test_canonical_json_is_compact_sorted_json():
    text = canonical_json(load(T0))
    data = json.loads(text)
    assert list(data) == sorted(data) and " " not in text.replace("claude_code", "")[:50]
    assert data["network_policies"]["claude_code"]["endpoints"][0]["ports"] == [443]
    assert len(policy_sha256(load(T0))) == 64


def test_dump_round_trips():
    for p in (load(T0), load(ANNOTATED), default_policy(), load(network("".join(RULES.values())))):
        text = dump_policy(p)
        assert load(text) == p
        assert policy_sha256(load(text)) == policy_sha256(p)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(
    st.sampled_from(["api.example.com", "*.example.org", "**.corp.example.net", "10.0.0.7", ""]),
    st.lists(st.integers(1, 65535), min_size=1, max_size=3, unique=True),
    st.sampled_from(["", "protocol: rest, enforcement: enforce, access: read-only",
                     "protocol: rest, rules: [{allow: {method: PUT, path: '/a/{b,c}/**', "
                     "query: {k: 'v-*'}}}]", "tls: skip"]),
    st.lists(st.sampled_from(["/usr/bin/curl", "/opt/*/bin/tool", "/usr/bin/git"]), max_size=2,
             unique=True),
), max_size=4))
def test_generated_policies_round_trip(rules):
    body = ""
    for i, (host, ports, extra, binaries) in enumerate(rules):
        host_part = f"host: '{host}', " if host else "allowed_ips: [10.9.0.0/16], "
        extra_part = f", {extra}" if extra else ""
        body += (f"  rule{i}:\n    endpoints: [{{ {host_part}ports: {ports}{extra_part} }}]\n"
                 f"    binaries: [{', '.join('{ path: ' + repr(b) + ' }' for b in binaries)}]\n")
    p = load(network(body) if body else "version: 1\n")
    assert load(dump_policy(p)) == p


def test_the_hash_is_hashlibs_sha256_and_does_not_load_openssl():
    """policy_sha256 uses the interpreter's own SHA-256 (hashlib loads libcrypto, ~4 ms at
    every `stockade run`): the same digest, pinned against hashlib here."""
    import hashlib
    import subprocess
    import sys

    from stockade.policy import canonical
    from stockade.policy.default import default_policy

    policy = default_policy()
    expected = hashlib.sha256(canonical.CANONICAL_TAG + canonical_json(policy).encode("utf-8")).hexdigest()
    assert policy_sha256(policy) == expected
    out = subprocess.run([sys.executable, "-c", "import sys\nfrom stockade.policy.canonical import policy_sha256\n"
                          "from stockade.policy.default import default_policy\npolicy_sha256(default_policy())\n"
                          "print('_hashlib' in sys.modules)"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
