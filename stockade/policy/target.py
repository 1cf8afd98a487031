"""Request-target canonicalisation before L7 matching (sans-IO).

OpenShell 1cabd25 matched the raw path, so `/public/../secret` matched `/public/**` while the
upstream served `/secret`. Here the origin-form target is reduced to one canonical form first,
and the proxy forwards that form, so the policy and the upstream see the same path:

- the path and the query are split at the first `?`;
- `%XX` escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded, other escapes are
  kept with upper-case hex;
- `.` and `..` segments are resolved (RFC 3986 §5.2.4) and empty segments (`//`) collapse; a
  trailing `/` is kept because `/repos/**` matches `/repos/` but not `/repos`.

A target that has no single safe meaning is refused with a precise reason instead of being
guessed at: an encoded `/` or `\\` (servers disagree on whether it separates segments), NUL and
other control bytes, raw non-ASCII, a raw `\\`, a fragment, malformed percent-encoding, a `..`
that climbs above the root, a dot segment carrying `;parameters` (Tomcat reads `..;` as `..`),
and absurd lengths.

Query parameters are decoded as OpenShell does (§3.8): pairs split on `&`, empty pairs skipped,
the name and value split at the first `=` (a missing `=` gives the value ""), `+` is a space,
`%2B` a plus, malformed `%` or non-UTF-8 bytes are an error. A parameter can repeat.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from urllib.parse import unquote_to_bytes

from ..records import Struct

MAX_TARGET_LENGTH = 8192

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_BAD_PATH_CHAR = re.compile(r"[^\x21-\x7e]|[#\\]")
_BAD_QUERY_CHAR = re.compile(r"[^\x21-\x7e]|#")
_MALFORMED_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
# A path needs work only if it has an escape, a dot segment or an empty segment.
_NEEDS_WORK = re.compile(r"%|/\.|//|;")


class InvalidTarget(ValueError):
    """A request target that cannot be canonicalised; `reason` says exactly why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CanonicalTarget(Struct, frozen=True):
    path: str  # canonical path, what path globs are matched against
    query: str  # the raw query string without `?` ("" when absent), validated
    params: Mapping[str, tuple[str, ...]]  # decoded query parameters, values in request order

    @property
    def target(self) -> str:
        """The request target to forward upstream."""
        return f"{self.path}?{self.query}" if self.query else self.path


def canonicalize_target(target: str | bytes) -> CanonicalTarget:
    """Canonicalise an origin-form request target (`/path?query`); raises InvalidTarget."""
    if isinstance(target, bytes):
        target = target.decode("latin-1")  # every byte maps to one char; non-ASCII stays visible
    if len(target) > MAX_TARGET_LENGTH:
        raise InvalidTarget(f"request target is longer than {MAX_TARGET_LENGTH} bytes")
    path, sep, query = target.partition("?")
    if not path.startswith("/"):
        what = "empty" if not target else "asterisk-form '*'" if target == "*" else repr(target[:60])
        raise InvalidTarget(f"request target must be a path starting with '/', got {what}")
    if query:
        bad = _BAD_QUERY_CHAR.search(query)
        if bad:
            raise InvalidTarget(f"query contains {_describe_char(bad.group())}")
    return CanonicalTarget(canonicalize_path(path), query,
                           parse_query(query) if query else MappingProxyType({}))


def canonicalize_path(path: str) -> str:
    """The canonical form of a path starting with `/` (module docstring); raises InvalidTarget."""
    bad = _BAD_PATH_CHAR.search(path)
    if bad:
        raise InvalidTarget(f"path contains {_describe_char(bad.group())}")
    if not _NEEDS_WORK.search(path):
        return path  # the common case: already canonical
    segments = path.split("/")
    last = len(segments) - 1
    stack: list[str] = []
    trailing = False
    for i, raw in enumerate(segments[1:], start=1):
        seg = _decode_segment(raw) if "%" in raw else raw
        base = seg.partition(";")[0]
        if base in (".", "..") and base != seg:
            raise InvalidTarget(f"path segment {raw!r} is a dot segment with parameters "
                                "(some servers read it as '..')")
        if seg == "..":
            if not stack:
                raise InvalidTarget("path climbs above the root with '..'")
            stack.pop()
        elif seg not in (".", ""):
            stack.append(seg)
        if i == last:
            trailing = seg in (".", "..", "")
    if not stack:
        return "/"
    return "/" + "/".join(stack) + ("/" if trailing else "")


def _decode_segment(segment: str) -> str:
    if _MALFORMED_ESCAPE.search(segment):
        raise InvalidTarget(f"path segment {segment!r} has malformed percent-encoding")
    return _ESCAPE.sub(_decode_escape, segment)


def _decode_escape(match: re.Match[str]) -> str:
    byte = int(match.group(1), 16)
    if byte in _UNRESERVED:
        return chr(byte)
    if byte == 0x2F:
        raise InvalidTarget("path contains an encoded '/' (%2F)")
    if byte == 0x5C:
        raise InvalidTarget("path contains an encoded '\\' (%5C)")
    if byte < 0x20 or byte == 0x7F:
        raise InvalidTarget(f"path contains an encoded control byte (%{byte:02X})")
    return f"%{byte:02X}"


def _describe_char(c: str) -> str:
    if c == "#":
        return "a fragment ('#'), which a client never sends"
    if c == "\\":
        return "a raw '\\' (some servers treat it as '/')"
    code = ord(c)
    if code == 0:
        return "a NUL byte"
    if code == 0x20:
        return "a raw space"
    if code < 0x20 or code == 0x7F:
        return f"a control byte (0x{code:02X})"
    return f"a raw non-ASCII byte (0x{code:02X}); it must be percent-encoded"


def parse_query(query: str) -> Mapping[str, tuple[str, ...]]:
    """Decoded query parameters (module docstring); raises InvalidTarget."""
    params: dict[str, list[str]] = {}
    for pair in query.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        params.setdefault(_decode_component(name), []).append(_decode_component(value))
    return MappingProxyType({k: tuple(v) for k, v in params.items()})


def _decode_component(text: str) -> str:
    if "%" not in text and "+" not in text:
        return text
    if _MALFORMED_ESCAPE.search(text):
        raise InvalidTarget(f"query component {text[:60]!r} has malformed percent-encoding")
    try:
        return unquote_to_bytes(text.replace("+", " ")).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidTarget(f"query component {text[:60]!r} is not UTF-8 after "
                            "percent-decoding") from None
