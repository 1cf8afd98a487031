"""L7 REST decisions (policy.md §7 cases 47-59) on top of L4 decisions."""

from __future__ import annotations

import pytest

from stockade.policy.l7 import CONNECTION_DENIED, INVALID_REQUEST, NOT_PERMITTED, check_request
from stockade.policy.model import Enforcement, Protocol, Tls

from .policies import CURL, engine, network


def rest(key: str, host: str, port: str, body: str, binaries: str = "/usr/bin/curl") -> str:
    return (f"  {key}:\n    endpoints:\n      - {{ host: '{host}', {port}, protocol: rest, {body} }}\n"
            f"    binaries: [{{ path: {binaries} }}]\n")


REST_API = rest("rest_api", "api.example.com", "port: 8080", "enforcement: enforce, rules: ["
                "{ allow: { method: GET, path: '/repos/**' } }, "
                "{ allow: { method: POST, path: '/repos/*/issues' } }]")


@pytest.fixture(scope="module")
def rest_api():
    return engine(network(REST_API)).decide("api.example.com", 8080, CURL)


@pytest.mark.parametrize("method,target,allowed", [  # case 47
    ("GET", "/repos/myorg/foo", True), ("POST", "/repos/myorg/issues", True),
    ("DELETE", "/repos/myorg/foo", False), ("GET", "/admin/settings", False),
    ("get", "/repos/myorg/foo", True), ("GET", "/repos/org/repo", True),
])
def test_rest_rules(rest_api, method, target, allowed):
    r = rest_api.check_request(method, target)
    assert r.allowed is allowed and r.inspected and not r.audit
    assert r.action == ("allow" if allowed else "deny")


def test_presets():  # case 48
    d = engine(network(rest("readonly_api", "api.example.com", "port: 443",
                            "enforcement: enforce, access: read-only"))).decide(
        "api.example.com", 443, CURL)
    for m in ("GET", "HEAD", "OPTIONS"):
        assert d.check_request(m, "/anything").allowed
    for m in ("POST", "DELETE"):
        assert not d.check_request(m, "/anything").allowed
    d = engine(network(rest("full_api", "api.example.com", "port: 443",
                            "enforcement: audit, access: full"))).decide("api.example.com", 443, CURL)
    for m in ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"):
        r = d.check_request(m, "/x")
        assert r.allowed and not r.audit


QUERY_API = rest("query_api", "api.example.com", "port: 443", "enforcement: enforce, rules: ["
                 "{ allow: { method: GET, path: /download, query: { tag: 'foo-*' } } }, "
                 "{ allow: { method: GET, path: /search, query: { tag: { any: [foo-*, bar-*] } } } }, "
                 "{ allow: { method: GET, path: /v, query: { v: { any: ['1.*', '2.*'] } } } }, "
                 "{ allow: { method: GET, path: /skill, query: { s: 'skill-*' } } }]")


@pytest.mark.parametrize("target,allowed", [  # cases 49, 50
    ("/download?tag=foo-a&tag=foo-b&extra=ignored", True), ("/download?tag=foo-a&tag=evil", False),
    ("/download", False), ("/search?tag=foo-a&tag=bar-b", True), ("/v?v=1.2", True),
    ("/v?v=1.2.3", False), ("/skill?s=", False), ("/skill?s=skill-x%2Fy", True),
    ("/download?tag=foo%2Da", True),
])
def test_query_matchers(target, allowed):
    d = engine(network(QUERY_API)).decide("api.example.com", 443, CURL)
    assert d.check_request("GET", target).allowed is allowed


def test_l4_only_endpoint_has_no_l7():  # case 51
    e = engine(network("  l4:\n    endpoints: [{ host: l4only.example.com, port: 443 }]\n"
                       "    binaries: [{ path: /usr/bin/curl }]\n" + REST_API))
    d = e.decide("l4only.example.com", 443, CURL)
    assert not d.l7_enabled and d.endpoint.protocol is None
    r = d.check_request("DELETE", "/anything")
    assert r.allowed and not r.inspected
    d = e.decide("api.example.com", 8080, CURL)
    assert d.endpoint.protocol is Protocol.REST and d.endpoint.enforcement is Enforcement.ENFORCE


def test_l7_needs_the_binary_first():  # case 52
    d = engine(network(REST_API)).decide("api.example.com", 8080, "/usr/bin/python3")
    r = d.check_request("GET", "/repos/myorg/foo")
    assert not r.allowed and r.reason_code == CONNECTION_DENIED


def test_deny_reason_text(rest_api):  # case 53
    r = rest_api.check_request("DELETE", "/repos/myorg/foo")
    assert r.reason == "DELETE /repos/myorg/foo not permitted by policy"
    assert r.reason_code == NOT_PERMITTED and r.rule == "rest_api"
    assert r.hint == ("add an allow rule to network_policies.rest_api.endpoints[0].rules:\n"
                      "  - allow: { method: DELETE, path: /repos/myorg/foo }")


def test_l7_config_parsing():  # case 54
    def ep(body):
        return engine(network(rest("r", "a.example.com", "port: 443", body))).decide(
            "a.example.com", 443, CURL).endpoint
    e = ep("tls: terminate, enforcement: enforce, access: full")
    assert (e.protocol, e.tls, e.enforcement) == (Protocol.REST, Tls.AUTO, Enforcement.ENFORCE)
    e = ep("access: full")
    assert (e.tls, e.enforcement) == (Tls.AUTO, Enforcement.AUDIT)
    assert ep("tls: skip, access: full, enforcement: audit").tls is Tls.SKIP


def test_wildcard_and_multi_port_l7():  # case 55
    d = engine(network(rest("w", "*.example.com", "port: 8080", "enforcement: enforce, rules: "
                            "[{ allow: { method: GET, path: '/api/**' } }]"))).decide(
        "api.example.com", 8080, CURL)
    assert d.check_request("GET", "/api/foo").allowed
    assert not d.check_request("DELETE", "/api/foo").allowed
    e = engine(network(rest("m", "api.example.com", "ports: [8080, 9090]", "enforcement: enforce, "
                            "rules: [{ allow: { method: GET, path: '**' } }]")))
    for port in (8080, 9090):
        assert e.decide("api.example.com", port, CURL).check_request("GET", "/x").allowed


def test_an_l7_rule_narrows_an_l4_grant():  # case 56
    e = engine(network("  zeta:\n    endpoints: [{ host: api.example.com, port: 443 }]\n"
                       "    binaries: [{ path: /usr/bin/curl }]\n"
                       + rest("alpha", "api.example.com", "port: 443", "enforcement: enforce, "
                              "rules: [{ allow: { method: GET, path: '/v1/**' } }]")))
    d = e.decide("api.example.com", 443, CURL)
    assert d.endpoint_rule == "alpha"
    assert not d.check_request("POST", "/v1/x").allowed
    assert d.check_request("GET", "/v1/x").allowed


def test_union_of_l7_rules_with_enforcement_from_the_first_key():  # case 57
    e = engine(network(rest("a", "api.example.com", "port: 443", "enforcement: enforce, rules: "
                            "[{ allow: { method: GET, path: '**' } }]")
                       + rest("b", "api.example.com", "port: 443", "enforcement: audit, rules: "
                              "[{ allow: { method: POST, path: /items } }]")))
    d = e.decide("api.example.com", 443, CURL)
    assert d.check_request("POST", "/items").allowed
    assert d.endpoint.enforcement is Enforcement.ENFORCE
    r = d.check_request("DELETE", "/items")
    assert not r.allowed and not r.audit


def test_canonicalisation_closes_the_dot_dot_gap():  # case 58, fixed as at HEAD
    d = engine(network(rest("p", "api.example.com", "port: 443", "enforcement: enforce, rules: "
                            "[{ allow: { method: GET, path: '/public/**' } }]"))).decide(
        "api.example.com", 443, CURL)
    assert d.check_request("GET", "/public/x").allowed
    for target in ("/public/../secret", "/public/%2e%2e/secret", "/public/./../secret",
                   "/public//..//secret"):
        r = d.check_request("GET", target)
        assert not r.allowed and r.target == "/secret" and r.reason_code == NOT_PERMITTED
    r = d.check_request("GET", "/public/..;/secret")
    assert not r.allowed and r.reason_code == INVALID_REQUEST
    r = d.check_request("GET", "/public/a%2Fb")
    assert not r.allowed and "encoded '/'" in r.reason
    assert d.check_request("HEAD", "/public/x").allowed  # HEAD wherever GET (OpenShell HEAD)
    assert d.check_request("GET", "/public/%41").target == "/public/A"


def test_audit_forwards_and_flags_violations():
    d = engine(network(rest("a", "api.example.com", "port: 443", "enforcement: audit, rules: "
                            "[{ allow: { method: GET, path: '/v1/**' } }]"))).decide(
        "api.example.com", 443, CURL)
    r = d.check_request("POST", "/v1/messages")
    assert r.allowed and r.audit and r.action == "audit" and r.reason_code == NOT_PERMITTED
    r = d.check_request("POST", "/v1/%2F")  # a malformed target is refused even under audit
    assert not r.allowed and r.reason_code == INVALID_REQUEST


def test_free_function_and_invalid_method(rest_api):
    assert check_request(rest_api, "GET", b"/repos/a/b").allowed
    r = check_request(rest_api, "GE T", "/repos/a")
    assert not r.allowed and r.reason_code == INVALID_REQUEST


def test_preset_hint_widens_the_preset():
    d = engine(network(rest("ro", "api.example.com", "port: 443", "enforcement: enforce, "
                            "access: read-only"))).decide("api.example.com", 443, CURL)
    assert "`access: read-write`" in d.check_request("POST", "/x").hint
    assert "`access: full`" in d.check_request("DELETE", "/x").hint
