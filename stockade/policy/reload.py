"""Hot-reload helpers (sans-IO), used by the control socket: what a new policy would change in
the static sections, and how an approved rule proposal merges into the live policy.

Only `network_policies` can change on a running sandbox (policy.md §2): the filesystem,
Landlock and process sections are applied once when the sandbox starts (Landlock is one-way).
`static_differences` lists every difference in those sections, additions included, because
even an added read-only path would not take effect until a restart; the caller decides whether
to refuse the reload or to report that a restart is needed.
"""

from __future__ import annotations

import ipaddress
from types import MappingProxyType

from ..records import replace

from ..network.addresses import blocked_overlap, is_blocked_hostname, literal_address
from ..records import Struct
from .canonical import dump_policy
from .diagnostics import Diagnostic, PolicyError
from .hosts import normalize_host
from .loader import load_policy_text
from .model import Binary, Endpoint, NetworkRule, Policy


def static_differences(old: Policy, new: Policy) -> list[str]:
    """Human-readable differences in filesystem_policy, landlock and process (empty when only
    network_policies differ)."""
    diffs: list[str] = []
    a, b = old.filesystem, new.filesystem
    if a is None and b is not None:
        diffs.append("filesystem_policy added")
    elif a is not None and b is None:
        diffs.append("filesystem_policy removed")
    elif a is not None and b is not None:
        if a.include_workdir != b.include_workdir:
            diffs.append(f"filesystem_policy.include_workdir changed from "
                         f"{str(a.include_workdir).lower()} to {str(b.include_workdir).lower()}")
        for key in ("read_only", "read_write"):
            before, after = getattr(a, key), getattr(b, key)
            diffs += [f"filesystem_policy.{key}: '{p}' removed" for p in before if p not in after]
            diffs += [f"filesystem_policy.{key}: '{p}' added" for p in after if p not in before]
    if old.landlock != new.landlock:
        diffs.append(f"landlock changed from {_landlock(old)} to {_landlock(new)}")
    pa, pb = old.process, new.process
    if pa != pb:
        if pa is None or pb is None:
            diffs.append("process section " + ("added" if pa is None else "removed"))
        else:
            for field in ("run_as_user", "run_as_group"):
                x, y = getattr(pa, field), getattr(pb, field)
                if x != y:
                    diffs.append(f"process.{field} changed from {x or '(unset)'} to {y or '(unset)'}")
            if pa.seccomp_allow != pb.seccomp_allow:
                diffs.append(f"process.seccomp.allow changed from {sorted(pa.seccomp_allow)} to "
                             f"{sorted(pb.seccomp_allow)}")
    return diffs


def _landlock(p: Policy) -> str:
    return "(absent)" if p.landlock is None else f"compatibility {p.landlock.compatibility.value}"


class Merge(Struct, frozen=True):
    """What approving a proposed rule did: the new policy, the key the rule now lives under, and
    how (`added`: a new rule under the proposal's key; `merged`: its binaries were added to the
    existing rule `key`, which has exactly the proposal's endpoints; `renamed`: a new rule under
    `key` because the proposal's own key names a rule for something else; `covered`: nothing
    changed, every proposed binary already has more there, by rule `key`)."""

    policy: Policy
    key: str
    how: str


def merge_proposed_rule(policy: Policy, rule: NetworkRule) -> Merge:
    """Approve a proposed rule (policy.md §5.4): the result grants exactly the proposal's
    endpoints to exactly its binaries, on top of what the policy already granted, never more.

    Rules combine as a union in the engine, and a rule grants each of its binaries each of its
    endpoints. So adding binaries to an existing rule is exact only when that rule's endpoints
    are exactly the proposal's (same hosts, same ports, same L7/TLS/allowed_ips settings):
    then it is the merge target (the rule with the proposal's key first, else the first such
    rule in key order) and gains the missing binaries. Anything else (a rule with more
    endpoints, another host that maps to the same `allow_<host>_<port>` key such as
    `api-github.com` and `api.github.com`, an endpoint with other settings) is left untouched,
    and the proposal becomes a new rule under its key, or under `<key>_2`, `<key>_3`, ... (the
    first free one) when the key is taken. Unlike OpenShell, nothing is ever unioned into an
    existing endpoint (its allowed_ips or L7 rules would then apply to the rule's other
    binaries too); a new rule for the same host:port carries them instead, and the engine
    takes the union of L7 rules over every matching rule.

    An L7 proposal never narrows: the engine applies the first matching endpoint with L7
    settings, so an L7 proposal leaves out the binaries that already reach one of its
    host:ports at plain L4 (they have more than was proposed); when that is all of them,
    nothing changes (`covered`, with the rule that already grants it as `key`).

    Raises PolicyError when the proposal targets an always-blocked destination or the merged
    policy does not validate (the result goes through the same loader as a file).
    """
    _refuse_blocked(rule)
    rules = dict(policy.network_policies)
    wider = _plain_l4_grants(policy, rule)
    if wider:
        rule = replace(rule, binaries=tuple(b for b in rule.binaries if b.path not in wider))
        if not rule.binaries:  # every binary already has more than was proposed
            return Merge(policy, next(iter(wider.values())), "covered")
    target = _identical_rule(policy, rule)
    if target is not None:
        rules[target] = _add_binaries(rules[target], rule)
        key, how = target, "merged"
    else:
        key, how = rule.key, "added"
        if key in rules:
            n = 2
            while f"{rule.key}_{n}" in rules:
                n += 1
            key, how = f"{rule.key}_{n}", "renamed"
        name = key if rule.name == rule.key else rule.name
        rules[key] = replace(rule, key=key, name=name)
    merged = replace(policy, network_policies=MappingProxyType(rules))
    return Merge(load_policy_text(dump_policy(merged), policy.source), key, how)


def _refuse_blocked(rule: NetworkRule) -> None:
    problems = []
    for ep in rule.endpoints:
        address = literal_address(ep.host) if ep.host else None
        if is_blocked_hostname(ep.host) or (address is not None and blocked_overlap(
                ipaddress.ip_network(address)) is not None):
            problems.append(f"host '{ep.host}' is always blocked")
        problems += [f"allowed_ips entry {n} overlaps an always-blocked range"
                     for n in ep.allowed_ips if blocked_overlap(n) is not None]
    if problems:
        raise PolicyError([Diagnostic("error", f"proposed rule '{rule.key}': {p}", "<proposal>",
                                      0, 0) for p in problems])


def _endpoint_meaning(ep: Endpoint) -> Endpoint:
    """An endpoint with its spelling normalised: equal meanings compare equal."""
    return replace(ep, host=normalize_host(ep.host), ports=tuple(sorted(set(ep.ports))),
                               enforcement_explicit=False, allowed_ips=tuple(sorted(set(ep.allowed_ips), key=str)))


def _same_endpoints(a: NetworkRule, b: NetworkRule) -> bool:
    """True when rules `a` and `b` grant exactly the same endpoints (order and spelling aside)."""
    ea = [_endpoint_meaning(e) for e in a.endpoints]  # lists: L7 query maps are not hashable
    eb = [_endpoint_meaning(e) for e in b.endpoints]
    return bool(ea) and all(e in eb for e in ea) and all(e in ea for e in eb)


def _plain_l4_grants(policy: Policy, rule: NetworkRule) -> dict[str, str]:
    """{binary: rule key} for each of the proposal's binaries that the policy already lets
    reach one of the proposal's host:ports without L7 inspection, when the proposal has L7
    rules (a proposal without them never narrows anything)."""
    if not any(ep.protocol is not None for ep in rule.endpoints):
        return {}
    from .engine import compile_policy

    engine = compile_policy(policy)
    out: dict[str, str] = {}
    for b in rule.binaries:
        for ep in rule.endpoints:
            for port in ep.ports if ep.host and "*" not in ep.host else ():
                d = engine.decide(ep.host, port, b.path)
                if d.allowed and d.match is not None and d.match.endpoint.protocol is None:
                    out.setdefault(b.path, d.match.rule)
    return out


def _identical_rule(policy: Policy, rule: NetworkRule) -> str | None:
    """The rule that the proposal's binaries can join exactly: the proposal's key, else the
    first key whose rule has exactly the proposal's endpoints."""
    existing = policy.network_policies.get(rule.key)
    if existing is not None and _same_endpoints(existing, rule):
        return rule.key
    return next((k for k in sorted(policy.network_policies)
                 if _same_endpoints(policy.network_policies[k], rule)), None)


def _add_binaries(existing: NetworkRule, proposal: NetworkRule) -> NetworkRule:
    binaries = list(existing.binaries)
    binaries += [b for b in proposal.binaries if b not in binaries]
    return replace(existing, binaries=tuple(Binary(b.path) for b in binaries))
