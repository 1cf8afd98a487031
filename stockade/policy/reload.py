"""Hot-reload helpers (sans-IO), used by the control socket: what a new policy would change in
the static sections, and how an approved rule proposal merges into the live policy.

Only `network_policies` can change on a running sandbox (policy.md §2): the filesystem,
Landlock and process sections are applied once when the sandbox starts (Landlock is one-way).
`static_differences` lists every difference in those sections, additions included, because
even an added read-only path would not take effect until a restart; the caller decides whether
to refuse the reload or to report that a restart is needed.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from types import MappingProxyType

from ..network.addresses import blocked_overlap, is_blocked_hostname, literal_address
from .canonical import dump_policy
from .diagnostics import Diagnostic, PolicyError
from .hosts import normalize_host
from .loader import load_policy_text
from .model import Binary, Endpoint, NetworkRule, Policy, Protocol


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


def merge_rule(policy: Policy, rule: NetworkRule) -> Policy:
    """Approve a proposed rule (policy.md §5.4) and return the new, validated policy.

    The merge target is the rule with the same key, else the first rule (in key order) with an
    endpoint on the same host and port. Into the target: missing binaries are added; each
    proposed endpoint either unions its allowed_ips into an existing endpoint with the same host
    that covers its ports, or is appended. Without a target the rule is inserted under its key.

    Better than OpenShell: when both the existing and the proposed endpoint are REST endpoints,
    the proposed allow rules are added too (OpenShell drops them, so approving an L7 proposal
    changed nothing); an `access` preset is then written out as the equivalent rules. An L7
    proposal never narrows an existing L4-only endpoint.

    Raises PolicyError when the proposal targets an always-blocked destination or the merged
    policy does not validate (the result goes through the same loader as a file).
    """
    _refuse_blocked(rule)
    rules = dict(policy.network_policies)
    target = rule.key if rule.key in rules else _rule_with_same_endpoint(policy, rule)
    if target is None:
        rules[rule.key] = rule
    else:
        rules[target] = _merge_into(rules[target], rule)
    merged = dataclasses.replace(policy, network_policies=MappingProxyType(rules))
    return load_policy_text(dump_policy(merged), policy.source)


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


def _same_endpoint(a: Endpoint, b: Endpoint) -> bool:
    """Same host (case-insensitively) and every port of `b` covered by `a`."""
    return normalize_host(a.host) == normalize_host(b.host) and set(b.ports) <= set(a.ports)


def _rule_with_same_endpoint(policy: Policy, rule: NetworkRule) -> str | None:
    for key in sorted(policy.network_policies):
        existing = policy.network_policies[key]
        for ep in existing.endpoints:
            if any(normalize_host(ep.host) == normalize_host(p.host) and set(ep.ports) & set(p.ports)
                   for p in rule.endpoints):
                return key
    return None


def _merge_into(existing: NetworkRule, proposal: NetworkRule) -> NetworkRule:
    binaries = list(existing.binaries)
    binaries += [b for b in proposal.binaries if b not in binaries]
    endpoints = list(existing.endpoints)
    for proposed in proposal.endpoints:
        for i, ep in enumerate(endpoints):
            if _same_endpoint(ep, proposed):
                endpoints[i] = _merge_endpoint(ep, proposed)
                break
        else:
            endpoints.append(proposed)
    return dataclasses.replace(existing, endpoints=tuple(endpoints),
                               binaries=tuple(Binary(b.path) for b in binaries))


def _merge_endpoint(ep: Endpoint, proposed: Endpoint) -> Endpoint:
    ips = ep.allowed_ips + tuple(n for n in proposed.allowed_ips if n not in ep.allowed_ips)
    rules, access = ep.rules, ep.access
    if ep.protocol is Protocol.REST and proposed.protocol is Protocol.REST:
        added = tuple(r for r in proposed.rules if r not in ep.rules)
        if added:
            rules, access = ep.rules + added, None
    return dataclasses.replace(ep, allowed_ips=ips, rules=rules, access=access)
