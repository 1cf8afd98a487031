"""Glob semantics: the verified table of policy.md §3.4, compile-time errors, and a property
test against an independent globset-style oracle."""

from __future__ import annotations


import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stockade.policy.glob import GlobError, compile_glob, path_glob, query_glob
from stockade.policy.hosts import HostError, normalize_host, parse_host

from .reference_glob import reference_match

TABLE = [  # policy.md §3.4, all verified against regorus
    ("*.example.com", ".", "api.example.com", True),
    ("*.example.com", ".", "deep.sub.example.com", False),
    ("*.example.com", ".", "example.com", False),
    ("**.example.com", ".", "a.example.com", True),
    ("**.example.com", ".", "a.b.example.com", True),
    ("**.example.com", ".", "example.com", False),
    ("*-ai.example.com", ".", "us-ai.example.com", True),
    ("/usr/bin/*", "/", "/usr/bin/node", True),
    ("/usr/bin/*", "/", "/usr/bin/sub/node", False),
    ("/repos/**", "/", "/repos/a/b", True),
    ("/repos/**", "/", "/repos/", True),
    ("/repos/**", "/", "/repos", False),
    ("/**/info/refs*", "/", "/org/r.git/info/refs", True),
    ("/**/info/refs*", "/", "/info/refs", True),
    ("/api/v1**", "/", "/api/v1xyz", True),
    ("/api/v1**", "/", "/api/v1/x", False),
    ("foo-*", ".", "foo-a", True),
    ("foo-*", ".", "foo-a/b", True),
    ("foo-*", ".", "foo-a.b", False),
    ("1.*", ".", "1.2", True),
    ("1.*", ".", "1.2.3", False),
    ("/a/{b,c}", "/", "/a/c", True),
    ("/a/[bc]", "/", "/a/c", True),
    ("/a/?", "/", "/a/c", True),
    ("**", "/", "", True),
    ("**", "/", "/any/thing", True),
]


@pytest.mark.parametrize("pattern,sep,value,expected", TABLE)
def test_verified_table(pattern, sep, value, expected):
    assert compile_glob(pattern, sep).match(value) is expected
    assert reference_match(pattern, sep, value) is expected  # the oracle agrees too


@pytest.mark.parametrize("pattern,needle", [
    ("[unclosed", "unclosed '['"), ("/a/{json,xml", "unclosed '{'"), ("/a]", "unmatched ']'"),
    ("/a}", "unmatched '}'"), ("/a\\", "dangling"), ("/[z-a]", "reversed range"),
    ("/a[/]b", "cannot match the separator"), ("/" + "{a,b}" * 9, "alternatives"),
])
def test_invalid_patterns_fail_at_compile_time(pattern, needle):
    with pytest.raises(GlobError, match=needle.replace("[", r"\[").replace("{", r"\{")
                       .replace("}", r"\}")):
        path_glob(pattern)


def test_escapes_classes_and_braces():
    assert path_glob(r"/a\*b").match("/a*b") and not path_glob(r"/a\*b").match("/axb")
    assert path_glob("/a/[!b]").match("/a/c") and not path_glob("/a/[!b]").match("/a/b")
    assert path_glob("/a/[]x]").match("/a/]")
    assert path_glob("/{a,b/c}/d").match("/b/c/d")
    assert path_glob("/{a,{b,c}x}").match("/cx")
    assert path_glob("/a,b").match("/a,b")  # a comma outside braces is literal
    assert query_glob("2?").match("20") and not query_glob("2?").match("2.")


def test_double_star_positions():
    assert path_glob("**/foo").match("foo") and path_glob("**/foo").match("a/b/foo")
    assert path_glob("/a/**/b/**").match("/a/b/c") and not path_glob("/a/**/b/**").match("/a/b")
    assert path_glob("/a/**/").match("/a/") and not path_glob("/a/**/").match("/a/x")
    assert query_glob("a.**.b").match("a.x.y.b") and not query_glob("a.**.b").match("a.b")


@pytest.mark.timeout(30)
def test_no_catastrophic_backtracking():
    """Exponential backtracking would run for hours on these: the timeout (pytest-timeout) guards
    that the match ends, not how fast it is (benchmarks measure speed; tests never assert times)."""
    assert not path_glob("/" + "*a" * 12 + "*b").match("/" + "a" * 5000)
    assert not path_glob("/**/x/**/y/**/z").match("/" + "/".join(["x"] * 200))


# -- property tests against the oracle ----------------------------------------------------------

def _pattern(sep: str):
    atom = st.sampled_from(["a", "b", "ab", sep, "*", "?", "[ab]", "[!a]", "{a,b}", "{a,*}",
                            "{,b}", sep + "**" + sep, "**" + sep, sep + "**"])
    return st.lists(atom, min_size=1, max_size=6).map("".join).filter(
        lambda p: "***" not in p and "**" + sep + "**" not in p and sep * 2 not in p
        and "**" not in p.replace(sep + "**", "").replace("**" + sep, "")
        .replace(sep + "**" + sep, ""))


def _value(sep: str):
    other = "/" if sep == "." else "."
    return st.lists(st.sampled_from(["a", "b", "c", sep, other]), max_size=8).map("".join)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), sep=st.sampled_from(["/", "."]))
def test_matches_the_reference(data, sep):
    pattern = data.draw(_pattern(sep))
    value = data.draw(_value(sep))
    assert compile_glob(pattern, sep).match(value) is reference_match(pattern, sep, value), \
        (pattern, value)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "x"]), min_size=1, max_size=5).map("".join),
       st.lists(st.sampled_from(["a", "b", "x"]), max_size=3))
def test_star_never_crosses_a_separator(literal, labels):
    value = ".".join([*labels, literal])
    assert compile_glob(f"*.{literal}", ".").match(value) is (len(labels) == 1)
    assert compile_glob(f"**.{literal}", ".").match(value) is (len(labels) >= 1)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab/.", max_size=12))
def test_literal_patterns_match_only_themselves(text):
    assert path_glob("/lit" + text).match("/lit" + text)
    assert not path_glob("/lit" + text).match("/lit" + text + "x")


# -- host patterns -------------------------------------------------------------------------------

@pytest.mark.parametrize("pattern,host,expected", [
    ("*.example.com", "api.example.com", True), ("*.example.com", "a.b.example.com", False),
    ("*.EXAMPLE.COM", "api.example.com", True), ("**.example.com", "a.b.example.com", True),
    ("**.example.com", "example.com", False), ("*-ai.example.com", "us-ai.example.com", True),
    ("*-ai.example.com", "us.x-ai.example.com", False), ("api-*.example.com", "api-1.example.com",
                                                        True),
    ("example.com.", "example.com", True), ("*.example.com", ".example.com", False),
])
def test_host_patterns(pattern, host, expected):
    assert parse_host(pattern).match(normalize_host(host)) is expected


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["*.ex.com", "**.ex.com", "*-a.ex.com", "a*.ex.com", "a.ex.com"]),
       st.lists(st.sampled_from(["a", "b-a", "ex", "com", "x"]), min_size=1, max_size=5))
def test_host_matcher_agrees_with_the_generic_glob(pattern, labels):
    host = ".".join(labels)
    assert parse_host(pattern).match(host) is compile_glob(pattern, ".").match(host)


def test_ipv6_hosts_normalise():
    assert parse_host("2001:DB8:0::1").pattern == "2001:db8::1"
    assert normalize_host("[2001:db8::1]") == "2001:db8::1"
    with pytest.raises(HostError):
        parse_host("2001:db8::*")
