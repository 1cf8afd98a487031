"""Human explanations of decisions: the precise reason, and the smallest YAML change that would
allow a denied connection or request. Used by `stockade policy explain` and by the proxy's 403
bodies (`Decision.reason`, `Decision.hint`, `RequestDecision.hint`).

Computed only when read, so the decision path pays nothing for them.
"""

from __future__ import annotations

import functools
import json
import os
import re
from typing import TYPE_CHECKING, Any

import yaml

from ..network.addresses import AddressClass, classify, literal_address
from .hosts import EXACT, ONE_LABEL
from .model import ACCESS_METHODS, Access

if TYPE_CHECKING:
    from .engine import Decision, Engine
    from .l7 import RequestDecision

MAX_NEAR_MISSES = 3
_PLAIN = re.compile(r"[A-Za-z0-9/_.][A-Za-z0-9/_.:@+-]*")


# -- reasons -------------------------------------------------------------------------------------

def decision_reason(d: Decision) -> str:
    target = f"{d.host}:{d.port}"
    if d.allowed:
        return f"{target} allowed by rule '{d.rule}' ({_who_matched(d)})"
    if d.reason_code == "no_policies":
        return "network connections not allowed by policy (network_policies is empty)"
    engine = d.engine
    if d.reason_code == "no_endpoint":
        text = f"no rule has an endpoint matching {target}"
        misses = _near_misses(engine, d.host, d.port) if engine else []
        return text + ("; " + "; ".join(misses) if misses else "")
    # binary_not_allowed: endpoints match, binaries do not.
    entries = engine.candidates(d.host, d.port) if engine else ()
    keys = list(dict.fromkeys(engine.rules[e.rule].key for e in entries)) if engine else []
    empty = [k for k in keys if not engine.rules[_rule_index(engine, k)].rule.binaries]
    listed = [k for k in keys if k not in empty]
    parts = []
    if listed:
        who = f"binary '{d.binary}'" + (f" (ancestors: {' -> '.join(d.ancestors)})"
                                         if d.ancestors else " (no ancestors)")
        parts.append(f"{target} matches rule{'s' * (len(listed) > 1)} "
                     f"{', '.join(repr(k) for k in listed)}, but {who} is not listed there")
    if empty:
        parts.append(f"rule{'s' * (len(empty) > 1)} {', '.join(repr(k) for k in empty)} "
                     f"list{'s' * (len(empty) == 1)} no binaries, so never match{'es' * (len(empty) == 1)}")
    hint = _symlink_hint(engine, listed, d) if engine else None
    return "; ".join(parts) + (f". {hint}" if hint else "")


def _who_matched(d: Decision) -> str:
    if d.binary is None:
        return "caller identity unavailable: binaries not checked"
    rule = d.engine.rules[_rule_index(d.engine, d.rule)] if d.engine and d.rule else None
    if rule is None:
        return f"binary '{d.binary}'"
    for who, path in [("binary", d.binary)] + [("ancestor", a) for a in d.ancestors]:
        if path in rule.exact:
            return f"lists {who} '{path}'"
        for g in rule.globs:
            if g.match(path):
                return f"{who} '{path}' matches '{g.pattern}'"
    return f"binary '{d.binary}'"


def _rule_index(engine: Engine, key: str) -> int:
    for i, r in enumerate(engine.rules):
        if r.key == key:
            return i
    raise KeyError(key)


def _near_misses(engine: Engine, host: str, port: int) -> list[str]:
    """Endpoints that almost match: right host on other ports, a `*.` one label too shallow."""
    misses: list[str] = []
    for e in engine.entries:
        key, pattern, ports = engine.rules[e.rule].key, e.host, e.endpoint.ports
        shown = ", ".join(map(str, ports))
        if pattern is None:
            continue
        if pattern.match(host) and port not in ports:
            misses.append(f"rule '{key}' allows {pattern.pattern} on port{'s' * (len(ports) > 1)} "
                          f"{shown}, not {port}")
        elif (pattern.kind == ONE_LABEL and port in ports and host.endswith(pattern.suffix)
              and "." in host[: -len(pattern.suffix)]):
            misses.append(f"'{pattern.pattern}' in rule '{key}' matches exactly one label; "
                          f"'**{pattern.suffix}' would match {host}")
        if len(misses) == MAX_NEAR_MISSES:
            break
    return misses


def _symlink_hint(engine: Engine, keys: list[str], d: Decision) -> str | None:
    """OpenShell's SYMLINK HINT: a listed path that is probably a symlink to the caller."""
    callers = [p for p in [d.binary, *d.ancestors] if p]
    for key in keys:
        for listed in sorted(engine.rules[_rule_index(engine, key)].exact):
            for caller in callers:
                lb, cb = os.path.basename(listed), os.path.basename(caller)
                related = (lb != cb and (cb.startswith(lb) or lb.startswith(cb))) or \
                    (lb == cb and listed != caller)
                if related:
                    return (f"SYMLINK HINT: rule '{key}' lists '{listed}', which may be a symlink; "
                            f"the kernel reports the resolved executable '{caller}'. List the "
                            f"output of `readlink -f {listed}` in the policy")
    return ("SYMLINK HINT: binaries are matched by the resolved executable path; if the policy "
            "names a symlink, list the output of `readlink -f` for it instead")


# -- hints ---------------------------------------------------------------------------------------

def decision_hint(d: Decision) -> str | None:
    if d.allowed:
        return None
    engine = d.engine
    if d.reason_code == "binary_not_allowed" and engine is not None:
        entries = engine.candidates(d.host, d.port)
        key = engine.rules[entries[0].rule].key
        if d.binary is None:
            return (f"rule '{key}' lists no binaries; add the executables that may connect:\n"
                    + _snippet({key: {"binaries": [{"path": "/usr/bin/YOUR-CLIENT"}]}}))
        return (f"add the binary to rule '{key}':\n"
                + _snippet({key: {"binaries": [{"path": d.binary}]}}))
    endpoint: dict[str, Any] = {"host": d.host, "port": d.port}
    address = literal_address(d.host)
    note = ""
    if address is not None:
        klass = classify(address).klass
        if klass is AddressClass.BLOCKED:
            return f"{d.host} is always blocked by SSRF protection; no policy can allow it"
        if klass is AddressClass.INTERNAL:
            endpoint["allowed_ips"] = [str(address)]
            note = " (an internal address needs allowed_ips)"
    if engine is not None and d.binary is not None:
        same_host = _same_host_for_binary(engine, d)
        if same_host is not None:
            key, index, ports = same_host
            return (f"allow port {d.port} on network_policies.{key}.endpoints[{index}]: replace "
                    f"its port with `ports: [{', '.join(map(str, sorted({*ports, d.port})))}]`")
        for rule in engine.rules:
            if rule.rule.binaries and rule.allows(d.binary, d.ancestors):
                return (f"add the endpoint to rule '{rule.key}'{note}:\n"
                        + _snippet({rule.key: {"endpoints": [endpoint]}}))
    name = suggested_rule_name(d.host, d.port)
    binary = d.binary or "/usr/bin/YOUR-CLIENT"
    return (f"add a rule{note}:\n"
            + _snippet({name: {"endpoints": [endpoint], "binaries": [{"path": binary}]}}))


def _same_host_for_binary(engine: Engine, d: Decision) -> tuple[str, int, tuple[int, ...]] | None:
    for e in engine.entries:
        rule = engine.rules[e.rule]
        if (e.host is not None and e.host.kind == EXACT and e.host.match(d.host)
                and rule.allows(d.binary, d.ancestors)):
            return rule.key, e.index, e.endpoint.ports
    return None


def request_hint(d: Decision, method: str, path: str) -> str | None:
    """How to allow `method path` on the endpoint whose configuration applies."""
    ep, key, index = d.endpoint, d.endpoint_rule, d.endpoint_index
    if ep is None or key is None:
        return None
    where = f"network_policies.{key}.endpoints[{index}]"
    if ep.access is not None:
        wider = Access.READ_WRITE if method in ACCESS_METHODS[Access.READ_WRITE] else Access.FULL
        return f"change `access: {ep.access.value}` to `access: {wider.value}` in {where}"
    rule = _flow({"method": method, "path": path})
    return f"add an allow rule to {where}.rules:\n  - allow: {rule}"


def suggested_rule_name(host: str, port: int) -> str:
    """The mapper's naming (policy.md §5.2): `allow_{host with . and - as _}_{port}`."""
    s = "".join(c for c in host.replace(".", "_").replace("-", "_")
                if (c.isascii() and c.isalnum()) or c == "_")
    return f"allow_{s}_{port}"


def _snippet(rules: dict[str, dict[str, list[dict[str, Any]]]]) -> str:
    lines = ["network_policies:"]
    for key, body in rules.items():
        lines.append(f"  {_scalar(key)}:")
        for section, items in body.items():
            lines.append(f"    {section}:")
            lines.extend(_indent(_flow_list(items), 6).splitlines())
    return "\n".join(lines)


def _flow_list(items: list[dict[str, Any]]) -> str:
    return "\n".join(f"- {_flow(item)}" for item in items)


def _flow(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_scalar(k)}: {_flow(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return _scalar(value)


def _scalar(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str):
        return json.dumps(value)
    return _string_scalar(value)


@functools.lru_cache(maxsize=1024)
def _string_scalar(value: str) -> str:
    """`value` plain when YAML reads it back as the same string, else double-quoted (JSON)."""
    if _PLAIN.fullmatch(value) and _RESOLVER.resolve(yaml.ScalarNode, value, (True, False)) \
            == "tag:yaml.org,2002:str":
        return value
    return json.dumps(value)


_RESOLVER = yaml.resolver.Resolver()


def _indent(text: str, n: int) -> str:
    return "\n".join(" " * n + line for line in text.splitlines())


# -- reports for `stockade policy explain` -------------------------------------------------------

def explain_text(d: Decision, request: RequestDecision | None = None) -> str:
    who = d.binary if d.binary is not None else "(identity unavailable)"
    lines = [f"connection: {who} -> {d.host}:{d.port}"]
    if d.ancestors:
        lines.append(f"ancestors:  {' -> '.join(d.ancestors)}")
    if d.allowed:
        ep = d.endpoint
        assert ep is not None
        lines.append(f"decision:   ALLOW by rule '{d.rule}'")
        lines.append(f"reason:     {d.reason}")
        if len(d.matched_rules) > 1:
            lines.append(f"also:       {', '.join(d.matched_rules[1:])}")
        config = [f"network_policies.{d.endpoint_rule}.endpoints[{d.endpoint_index}]"]
        if ep.protocol is not None:
            config.append(f"protocol {ep.protocol.value}, enforcement {ep.enforcement.value}"
                          + ("" if ep.enforcement_explicit else " (default)"))
        else:
            config.append("L4 only")
        if ep.tls.value == "skip":
            config.append("tls skip")
        if ep.allowed_ips:
            config.append("allowed_ips " + ", ".join(map(str, ep.allowed_ips)))
        lines.append(f"endpoint:   {'; '.join(config)}")
    else:
        lines.append(f"decision:   DENY ({d.reason_code})")
        lines.append(f"reason:     {d.reason}")
        if d.hint:
            lines.append("hint:       " + d.hint.replace("\n", "\n            "))
    if request is not None:
        lines.append(f"request:    {request.method} {request.target}")
        verdict = request.action.upper()
        if not request.inspected and request.allowed:
            verdict += " (no L7 rules on this endpoint)"
        lines.append(f"l7:         {verdict}")
        lines.append(f"l7 reason:  {request.reason}")
        if request.audit:
            lines.append("            enforcement is audit: the request is forwarded and logged")
        if request.hint and request.action != "allow":
            lines.append("l7 hint:    " + request.hint.replace("\n", "\n            "))
    return "\n".join(lines)


def explain_json(d: Decision, request: RequestDecision | None = None) -> dict[str, Any]:
    ep = d.endpoint
    out: dict[str, Any] = {
        "allowed": d.allowed, "rule": d.rule, "reason_code": d.reason_code, "reason": d.reason,
        "hint": d.hint, "host": d.host, "port": d.port, "binary": d.binary,
        "ancestors": list(d.ancestors), "matched_rules": list(d.matched_rules),
        "endpoint": None if ep is None else {
            "rule": d.endpoint_rule, "index": d.endpoint_index, "host": ep.host,
            "ports": list(ep.ports), "protocol": ep.protocol.value if ep.protocol else None,
            "enforcement": ep.enforcement.value, "tls": ep.tls.value,
            "allowed_ips": [str(n) for n in ep.allowed_ips]},
    }
    if request is not None:
        out["request"] = {
            "action": request.action, "allowed": request.allowed, "audit": request.audit,
            "inspected": request.inspected, "method": request.method, "target": request.target,
            "reason_code": request.reason_code, "reason": request.reason, "rule": request.rule,
            "hint": request.hint}
    return out
