"""Domain events → OCSF 1.7.0 JSON objects (sans-IO: plain dicts in, plain dicts out).

Classes used:

| event            | OCSF class                          | activity                                   |
|------------------|-------------------------------------|--------------------------------------------|
| NetworkEvent     | Network Activity (4001)             | Open (allowed) / Refuse (denied)           |
| HttpEvent        | HTTP Activity (4002)                | the request method (Get, Post, ...)        |
| ProcessEvent     | Process Activity (1007)             | Launch / Terminate (exit and timeout)      |
| FindingEvent     | Detection Finding (2004)            | Create                                     |
| ConfigEvent      | Device Config State Change (5019)   | Log                                        |
| InferenceEvent   | API Activity (6003)                 | Create (POST) / Read (GET) / Other         |

OCSF 1.7 has no class for model inference; API Activity is its class for "a call to a service's
API" and is what OCSF 1.8's `ai_operation` profile extends, so a later upgrade keeps the class.
The route, model and token counts, which 1.7 has no attributes for, go in `unmapped.inference`.

stockade-specific context (sandbox name, run id, the proxy stage, how the connection arrived)
lives in `unmapped`, which OCSF reserves for exactly that. Action ↔ OCSF: allowed is action
Allowed / disposition Allowed; denied is Denied / Blocked; audit (an L7 violation forwarded
because the endpoint enforces in audit mode) is Allowed / Detected.
"""

from __future__ import annotations

import functools
import ipaddress
import os
from typing import Any

from .. import __version__
from .types import (
    Action,
    Actor,
    ConfigEvent,
    Event,
    FindingEvent,
    HttpEvent,
    InferenceEvent,
    NetworkEvent,
    ProcessEvent,
)

OCSF_VERSION = "1.7.0"

NETWORK_ACTIVITY = 4001
HTTP_ACTIVITY = 4002
PROCESS_ACTIVITY = 1007
DETECTION_FINDING = 2004
CONFIG_STATE_CHANGE = 5019
API_ACTIVITY = 6003

_CLASSES: dict[int, tuple[str, int, str]] = {
    # class_uid: (class_name, category_uid, category_name)
    NETWORK_ACTIVITY: ("Network Activity", 4, "Network Activity"),
    HTTP_ACTIVITY: ("HTTP Activity", 4, "Network Activity"),
    PROCESS_ACTIVITY: ("Process Activity", 1, "System Activity"),
    DETECTION_FINDING: ("Detection Finding", 2, "Findings"),
    CONFIG_STATE_CHANGE: ("Device Config State Change", 5, "Discovery"),
    API_ACTIVITY: ("API Activity", 6, "Application Activity"),
}

SEVERITY_NAMES = {0: "Unknown", 1: "Informational", 2: "Low", 3: "Medium", 4: "High", 5: "Critical", 6: "Fatal"}
_SEVERITY_IDS = {"info": 1, "informational": 1, "low": 2, "medium": 3, "high": 4, "critical": 5, "fatal": 6}

ACTION_NAMES = {1: "Allowed", 2: "Denied"}
DISPOSITION_NAMES = {1: "Allowed", 2: "Blocked", 15: "Detected"}
DISPOSITION_DETECTED = 15
# stockade action -> (action_id, disposition_id)
_ACTION_IDS = {Action.ALLOWED: (1, 1), Action.DENIED: (2, 2), Action.AUDIT: (1, DISPOSITION_DETECTED)}

_NET_ACTIVITIES = {1: "Open", 5: "Refuse"}
_HTTP_ACTIVITIES = {
    "CONNECT": 1, "DELETE": 2, "GET": 3, "HEAD": 4, "OPTIONS": 5, "POST": 6, "PUT": 7, "TRACE": 8, "PATCH": 9,
}
_HTTP_ACTIVITY_NAMES = {v: k.capitalize() for k, v in _HTTP_ACTIVITIES.items()} | {99: "Other"}


def severity_id(name: str) -> int:
    """A producer's severity word ("low", "high", ...) as an OCSF severity_id; unknown → 0."""
    return _SEVERITY_IDS.get(name.lower(), 0)


def to_ocsf(
    event: Event, *, sandbox: str | None = None, run_id: int | None = None, version: str = __version__
) -> dict[str, Any]:
    """The OCSF 1.7.0 object for one event; `sandbox`/`run_id` land in `unmapped`."""
    if isinstance(event, NetworkEvent):
        body = _network(event)
    elif isinstance(event, HttpEvent):
        body = _http(event)
    elif isinstance(event, ProcessEvent):
        body = _process(event)
    elif isinstance(event, FindingEvent):
        body = _finding(event)
    elif isinstance(event, ConfigEvent):
        body = _config(event)
    elif isinstance(event, InferenceEvent):
        body = _inference(event)
    else:
        raise TypeError(f"not an event: {type(event).__name__}")
    class_uid, activity_id, activity_name, sev, time_ms, fields, unmapped = body
    class_name, category_uid, category_name = _CLASSES[class_uid]
    if sandbox is not None:
        unmapped["sandbox"] = sandbox
    if run_id is not None:
        unmapped["run_id"] = run_id
    out: dict[str, Any] = {
        "class_uid": class_uid,
        "class_name": class_name,
        "category_uid": category_uid,
        "category_name": category_name,
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": class_uid * 100 + activity_id,
        "type_name": f"{class_name}: {activity_name}",
        "time": time_ms,
        "severity_id": sev,
        "severity": SEVERITY_NAMES.get(sev, "Other"),
        "metadata": {
            "version": OCSF_VERSION,
            "product": {"name": "stockade", "vendor_name": "stockade", "version": version},
        },
    }
    out.update(fields)
    if unmapped:
        out["unmapped"] = unmapped
    return out


# Each builder returns (class_uid, activity_id, activity_name, severity_id, time, fields, unmapped).
_Body = tuple[int, int, str, int, int, dict[str, Any], dict[str, Any]]


def _actor(actor: Actor) -> dict[str, Any]:
    """OCSF `actor` with its `process`: name, pid, file path and SHA-256, lineage of ancestors."""
    process: dict[str, Any] = {"name": os.path.basename(actor.binary) or actor.binary}
    if actor.pid is not None:
        process["pid"] = actor.pid
    if actor.binary != "-":
        file: dict[str, Any] = {"path": actor.binary, "name": os.path.basename(actor.binary), "type_id": 1}
        if actor.sha256:
            file["hashes"] = [{"algorithm_id": 3, "algorithm": "SHA-256", "value": actor.sha256}]
        process["file"] = file
    if actor.ancestors:
        process["lineage"] = list(actor.ancestors)
    return {"process": process}


def _endpoint(host: str | None, port: int | None) -> dict[str, Any]:
    """A `network_endpoint`: an IP literal goes in `ip`, a name in `hostname`."""
    out: dict[str, Any] = {}
    if host:
        bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        out["ip" if _is_ip(bare) else "hostname"] = bare
    if port is not None:
        out["port"] = port
    return out


@functools.lru_cache(maxsize=4096)  # hosts repeat; parsing an address is the costly part of a mapping
def _is_ip(text: str) -> bool:
    if not text or (":" not in text and not text[-1].isdigit()):
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _action_fields(action: Action) -> dict[str, Any]:
    action_id, disposition_id = _ACTION_IDS[action]
    return {
        "action_id": action_id,
        "action": ACTION_NAMES[action_id],
        "disposition_id": disposition_id,
        "disposition": DISPOSITION_NAMES[disposition_id],
    }


def _rule(rule: str | None, stage: str) -> dict[str, Any]:
    # `firewall_rule.name` is the policy rule key (the rule's identity everywhere); `type` the
    # proxy stage that decided, so "denied by ssrf under rule github" stays one object.
    out: dict[str, Any] = {"type": stage}
    if rule:
        out["name"] = rule
    return out


def _network(e: NetworkEvent) -> _Body:
    denied = e.action is Action.DENIED
    activity_id = 5 if denied else 1
    fields: dict[str, Any] = {
        **_action_fields(e.action),
        "actor": _actor(e.actor),
        "dst_endpoint": _endpoint(e.host, e.port),
        "connection_info": {"protocol_name": "tcp", "direction_id": 2, "direction": "Outbound"},
        "firewall_rule": _rule(e.rule, e.stage),
    }
    if e.upstream:
        ip, _, port = e.upstream.rpartition(":")
        ip = ip.strip("[]")
        fields["dst_endpoint"]["ip"] = ip
        if port.isdigit():
            fields["dst_endpoint"]["port"] = int(port)
    if e.reason:
        fields["status_detail"] = e.reason
    if e.reason_code:
        fields["status_code"] = e.reason_code
    unmapped: dict[str, Any] = {"via": e.via, "stage": e.stage, "host": e.host}
    sev = 3 if denied else 1
    return NETWORK_ACTIVITY, activity_id, _NET_ACTIVITIES[activity_id], sev, e.time_ms, fields, unmapped


def _http(e: HttpEvent) -> _Body:
    method = e.method.upper()
    activity_id = _HTTP_ACTIVITIES.get(method, 99)
    url = {"hostname": e.host, "port": e.port, "path": e.path, "url_string": f"{e.host}:{e.port}{e.path}"}
    fields: dict[str, Any] = {
        **_action_fields(e.action),
        "actor": _actor(e.actor),
        "http_request": {"http_method": method, "url": url},
        "dst_endpoint": _endpoint(e.host, e.port),
        "firewall_rule": _rule(e.rule, "l7"),
    }
    if e.status is not None:
        fields["http_response"] = {"code": e.status}
    if e.reason:
        fields["status_detail"] = e.reason
    sev = {Action.ALLOWED: 1, Action.AUDIT: 2, Action.DENIED: 3}[e.action]
    return HTTP_ACTIVITY, activity_id, _HTTP_ACTIVITY_NAMES[activity_id], sev, e.time_ms, fields, {}


def _process(e: ProcessEvent) -> _Body:
    process: dict[str, Any] = {"name": os.path.basename(e.command[0]) if e.command else "-"}
    if e.pid is not None:
        process["pid"] = e.pid
    if e.command:
        process["cmd_line"] = " ".join(e.command)
    fields: dict[str, Any] = {
        "process": process,
        # The actor is the supervisor that launched or reaped the command.
        "actor": {"process": {"name": "stockade"}},
    }
    unmapped: dict[str, Any] = {"activity": e.activity}
    sev = 1
    if e.activity == "launch":
        activity_id, name = 1, "Launch"
        fields |= {"launch_type_id": 1, "launch_type": "Spawn", **_action_fields(Action.ALLOWED)}
    else:
        activity_id, name = 2, "Terminate"
        if e.exit_code is not None:
            fields["exit_code"] = e.exit_code
        if e.activity == "timeout":
            sev = 3
            fields |= {**_action_fields(Action.DENIED), "status_detail": "killed: the run's timeout expired"}
    return PROCESS_ACTIVITY, activity_id, name, sev, e.time_ms, fields, unmapped


def _finding(e: FindingEvent) -> _Body:
    actor = _actor(e.actor)
    evidence: dict[str, Any] = {"actor": actor}
    if e.host or e.port is not None:
        evidence["dst_endpoint"] = _endpoint(e.host, e.port)
    data: dict[str, Any] = {}
    if e.detail:
        data["detail"] = e.detail
    if e.trusted_sha256:
        # A changed executable: the evidence's `file` is the file as it is now (its hash in
        # file.hashes, like the actor's); the hash trusted on first use, which OCSF has no
        # attribute for, goes beside it in the free-form `data`.
        file = actor["process"].get("file")
        if file is not None:
            evidence["file"] = file
        data["trusted_sha256"] = e.trusted_sha256
        if e.actor.sha256:
            data["observed_sha256"] = e.actor.sha256
    if data:
        evidence["data"] = data
    fields: dict[str, Any] = {
        **_action_fields(e.action),
        "finding_info": {"uid": e.kind, "title": e.title, "types": [e.kind], "desc": e.detail or e.title},
        "evidences": [evidence],
        "message": e.title,
        "is_alert": severity_id(e.severity) >= 3,
    }
    if e.detail:
        fields["status_detail"] = e.detail
    return DETECTION_FINDING, 1, "Create", severity_id(e.severity), e.time_ms, fields, {"kind": e.kind}


def _config(e: ConfigEvent) -> _Body:
    fields: dict[str, Any] = {"message": e.message}
    unmapped: dict[str, Any] = {}
    if e.revision is not None:
        unmapped["policy_revision"] = e.revision
    if e.sha256:
        unmapped["policy_sha256"] = e.sha256
    return CONFIG_STATE_CHANGE, 1, "Log", severity_id(e.severity) or 1, e.time_ms, fields, unmapped


def _inference(e: InferenceEvent) -> _Body:
    method, path = e.method.upper(), e.path
    activity_id, name = {"POST": (1, "Create"), "GET": (2, "Read")}.get(method, (99, "Other"))
    failed = e.error is not None or e.status >= 400
    fields: dict[str, Any] = {
        "api": {"operation": f"{method} {path}", "service": {"name": e.route or "inference.local"}},
        "actor": _actor(e.actor),
        "src_endpoint": {"hostname": "inference.local"},
        "http_request": {"http_method": method, "url": {"hostname": "inference.local", "path": path}},
        "http_response": {"code": e.status, "latency": round(e.latency_ms)},
        "status_id": 2 if failed else 1,
        "status": "Failure" if failed else "Success",
        **_action_fields(Action.ALLOWED),
    }
    if e.backend_host:
        fields["dst_endpoint"] = {"hostname": e.backend_host}
    if e.error:
        fields["status_detail"] = e.error
    inference: dict[str, Any] = {"route": e.route, "model": e.model, "streamed": e.streamed}
    if e.input_tokens is not None:
        inference["input_tokens"] = e.input_tokens
    if e.output_tokens is not None:
        inference["output_tokens"] = e.output_tokens
    return API_ACTIVITY, activity_id, name, 2 if failed else 1, e.time_ms, fields, {"inference": inference}
