"""Request-target canonicalisation and query parsing (policy.md §3.8, §8.2, case 59)."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from stockade.policy.target import (
    MAX_TARGET_LENGTH,
    InvalidTarget,
    canonicalize_path,
    canonicalize_target,
    parse_query,
)


@pytest.mark.parametrize("raw,canonical", [
    ("/", "/"), ("/a/b", "/a/b"), ("/a//b", "/a/b"), ("/a/./b", "/a/b"), ("/a/b/../c", "/a/c"),
    ("/public/../secret", "/secret"), ("/public/%2e%2e/secret", "/secret"),
    ("/public/%2E./secret", "/secret"), ("/a/b/..", "/a/"), ("/a/.", "/a/"), ("/repos/", "/repos/"),
    ("//", "/"), ("/a/..", "/"), ("/%41%62%7e%2D", "/Ab~-"), ("/caf%c3%a9", "/caf%C3%A9"),
    ("/a%3bb", "/a%3Bb"), ("/a;v=1/b", "/a;v=1/b"), ("/%25", "/%25"), ("/a/.hidden", "/a/.hidden"),
    ("/a/...", "/a/..."),
])
def test_canonical_paths(raw, canonical):
    assert canonicalize_path(raw) == canonical


@pytest.mark.parametrize("raw,needle", [
    ("/a%2Fb", "encoded '/'"), ("/a%2fb", "encoded '/'"), ("/a%5Cb", "encoded '\\'"),
    ("/a%00b", "control byte (%00)"), ("/a%0Ab", "control byte"), ("/a\x00b", "NUL"),
    ("/a\x7fb", "control byte (0x7F)"), ("/a b", "raw space"), ("/caf\u00e9", "non-ASCII"),
    ("/a#frag", "fragment"), ("/a\\b", "raw '\\'"), ("/..", "above the root"),
    ("/a/../..", "above the root"), ("/%2e%2e/x", "above the root"), ("/a%2", "malformed"),
    ("/a%zz", "malformed"), ("/a/..;/b", "dot segment with parameters"),
    ("/a/.;x/b", "dot segment with parameters"),
])
def test_uncanonicalisable_paths_are_refused(raw, needle):
    with pytest.raises(InvalidTarget) as info:
        canonicalize_path(raw)
    assert needle in info.value.reason


@pytest.mark.parametrize("target,needle", [
    ("", "empty"), ("*", "asterisk-form"), ("http://x/y", "starting with '/'"),
    ("/x?a=\x01", "control byte"), ("/x?a#b", "fragment"),
    ("/" + "a" * MAX_TARGET_LENGTH, "longer than"),
])
def test_invalid_targets(target, needle):
    with pytest.raises(InvalidTarget, match=needle.replace("*", r"\*")):
        canonicalize_target(target)


def test_target_keeps_the_query_and_drops_an_empty_one():
    t = canonicalize_target("/a/./b?x=1&y=%41")
    assert (t.path, t.query, t.target) == ("/a/b", "x=1&y=%41", "/a/b?x=1&y=%41")
    assert canonicalize_target("/api?").target == "/api"
    assert canonicalize_target(b"/a/../b?q=1").target == "/b?q=1"
    with pytest.raises(InvalidTarget, match="non-ASCII"):
        canonicalize_target("/caf\u00e9".encode())


def test_query_parsing():  # case 59
    assert canonicalize_target("/download?tag=a&tag=b").params == {"tag": ("a", "b")}
    assert canonicalize_target("/download?tag=a&tag=b").path == "/download"
    assert parse_query("slug=my%2Fskill&name=Foo+Bar") == {"slug": ("my/skill",),
                                                           "name": ("Foo Bar",)}
    assert parse_query("q=a%2Bb") == {"q": ("a+b",)}
    assert parse_query("tag=") == {"tag": ("",)}
    assert parse_query("verbose") == {"verbose": ("",)}
    assert canonicalize_target("/api?").params == {}
    assert parse_query("q=caf%C3%A9") == {"q": ("café",)}
    assert parse_query("&&a=1&&") == {"a": ("1",)}
    assert parse_query("a=b=c") == {"a": ("b=c",)}
    with pytest.raises(InvalidTarget, match="percent-encoding"):
        parse_query("slug=bad%2")
    with pytest.raises(InvalidTarget, match="not UTF-8"):
        parse_query("q=%C3")


# -- properties ----------------------------------------------------------------------------------

SEGMENTS = ["a", "b", "public", ".", "..", "", "%2e", "%2E%2e", ".%2E", "%41", "%7e", "%C3%A9",
            "x;y", "%25", "...", ".x"]
paths = st.lists(st.sampled_from(SEGMENTS), max_size=8).map(lambda s: "/" + "/".join(s))


def _reference(path: str) -> str | None:
    """RFC 3986 dot-segment removal over the decoded unreserved form; None above the root."""
    decoded = path.replace("%2e", ".").replace("%2E", ".").replace("%41", "A").replace("%7e", "~")
    segments, stack = decoded.split("/")[1:], []
    for seg in segments:
        if seg == "..":
            if not stack:
                return None
            stack.pop()
        elif seg not in (".", ""):
            stack.append(seg)
    trailing = bool(segments) and segments[-1] in (".", "..", "") and bool(stack)
    return "/" + "/".join(stack) + ("/" if trailing else "")


@settings(max_examples=250, deadline=None)
@given(paths)
def test_canonicalisation_properties(path):
    expected = _reference(path)
    try:
        result = canonicalize_path(path)
    except InvalidTarget:
        assert expected is None
        return
    assert result == expected
    assert canonicalize_path(result) == result  # idempotent
    assert result.startswith("/")
    segments = result.split("/")[1:]
    assert "." not in segments and ".." not in segments and "" not in segments[:-1]
    assert "%2E" not in result.upper() and "%41" not in result and "%7E" not in result.upper()


@settings(max_examples=150, deadline=None)
@given(paths)
def test_a_path_escaping_a_prefix_never_keeps_it(path):
    try:
        result = canonicalize_path("/public/" + path.lstrip("/"))
    except InvalidTarget:
        return
    climbs = _reference("/public/" + path.lstrip("/"))
    assert result == climbs
    if not (climbs + "/").startswith("/public/"):
        assert not result.startswith("/public/")


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E,
                                      exclude_characters="#\\%?"), max_size=20))
def test_clean_ascii_paths_only_lose_dot_and_empty_segments(text):
    # A dot segment carrying parameters (`.;x`, `..;`) is refused on purpose: some servers read
    # `..;` as `..` (tested above), so such inputs are outside this property.
    assume(not any(seg.partition(";")[0] in (".", "..") and ";" in seg for seg in text.split("/")))
    try:
        result = canonicalize_path("/" + text)
    except InvalidTarget as exc:  # `/..`, `/a/../..`: refused on purpose (tested above)
        assert "climbs above the root" in str(exc)
        return
    assert set(result) <= set("/" + text)
    assert canonicalize_path(result) == result
