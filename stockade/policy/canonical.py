"""Serialising a Policy: readable YAML that loads back to an equal Policy, and a canonical JSON
form with a stable SHA-256.

`dump_policy` keeps the policy's own order and spelling where the model remembers it (an
`access` preset stays a preset, `enforcement` is written only when it was explicit, one port is
written `port: N`), so a dumped policy reads like a hand-written one.

The canonical form is what the hash covers. It describes behaviour, not spelling:
- every mapping has sorted keys (JSON `sort_keys`), so the order of rules, keys and query
  parameters in the YAML does not matter (OpenShell's hash depended on HashMap order there);
- ports are a sorted list whether written `port: 443` or `ports: [443]`;
- `access` presets appear expanded into their rules, so `access: read-only` and the three
  equivalent explicit rules hash the same;
- `name` is always present (the key when the YAML omits it); `enforcement` appears only on
  L7 endpoints, with its effective value (absent = audit);
- lists with set semantics (binaries, allowed_ips, filesystem paths, L7 rules, query globs)
  are sorted and deduplicated; endpoints keep their order, because the first matching endpoint
  with extended config decides L7 and allowed_ips.
The hash is SHA-256 over a version tag and the canonical JSON encoded as UTF-8.
"""

from __future__ import annotations

import json
from typing import Any

try:  # the interpreter's own SHA-256, hashlib's fallback: the same digest without OpenSSL
    from _sha256 import sha256 as _sha256  # Python 3.11
except ImportError:  # pragma: no cover - 3.12 renamed it; any other build: hashlib's
    try:
        from _sha2 import sha256 as _sha256  # type: ignore[no-redef]
    except ImportError:
        from hashlib import sha256 as _sha256  # type: ignore[assignment]

from .model import Endpoint, Enforcement, L7Allow, NetworkRule, Policy, Protocol, Tls

CANONICAL_TAG = b"stockade-policy-canonical-v1\n"


def policy_to_data(policy: Policy) -> dict[str, Any]:
    """The policy as plain data in OpenShell's YAML shape (what dump_policy writes)."""
    data: dict[str, Any] = {"version": policy.version}
    fs = policy.filesystem
    if fs is not None:
        section: dict[str, Any] = {"include_workdir": fs.include_workdir}
        if fs.read_only:
            section["read_only"] = list(fs.read_only)
        if fs.read_write:
            section["read_write"] = list(fs.read_write)
        data["filesystem_policy"] = section
    if policy.landlock is not None:
        data["landlock"] = {"compatibility": policy.landlock.compatibility.value}
    if policy.process is not None:
        proc: dict[str, Any] = {}
        if policy.process.run_as_user is not None:
            proc["run_as_user"] = policy.process.run_as_user
        if policy.process.run_as_group is not None:
            proc["run_as_group"] = policy.process.run_as_group
        if policy.process.seccomp_allow:
            proc["seccomp"] = {"allow": sorted(policy.process.seccomp_allow)}
        data["process"] = proc
    data["network_policies"] = {k: _rule(r) for k, r in policy.network_policies.items()}
    return data


def _rule(rule: NetworkRule) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if rule.name and rule.name != rule.key:
        out["name"] = rule.name
    out["endpoints"] = [_endpoint(e) for e in rule.endpoints]
    out["binaries"] = [{"path": b.path} for b in rule.binaries]
    return out


def _endpoint(ep: Endpoint) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if ep.host:
        out["host"] = ep.host
    if len(ep.ports) == 1:
        out["port"] = ep.ports[0]
    else:
        out["ports"] = list(ep.ports)
    if ep.protocol is not None:
        out["protocol"] = ep.protocol.value
    if ep.tls is Tls.SKIP:
        out["tls"] = "skip"
    if ep.enforcement_explicit or ep.enforcement is not Enforcement.AUDIT:
        out["enforcement"] = ep.enforcement.value
    if ep.access is not None:
        out["access"] = ep.access.value
    elif ep.rules:
        out["rules"] = [{"allow": _allow(a)} for a in ep.rules]
    if ep.allowed_ips:
        out["allowed_ips"] = [str(n) for n in ep.allowed_ips]
    return out


def _allow(allow: L7Allow) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if allow.method is not None:
        out["method"] = allow.method
    if allow.path is not None:
        out["path"] = allow.path
    if allow.command is not None:
        out["command"] = allow.command
    if allow.query:
        out["query"] = {k: m.globs[0] if len(m.globs) == 1 else {"any": list(m.globs)}
                        for k, m in allow.query.items()}
    return out


def dump_policy(policy: Policy) -> str:
    """YAML that loads back (load_policy_text) to a Policy equal to `policy`."""
    import yaml  # here, not at the top: hashing a policy (every run) needs no YAML

    return yaml.safe_dump(policy_to_data(policy), sort_keys=False, default_flow_style=False,
                          allow_unicode=True, width=100)


# -- canonical form ------------------------------------------------------------------------------

def canonical_data(policy: Policy) -> dict[str, Any]:
    """The behaviour-describing form the hash covers (module docstring)."""
    fs = policy.filesystem
    proc = policy.process
    return {
        "version": policy.version,
        "filesystem_policy": None if fs is None else {
            "include_workdir": fs.include_workdir,
            "read_only": sorted(set(fs.read_only)), "read_write": sorted(set(fs.read_write))},
        "landlock": None if policy.landlock is None else {
            "compatibility": policy.landlock.compatibility.value},
        "process": None if proc is None else {
            "run_as_user": proc.run_as_user, "run_as_group": proc.run_as_group,
            "seccomp_allow": sorted(proc.seccomp_allow)},
        "network_policies": {k: {
            "name": r.name or k,
            "endpoints": [_canonical_endpoint(e) for e in r.endpoints],
            "binaries": sorted({b.path for b in r.binaries}),
        } for k, r in policy.network_policies.items()},
    }


def _canonical_endpoint(ep: Endpoint) -> dict[str, Any]:
    out: dict[str, Any] = {
        "host": ep.host, "ports": sorted(set(ep.ports)),
        "protocol": ep.protocol.value if ep.protocol else None, "tls": ep.tls.value,
        "allowed_ips": sorted({str(n) for n in ep.allowed_ips}),
    }
    if ep.protocol is not None:
        out["enforcement"] = ep.enforcement.value
        rules = {_json(_canonical_allow(a, ep.protocol)) for a in ep.rules}
        out["rules"] = [json.loads(r) for r in sorted(rules)]
    return out


def _canonical_allow(allow: L7Allow, protocol: Protocol) -> dict[str, Any]:
    if protocol is Protocol.SQL:
        return {"command": (allow.command or "").upper()}
    return {
        "method": (allow.method or "").upper(), "path": allow.path,
        "query": {k: sorted(set(m.globs)) for k, m in allow.query.items()},
    }


def _json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(policy: Policy) -> str:
    """The canonical form as compact JSON with sorted keys."""
    return _json(canonical_data(policy))


def policy_sha256(policy: Policy) -> str:
    """Lower-case hex SHA-256 of the canonical form; stable across map order and spelling.

    Not through hashlib, whose import loads OpenSSL's libcrypto (~4 ms holding the GIL): every
    `stockade run` hashes its policy (a few KB) while its command starts."""
    return _sha256(CANONICAL_TAG + canonical_json(policy).encode("utf-8")).hexdigest()
