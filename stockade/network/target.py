"""Request targets (sans-IO): CONNECT authorities, absolute-form URLs and the Host header.

Everything here is strict: a target that could be read two ways (userinfo, percent-encoded or
zone-scoped hosts, fragments, a port of 0 or with a sign) is a 400, never guessed at. Numeric
host spellings such as `2130706433` or `0x7f.1` are valid names here on purpose: the SSRF stage
validates what they *resolve* to.
"""

from __future__ import annotations

import functools
import ipaddress

from ..records import Struct
from .httphead import Headers, HttpError

# A reserved name: the proxy hands its requests to the inference router (DESIGN.md §1).
INFERENCE_HOST = "inference.local"
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-._")


class Authority(Struct, frozen=True):
    host: str  # lower-case; IPv6 without brackets; no trailing dot
    port: int

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.host

    def host_text(self) -> str:
        """The host as written in a URL or Host header (IPv6 in brackets)."""
        return f"[{self.host}]" if self.is_ipv6 else self.host

    def __str__(self) -> str:
        return f"{self.host_text()}:{self.port}"

    def host_header(self, default_port: int) -> str:
        return self.host_text() if self.port == default_port else str(self)


def _parse_port(text: str) -> int:
    if not text or not text.isascii() or not text.isdigit() or len(text) > 5:
        raise HttpError(400, f"invalid port {text!r}")
    port = int(text)
    if not 1 <= port <= 65535:
        raise HttpError(400, f"port {port} out of range")
    return port


def _parse_host(text: str) -> str:
    if text.startswith("["):
        if not text.endswith("]"):
            raise HttpError(400, f"unterminated IPv6 literal {text!r}")
        inner = text[1:-1]
        if "%" in inner:
            raise HttpError(400, "scoped IPv6 addresses are not allowed")
        try:
            return str(ipaddress.IPv6Address(inner))
        except ValueError:
            raise HttpError(400, f"invalid IPv6 literal {text!r}") from None
    host = text.lower()
    if host.endswith("."):
        host = host[:-1]  # the absolute form of the same DNS name
    if not host or len(host) > 253:
        raise HttpError(400, "empty or overlong host")
    if not all(c in _NAME_CHARS for c in host):
        raise HttpError(400, f"invalid characters in host {text!r}")
    if any(not label or len(label) > 63 for label in host.split(".")):
        raise HttpError(400, f"invalid host {text!r}")
    return host


@functools.lru_cache(maxsize=1024)
def split_authority(text: str, default_port: int | None) -> Authority:
    """`host[:port]` or `[v6][:port]`; the port is required when `default_port` is None.

    Cached: a client talks to few authorities, and validating a name char by char is the most
    expensive step of parsing a forward-proxy request."""
    if "@" in text:
        raise HttpError(400, "userinfo is not allowed in the authority")
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise HttpError(400, f"unterminated IPv6 literal in {text!r}")
        host_part, rest = text[:close + 1], text[close + 1:]
        if rest and not rest.startswith(":"):
            raise HttpError(400, f"invalid authority {text!r}")
        port_part = rest[1:] if rest else None
    else:
        if text.count(":") > 1:
            raise HttpError(400, f"IPv6 literals must be in brackets: {text!r}")
        host_part, sep, port_text = text.partition(":")
        port_part = port_text if sep else None
    if port_part is None:
        if default_port is None:
            raise HttpError(400, f"CONNECT target {text!r} has no port")
        port = default_port
    else:
        port = _parse_port(port_part)
    return Authority(_parse_host(host_part), port)


def parse_connect_target(target: str) -> Authority:
    """The authority-form target of CONNECT: `host:port` or `[v6]:port`."""
    return split_authority(target, None)


class AbsoluteUrl(Struct, frozen=True):
    scheme: str
    authority: Authority
    target: str  # origin-form: path and query, at least "/"


def parse_absolute_url(target: str) -> AbsoluteUrl:
    """An absolute-form request-target of a forward-proxy request (http:// only).

    Raises HttpError 400; for `https://` the caller answers with a hint to use CONNECT
    (see `is_https`).
    """
    scheme, sep, rest = target.partition("://")
    if not sep:
        if target.startswith("/") or target == "*":
            raise HttpError(400, "this is a proxy: requests must use an absolute http:// URL "
                                 "(or CONNECT for https)")
        raise HttpError(400, f"invalid request-target {target[:80]!r}")
    scheme = scheme.lower()
    if scheme not in ("http", "https"):
        raise HttpError(400, f"unsupported URL scheme {scheme!r}: only http:// (and CONNECT)")
    end = len(rest)
    for delim in "/?#":
        i = rest.find(delim)
        if 0 <= i < end:
            end = i
    authority = split_authority(rest[:end], 443 if scheme == "https" else 80)
    path = rest[end:]
    if "#" in path:
        raise HttpError(400, "fragments are not allowed in a request-target")
    if not path:
        path = "/"
    elif path.startswith("?"):
        path = "/" + path
    return AbsoluteUrl(scheme, authority, path)


def is_https(url: AbsoluteUrl) -> bool:
    return url.scheme == "https"


def host_headers(headers: Headers) -> list[str]:
    return [v for k, v in headers if k.lower() == "host"]


def check_tunnel_host(headers: Headers, authority: Authority, version: str) -> None:
    """Inside a CONNECT tunnel the Host header must name the tunnel's host (no domain fronting).

    A missing port means the scheme default, which we cannot know inside the tunnel, so only
    an explicit port is compared.
    """
    values = host_headers(headers)
    if len(values) > 1:
        raise HttpError(400, "more than one Host header")
    if not values:
        if version == "1.1":
            raise HttpError(400, "HTTP/1.1 request without a Host header")
        return
    try:
        named = split_authority(values[0].strip(), 0)  # port 0: none given
    except HttpError:
        raise HttpError(400, f"invalid Host header {values[0][:80]!r}") from None
    if named.host != authority.host or named.port not in (0, authority.port):
        raise HttpError(421, f"Host {values[0][:80]!r} does not match the tunnel to {authority}")
