"""Glob patterns as OpenShell evaluates them (regorus `glob.match`, i.e. globset with literal
separators), compiled once and matched without backtracking blow-ups.

Semantics (policy.md §3.4, the verified table):
- The value is split on the separator (`/` for paths and binaries, `.` for hosts and query
  values). `*` matches any run of characters inside one segment, `?` one character, `[...]` one
  character of a class (`[!...]`/`[^...]` negated), `{a,b}` either alternative, `\\x` a literal x.
- `**` forming a whole segment crosses segments. With `/`: at the start or in the middle it
  matches zero or more segments (`/**/info/refs*` matches `/info/refs`), at the end one or more
  (`/repos/**` matches `/repos/` but not `/repos`). With `.`, regorus rewrites every `.` into a
  segment of its own, so `**` always needs at least one label (`**.example.com` does not match
  `example.com`). A `**` that is not a whole segment acts as `*` (`/api/v1**`).
- The pattern `**` alone matches everything, including the empty string.

Where globset throws at evaluation time on a bad pattern (an unclosed `[`), this module raises
GlobError when the pattern is compiled, so the loader reports it with the pattern's line.

Matching is per segment: a segment pattern becomes a regex in which every `*` except the last is
an atomic lazy group. Matching each fixed-width chunk at its leftmost position is always optimal
when the star that follows can absorb the rest, so the regex never backtracks across stars and
a match costs O(len(value) x len(pattern)). Whole-segment `**` is matched by position, with a
small memoised search only when a pattern has several of them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

from ..records import Struct

MAX_PATTERN_LENGTH = 4096
MAX_ALTERNATIVES = 256  # `{a,b}{c,d}...` expands multiplicatively; cap it


class GlobError(ValueError):
    """A pattern that cannot be compiled; the message says what and where."""


# Tokens of one alternative after brace expansion.
_STAR, _DSTAR, _ANY1, _SEP = "*", "**", "?", "/"  # ("lit", c), ("class", regex) are tuples
_Token = str | tuple[str, str]
SegmentMatcher = Callable[[str], object]  # truthy when the segment matches
DSTAR = None  # a whole-segment `**` in a compiled alternative


def _parse(pattern: str, sep: str) -> list[list[_Token]]:
    """Tokenise and expand braces: the list of alternatives, each a list of tokens."""
    pos = 0

    def sequence(depth: int) -> list[list[_Token]]:
        # Alternatives of the text up to the closing `}` or `,` of this depth (or the end).
        nonlocal pos
        alts: list[list[_Token]] = [[]]
        while pos < len(pattern):
            c = pattern[pos]
            if depth and c in ",}":
                return alts
            pos += 1
            if c == "\\":
                if pos == len(pattern):
                    raise GlobError(f"pattern {pattern!r} ends with a dangling '\\'")
                tok: _Token = _SEP if pattern[pos] == sep else ("lit", pattern[pos])
                pos += 1
                alts = [a + [tok] for a in alts]
            elif c == "[":
                tok, pos = _char_class(pattern, pos, sep)
                alts = [a + [tok] for a in alts]
            elif c == "]":
                raise GlobError(f"pattern {pattern!r} has an unmatched ']' at offset {pos - 1} "
                                "(write '\\]' for a literal bracket)")
            elif c == "{":
                start = pos - 1
                options: list[list[_Token]] = []
                while True:
                    options += sequence(depth + 1)
                    if pos >= len(pattern):
                        raise GlobError(f"pattern {pattern!r} has an unclosed '{{' at offset {start}")
                    pos += 1
                    if pattern[pos - 1] == "}":
                        break
                alts = [a + o for a in alts for o in options]
                if len(alts) > MAX_ALTERNATIVES:
                    raise GlobError(f"pattern {pattern!r} expands to more than "
                                    f"{MAX_ALTERNATIVES} alternatives")
            elif c == "}":
                raise GlobError(f"pattern {pattern!r} has an unmatched '}}' at offset {pos - 1}")
            elif c == "*" and pattern[pos:pos + 1] == "*":
                # `**` crosses separators only when the pattern text has a separator (or the
                # start/end) on both sides, as in globset; `{/,x}**` or `a**` are plain stars.
                before = pos - 2 < 0 or pattern[pos - 2] == sep
                after = pos + 1 >= len(pattern) or pattern[pos + 1] == sep
                pos += 1
                toks: list[_Token] = [_DSTAR] if before and after else [_STAR, _STAR]
                alts = [a + toks for a in alts]
            else:
                tok = _SEP if c == sep else _STAR if c == "*" else _ANY1 if c == "?" else ("lit", c)
                alts = [a + [tok] for a in alts]
        return alts

    return sequence(0)


def _char_class(pattern: str, pos: int, sep: str) -> tuple[tuple[str, str], int]:
    """The class token starting after the `[` at pattern[pos - 1], and the offset after `]`."""
    i = pos
    negate = i < len(pattern) and pattern[i] in "!^"
    i += negate
    items: list[str] = []
    first = True
    while True:
        if i >= len(pattern):
            raise GlobError(f"pattern {pattern!r} has an unclosed '[' at offset {pos - 1}")
        c = pattern[i]
        if c == "]" and not first:
            break
        first = False
        if i + 2 < len(pattern) and pattern[i + 1] == "-" and pattern[i + 2] != "]":
            lo, hi = c, pattern[i + 2]
            if lo > hi:
                raise GlobError(f"pattern {pattern!r} has a reversed range '{lo}-{hi}'")
            if lo <= sep <= hi:
                raise GlobError(f"pattern {pattern!r}: a class cannot match the separator '{sep}'")
            items.append(f"{re.escape(lo)}-{re.escape(hi)}")
            i += 3
            continue
        if c == sep:
            raise GlobError(f"pattern {pattern!r}: a class cannot match the separator '{sep}'")
        if c == "\\" and i + 1 < len(pattern):
            i += 1
            c = pattern[i]
        items.append(re.escape(c))
        i += 1
    return ("class", f"[{'^' if negate else ''}{''.join(items)}]"), i + 1


def _segment_matcher(tokens: list[_Token]) -> SegmentMatcher:
    """A matcher for one segment (no separators inside)."""
    if all(isinstance(t, tuple) and t[0] == "lit" for t in tokens):
        return "".join(t[1] for t in tokens).__eq__  # type: ignore[index]
    if all(t in (_STAR, _DSTAR) for t in tokens):
        return _always
    chunks: list[str] = [""]
    for tok in tokens:
        if tok in (_STAR, _DSTAR):
            if chunks[-1] or len(chunks) == 1:
                chunks.append("")
            continue
        chunks[-1] += "." if tok == _ANY1 else re.escape(tok[1]) if tok[0] == "lit" else tok[1]
    if len(chunks) == 1:
        regex = chunks[0]
    else:
        # chunk0 (?>.*?chunk1) ... .*chunkN: each middle chunk at its leftmost place, committed.
        middle = "".join(f"(?>.*?{c})" for c in chunks[1:-1])
        regex = f"{chunks[0]}{middle}.*{chunks[-1]}"
    return re.compile(regex, re.DOTALL).fullmatch


def _always(_: str) -> bool:
    return True


class _Alternative(Struct, frozen=True, eq=False):
    items: tuple[SegmentMatcher | None, ...]  # DSTAR (None) or a segment matcher
    dstars: tuple[int, ...]  # positions of DSTAR in items
    literal: str | None  # the whole alternative when it has no wildcard at all


class Glob(Struct, frozen=True, eq=False):
    """A compiled pattern; `match(value)` is the whole API."""

    pattern: str
    sep: str
    alternatives: tuple[_Alternative, ...]
    matches_everything: bool

    def match(self, value: str) -> bool:
        if self.matches_everything:
            return True
        parts: list[str] | None = None
        for alt in self.alternatives:
            if alt.literal is not None:
                if value == alt.literal:
                    return True
                continue
            if parts is None:
                parts = value.split(self.sep)
            if _match_alternative(alt, parts, self.sep):
                return True
        return False

    def __repr__(self) -> str:
        return f"Glob({self.pattern!r}, sep={self.sep!r})"


def _match_alternative(alt: _Alternative, parts: list[str], sep: str) -> bool:
    items, n = alt.items, len(parts)
    if not alt.dstars:
        if n != len(items):
            return False
        for f, p in zip(items, parts):
            if not f(p):  # type: ignore[misc]
                return False
        return True
    # With `/`, a `**` that is not last may match zero segments; with `.` it needs one (module doc).
    if len(alt.dstars) == 1:
        k = alt.dstars[0]
        suffix = len(items) - k - 1
        least = 1 if (suffix == 0 or sep != "/") else 0
        if n - k - suffix < least:
            return False
        for i in range(k):
            if not items[i](parts[i]):  # type: ignore[misc]
                return False
        for i in range(1, suffix + 1):
            if not items[-i](parts[-i]):  # type: ignore[misc]
                return False
        return True
    return _search(items, parts, sep)


def _search(items: tuple[SegmentMatcher | None, ...], parts: list[str], sep: str) -> bool:
    """Several `**`: a memoised search over (item, part) positions, O(items x parts^2)."""
    last = len(items) - 1

    @functools.cache
    def rec(i: int, j: int) -> bool:
        if i > last:
            return j == len(parts)
        f = items[i]
        if f is DSTAR:
            least = 1 if (i == last or sep != "/") else 0
            return any(rec(i + 1, j + k) for k in range(least, len(parts) - j + 1))
        return j < len(parts) and bool(f(parts[j])) and rec(i + 1, j + 1)

    return rec(0, 0)


@functools.lru_cache(maxsize=8192)
def compile_glob(pattern: str, sep: str = "/") -> Glob:
    """Compile `pattern` for values separated by `sep`; raises GlobError. Cached."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise GlobError(f"pattern is longer than {MAX_PATTERN_LENGTH} characters")
    if pattern == "**":
        return Glob(pattern, sep, (), True)
    alternatives = []
    for tokens in _parse(pattern, sep):
        segments: list[list[_Token]] = [[]]
        for tok in tokens:
            if tok == _SEP:
                segments.append([])
            else:
                segments[-1].append(tok)
        items = tuple(DSTAR if seg == [_DSTAR] else _segment_matcher(seg) for seg in segments)
        dstars = tuple(i for i, item in enumerate(items) if item is DSTAR)
        literal = None
        if all(isinstance(t, tuple) and t[0] == "lit" or t == _SEP for t in tokens):
            literal = "".join(sep if t == _SEP else t[1] for t in tokens)  # type: ignore[index]
        if items == (DSTAR,):
            return Glob(pattern, sep, (), True)  # an alternative that is `**` alone
        alternatives.append(_Alternative(items, dstars, literal))
    return Glob(pattern, sep, tuple(alternatives), False)


def path_glob(pattern: str) -> Glob:
    """A request-path or binary-path pattern (`/` separates segments)."""
    return compile_glob(pattern, "/")


def query_glob(pattern: str) -> Glob:
    """A query-value pattern: OpenShell's empty delimiter list means `.`, so `1.*` does not
    match `1.2.3`, and `*` crosses `/`."""
    return compile_glob(pattern, ".")
