"""The one-line human form of an OCSF event, as `stockade logs` prints it (sans-IO).

It reads the stored OCSF object, not the producer's event record, so logs written by any stockade
version render the same way. Shape: time, an action word padded to one column, then the class's
own fields:

    17:42:01.123 DENY  /usr/bin/curl -> evil.example.com:443  [no rule]  no endpoint matches ...
    17:42:01.500 ALLOW /usr/bin/git -> POST github.com:443/org/repo.git/info/refs  [github]  200
    17:42:02.000 START pid 42  claude --resume
    17:42:09.000 EXIT  pid 42  exit 0
    17:42:03.000 FIND  [HIGH] SSRF attempt  /usr/bin/curl -> 169.254.169.254:80  resolves to ...
    17:42:00.000 CONF  policy loaded  [rev 1 sha256:1a2b3c4d5e6f]
    17:42:04.000 INFER /usr/bin/python3 -> openai gpt-4o  POST /v1/chat/completions  200 812ms

Never raises: an object it does not understand still gives a line.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

_SEVERITY_CHARS = {0: " ", 1: "I", 2: "L", 3: "M", 4: "H", 5: "C", 6: "F"}
_SEVERITY_TAGS = {1: "[INFO]", 2: "[LOW]", 3: "[MED]", 4: "[HIGH]", 5: "[CRIT]", 6: "[FATAL]"}

_RESET = "\x1b[0m"
_COLOURS = {
    "DENY": "\x1b[31m", "ALLOW": "\x1b[32m", "AUDIT": "\x1b[33m", "FIND": "\x1b[35m",
    "KILL": "\x1b[31m", "START": "\x1b[36m", "EXIT": "\x1b[36m", "CONF": "\x1b[34m", "INFER": "\x1b[32m",
}
_DIM = "\x1b[2m"
_WORD_WIDTH = 5
_REASON_MAX = 160


def format_ts(ms: int, *, local: bool = False) -> str:
    """`HH:MM:SS.mmm` (UTC unless `local`), or `??:??:??.???` when out of range."""
    try:
        tz = None if local else _dt.timezone.utc
        moment = _dt.datetime.fromtimestamp(ms / 1000, tz=tz)
    except (OverflowError, OSError, ValueError, TypeError):
        return "??:??:??.???"
    return f"{moment:%H:%M:%S}.{int(ms) % 1000:03d}"


def severity_char(severity_id: int) -> str:
    return _SEVERITY_CHARS.get(severity_id, " ")


def severity_tag(severity_id: int) -> str:
    return _SEVERITY_TAGS.get(severity_id, "[UNKNOWN]")


def shorthand(ocsf: dict[str, Any], *, color: bool = False, local_time: bool = False) -> str:
    """One line for one OCSF event."""
    try:
        word, rest = _render(ocsf)
    except Exception:  # noqa: BLE001 - a malformed stored object still gets a line
        word, rest = "EVENT", str(ocsf.get("message") or ocsf.get("type_name") or "?")
    ts = format_ts(ocsf.get("time", 0) if isinstance(ocsf.get("time"), int) else 0, local=local_time)
    padded = word.ljust(_WORD_WIDTH)
    if color:
        padded = f"{_COLOURS.get(word, '')}{padded}{_RESET}"
        ts = f"{_DIM}{ts}{_RESET}"
    return f"{ts} {padded} {rest}".rstrip()


def _render(o: dict[str, Any]) -> tuple[str, str]:
    cls = o.get("class_uid")
    if cls == 4001:
        return _network(o)
    if cls == 4002:
        return _http(o)
    if cls == 1007:
        return _process(o)
    if cls == 2004:
        return _finding(o)
    if cls == 5019:
        return _config(o)
    if cls == 6003:
        return _inference(o)
    return "EVENT", f"{severity_tag(o.get('severity_id', 0))} {o.get('message') or o.get('type_name', '?')}"


def action_word(o: dict[str, Any]) -> str:
    if o.get("disposition_id") == 15:
        return "AUDIT"
    return "DENY" if o.get("action_id") == 2 else "ALLOW"


def _binary(o: dict[str, Any]) -> str:
    process = (o.get("actor") or {}).get("process") or {}
    return str((process.get("file") or {}).get("path") or process.get("name") or "-")


def _dest(endpoint: dict[str, Any] | None) -> str:
    endpoint = endpoint or {}
    host = endpoint.get("hostname") or endpoint.get("ip") or "?"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    port = endpoint.get("port")
    return f"{host}:{port}" if port is not None else host


def _reason(o: dict[str, Any]) -> str:
    reason = " ".join(str(o.get("status_detail") or "").split())
    return reason if len(reason) <= _REASON_MAX else reason[: _REASON_MAX - 1] + "…"


def _rule_tag(o: dict[str, Any], default_stage: str) -> str:
    rule = o.get("firewall_rule") or {}
    name = rule.get("name") or "no rule"
    stage = rule.get("type") or default_stage
    return f"[{name}]" if stage == default_stage else f"[{name} {stage}]"


def _join(*parts: str) -> str:
    return "  ".join(p for p in parts if p)


def _network(o: dict[str, Any]) -> tuple[str, str]:
    word = action_word(o)
    # The name the agent asked for, not the dialled address (both are in the JSON).
    host = (o.get("unmapped") or {}).get("host")
    endpoint = dict(o.get("dst_endpoint") or {})
    if host:
        endpoint = {"hostname": host, "port": endpoint.get("port")}
    line = f"{_binary(o)} -> {_dest(endpoint)}"
    return word, _join(line, _rule_tag(o, "policy"), _reason(o) if word != "ALLOW" else "")


def _http(o: dict[str, Any]) -> tuple[str, str]:
    word = action_word(o)
    request = o.get("http_request") or {}
    url = request.get("url") or {}
    target = f"{request.get('http_method', '?')} {_dest(url)}{url.get('path', '')}"
    status = (o.get("http_response") or {}).get("code")
    return word, _join(
        f"{_binary(o)} -> {target}", _rule_tag(o, "l7"), f"{status}" if status is not None else "",
        _reason(o) if word != "ALLOW" else "",
    )


def _process(o: dict[str, Any]) -> tuple[str, str]:
    process = o.get("process") or {}
    pid = f"pid {process['pid']}" if process.get("pid") is not None else ""
    activity = (o.get("unmapped") or {}).get("activity")
    if o.get("activity_id") == 1:
        return "START", _join(pid, str(process.get("cmd_line") or process.get("name") or ""))
    exit_code = f"exit {o['exit_code']}" if o.get("exit_code") is not None else ""
    if activity == "timeout":
        return "KILL", _join(pid, exit_code, _reason(o) or "timeout")
    return "EXIT", _join(pid, exit_code)


def _finding(o: dict[str, Any]) -> tuple[str, str]:
    info = o.get("finding_info") or {}
    evidence = (o.get("evidences") or [{}])[0]
    where = ""
    if evidence.get("dst_endpoint"):
        where = f"{_binary(evidence)} -> {_dest(evidence['dst_endpoint'])}"
    elif _binary(evidence) != "-":
        where = _binary(evidence)
    return "FIND", _join(f"{severity_tag(o.get('severity_id', 0))} {info.get('title', '?')}", where, _reason(o))


def _config(o: dict[str, Any]) -> tuple[str, str]:
    unmapped = o.get("unmapped") or {}
    bits = []
    if unmapped.get("policy_revision") is not None:
        bits.append(f"rev {unmapped['policy_revision']}")
    if unmapped.get("policy_sha256"):
        bits.append(f"sha256:{str(unmapped['policy_sha256'])[:12]}")
    sev = o.get("severity_id", 1)
    tag = severity_tag(sev) + " " if sev and sev > 1 else ""
    return "CONF", _join(f"{tag}{o.get('message', '')}", f"[{' '.join(bits)}]" if bits else "")


def _inference(o: dict[str, Any]) -> tuple[str, str]:
    inference = (o.get("unmapped") or {}).get("inference") or {}
    route = " ".join(str(x) for x in (inference.get("route"), inference.get("model")) if x)
    response = o.get("http_response") or {}
    outcome = f"{response.get('code', '?')} {response.get('latency', '?')}ms"
    tokens = ""
    if inference.get("input_tokens") is not None or inference.get("output_tokens") is not None:
        tokens = f"tokens {inference.get('input_tokens', '?')}/{inference.get('output_tokens', '?')}"
    return "INFER", _join(
        f"{_binary(o)} -> {route or 'inference.local'}", (o.get("api") or {}).get("operation", ""),
        outcome, tokens, _reason(o),
    )
