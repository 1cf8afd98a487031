"""Credential placeholders: OpenShell §9 cases 93-98 adapted, binding, refusal, redaction,
and property tests (hypothesis) of the two promises: no placeholder survives a substitution,
and an unbound host never receives a secret."""

from __future__ import annotations

import base64
import re
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from stockade.network.credentials import (
    PLACEHOLDER_RE,
    PREFIX,
    CredentialError,
    SecretStore,
    placeholder_evidence,
    policy_hosts,
)

ENV = {
    "ANTHROPIC_API_KEY": "sk-test",
    "CUSTOM_TOKEN": "secret-token",
    "DB_PASSWORD": "s3cret!",
    "API_KEY": "abc123",
    "BOT_TOKEN": "123456:ABC-def",
    "GOOGLE_KEY": "AIzaSy-secret",
    "SPACED": "key with spaces&symbols=yes",
    "HELLO": "hello world",
}


def store(*specs: str, hosts: tuple[str, ...] = ("api.example.com",),
          env: dict[str, str] | None = None) -> SecretStore:
    s = SecretStore.from_specs(list(specs), ENV if env is None else env)
    s.bind_default_hosts(hosts)
    return s


def ph(s: SecretStore, key: str) -> str:
    return s.placeholder_env()[key]


def headers_of(sub, name: bytes) -> bytes:  # noqa: ANN001
    return next(v for n, v in sub.headers if n == name)


def refused(s: SecretStore, host: str, target: str, headers=()) -> CredentialError:  # noqa: ANN001
    with pytest.raises(CredentialError) as err:
        s.substitute(host, target, list(headers))
    return err.value


# --------------------------------------------------------------------------------------------
# Specs and placeholders


def test_placeholder_format() -> None:
    s = store("ANTHROPIC_API_KEY", "CUSTOM_TOKEN")
    env = s.placeholder_env()
    assert set(env) == {"ANTHROPIC_API_KEY", "CUSTOM_TOKEN"}
    for key, value in env.items():
        m = PLACEHOLDER_RE.fullmatch(value)
        assert m and m.group(1) == key and len(m.group(2)) == 32  # 128 random bits
        assert value.startswith(PREFIX)
        assert quote(value, safe="") == value  # unreserved characters only: never re-encoded
        assert value not in ENV.values()
    other = store("ANTHROPIC_API_KEY")
    assert ph(other, "ANTHROPIC_API_KEY") != env["ANTHROPIC_API_KEY"]  # fresh per sandbox


@pytest.mark.parametrize("spec,env,fragment", [
    ("1KEY", {"1KEY": "s3cr3t-value"}, "KEY must be"),
    ("MY-KEY", {"MY-KEY": "s3cr3t-value"}, "KEY must be"),
    ("", {}, "KEY must be"),
    ("MISSING", {}, "not set"),
    ("EMPTY", {"EMPTY": ""}, "empty"),
    ("CRLF", {"CRLF": "a\r\nX-Evil: 1"}, "control characters"),
    ("NUL", {"NUL": "foo\0bar"}, "control characters"),
    ("BELL", {"BELL": "a\x07"}, "control characters"),
    ("LOOP", {"LOOP": PREFIX + "X-" + "0" * 32}, "placeholder"),
    ("K=", {"K": "s3cr3t-value"}, "host list is empty"),
    ("K=*", {"K": "s3cr3t-value"}, "matches all hosts"),
    ("K=*.com", {"K": "s3cr3t-value"}, "TLD wildcard"),
    ("K=a b", {"K": "s3cr3t-value"}, "contains"),
])
def test_bad_specs(spec: str, env: dict[str, str], fragment: str) -> None:
    with pytest.raises(CredentialError) as err:
        SecretStore.from_specs([spec], env)
    assert err.value.code == "bad_spec"
    assert fragment in err.value.message
    for value in env.values():
        if value:
            assert value not in err.value.message  # never echo a secret


def test_duplicate_key() -> None:
    with pytest.raises(CredentialError) as err:
        SecretStore.from_specs(["A", "A=x.example"], {"A": "v"})
    assert err.value.code == "bad_spec" and err.value.key == "A"


def test_tab_is_allowed_in_a_value() -> None:
    s = store("T", env={"T": "a\tb"})
    sub = s.substitute("api.example.com", "/", [(b"x-t", ph(s, "T").encode())])
    assert headers_of(sub, b"x-t") == b"a\tb"


# --------------------------------------------------------------------------------------------
# Headers (case 93)


def test_bearer_header() -> None:
    s = store("ANTHROPIC_API_KEY")
    sub = s.substitute("api.example.com", "/v1/messages",
                       [(b"authorization", b"Bearer " + ph(s, "ANTHROPIC_API_KEY").encode())])
    assert headers_of(sub, b"authorization") == b"Bearer sk-test"
    assert sub.used == {"ANTHROPIC_API_KEY"}


def test_secrets_stay_out_of_reprs() -> None:
    s = store("CUSTOM_TOKEN")
    p = ph(s, "CUSTOM_TOKEN")
    sub = s.substitute("api.example.com", f"/{p}", [(b"x-api-key", p.encode())])
    assert headers_of(sub, b"x-api-key") == b"secret-token" and sub.target == "/secret-token"
    for obj in (sub, *s._by_key.values()):
        text = repr(obj) + str(obj) + repr(list(obj.__rich_repr__()))
        assert "secret-token" not in text and p not in text


def test_rewritten_request_head_stays_out_of_the_route_repr() -> None:
    from stockade.network.exchange import Route

    route = Route(upstream=None, head=b"GET / HTTP/1.1\r\nAuthorization: Bearer secret-token\r\n\r\n",  # type: ignore[arg-type]
                  allow_upgrade=False)
    text = repr(route) + str(route) + repr(list(route.__rich_repr__()))
    assert "secret-token" not in text and "bytes redacted" in repr(route)


def test_exact_header_value_and_token_scheme() -> None:
    s = store("CUSTOM_TOKEN")
    p = ph(s, "CUSTOM_TOKEN").encode()
    sub = s.substitute("api.example.com", "/", [(b"x-api-key", p), (b"authorization",
                                                                     b"token " + p)])
    assert headers_of(sub, b"x-api-key") == b"secret-token"
    assert headers_of(sub, b"authorization") == b"token secret-token"


def test_basic_round_trip() -> None:
    s = store("DB_PASSWORD")
    creds = base64.b64encode(f"admin:{ph(s, 'DB_PASSWORD')}".encode())
    sub = s.substitute("api.example.com", "/", [(b"Authorization", b"Basic " + creds)])
    scheme, encoded = headers_of(sub, b"Authorization").split(b" ")
    assert scheme == b"Basic"
    assert base64.b64decode(encoded) == b"admin:s3cret!"


def test_basic_user_name_placeholder() -> None:
    s = store("API_KEY", "BOT_TOKEN")
    creds = base64.b64encode(f"{ph(s, 'API_KEY')}:x-oauth-basic".encode())
    sub = s.substitute("api.example.com", "/", [(b"authorization", b"basic " + creds)])
    assert base64.b64decode(headers_of(sub, b"authorization")[6:]) == b"abc123:x-oauth-basic"
    # A secret with ':' cannot be a user name: it would move the password boundary.
    creds = base64.b64encode(f"{ph(s, 'BOT_TOKEN')}:pw".encode())
    err = refused(s, "api.example.com", "/", [(b"authorization", b"Basic " + creds)])
    assert (err.code, err.key) == ("unsafe_value", "BOT_TOKEN")


def test_basic_without_placeholder_is_untouched() -> None:
    s = store("DB_PASSWORD")
    creds = b"Basic " + base64.b64encode(b"user:password")
    sub = s.substitute("api.example.com", "/", [(b"authorization", creds)])
    assert headers_of(sub, b"authorization") == creds


def test_headers_without_placeholders_are_identical() -> None:
    s = store("ANTHROPIC_API_KEY")
    headers = [(b"host", b"api.example.com"), (b"accept", b"*/*"),
               (b"authorization", b"Bearer not-a-placeholder"), (b"x-q", b"a%20b")]
    sub = s.substitute("evil.example.net", "/a%2Fb?x=%3D", headers)
    assert sub.headers == headers and sub.target == "/a%2Fb?x=%3D" and not sub.used


def test_str_headers_come_back_as_str() -> None:
    s = store("ANTHROPIC_API_KEY")
    sub = s.substitute("api.example.com", "/", [("Authorization",
                                                  f"Bearer {ph(s, 'ANTHROPIC_API_KEY')}")])
    assert sub.headers == [("Authorization", "Bearer sk-test")]


def test_non_ascii_secret() -> None:
    s = store("U", env={"U": "pässwörd"})
    p = ph(s, "U")
    sub = s.substitute("api.example.com", f"/x/{p}?k={p}", [(b"x-k", p.encode())])
    assert headers_of(sub, b"x-k") == "pässwörd".encode()
    assert sub.target == "/x/p%C3%A4ssw%C3%B6rd?k=p%C3%A4ssw%C3%B6rd"


# --------------------------------------------------------------------------------------------
# Path and query (cases 94, 95)


def test_path_segment() -> None:
    s = store("API_KEY")
    sub = s.substitute("api.example.com", f"/api/{ph(s, 'API_KEY')}/data", [])
    assert sub.target == "/api/abc123/data"
    assert s.redact(f"/api/{ph(s, 'API_KEY')}/data") == "/api/[CREDENTIAL:API_KEY]/data"


def test_path_embedded_in_a_segment() -> None:
    s = store("BOT_TOKEN")
    target = f"/bot{ph(s, 'BOT_TOKEN')}/sendMessage"
    assert s.substitute("api.example.com", target, []).target == "/bot123456:ABC-def/sendMessage"
    assert s.redact(target) == "/bot[CREDENTIAL:BOT_TOKEN]/sendMessage"


def test_two_placeholders_in_two_segments() -> None:
    s = store("API_KEY", "GOOGLE_KEY")
    sub = s.substitute("api.example.com", f"/{ph(s, 'API_KEY')}/{ph(s, 'GOOGLE_KEY')}", [])
    assert sub.target == "/abc123/AIzaSy-secret"
    assert sub.used == {"API_KEY", "GOOGLE_KEY"}


def test_path_value_is_percent_encoded() -> None:
    s = store("HELLO")
    assert s.substitute("api.example.com", f"/{ph(s, 'HELLO')}", []).target == "/hello%20world"


@pytest.mark.parametrize("value", ["../admin", "foo\\bar", "foo/bar", "a?b", "a#b", ".", ".."])
def test_path_unsafe_values_are_refused(value: str) -> None:
    s = store("V", env={"V": value})
    err = refused(s, "api.example.com", f"/api/{ph(s, 'V')}/data")
    assert (err.code, err.key) == ("unsafe_value", "V")
    # The same value is fine where it is encoded completely.
    sub = s.substitute("api.example.com", f"/api?v={ph(s, 'V')}", [])
    assert sub.target == f"/api?v={quote(value, safe='')}"


def test_a_substitution_cannot_make_a_dot_segment() -> None:
    s = store("V", env={"V": "."})
    err = refused(s, "api.example.com", f"/a/%2E{ph(s, 'V')}/b")
    assert err.code in ("unsafe_value", "unresolvable")


def test_query_value() -> None:
    s = store("GOOGLE_KEY")
    sub = s.substitute("api.example.com", f"/api?key={ph(s, 'GOOGLE_KEY')}&format=json", [])
    assert sub.target == "/api?key=AIzaSy-secret&format=json"
    assert s.redact(f"/api?key={ph(s, 'GOOGLE_KEY')}&format=json") == \
        "/api?key=[CREDENTIAL:GOOGLE_KEY]&format=json"


def test_query_value_is_fully_percent_encoded() -> None:
    s = store("SPACED")
    sub = s.substitute("api.example.com", f"/api?key={ph(s, 'SPACED')}", [])
    assert sub.target == "/api?key=key%20with%20spaces%26symbols%3Dyes"


def test_absolute_form_target() -> None:
    """The forward proxy's target (case 98): path and header substituted, authority kept."""
    s = store("API_KEY", "ANTHROPIC_API_KEY")
    target = f"http://api.example.com:8080/v1/{ph(s, 'API_KEY')}?q=1"
    sub = s.substitute("api.example.com", target, [
        (b"authorization", f"Bearer {ph(s, 'ANTHROPIC_API_KEY')}".encode())])
    assert sub.target == "http://api.example.com:8080/v1/abc123?q=1"
    assert headers_of(sub, b"authorization") == b"Bearer sk-test"


# --------------------------------------------------------------------------------------------
# Refusals (case 96 and ours)


def test_unknown_placeholder_anywhere() -> None:
    s = store("API_KEY")
    forged = PREFIX + "API_KEY-" + "0" * 32
    for target, headers in [("/", [(b"x-k", forged.encode())]), (f"/?k={forged}", []),
                            (f"/{forged}", []), ("/", [(b"authorization", b"Bearer " +
                                                        forged.encode())])]:
        err = refused(s, "api.example.com", target, headers)
        assert err.code == "unknown_secret" and err.key == "API_KEY"


def test_percent_encoded_placeholder_in_the_path_is_refused() -> None:
    s = store("API_KEY")
    p = ph(s, "API_KEY")
    for target in (f"/api/{quote(p, safe='').replace('-', '%2D')}/data",
                   "/api/" + "".join(f"%{ord(c):02X}" for c in p),
                   "/api/%73" + p[1:], "/api/%2573" + p[1:],
                   "/api/" + p.replace("-", "%2d"), f"/api?k={p.replace('-', '%2D')}"):
        assert refused(s, "api.example.com", target).code == "unresolvable"


@pytest.mark.parametrize("make", [
    lambda p: ("/", [(b"x-k", b"prefix-" + p)]),  # embedded in other text
    lambda p: ("/", [(b"cookie", b"a=1; token=" + p)]),
    lambda p: ("/", [(b"x-k", p + b", " + p)]),
    lambda p: ("/", [(b"x-" + p, b"v")]),  # in a header name
    lambda p: ("/", [(b"x-k", base64.b64encode(p))]),  # base64 outside Basic
    lambda p: ("/", [(b"x-k", base64.urlsafe_b64encode(b"xx" + p))]),
    lambda p: ("/", [(b"authorization", b"Bearer " + base64.b64encode(b"u:" + p))]),
    lambda p: (f"/?{p.decode()}=v", []),  # a query key
    lambda p: (f"/#{p.decode()}", []),  # a fragment
    lambda p: (f"http://{p.decode()}@api.example.com/", []),  # the authority
    lambda p: (f"/?x={quote(base64.b64encode(p).decode(), safe='')}", []),
    lambda p: ("/", [(b"x-k", b"%73" + p[1:])]),
])
def test_placeholders_that_survive_are_refused(make) -> None:  # noqa: ANN001
    s = store("API_KEY")
    target, headers = make(ph(s, "API_KEY").encode())
    err = refused(s, "api.example.com", target, headers)
    assert err.code == "unresolvable"


def test_malformed_placeholder_is_refused() -> None:
    s = store("API_KEY")
    truncated = ph(s, "API_KEY")[:-4]
    assert refused(s, "api.example.com", "/", [(b"x-k", truncated.encode())]).code == \
        "unresolvable"


def test_an_empty_store_still_refuses_placeholder_shaped_tokens() -> None:
    """OpenShell forwards placeholders when it has no resolver; we never send one anywhere."""
    s = SecretStore.from_specs([], {})
    assert len(s) == 0 and not s.may_travel_to("api.example.com")
    err = refused(s, "api.example.com", "/", [(b"x", (PREFIX + "K-" + "a" * 32).encode())])
    assert err.code == "unknown_secret"


# --------------------------------------------------------------------------------------------
# Binding


def test_default_binding_to_policy_hosts_exact_and_wildcard() -> None:
    s = store("API_KEY", hosts=("api.example.com", "*.github.com", "**.corp.example"))
    p = ph(s, "API_KEY").encode()
    for host in ("api.example.com", "API.EXAMPLE.COM.", "api.github.com", "a.b.corp.example"):
        assert s.may_travel_to(host)
        sub = s.substitute(host, "/", [(b"x-k", p)])
        assert headers_of(sub, b"x-k") == b"abc123"
    for host in ("example.com", "github.com", "deep.api.github.com", "corp.example",
                 "evil.example.net", "api.example.com.evil.net", "10.0.0.1"):
        assert not s.may_travel_to(host)
        err = refused(s, host, "/", [(b"x-k", p)])
        assert (err.code, err.key) == ("wrong_host", "API_KEY")
        assert "abc123" not in err.message


def test_explicit_hosts_override_the_policy() -> None:
    s = store("API_KEY=*.github.com,10.0.0.5", "GOOGLE_KEY", hosts=("api.example.com",))
    assert s.bound_hosts("API_KEY") == ("*.github.com", "10.0.0.5")
    p = ph(s, "API_KEY")
    assert s.substitute("api.github.com", f"/{p}", []).target == "/abc123"
    assert s.substitute("10.0.0.5", f"/{p}", []).target == "/abc123"
    assert refused(s, "api.example.com", f"/{p}").code == "wrong_host"
    assert s.substitute("api.example.com", f"/{ph(s, 'GOOGLE_KEY')}", []).target == \
        "/AIzaSy-secret"


def test_ipv6_binding() -> None:
    s = store("API_KEY=2001:db8::1")
    assert s.may_travel_to("[2001:DB8::1]") and not s.may_travel_to("2001:db8::2")


def test_rebinding_on_hot_reload() -> None:
    s = store("API_KEY", hosts=("a.example.com",))
    p = ph(s, "API_KEY")
    assert s.substitute("a.example.com", f"/{p}", []).target == "/abc123"
    s.bind_default_hosts(["b.example.com", ""])  # "" = a hostless endpoint: binds nothing
    assert refused(s, "a.example.com", f"/{p}").code == "wrong_host"
    assert s.substitute("b.example.com", f"/{p}", []).target == "/abc123"
    assert ph(s, "API_KEY") == p  # placeholders survive reloads


def test_one_unbound_placeholder_refuses_the_whole_request() -> None:
    s = store("API_KEY", "GOOGLE_KEY=other.example.com")
    err = refused(s, "api.example.com", f"/{ph(s, 'API_KEY')}?k={ph(s, 'GOOGLE_KEY')}")
    assert (err.code, err.key) == ("wrong_host", "GOOGLE_KEY")


def test_from_environment_with_a_policy() -> None:
    from stockade.policy.loader import load_policy_text

    policy = load_policy_text("""
version: 1
network_policies:
  gh:
    endpoints:
      - { host: api.github.com, port: 443 }
      - { host: "*.githubusercontent.com", port: 443 }
    binaries: [{ path: /usr/bin/curl }]
""")
    assert sorted(policy_hosts(policy)) == ["*.githubusercontent.com", "api.github.com"]
    s = SecretStore.from_environment({"API_KEY": None, "GOOGLE_KEY": ("x.example",)}, policy,
                                     environ=ENV)
    assert s.may_travel_to("raw.githubusercontent.com")
    assert s.bound_hosts("API_KEY") == ("api.github.com", "*.githubusercontent.com")
    assert s.bound_hosts("GOOGLE_KEY") == ("x.example",)


# --------------------------------------------------------------------------------------------
# Scan and redaction


def test_contains_placeholder_sees_every_encoding() -> None:
    s = store("API_KEY")
    p = ph(s, "API_KEY").encode()
    for shift in range(3):
        blob = base64.b64encode(b"u" * shift + b":" + p)
        assert s.contains_placeholder(b"Authorization: Basic " + blob)
        assert s.contains_placeholder(base64.urlsafe_b64encode(b"u" * shift + p))
    assert s.contains_placeholder(b"GET /" + p + b" HTTP/1.1")
    assert s.contains_placeholder(b"GET /%73tockade%2Dph-x HTTP/1.1")
    assert s.contains_placeholder(b"GET /%2573tockade-ph-x HTTP/1.1")
    assert s.contains_placeholder("x-k: " + p.decode())  # str works too
    assert not s.contains_placeholder(b"GET /a%20b%2Fc?x=%3D HTTP/1.1\r\nHost: h\r\n\r\n")
    assert not s.contains_placeholder(b"Authorization: Basic " + base64.b64encode(b"u:p"))


def test_redact() -> None:
    s = store("API_KEY", "SPACED")
    p = ph(s, "API_KEY")
    text = (f"GET /x/{p}?k=abc123 sent abc123 and {quote(ENV['SPACED'], safe='')} "
            f"and {PREFIX}OTHER-{'f' * 32}")
    red = s.redact(text)
    assert p not in red and "abc123" not in red and "spaces" not in red
    assert red.count("[CREDENTIAL:API_KEY]") == 3
    assert "[CREDENTIAL:SPACED]" in red and "[CREDENTIAL:OTHER]" in red
    assert SecretStore.from_specs([], {}).redact("plain text") == "plain text"


# --------------------------------------------------------------------------------------------
# Properties

SECRET_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40,
).filter(lambda v: PREFIX not in v)
PATH_SAFE_TEXT = SECRET_TEXT.filter(
    lambda v: not any(c in v for c in "/\\?#") and v not in (".", ".."))
PLAIN = st.text(alphabet="abcdefghij-_.~0123456789", max_size=12)
POSITIONS = st.sampled_from(["header", "bearer", "basic-user", "basic-pass", "path", "embedded",
                             "query"])


def build_request(s: SecretStore, plan: list[tuple[str, str, str]]):  # noqa: ANN201
    """A request with each (key, position, filler) placeholder put in place."""
    path, query, headers = [""], [], [(b"host", b"h")]
    for i, (key, position, filler) in enumerate(plan):
        p = ph(s, key)
        if position == "header":
            headers.append((f"x-{i}".encode(), p.encode()))
        elif position == "bearer":
            headers.append((f"x-{i}".encode(), f"Bearer {p}".encode()))
        elif position == "basic-user":
            headers.append((b"authorization", b"Basic " + base64.b64encode(
                f"{p}:{filler}".encode())))
        elif position == "basic-pass":
            headers.append((b"authorization", b"Basic " + base64.b64encode(
                f"{filler}:{p}".encode())))
        elif position == "path":
            path.append(p)
        elif position == "embedded":
            path.append(f"{filler}{p}{filler}")
        else:
            query.append(f"q{i}={p}")
    target = "/".join(path) + ("/" if len(path) == 1 else "") + (
        "?" + "&".join(query) if query else "")
    return target, headers


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.lists(SECRET_TEXT, min_size=1, max_size=4),
       plan=st.lists(st.tuples(st.integers(0, 3), POSITIONS, PLAIN), min_size=1, max_size=6))
def test_property_no_placeholder_survives(values: list[str], plan) -> None:  # noqa: ANN001
    env = {f"K{i}": v for i, v in enumerate(values)}
    s = SecretStore.from_specs(list(env), env)
    s.bind_default_hosts(["api.example.com"])
    steps = [(f"K{i % len(values)}", pos, filler) for i, pos, filler in plan]
    target, headers = build_request(s, steps)
    try:
        sub = s.substitute("api.example.com", target, headers)
    except CredentialError as exc:
        # Only a value that cannot sit where it was put may stop a bound request.
        assert exc.code == "unsafe_value", exc
        return
    blob = sub.target.encode() + b"".join(n + b":" + v for n, v in sub.headers)
    assert not placeholder_evidence(sub.target)
    assert not any(placeholder_evidence(v) or placeholder_evidence(n) for n, v in sub.headers)
    assert PREFIX.encode() not in blob
    for n, v in sub.headers:
        if v.startswith(b"Basic "):
            assert PREFIX.encode() not in base64.b64decode(v[6:])
    assert sub.used == {key for key, _, _ in steps}


@settings(max_examples=300, deadline=None)
@given(values=st.lists(SECRET_TEXT, min_size=1, max_size=3),
       plan=st.lists(st.tuples(st.integers(0, 2), POSITIONS, PLAIN), min_size=1, max_size=5),
       host=st.sampled_from(["evil.example.net", "example.com", "api.example.com.evil",
                             "10.0.0.1", "x.api.example.com"]))
def test_property_an_unbound_host_never_gets_a_secret(values: list[str], plan,  # noqa: ANN001
                                                      host: str) -> None:
    env = {f"K{i}": v for i, v in enumerate(values)}
    s = SecretStore.from_specs(list(env), env)
    s.bind_default_hosts(["api.example.com"])
    target, headers = build_request(s, [(f"K{i % len(values)}", pos, f)
                                        for i, pos, f in plan])
    with pytest.raises(CredentialError) as err:
        s.substitute(host, target, headers)
    assert err.value.code in ("wrong_host", "unsafe_value")  # refused: nothing goes out


@settings(max_examples=300, deadline=None)
@given(target=st.text(alphabet="/abcxyz%20?=&-_.~", max_size=40),
       values=st.lists(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF),
                               max_size=30), max_size=5))
def test_property_requests_without_placeholders_are_untouched(target: str,
                                                              values: list[str]) -> None:
    s = store("API_KEY")
    headers = [(f"x-{i}", v) for i, v in enumerate(values)]
    assume(not any(placeholder_evidence(v) for v in [target, *values]))
    sub = s.substitute("evil.example.net", target, headers)
    assert (sub.target, sub.headers, sub.used) == (target, headers, frozenset())


@settings(max_examples=200, deadline=None)
@given(secret=SECRET_TEXT.filter(lambda v: len(v) >= 6), before=PLAIN, after=PLAIN)
def test_property_redaction_hides_values_and_placeholders(secret: str, before: str,
                                                          after: str) -> None:
    assume(secret not in "[CREDENTIAL:K]" and secret not in before + after)
    s = SecretStore.from_specs(["K"], {"K": secret})
    red = s.redact(f"{before}{secret}{after} {ph(s, 'K')} {quote(secret, safe='')}")
    assert secret not in red.replace("[CREDENTIAL:K]", "")
    assert ph(s, "K") not in red
    assert re.search(PREFIX, red) is None


def test_secret_values_never_in_error_messages() -> None:
    s = store("API_KEY", "V", env={**ENV, "V": "../topsecret"})
    errors = [refused(s, "evil.example.net", f"/{ph(s, 'API_KEY')}"),
              refused(s, "api.example.com", f"/{ph(s, 'V')}"),
              refused(s, "api.example.com", "/", [(b"x", b"a," + ph(s, "API_KEY").encode())])]
    for err in errors:
        assert "abc123" not in str(err) and "topsecret" not in str(err)
