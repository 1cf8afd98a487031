"""Endpoint host patterns: validation at load time and matching at decision time.

A host is an exact name or IP literal, or a wildcard confined to the FIRST label:
`*.example.com` (exactly one label), `**.example.com` (one or more labels), or a partial first
label such as `*-ai.example.com` (OpenShell HEAD accepts these; a `*` never crosses a `.`).
Rejected: `*`/`**` alone (every host), TLD wildcards (`*.com`: two labels or fewer), wildcards
outside the first label, and any other glob character (`?`, `[`, `{`), which a DNS name cannot
contain. Comparison is case-insensitive and ignores one trailing dot (`example.com.` is the same
name in DNS), so both the pattern and the requested host are normalised that way.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

from ..records import Struct
from .glob import compile_glob

MAX_HOST_LENGTH = 253
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_WILD_LABEL = re.compile(r"[a-z0-9_*-]{1,63}")

EXACT, ONE_LABEL, MANY_LABELS = "exact", "one_label", "many_labels"


class HostError(ValueError):
    """An invalid host pattern; the message names the host and what is accepted."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


def normalize_host(host: str) -> str:
    """The form hosts are compared in: lower case, no trailing dot, IPv6 without brackets."""
    h = host.lower()
    if h.endswith("."):
        h = h[:-1]
    if ":" in h:
        text = h[1:-1] if h.startswith("[") and h.endswith("]") else h
        try:
            return str(ipaddress.IPv6Address(text))
        except ValueError:
            return h
    return h


class HostPattern(Struct, frozen=True, eq=False):
    pattern: str  # normalised
    kind: str  # EXACT, ONE_LABEL (a `*` inside the first label) or MANY_LABELS (`**.`)
    suffix: str  # for wildcards: the fixed part after the first label, with its leading dot
    label: Callable[[str], object] | None = None  # ONE_LABEL other than `*`: the label's glob

    def match(self, host: str) -> bool:
        """`host` must already be normalised (normalize_host)."""
        if self.kind == EXACT:
            return host == self.pattern
        if not host.endswith(self.suffix):
            return False
        return self.match_prefix(host[: len(host) - len(self.suffix)])

    def match_prefix(self, prefix: str) -> bool:
        """Whether the part of a host before `suffix` fits the wildcard (one label, or more)."""
        if not prefix or prefix[0] == "." or prefix[-1] == ".":
            return False
        if self.kind == MANY_LABELS:
            return ".." not in prefix
        if "." in prefix:
            return False
        return self.label is None or bool(self.label(prefix))


def parse_host(text: str) -> HostPattern:
    """Validate and compile one endpoint host (not empty); raises HostError."""
    host = normalize_host(text)
    if not host:
        raise HostError("host is empty")
    if len(host) > MAX_HOST_LENGTH:
        raise HostError(f"host is longer than {MAX_HOST_LENGTH} characters")
    if ":" in host or _is_ipv4(host):
        if "*" in host:
            raise HostError(f"host {text!r}: an IP address cannot contain a wildcard",
                            hint="use allowed_ips with a CIDR to allow a range of addresses")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise HostError(f"host {text!r} is not a valid IP address or DNS name") from None
        return HostPattern(host, EXACT, "")
    bad = sorted({c for c in host if c in "?[]{},\\/ "})
    if bad:
        raise HostError(f"host {text!r} contains {', '.join(repr(c) for c in bad)}; a host is a "
                        "DNS name or IP address, and the only wildcard is '*'")
    if host in ("*", "**"):
        raise HostError(f"host wildcard {text!r} matches all hosts; use specific patterns like "
                        "'*.example.com'",
                        hint="to allow any host on some ports, omit `host` and set allowed_ips")
    labels = host.split(".")
    if "" in labels:
        raise HostError(f"host {text!r} has an empty label ('..' or a leading '.')")
    for i, label in enumerate(labels):
        if "*" in label and i > 0:
            raise HostError(f"host {text!r}: a wildcard is only allowed in the first label "
                            "(e.g. '*.example.com'); it never crosses a '.'")
        pattern = _WILD_LABEL if i == 0 else _LABEL
        if not pattern.fullmatch(label):
            raise HostError(f"host {text!r}: label {label!r} is not a valid DNS label "
                            "(letters, digits, '-' and '_', at most 63 characters)")
    first = labels[0]
    if "*" not in first:
        if not _LABEL.fullmatch(first):
            raise HostError(f"host {text!r}: label {first!r} is not a valid DNS label")
        return HostPattern(host, EXACT, "")
    if len(labels) <= 2:
        raise HostError(f"TLD wildcard {text!r} is not allowed; use subdomain wildcards like "
                        "'*.example.com' instead")
    if "**" in first and first != "**":
        raise HostError(f"host {text!r}: '**' must be the whole first label ('**.example.com')")
    suffix = host[len(first):]
    if first == "**":
        return HostPattern(host, MANY_LABELS, suffix)
    return HostPattern(host, ONE_LABEL, suffix, None if first == "*" else compile_glob(first, ".").match)


def _is_ipv4(host: str) -> bool:
    return all(part.isdigit() for part in host.split("."))
