"""Parsing and safety validation (policy.md §7 cases 1-18, adapted to our stricter rules)."""

from __future__ import annotations

import ipaddress

import pytest

from stockade.policy import PolicyError, check_policy_file, check_policy_text, dump_policy
from stockade.policy.default import default_policy
from stockade.policy.loader import normalize_path
from stockade.policy.model import Access, Compatibility, Enforcement, L7Allow, Protocol, Tls

from .policies import ANNOTATED, PROVER, RESTRICTIVE_DEFAULT, T0, load, network


def errors(text: str) -> list:
    return list(check_policy_text(text, "p.yaml").errors)


def warnings(text: str) -> list:
    result = check_policy_text(text, "p.yaml")
    assert result.ok, [d.format() for d in result.errors]
    return list(result.warnings)


def position(text: str, token: str) -> tuple[int, int]:
    """1-based line and column of the first occurrence of `token`."""
    for number, line in enumerate(text.splitlines(), start=1):
        if token in line:
            return number, line.index(token) + 1
    raise AssertionError(token)


def only_error(text: str):
    found = errors(text)
    assert len(found) == 1, [d.format() for d in found]
    return found[0]


def endpoint_policy(endpoint: str, binaries: str = "[{ path: /usr/bin/curl }]") -> str:
    return network(f"  r:\n    endpoints:\n      - {endpoint}\n    binaries: {binaries}\n")


@pytest.mark.parametrize("text", [T0, ANNOTATED, RESTRICTIVE_DEFAULT, PROVER, "version: 1\n"])
def test_every_reference_example_loads(text):
    result = check_policy_text(text)
    assert result.ok, [d.format() for d in result.errors]


def test_minimal_policy():  # case 1
    p = load("version: 1\n")
    assert p.version == 1 and dict(p.network_policies) == {} and p.filesystem is None
    assert p.landlock is None and p.process is None


def test_unknown_top_level_key_names_line_and_column():  # case 2
    e = only_error("version: 1\nbogus_field: true\n")
    assert (e.line, e.column) == (2, 1)
    assert "unknown key 'bogus_field'" in e.message and "'network_policies'" in e.message


def test_missing_version():  # case 3
    e = only_error("network_policies: {}\n")
    assert "missing required key 'version'" in e.message and e.hint == "add `version: 1`"


@pytest.mark.parametrize("value", ["2", "0", "'1'", "1.0", "true"])
def test_version_must_be_the_integer_1(value):
    e = only_error(f"version: {value}\n")
    assert e.path == "version" and (e.line, e.column) == (1, 10)


def test_port_out_of_range():  # case 4
    text = endpoint_policy("{ host: api.example.com, port: 70000 }")
    e = only_error(text)
    assert e.path == "network_policies.r.endpoints[0].port"
    assert "70000" in e.message and "1-65535" in e.message
    assert (e.line, e.column) == position(text, "70000")


@pytest.mark.parametrize("port", ["0", "-1", "'443'", "true", "443.0", "0x1BB", "[443]"])
def test_port_must_be_a_plain_integer_in_range(port):
    e = only_error(endpoint_policy(f"{{ host: api.example.com, port: {port} }}"))
    assert "1-65535" in e.message


def test_ports_list_and_round_trip():  # case 5
    p = load(endpoint_policy("{ host: api.example.com, ports: [80, 443] }"))
    assert p.network_policies["r"].endpoints[0].ports == (80, 443)
    assert load(dump_policy(p)) == p
    assert "ports:" in dump_policy(p)


def test_single_port_is_written_as_port():  # case 6
    p = load(endpoint_policy("{ host: api.example.com, port: 443 }"))
    assert p.network_policies["r"].endpoints[0].ports == (443,)
    text = dump_policy(p)
    assert "port: 443" in text and "ports:" not in text
    assert load(endpoint_policy("{ host: api.example.com, ports: [443] }")) == p


def test_port_and_ports_together_is_an_error():  # case 7: OpenShell silently prefers ports
    e = only_error(endpoint_policy("{ host: api.example.com, port: 443, ports: [8443] }"))
    assert "port and ports are mutually exclusive" in e.message


@pytest.mark.parametrize("endpoint,needle", [
    ("{ host: api.example.com }", "no port"),
    ("{ host: api.example.com, ports: [] }", "ports is empty"),
    ("{ port: 443 }", "no host"),
    ("{ host: '', port: 443 }", "empty host without allowed_ips"),
])
def test_endpoint_needs_a_port_and_a_host(endpoint, needle):
    assert needle in only_error(endpoint_policy(endpoint)).message


def test_duplicate_ports_are_merged_with_a_warning():
    w = warnings(endpoint_policy("{ host: a.example.com, ports: [443, 80, 443] }"))
    assert any("listed twice" in d.message for d in w)
    assert load(endpoint_policy("{ host: a.example.com, ports: [443, 80, 443] }")) \
        .network_policies["r"].endpoints[0].ports == (80, 443)


def test_name_is_kept_and_defaults_to_the_key():  # case 8
    p = load(network("  my_api:\n    name: my-custom-api-name\n    endpoints: [{ host: a.example.com,"
                     " port: 443 }]\n    binaries: [{ path: /usr/bin/curl }]\n"))
    assert p.network_policies["my_api"].name == "my-custom-api-name"
    assert load(dump_policy(p)).network_policies["my_api"].name == "my-custom-api-name"
    p = load(network("  my_api:\n    endpoints: [{ host: a.example.com, port: 443 }]\n"
                     "    binaries: [{ path: /usr/bin/curl }]\n"))
    assert p.network_policies["my_api"].name == "my_api"


QUERY_RULE = """{ host: api.example.com, port: 443, protocol: rest, enforcement: enforce,
          rules: [{ allow: { method: GET, path: /download, query: %s } }] }"""


def test_query_matchers_round_trip():  # case 9
    p = load(endpoint_policy(QUERY_RULE % '{ slug: "my-*", tag: { any: ["foo-*", "bar-*"] } }'))
    allow = p.network_policies["r"].endpoints[0].rules[0]
    assert allow.query["slug"].globs == ("my-*",)
    assert allow.query["tag"].globs == ("foo-*", "bar-*")
    assert load(dump_policy(p)) == p


def test_glob_object_matcher_is_accepted_as_the_string_form():
    # OpenShell's YAML rejects `{glob: x}`, its validator and proto accept it: we accept it.
    a = load(endpoint_policy(QUERY_RULE % '{ owner: { glob: "org-*" } }'))
    b = load(endpoint_policy(QUERY_RULE % '{ owner: "org-*" }'))
    assert a == b


def test_allowed_ips_round_trip_and_dump_uses_filesystem_policy():  # case 10
    p = load(endpoint_policy("{ host: db.example.com, port: 5432, "
                             "allowed_ips: ['10.0.5.0/24', '10.0.6.0/24'] }"))
    assert p.network_policies["r"].endpoints[0].allowed_ips == (
        ipaddress.ip_network("10.0.5.0/24"), ipaddress.ip_network("10.0.6.0/24"))
    assert load(dump_policy(p)) == p
    text = dump_policy(load(RESTRICTIVE_DEFAULT))
    assert "filesystem_policy:" in text and "\nfilesystem:" not in text


@pytest.mark.parametrize("user,group,count", [
    ("root", "sandbox", 1), ("0", "0", 2), ("''", "''", 2), ("root", "root", 2),
])
def test_process_identity_must_not_be_root_or_empty(user, group, count):  # case 11
    found = errors(f"version: 1\nprocess: {{run_as_user: {user}, run_as_group: {group}}}\n")
    assert len(found) == count
    assert all(d.path.startswith("process.run_as_") for d in found)


def test_process_identity_accepts_unprivileged_names_and_ids():  # HEAD relaxed 1cabd25
    p = load("version: 1\nprocess: {run_as_user: nobody, run_as_group: 1000}\n")
    assert (p.process.run_as_user, p.process.run_as_group) == ("nobody", "1000")
    assert load("version: 1\n").process is None


def test_root_message_names_field_and_value():  # case 14 (display)
    e = only_error("version: 1\nprocess: {run_as_user: root}\n")
    assert "run_as_user" in e.message and "root" in e.message and "sandbox" in e.hint


@pytest.mark.parametrize("section,value,needle", [  # case 12
    ("read_only", "/usr/../etc/shadow", "traversal"),
    ("read_only", "usr/lib", "absolute"),
    ("read_write", "/", "overly broad"),
    ("read_write", "///", "overly broad"),
])
def test_filesystem_path_safety(section, value, needle):
    e = only_error(f"version: 1\nfilesystem_policy:\n  {section}: ['{value}']\n")
    assert needle in e.message and value in e.message
    assert (e.line, e.column) == (3, len(section) + 6)


def test_too_many_and_too_long_paths():  # case 13
    many = ", ".join(f"/path/{i}" for i in range(300))
    e = only_error(f"version: 1\nfilesystem_policy:\n  read_only: [{many}, /tmp]\n")
    assert "too many filesystem paths (301 > 256)" in e.message
    e = only_error(f"version: 1\nfilesystem_policy:\n  read_only: ['/{'a' * 5000}']\n")
    assert "maximum length (5001 > 4096)" in e.message and e.message.endswith("...")


@pytest.mark.parametrize("host,needle", [  # cases 14, 24
    ("'*.com'", "TLD wildcard"), ("'**.org'", "TLD wildcard"), ("'*'", "matches all hosts"),
    ("'**'", "matches all hosts"), ("'*com'", "TLD wildcard"), ("'api.*.com'", "first label"),
    ("'a**.example.com'", "whole first label"), ("'api.example..com'", "empty label"),
    ("'api?.example.com'", "only wildcard is '*'"), ("'exa mple.com'", "only wildcard"),
    ("'-bad.example.com'", "not a valid DNS label"),
])
def test_invalid_host_patterns(host, needle):
    e = only_error(endpoint_policy(f"{{ host: {host}, port: 443 }}"))
    assert needle in e.message and e.path.endswith(".host")


@pytest.mark.parametrize("host", ["*.example.com", "**.example.com", "*-ai.example.com",
                                  "api-*.example.com", "Example.COM", "example.com.",
                                  "10.0.5.20", "2001:db8::1", "under_score.example.com"])
def test_valid_host_patterns(host):
    result = check_policy_text(endpoint_policy(f"{{ host: '{host}', port: 443 }}"))
    assert result.ok, [d.format() for d in result.errors]


def test_host_is_lower_cased_without_trailing_dot():
    p = load(endpoint_policy("{ host: API.Example.COM., port: 443 }"))
    assert p.network_policies["r"].endpoints[0].host == "api.example.com"


def test_normalize_path():  # case 16
    assert normalize_path("/usr//lib") == "/usr/lib"
    assert normalize_path("/usr/./lib") == "/usr/lib"
    assert normalize_path("/tmp/") == "/tmp"
    assert normalize_path("/usr/../etc") == "/usr/../etc"
    p = load("version: 1\nfilesystem_policy:\n  read_only: [/usr//lib/, /opt/./x]\n")
    assert p.filesystem.read_only == ("/usr/lib", "/opt/x")


def test_restrictive_default():  # case 17
    p = load(RESTRICTIVE_DEFAULT)
    assert p.version == 1 and not p.network_policies and p.filesystem.include_workdir
    assert "/usr" in p.filesystem.read_only
    assert {"/sandbox", "/tmp"} <= set(p.filesystem.read_write)
    assert p.landlock.compatibility is Compatibility.BEST_EFFORT
    assert (p.process.run_as_user, p.process.run_as_group) == ("sandbox", "sandbox")


def test_invalid_yaml_and_unreadable_file(tmp_path):  # case 18, adapted: errors, no fallback
    e = only_error("this is not valid yaml: [[[")
    assert e.message.startswith("invalid YAML") and e.line >= 1
    result = check_policy_file(tmp_path / "missing.yaml")
    assert not result.ok and "cannot read the policy" in result.errors[0].message
    (tmp_path / "bin.yaml").write_bytes(b"version: 1\n\xff\xfe")
    assert "not UTF-8" in check_policy_file(tmp_path / "bin.yaml").errors[0].message


def test_include_workdir_defaults():  # policy.md §1.2
    assert load("version: 1\nfilesystem_policy: {read_only: [/usr]}\n").filesystem.include_workdir \
        is False
    assert load("version: 1\n").filesystem is None  # absent: the runtime default is true
    assert load(RESTRICTIVE_DEFAULT).filesystem.include_workdir is True


def test_default_policy_is_valid_and_safe():
    p = default_policy()
    assert not p.network_policies and p.process is None
    assert p.filesystem.include_workdir
    assert {"/usr", "/etc"} <= set(p.filesystem.read_only)
    assert set(p.filesystem.read_write) == {"/tmp", "/dev/null"}
    assert p.landlock.compatibility is Compatibility.BEST_EFFORT


# -- stricter than OpenShell: enums, keys, types -------------------------------------------------

@pytest.mark.parametrize("key,value,accepted,suggestion", [
    ("enforcement", "enforced", "'enforce', 'audit'", "enforce"),
    ("enforcement", "Enforce", "'enforce', 'audit'", "enforce"),
    ("tls", "skipp", "'skip', 'auto'", "skip"),
    ("access", "read_only", "'read-only', 'read-write', 'full'", "read-only"),
    ("protocol", "rets", "'rest', 'sql'", "rest"),
])
def test_enum_typos_are_errors_with_did_you_mean(key, value, accepted, suggestion):
    body = {"enforcement": "enforcement: enforce", "access": "access: full", "tls": "",
            "protocol": ""}
    extra = ", ".join(x for k, x in body.items() if k != key and x)
    e = only_error(endpoint_policy(f"{{ host: a.example.com, port: 443, protocol: rest, {extra}, "
                                   f"{key}: {value} }}".replace("protocol: rest, , ", "")
                                   .replace(", protocol: rest", "", key == "protocol")))
    assert f"'{value}' is not a valid value" in e.message
    assert f"did you mean '{suggestion}'?" in e.message and accepted in e.message
    assert e.path.endswith("." + key)


def test_landlock_compatibility_typo():
    e = only_error("version: 1\nlandlock:\n  compatibility: hard_requirment\n")
    assert (e.line, e.column) == (3, 18)
    assert "did you mean 'hard_requirement'?" in e.message
    assert "'best_effort', 'hard_requirement'" in e.message
    assert only_error("version: 1\nlandlock: {compatibility: ''}\n").message.startswith(
        "empty string is not a valid value")


def test_protocol_is_case_insensitive_like_openshell():
    p = load(endpoint_policy("{ host: a.example.com, port: 443, protocol: REST, enforcement: "
                             "enforce, access: full }"))
    assert p.network_policies["r"].endpoints[0].protocol is Protocol.REST


def test_misspelt_key_gets_did_you_mean_and_position():
    text = endpoint_policy("{ host: a.example.com, port: 443, alowed_ips: [10.0.0.1] }")
    e = only_error(text)
    assert "unknown key 'alowed_ips' (did you mean 'allowed_ips'?)" in e.message
    assert e.path == "network_policies.r.endpoints[0]"
    assert (e.line, e.column) == position(text, "alowed_ips")


def test_later_openshell_keys_are_named_as_unsupported():
    e = only_error(endpoint_policy("{ host: a.example.com, port: 443, deny_rules: [] }"))
    assert "not supported by stockade" in e.message and "deny_rules" in e.message


def test_unknown_keys_at_every_level():
    text = """\
version: 1
filesystem_policy: {read_olny: [/usr]}
landlock: {compatability: best_effort}
process: {run_as: nobody}
network_policies:
  r:
    endpoint: []
    binaries: [{ path: /usr/bin/curl, sha: x }]
"""
    found = errors(text)
    assert [d.line for d in found] == [2, 3, 4, 7, 8]
    assert all("unknown key" in d.message for d in found)
    assert "did you mean 'read_only'" in found[0].message
    assert "did you mean 'compatibility'" in found[1].message
    assert "did you mean 'endpoints'" in found[3].message


def test_duplicate_keys_are_errors():
    found = errors("version: 1\nversion: 1\nnetwork_policies:\n  a: {}\n  a: {}\n")
    assert len(found) == 2 and all("duplicate" in d.message for d in found)
    assert "first given on line 4" in found[1].message


def test_every_error_is_collected_in_line_order():
    text = """\
version: 1
landlock: {compatibility: besteffort}
network_policies:
  r:
    endpoints:
      - { host: "*", port: 0 }
      - { host: a.example.com, port: 443, protocol: rest, enforcement: enforce }
    binaries: [{ path: curl }]
"""
    found = errors(text)
    assert len(found) == 5
    assert [d.line for d in found] == sorted(d.line for d in found)
    messages = " | ".join(d.message for d in found)
    for needle in ("besteffort", "matches all hosts", "port 0", "requires rules or access",
                   "must be absolute"):
        assert needle in messages


def test_yaml_1_1_booleans_and_strings_are_not_guessed():
    e = only_error("version: 1\nfilesystem_policy: {include_workdir: yes}\n")
    assert "expected true or false, got boolean 'yes'" in e.message
    p = load("version: 1\nprocess: {run_as_user: 1000}\n")
    assert p.process.run_as_user == "1000"


def test_policy_error_lists_every_error():
    with pytest.raises(PolicyError) as info:
        load("version: 2\nbogus: 1\n")
    assert len(info.value.diagnostics) == 2
    assert "test.yaml:1:10" in str(info.value) and "1 more error" in str(info.value)


def test_merge_keys_are_refused():
    e = only_error("version: 1\nnetwork_policies:\n  r: &a {binaries: []}\n  s: {<<: *a}\n")
    assert "merge keys" in e.message and (e.line, e.column) == (4, 7)


def test_absurd_alias_expansion_is_refused():
    def many(alias: str) -> str:
        return ", ".join([f"*{alias}"] * 49)
    allow = f"&a {{allow: {{method: GET, path: /x, query: {{q: {{any: [&s x, {many('s')}]}}}}}}}}"
    endpoint = (f"&e {{host: a.example.com, port: 1, protocol: rest, enforcement: enforce, "
                f"rules: [{allow}, {many('a')}]}}")
    text = (f"version: 1\nnetwork_policies:\n  r0: &r {{endpoints: [{endpoint}, {many('e')}], "
            "binaries: [{path: /usr/bin/curl}]}\n" + "".join(f"  r{i}: *r\n" for i in range(1, 50)))
    found = errors(text)
    assert len(found) == 1 and "more than 200000 YAML nodes" in found[0].message


# -- L7 and endpoint consistency (engine-load validation, cases 19-26) ---------------------------

def test_rules_and_access_are_mutually_exclusive():  # case 19
    e = only_error(endpoint_policy("{ host: a.example.com, port: 443, protocol: rest, enforcement: "
                                   "enforce, access: read-only, rules: [{allow: {method: GET, "
                                   "path: /x}}] }"))
    assert "mutually exclusive" in e.message


def test_protocol_requires_rules_or_access():  # case 20
    e = only_error(endpoint_policy("{ host: a.example.com, port: 443, protocol: rest, "
                                   "enforcement: enforce }"))
    assert "requires rules or access" in e.message


def test_sql_enforce_is_refused():  # case 21
    e = only_error(endpoint_policy("{ host: db.example.com, port: 5432, protocol: sql, enforcement: "
                                   "enforce, rules: [{allow: {command: SELECT}}] }"))
    assert "SQL enforcement" in e.message


def test_deprecated_tls_is_a_warning():  # case 22
    w = warnings(endpoint_policy("{ host: a.example.com, port: 443, protocol: rest, enforcement: "
                                 "enforce, tls: terminate, access: full }"))
    assert len(w) == 1 and "deprecated" in w[0].message
    ep = load(endpoint_policy("{ host: a.example.com, port: 443, tls: passthrough }")) \
        .network_policies["r"].endpoints[0]
    assert ep.tls is Tls.AUTO


@pytest.mark.parametrize("ports,tls,warned", [  # case 23
    ("port: 443", "tls: skip,", True), ("port: 443", "", False), ("ports: [443, 8080]", "", False),
    ("port: 8080", "tls: skip,", False),
])
def test_tls_skip_with_l7_on_443_warns(ports, tls, warned):
    w = warnings(endpoint_policy(f"{{ host: a.example.com, {ports}, protocol: rest, {tls} "
                                 "enforcement: enforce, access: read-only }"))
    assert any("tls: skip" in d.message for d in w) is warned


def test_rules_empty_list_is_an_error():
    e = only_error(endpoint_policy("{ host: a.example.com, port: 443, protocol: rest, enforcement: "
                                   "enforce, rules: [] }"))
    assert "rules list cannot be empty" in e.message


@pytest.mark.parametrize("key", ["access: full", "rules: [{allow: {method: GET, path: /x}}]"])
def test_l7_settings_without_protocol_are_errors(key):
    e = only_error(endpoint_policy(f"{{ host: a.example.com, port: 443, {key} }}"))
    assert "without 'protocol'" in e.message and e.hint == "add `protocol: rest` to inspect HTTP " \
        "requests"


def test_missing_enforcement_on_l7_endpoint_warns_about_audit():
    w = warnings(endpoint_policy("{ host: a.example.com, port: 443, protocol: rest, access: full }"))
    assert len(w) == 1 and "only logged" in w[0].message
    ep = load(endpoint_policy("{ host: a.example.com, port: 443, protocol: rest, access: full }")) \
        .network_policies["r"].endpoints[0]
    assert ep.enforcement is Enforcement.AUDIT and not ep.enforcement_explicit


@pytest.mark.parametrize("query,needle", [  # case 25
    ("{ tag: { any: [] } }", "allow.query.tag.any"),
    ("{ tag: { mode: 'foo-*' } }", "unknown key 'mode'"),
    ("{ tag: '[unclosed' }", "unclosed '['"),
    ("{ format: { glob: '{json,xml' } }", "unclosed '{'"),
    ("{ tag: { any: ['valid-*', '[bad'] } }", "unclosed '['"),
    ("{ tag: { glob: a, any: [b] } }", "both `glob` and `any`"),
    ("{ tag: {} }", "requires `glob` string or non-empty `any`"),
    ("[a, b]", "expected map of query matchers"),
])
def test_query_matcher_errors(query, needle):
    found = errors(endpoint_policy(QUERY_RULE % query))
    assert found and any(needle in d.message or needle in d.path for d in found), \
        [d.format() for d in found]


def test_valid_query_matchers():  # case 25, last example
    assert not errors(endpoint_policy(QUERY_RULE % '{ slug: "my-*", tag: {any: [foo-*, bar-*]}, '
                                      'owner: {glob: "org-*"} }'))


def test_access_presets_expand():  # case 26
    def rules(access):
        return load(endpoint_policy(f"{{ host: a.example.com, port: 443, protocol: rest, "
                                    f"enforcement: enforce, access: {access} }}")) \
            .network_policies["r"].endpoints[0].rules
    assert rules("read-only") == tuple(L7Allow(method=m, path="**") for m in ("GET", "HEAD",
                                                                            "OPTIONS"))
    assert rules("full") == (L7Allow(method="*", path="**"),)
    assert len(rules("read-write")) == 6
    ep = load(endpoint_policy("{ host: a.example.com, port: 443 }")).network_policies["r"] \
        .endpoints[0]
    assert ep.rules == () and ep.access is None
    assert load(endpoint_policy("{ host: a.example.com, port: 443, protocol: rest, enforcement: "
                                "enforce, access: read-write }")).network_policies["r"] \
        .endpoints[0].access is Access.READ_WRITE


@pytest.mark.parametrize("allow,needle", [
    ("{ method: GET }", "missing 'path'"),
    ("{ path: /x }", "missing 'method'"),
    ("{ method: GET, path: repos/** }", "must start with '/'"),
    ("{ method: GET, path: /a/../b }", "'..'"),
    ("{ method: GET, path: /a//b }", "empty segment"),
    ("{ method: GET, path: '/a/{b' }", "unclosed '{'"),
    ("{ method: GET, path: '/a]' }", "unmatched ']'"),
    ("{ method: GET, path: '/caf\u00e9' }", "caf%C3%A9"),
    ("{ method: GET, path: '/%61' }", "write 'a' instead"),
    ("{ method: GET, path: '/a%2Fb' }", "encoded slashes"),
    ("{ method: GET, path: '/a%zz' }", "malformed"),
    ("{ method: 'GE T', path: /x }", "not an HTTP method"),
])
def test_l7_allow_errors(allow, needle):
    found = errors(endpoint_policy(f"{{ host: a.example.com, port: 443, protocol: rest, "
                                   f"enforcement: enforce, rules: [{{ allow: {allow} }}] }}"))
    assert len(found) == 1 and (needle in found[0].message or needle in (found[0].hint or "")), \
        [d.format() for d in found]


def test_unknown_method_is_a_warning_with_did_you_mean():
    w = warnings(endpoint_policy("{ host: a.example.com, port: 443, protocol: rest, enforcement: "
                                 "enforce, rules: [{ allow: { method: GTE, path: /x } }] }"))
    assert len(w) == 1 and "unknown HTTP method 'GTE' (did you mean 'GET'?)" in w[0].message


# -- binaries ------------------------------------------------------------------------------------

@pytest.mark.parametrize("binaries,needle", [
    ("[/usr/bin/curl]", "expected a mapping with `path`"),
    ("[{ path: curl }]", "must be absolute"),
    ("[{ path: /usr/bin/../bin/curl }]", "not canonical"),
    ("[{ path: '/usr/bin/*[' }]", "unclosed '['"),
    ("[{ harness: true }]", "missing required key 'path'"),
])
def test_binary_errors(binaries, needle):
    found = errors(endpoint_policy("{ host: a.example.com, port: 443 }", binaries))
    assert any(needle in d.message for d in found), [d.format() for d in found]


def test_binary_warnings():
    w = warnings(endpoint_policy("{ host: a.example.com, port: 443 }", "[]"))
    assert any("never matches" in d.message for d in w)
    w = warnings(endpoint_policy("{ host: a.example.com, port: 443 }",
                                 "[{ path: '/usr/bin/python3.1[01]' }, { path: /x, harness: true }]"))
    assert any("compared literally" in d.message for d in w)
    assert any("deprecated" in d.message for d in w)


# -- allowed_ips ---------------------------------------------------------------------------------

@pytest.mark.parametrize("entry,needle", [
    ("nope", "not an IP address or CIDR"), ("10.0.0.0/33", "not an IP address"),
    ("0.0.0.0/0", "matches every address"), ("'::/0'", "matches every address"),
    ("127.0.0.0/8", "always-blocked"), ("169.254.169.254", "always-blocked"),
    ("0.0.0.0", "always-blocked"), ("127.0.0.1", "always-blocked"),
    ("'::ffff:127.0.0.1'", "always-blocked"), ("'fe80::/10'", "always-blocked"),
    ("120.0.0.0/5", "always-blocked"),
    # IPv6 forms embedding a blocked IPv4 address: 6to4, NAT64, Teredo, and ranges holding them
    ("'2002:7f00:1::/48'", "127.0.0.0/8 (loopback) embedded"),
    ("'2002:a9fe:a9fe::/48'", "169.254.0.0/16 (link-local, cloud metadata) embedded"),
    ("'64:ff9b::a9fe:a9fe'", "embedded"), ("'2000::/3'", "always-blocked"),
    ("'2001:0:4136:e378:8000:63bf:80ff:fffe'", "range 127.0.0.0/8 (loopback)"),  # Teredo, client inverted
    ("'2001:0:1234::/48'", "always-blocked"),  # every Teredo client, loopback included
    ("'2001:0:7f00:1::1/128'", "range 127.0.0.0/8 (loopback)"),  # Teredo server 127.0.0.1
])
def test_invalid_allowed_ips(entry, needle):
    e = only_error(endpoint_policy(f"{{ host: db.example.com, port: 5432, allowed_ips: [{entry}] }}"))
    assert needle in e.message and e.path.endswith("allowed_ips[0]")


def test_broad_allowed_ips_warn_and_private_ranges_pass():
    w = warnings(endpoint_policy("{ host: db.example.com, port: 5432, "
                                 "allowed_ips: [10.0.0.0/8, 10.0.5.0/24, 192.168.1.1] }"))
    assert len(w) == 1 and "very broad" in w[0].message and "10.0.0.0/8" in w[0].message


def test_endpoint_to_a_blocked_literal_warns():
    w = warnings(endpoint_policy("{ host: 127.0.0.1, port: 80 }"))
    assert any("always blocked" in d.message for d in w)
    w = warnings(endpoint_policy("{ host: 10.0.0.5, port: 80, allowed_ips: [10.1.0.0/24] }"))
    assert any("outside this endpoint's allowed_ips" in d.message for d in w)


# -- process.seccomp (our optional key) ----------------------------------------------------------

def test_seccomp_allow_only_lifts_memfd_create():
    p = load("version: 1\nprocess:\n  seccomp: {allow: [memfd_create]}\n")
    assert p.process.seccomp_allow == frozenset({"memfd_create"})
    e = only_error("version: 1\nprocess:\n  seccomp: {allow: [memfd_creat, ptrace]}\n".replace(
        "memfd_creat, ", ""))
    assert "'ptrace' is not a valid value" in e.message and "'memfd_create'" in e.message
    assert "did you mean 'memfd_create'" in only_error(
        "version: 1\nprocess: {seccomp: {allow: [memfd_creat]}}\n").message


def test_dump_round_trips_every_example():
    for text in (T0, ANNOTATED, RESTRICTIVE_DEFAULT, PROVER):
        p = load(text)
        assert load(dump_policy(p)) == p
