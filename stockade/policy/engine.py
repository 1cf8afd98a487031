"""The L4 decision engine: (host, port, binary, ancestors) -> Decision, in microseconds.

Semantics (policy.md §3.3-§3.5): a connection is allowed when some rule has an endpoint that
matches host:port AND a binary that matches the calling executable or one of its ancestors
(exact path, or a glob when the policy path has a `*`; argv never grants). Rules combine as a
union; a rule with no binaries matches nothing. The matched rule is the smallest map key; the
endpoint configuration that applies (L7, TLS, allowed_ips) is the first endpoint, in (rule key,
endpoint position) order, that matches and has extended config, else the first that matches.
L7 allow rules are the union over every matching endpoint of every matched rule.

Hosts compare case-insensitively and ignore one trailing dot. `binary=None` means the caller's
identity is unavailable (the standalone proxy): binaries are then not checked, but a rule that
lists none still matches nothing (fail closed; the loader warns about such rules).

Everything is indexed when the engine is compiled: listed hosts by port then host (with the
wildcard and hostless endpoints that also match them merged in), wildcard hosts by port then
fixed suffix (a request host probes those of its dot suffixes that have a wildcard's label
count), hostless endpoints by port, and binaries as a set of exact paths plus precompiled
globs. What one index entry matches is a _Found; when its endpoints are one rule's (the norm),
it carries that rule's binaries and the precomputed Match, so the usual decision is a dict
lookup or two and a set lookup. Nothing is compiled per call, and decisions are memoised per
(host, port, binary, ancestors). Denial reasons and hints are only computed when read
(explain.py), so a deny costs no more than an allow.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

from ..records import Struct
from . import explain
from .glob import Glob, path_glob, query_glob
from .hosts import EXACT, MANY_LABELS, HostPattern, normalize_host, parse_host
from .model import Endpoint, Enforcement, L7Allow, NetworkRule, Policy, Protocol
from .target import CanonicalTarget

if TYPE_CHECKING:
    from .l7 import RequestDecision

# Reason codes of a denied Decision (documented contract for events and 403 bodies).
NO_POLICIES = "no_policies"  # network_policies is empty: all egress is denied
NO_ENDPOINT = "no_endpoint"  # no endpoint of any rule matches host:port
BINARY_NOT_ALLOWED = "binary_not_allowed"  # endpoints match, but not for this binary/ancestors
REASON_CODES = (NO_POLICIES, NO_ENDPOINT, BINARY_NOT_ALLOWED)
DEFAULT_CACHE_SIZE = 4096
GLOB_MEMO_SIZE = 1024  # binary paths remembered per rule with globs


class CompiledAllow(Struct, frozen=True, eq=False):
    """One REST allow rule, compiled; `rule` is the network rule key it belongs to."""

    rule: str
    source: L7Allow
    method: str  # upper case, or "*"
    path: Glob
    query: tuple[tuple[str, tuple[Glob, ...]], ...]
    shown: str  # "GET /repos/** ?q=repo:*", the rule as reasons show it
    allow_reason: str  # "allowed by rule 'k': GET /repos/**", built once

    def matches(self, method: str, target: CanonicalTarget) -> bool:
        """`method` must be upper case. HEAD is allowed wherever GET is (OpenShell HEAD)."""
        m = self.method
        if m != "*" and m != method and not (m == "GET" and method == "HEAD"):
            return False
        if not self.path.match(target.path):
            return False
        params = target.params
        for name, globs in self.query:
            values = params.get(name)
            if not values:
                return False
            for value in values:
                for g in globs:
                    if g.match(value):
                        break
                else:
                    return False
        return True

    def describe(self) -> str:
        return self.shown


class Match(Struct, frozen=True, eq=False):
    """What an allowed connection is granted by; precomputed when the engine is compiled."""

    rule: str  # the matched rule key (the smallest one)
    endpoint: Endpoint  # the endpoint configuration that applies
    matched_rules: tuple[str, ...]  # every rule that matched on both counts, key order
    endpoint_rule: str  # the rule the applying endpoint belongs to
    endpoint_index: int  # its position in that rule's endpoints
    l7_rules: tuple[CompiledAllow, ...]  # union over matching endpoints of matched rules


class _Entry(Struct, frozen=True, eq=False):
    """One endpoint of one rule, as stored in the host indexes."""

    order: int  # position in (rule key, endpoint index) order
    rule: int  # index into Engine.rules
    index: int  # the endpoint's position in its rule
    endpoint: Endpoint
    host: HostPattern | None  # None for a hostless endpoint (any host, allowed_ips)
    extended: bool  # has_extended_config, precomputed
    match: Match  # the Match when this entry is the only one that matches
    allows: Callable[[str | None, Sequence[str]], bool]  # its rule's binary check
    label: Callable[[str], object] | None  # a partial first label's glob (`*-ai.`), else None
    deep: bool  # a `**.` wildcard: the prefix may be several labels


class _Found:
    """Endpoints that match a host:port together (a listed host:port, the `*.` wildcards of one
    suffix, ...), in (rule key, endpoint) order. When they are all one rule's, which is the
    norm, its exact binaries, its check and their Match are ready: a decision is then one set
    lookup, not a loop. Not changed after construction; a plain slots class, because unusual
    unions build one per decision."""

    __slots__ = ("entries", "exact", "allows", "match")

    def __init__(self, entries: tuple[_Entry, ...], exact: frozenset[str] = frozenset(),
                 allows: Callable[[str | None, Sequence[str]], bool] | None = None,
                 match: Match | None = None) -> None:
        self.entries = entries
        self.exact = exact
        self.allows = allows
        self.match = match  # None: several rules (or none), decided entry by entry


_NOTHING = _Found(())


class _Suffix(NamedTuple):
    """The wildcards of one port with one fixed suffix (`*.example.com`, `**.example.com`)."""

    entries: tuple[_Entry, ...]
    first: _Found | None  # what matches when the prefix is one label; None: a `*-ai.` decides
    deeper: _Found | None  # what matches when the prefix is several labels (the `**.` ones)


def _union(a: _Found, b: _Found) -> _Found:
    """Endpoints from two indexes, back in (rule key, endpoint) order; decided entry by entry."""
    return _Found(tuple(sorted((*a.entries, *b.entries), key=_ORDER)))


def _labelled(entries: tuple[_Entry, ...], label: str) -> _Found | None:
    """The wildcards of one suffix that match a one-label prefix, some with a label glob."""
    hits = tuple(e for e in entries if e.label is None or e.label(label))
    return _Found(hits) if hits else None


class _Rule(Struct, frozen=True, eq=False):
    key: str
    rule: NetworkRule
    exact: frozenset[str]
    globs: tuple[Glob, ...]
    # path -> whether a glob of this rule matches it. A sandbox runs few distinct binaries, and
    # a policy generation never changes, so each path is matched once (bounded; dict operations
    # are atomic, so the engine stays safe to share between threads).
    glob_memo: dict[str, bool] | None

    def allows(self, binary: str | None, ancestors: Sequence[str]) -> bool:
        if not self.exact and not self.globs:
            return False
        if binary is None:
            return True
        exact = self.exact
        if binary in exact:
            return True
        for a in ancestors:
            if a in exact:
                return True
        if self.globs:
            if self.glob_memo is None:
                return self._glob_match(binary) or any(self._glob_match(a) for a in ancestors)
            if self._memo_match(binary):
                return True
            for a in ancestors:
                if self._memo_match(a):
                    return True
        return False

    def _glob_match(self, path: str) -> bool:
        for g in self.globs:
            if g.match(path):
                return True
        return False

    def _memo_match(self, path: str) -> bool:
        memo = self.glob_memo
        hit = memo.get(path)  # type: ignore[union-attr]
        if hit is None:
            hit = self._glob_match(path)
            if len(memo) >= GLOB_MEMO_SIZE:  # type: ignore[arg-type]
                memo.clear()  # type: ignore[union-attr]
            memo[path] = hit  # type: ignore[index]
        return hit


class Decision(Struct, frozen=True):
    """The answer for one connection. `reason` and `hint` are computed on first read.

    `rule`, `endpoint`, `matched_rules`, `endpoint_rule`, `endpoint_index` and `l7_rules` read
    through `match` (None when denied), which the engine precomputes.
    """

    allowed: bool
    reason_code: str | None  # one of REASON_CODES when denied, None when allowed
    host: str  # normalised: lower case, no trailing dot, IPv6 without brackets
    port: int
    binary: str | None
    ancestors: tuple[str, ...]
    match: Match | None = None
    engine: Engine | None = None  # for reason and hint; Engine's repr is short

    @property
    def rule(self) -> str | None:
        """The matched rule key (the smallest), None when denied."""
        return self.match.rule if self.match is not None else None

    @property
    def endpoint(self) -> Endpoint | None:
        """The endpoint configuration that applies (L7, TLS, allowed_ips), None when denied."""
        return self.match.endpoint if self.match is not None else None

    @property
    def matched_rules(self) -> tuple[str, ...]:
        return self.match.matched_rules if self.match is not None else ()

    @property
    def endpoint_rule(self) -> str | None:
        return self.match.endpoint_rule if self.match is not None else None

    @property
    def endpoint_index(self) -> int | None:
        return self.match.endpoint_index if self.match is not None else None

    @property
    def l7_rules(self) -> tuple[CompiledAllow, ...]:
        return self.match.l7_rules if self.match is not None else ()

    @property
    def l7_enabled(self) -> bool:
        """Whether requests on this connection are checked against REST rules."""
        return self.match is not None and self.match.endpoint.protocol is Protocol.REST

    @property
    def enforcement(self) -> Enforcement | None:
        return self.match.endpoint.enforcement if self.match is not None else None

    @property
    def reason(self) -> str:
        """One precise sentence: why allowed, or which condition failed."""
        return explain.decision_reason(self)

    @property
    def hint(self) -> str | None:
        """The smallest YAML change that would allow a denied connection (None if allowed)."""
        return explain.decision_hint(self)

    def check_request(self, method: str, target: str | bytes) -> RequestDecision:
        from .l7 import check_request
        return check_request(self, method, target)


class Engine:
    """A compiled policy. Immutable after construction (its caches only memoise); safe to share
    between threads."""

    def __repr__(self) -> str:  # a Decision's repr shows its engine
        return f"Engine({self.policy.source!r}, {len(self.rules)} rules)"

    def __init__(self, policy: Policy, *, cache_size: int = DEFAULT_CACHE_SIZE, binary_memo: bool = True) -> None:
        self.policy = policy
        keys = sorted(policy.network_policies)
        self.rules: tuple[_Rule, ...] = tuple(_compile_rule(policy.network_policies[k], binary_memo)
                                                for k in keys)
        self.entries: list[_Entry] = []
        self._matches: dict[tuple[int, ...], Match] = {}  # combinations of passed entries
        exact: dict[int, dict[str, list[_Entry]]] = {}
        wild: dict[int, dict[str, list[_Entry]]] = {}
        hostless: dict[int, list[_Entry]] = {}
        for ri, rule in enumerate(self.rules):
            for ei, ep in enumerate(rule.rule.endpoints):
                pattern = parse_host(ep.host) if ep.host else None
                l7 = _compile_l7(rule.key, ep)
                match = Match(rule.key, ep, (rule.key,), rule.key, ei, l7)
                entry = _Entry(len(self.entries), ri, ei, ep, pattern, ep.has_extended_config, match,
                               rule.allows, pattern and pattern.label,
                               pattern is not None and pattern.kind == MANY_LABELS)
                self.entries.append(entry)
                for port in ep.ports:
                    if pattern is None:
                        hostless.setdefault(port, []).append(entry)
                    elif pattern.kind == EXACT:
                        exact.setdefault(port, {}).setdefault(pattern.pattern, []).append(entry)
                    else:
                        wild.setdefault(port, {}).setdefault(pattern.suffix[1:], []).append(entry)
        # port -> ({fixed suffix, without its leading dot: _Suffix}, fewest labels of a suffix,
        # most): the suffixes of a request host outside that range are not looked up (a TLD
        # never is: `*.com` is refused)
        self._wild = {port: ({sfx: self._suffix(v) for sfx, v in by_sfx.items()},
                             min(s.count(".") + 1 for s in by_sfx),
                             max(s.count(".") + 1 for s in by_sfx))
                      for port, by_sfx in wild.items()}
        self._hostless = {port: self._found(v) for port, v in hostless.items()}
        # port -> listed host -> what matches it, the wildcard and hostless endpoints that also
        # match it merged in once, here. Port first: the few outer dicts stay in cache, and a
        # listed host costs one dict probe.
        self._listed = {p: {host: self._found(sorted((*v, *self._probe(host, p).entries), key=_ORDER))
                            for host, v in by_host.items()}
                        for p, by_host in exact.items()}
        self._cache: dict[tuple[str, int, str | None, tuple[str, ...]], Decision] = {}
        self._cache_size = cache_size

    def _found(self, entries: Sequence[_Entry]) -> _Found:
        """Endpoints (in order) that always match together; one rule's get their Match now."""
        if not all(e.rule == entries[0].rule for e in entries):
            return _Found(tuple(entries))
        rule = self.rules[entries[0].rule]
        if len(entries) == 1:
            return _Found(tuple(entries), rule.exact, rule.allows, entries[0].match)
        combo = tuple(e.order for e in entries)
        match = self._matches.setdefault(combo, self._combine(list(entries)))
        return _Found(tuple(entries), rule.exact, rule.allows, match)

    def _suffix(self, entries: list[_Entry]) -> _Suffix:
        first = None if any(e.label is not None for e in entries) else self._found(entries)
        deep = [e for e in entries if e.deep]
        if len(deep) == len(entries):  # all `**.`: the same endpoints match at any depth
            return _Suffix(tuple(entries), first, first)
        return _Suffix(tuple(entries), first, self._found(deep) if deep else None)

    def candidates(self, host: str, port: int) -> tuple[_Entry, ...]:
        """Every endpoint matching normalised host:port, in (rule key, endpoint) order."""
        hosts = self._listed.get(port)
        found = hosts.get(host) if hosts is not None else None
        return (found if found is not None else self._probe(host, port)).entries

    def _probe(self, host: str, port: int) -> _Found:
        """The wildcard and hostless endpoints matching host:port."""
        found = None
        wild = self._wild.get(port)
        if wild is not None:
            by_suffix, fewest, most = wild
            label, dot, rest = host.partition(".")
            n = rest.count(".") + 1  # labels in rest, a possible fixed suffix of a wildcard
            if label and dot:
                sfx = by_suffix.get(rest) if n <= most else None
                if sfx is not None:  # the prefix is one label: `*.` and `**.` match, `*-ai.` may
                    found = sfx.first or _labelled(sfx.entries, label)
                while n > fewest:  # the prefix is several labels: `**.` matches if none is empty
                    label, _, rest = rest.partition(".")
                    n -= 1
                    if not label:
                        break
                    sfx = by_suffix.get(rest) if n <= most else None
                    if sfx is not None and sfx.deeper is not None:
                        found = sfx.deeper if found is None else _union(found, sfx.deeper)
        hostless = self._hostless.get(port)
        if hostless is not None:
            found = hostless if found is None else _union(found, hostless)
        return _NOTHING if found is None else found

    def decide(self, host: str, port: int, binary: str | None,
               ancestors: Sequence[str] = ()) -> Decision:
        """Allow or deny one connection (module docstring). The memo wraps the decision here,
        not in a second method: a Python call is a sixth of an uncached decision."""
        if type(ancestors) is not tuple:
            ancestors = tuple(ancestors)
        if self._cache_size:
            key = (host, port, binary, ancestors)
            decision = self._cache.get(key)  # type: ignore[arg-type]
            if decision is not None:
                return decision
        hosts = self._listed.get(port)  # candidates(), inlined
        found = hosts.get(host) if hosts is not None else None
        h = host  # a listed host is normalised already: equal to a normalised key
        if found is None:  # str.lower() is 3x faster than str.islower(), and [-1:] than endswith()
            h = host.lower()
            if h[-1:] == "." or ":" in h:
                h = normalize_host(h)
            if h != host and hosts is not None:
                found = hosts.get(h)
            if found is None:
                found = self._probe(h, port)
        # The norm: the endpoints are one rule's, and its binaries decide (a set lookup first)
        match = found.match
        if match is None:  # no endpoint, or several rules': decided entry by entry
            decision = self._decide_many(found.entries, h, port, binary, ancestors)
        elif binary in found.exact or found.allows(binary, ancestors):  # type: ignore[misc]
            decision = Decision(True, None, h, port, binary, ancestors, match, self)
        else:
            decision = Decision(False, BINARY_NOT_ALLOWED, h, port, binary, ancestors, None, self)
        if self._cache_size:
            if len(self._cache) >= self._cache_size:
                self._cache.clear()  # crude but bounded; an agent's working set is small
            self._cache[key] = decision  # type: ignore[index]
        return decision

    def _decide_many(self, found: tuple[_Entry, ...], h: str, port: int, binary: str | None,
                     ancestors: Sequence[str]) -> Decision:
        """Zero endpoints, or several rules' match: union of the rules whose binaries match."""
        if not found:
            reason = NO_ENDPOINT if self.rules else NO_POLICIES
            return Decision(False, reason, h, port, binary, ancestors, None, self)
        verdict: dict[int, bool] = {}
        passed: list[_Entry] = []
        for e in found:
            ok = verdict.get(e.rule)
            if ok is None:
                ok = verdict[e.rule] = e.allows(binary, ancestors)
            if ok:
                passed.append(e)
        if not passed:
            return Decision(False, BINARY_NOT_ALLOWED, h, port, binary, ancestors, None, self)
        if len(passed) == 1:
            return Decision(True, None, h, port, binary, ancestors, passed[0].match, self)
        combo = tuple(e.order for e in passed)
        match = self._matches.get(combo)
        if match is None:
            match = self._matches.setdefault(combo, self._combine(passed))
        return Decision(True, None, h, port, binary, ancestors, match, self)

    def _combine(self, passed: list[_Entry]) -> Match:
        config = next((e for e in passed if e.extended), passed[0])
        matched = tuple(dict.fromkeys(self.rules[e.rule].key for e in passed))
        l7 = tuple(a for e in passed for a in e.match.l7_rules)
        return Match(matched[0], config.endpoint, matched, self.rules[config.rule].key,
                     config.index, l7)


def compile_policy(policy: Policy, *, cache_size: int = DEFAULT_CACHE_SIZE, binary_memo: bool = True) -> Engine:
    """Build the decision engine for a validated policy (once per policy generation).

    Decisions are memoised per (host, port, binary, ancestors) up to `cache_size` entries
    (0 disables it): an agent reconnects to the same few destinations all the time. With
    `binary_memo`, each rule also remembers which binary paths its globs match (_Rule)."""
    return Engine(policy, cache_size=cache_size, binary_memo=binary_memo)


def _compile_rule(rule: NetworkRule, memo: bool) -> _Rule:
    exact = frozenset(b.path for b in rule.binaries if "*" not in b.path)
    globs = tuple(path_glob(b.path) for b in rule.binaries if "*" in b.path)
    return _Rule(rule.key, rule, exact, globs, {} if memo and globs else None)


def _compile_l7(key: str, ep: Endpoint) -> tuple[CompiledAllow, ...]:
    if ep.protocol is not Protocol.REST:
        return ()
    compiled = []
    for allow in ep.rules:
        if allow.method is None or allow.path is None:
            continue  # matches no REST request (OpenShell); the loader refuses such rules
        query = tuple((name, tuple(query_glob(g) for g in m.globs))
                      for name, m in sorted(allow.query.items()))
        method = allow.method.upper()
        shown = f"{method} {allow.path}" + (" ?" + "&".join(
            f"{k}={'|'.join(g.pattern for g in gs)}" for k, gs in query) if query else "")
        compiled.append(CompiledAllow(key, allow, method, path_glob(allow.path), query, shown,
                                      f"allowed by rule '{key}': {shown}"))
    return tuple(compiled)


_ORDER = operator.attrgetter("order")
