"""The mechanistic mapper (sans-IO): denial summaries → narrow rule proposals.

One proposal per host:port, carrying every binary that was denied there, named
`allow_<host>_<port>` (policy.md §5.2), with the endpoint `{host, port}` and no `allowed_ips`.
It never proposes what the proxy would refuse anyway or what would widen the policy beyond the
denial:
- an IP literal that is hard-blocked or internal (addresses.classify), so no proposal ever opens
  loopback, link-local/metadata or private ranges;
- a metadata service name, `localhost` or `*.localhost` (addresses.is_blocked_hostname);
- a host that is not a plain DNS name or IP literal (a `*` would become a wildcard rule);
- a binary that is unknown (`-`), relative, or contains glob characters (an agent could name its
  binary `/tmp/*` to obtain a rule matching every binary).
No DNS lookups: a name is judged by its text only; the proxy's SSRF check still validates every
resolved address at connect time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import yaml

from ..network.addresses import AddressClass, classify, is_blocked_hostname, literal_address
from ..records import Struct
from .aggregator import DenialSummary

if TYPE_CHECKING:
    from .store import Proposal

_HOST_NAME = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*\.?")
_GLOB_CHARS = frozenset("*?[]{}")
_MAX_BINARY = 4096

WELL_KNOWN_PORTS = {
    80: "HTTP", 443: "HTTPS", 8080: "HTTP-alt", 8443: "HTTPS-alt", 5432: "PostgreSQL", 3306: "MySQL",
    6379: "Redis", 27017: "MongoDB", 9200: "Elasticsearch", 9092: "Kafka", 2181: "ZooKeeper",
    11211: "Memcached", 5672: "RabbitMQ", 6443: "Kubernetes API", 53: "DNS", 587: "SMTP", 993: "IMAP",
    995: "POP3",
}


class ProposedRule(Struct, frozen=True):
    rule_key: str
    host: str
    port: int
    binaries: tuple[str, ...]
    hit_count: int
    first_seen_ms: int
    last_seen_ms: int
    rationale: str
    rule_yaml: str  # one `network_policies` entry: `{rule_key: {name, endpoints, binaries}}`
    stage: str = "policy"


def rule_name(host: str, port: int) -> str:
    """`allow_<host>_<port>`: `.` and `-` become `_`, anything else not alphanumeric is dropped.

    A name, not an identity: `api.github.com`, `api-github.com` and `api_github.com` all give
    `allow_api_github_com_443`. Proposals are keyed by (host, port) in the store, and approval
    (policy.reload.merge_proposed_rule) never merges by name alone: a taken name whose rule is
    for another destination makes the approved rule `<name>_2` (the first free number)."""
    s = host.replace(".", "_").replace("-", "_")
    s = "".join(c for c in s if c.isascii() and (c.isalnum() or c == "_"))
    return f"allow_{s}_{port}"


def exclusion(host: str, port: int) -> str | None:
    """Why no rule may be proposed for host:port, or None when one may."""
    if not 0 < port < 65536:
        return f"port {port} is out of range"
    addr = literal_address(host)
    if addr is not None:
        c = classify(addr)
        if c.klass is AddressClass.BLOCKED:
            return f"{host} is always blocked ({c.reason})"
        if c.klass is AddressClass.INTERNAL:
            return f"{host} is internal ({c.reason}); open it with allowed_ips by hand if intended"
        return None
    if is_blocked_hostname(host):
        return f"{host} is a metadata or localhost name"
    if not _HOST_NAME.fullmatch(host) or len(host) > 253:
        return f"{host!r} is not a plain host name"
    return None


def proposable_binary(binary: str) -> bool:
    return (
        binary.startswith("/") and len(binary) <= _MAX_BINARY and not (_GLOB_CHARS & set(binary))
        and not any(ch.isspace() and ch != " " for ch in binary) and "\x00" not in binary
    )


def rule_document(rule_key: str, host: str, port: int, binaries: Iterable[str]) -> dict[str, Any]:
    """The proposed rule as one OpenShell `network_policies` entry."""
    return {rule_key: {
        "name": rule_key,
        "endpoints": [{"host": host, "port": port}],
        "binaries": [{"path": b} for b in binaries],
    }}


def rule_yaml(rule_key: str, host: str, port: int, binaries: Iterable[str]) -> str:
    return yaml.safe_dump(rule_document(rule_key, host, port, binaries), sort_keys=False, default_flow_style=False)


def rationale(host: str, port: int, binaries: Iterable[str], hits: int) -> str:
    names = ", ".join(sorted({os.path.basename(b) for b in binaries})) or "unknown binary"
    label = f" ({WELL_KNOWN_PORTS[port]})" if port in WELL_KNOWN_PORTS else ""
    times = "once" if hits == 1 else f"{hits} times"
    return f"Allow {names} to connect to {host}:{port}{label}. Denied {times} by the policy."


def _build(
    host: str, port: int, binaries: tuple[str, ...], hits: int, first: int, last: int, stage: str
) -> ProposedRule:
    key = rule_name(host, port)
    return ProposedRule(
        rule_key=key, host=host, port=port, binaries=binaries, hit_count=hits, first_seen_ms=first,
        last_seen_ms=last, rationale=rationale(host, port, binaries, hits),
        rule_yaml=rule_yaml(key, host, port, binaries), stage=stage,
    )


def _normal_host(host: str) -> str:
    """Lower case, one trailing dot dropped, IPv6 brackets removed (as the policy compares hosts)."""
    h = host.lower()
    h = h[:-1] if h.endswith(".") else h
    return h[1:-1] if h.startswith("[") and h.endswith("]") else h


def generate_proposals(summaries: Iterable[DenialSummary]) -> list[ProposedRule]:
    """One ProposedRule per proposable host:port, binaries sorted; ordered by hits, then name."""
    groups: dict[tuple[str, int], list[DenialSummary]] = {}
    for s in summaries:
        host = _normal_host(s.host)
        if exclusion(host, s.port) is None and proposable_binary(s.binary):
            groups.setdefault((host, s.port), []).append(s)
    out = [
        _build(
            host, port, tuple(sorted({s.binary for s in group})), sum(s.count for s in group),
            min(s.first_seen_ms for s in group), max(s.last_seen_ms for s in group), group[0].stage,
        )
        for (host, port), group in groups.items()
    ]
    out.sort(key=lambda p: (-p.hit_count, p.rule_key))
    return out


def combine(existing: ProposedRule | Proposal, new: ProposedRule) -> ProposedRule:
    """A pending proposal updated by a later flush: hits added, binaries united, seen-times widened."""
    binaries = tuple(sorted(set(existing.binaries) | set(new.binaries)))
    return _build(
        existing.host, existing.port, binaries, existing.hit_count + new.hit_count,
        min(existing.first_seen_ms, new.first_seen_ms), max(existing.last_seen_ms, new.last_seen_ms),
        existing.stage or new.stage,
    )
