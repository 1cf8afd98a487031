"""OCSF 1.7.0 mapping: one test per class, checked against the OCSF attribute names."""

from __future__ import annotations

import json

import pytest

from stockade import __version__
from stockade.events.ocsf import to_ocsf
from stockade.events.types import (
    Action,
    Actor,
    ConfigEvent,
    FindingEvent,
    HttpEvent,
    InferenceEvent,
    NetworkEvent,
    ProcessEvent,
)

CURL = Actor(binary="/usr/bin/curl", pid=42, ancestors=("/bin/bash", "/usr/bin/node"), sha256="ab" * 32)
BASE_KEYS = {
    "class_uid", "class_name", "category_uid", "category_name", "activity_id", "activity_name",
    "type_uid", "type_name", "time", "severity_id", "severity", "metadata",
}


def check_base(o: dict, class_uid: int, activity_id: int) -> None:
    assert BASE_KEYS <= set(o)
    assert o["class_uid"] == class_uid
    assert o["activity_id"] == activity_id
    assert o["type_uid"] == class_uid * 100 + activity_id
    assert o["metadata"] == {
        "version": "1.7.0",
        "product": {"name": "stockade", "vendor_name": "stockade", "version": __version__},
    }
    json.dumps(o)  # JSON-serialisable as is


def test_network_denied_is_refuse_denied_blocked_with_rule_and_reason():
    e = NetworkEvent(Action.DENIED, "evil.example.com", 443, CURL, "connect",
                     reason="no endpoint matches evil.example.com:443", reason_code="policy_denied", time_ms=1_000)
    o = to_ocsf(e, sandbox="brave-otter", run_id=7)
    check_base(o, 4001, 5)
    assert (o["class_name"], o["category_uid"], o["activity_name"]) == ("Network Activity", 4, "Refuse")
    assert (o["action_id"], o["action"], o["disposition_id"], o["disposition"]) == (2, "Denied", 2, "Blocked")
    assert o["severity_id"] == 3 and o["severity"] == "Medium"
    assert o["time"] == 1_000
    assert o["dst_endpoint"] == {"hostname": "evil.example.com", "port": 443}
    assert o["firewall_rule"] == {"type": "policy"}
    assert o["status_detail"] == "no endpoint matches evil.example.com:443"
    assert o["status_code"] == "policy_denied"
    process = o["actor"]["process"]
    assert process["name"] == "curl" and process["pid"] == 42
    assert process["file"]["path"] == "/usr/bin/curl"
    assert process["file"]["hashes"] == [{"algorithm_id": 3, "algorithm": "SHA-256", "value": "ab" * 32}]
    assert process["lineage"] == ["/bin/bash", "/usr/bin/node"]
    assert o["connection_info"]["direction_id"] == 2
    assert o["unmapped"]["sandbox"] == "brave-otter" and o["unmapped"]["run_id"] == 7
    assert o["unmapped"]["stage"] == "policy" and o["unmapped"]["via"] == "connect"


def test_network_allowed_is_open_with_rule_name_and_dialled_address():
    e = NetworkEvent(Action.ALLOWED, "api.github.com", 443, CURL, "connect", rule="github",
                     upstream="140.82.112.5:443")
    o = to_ocsf(e)
    check_base(o, 4001, 1)
    assert (o["action_id"], o["disposition_id"], o["severity_id"]) == (1, 1, 1)
    assert o["firewall_rule"] == {"name": "github", "type": "policy"}
    assert o["dst_endpoint"] == {"hostname": "api.github.com", "ip": "140.82.112.5", "port": 443}
    assert "status_detail" not in o


def test_network_ip_literal_and_ipv6_upstream():
    o = to_ocsf(NetworkEvent(Action.ALLOWED, "[2001:db8::1]", 8443, Actor(), "connect", upstream="[2001:db8::1]:8443"))
    assert o["dst_endpoint"] == {"ip": "2001:db8::1", "port": 8443}
    assert o["actor"]["process"] == {"name": "-"}  # identity unavailable: no file object


def test_network_denial_of_another_stage_names_it_in_firewall_rule_type():
    o = to_ocsf(NetworkEvent(Action.DENIED, "metadata.internal", 80, CURL, "forward", rule="corp", stage="ssrf",
                             reason="resolves to 169.254.169.254 (link-local)"))
    assert o["firewall_rule"] == {"name": "corp", "type": "ssrf"}


@pytest.mark.parametrize(("method", "activity_id", "name"), [
    ("GET", 3, "Get"), ("post", 6, "Post"), ("DELETE", 2, "Delete"), ("PATCH", 9, "Patch"), ("PROPFIND", 99, "Other"),
])
def test_http_activity_follows_the_method(method, activity_id, name):
    o = to_ocsf(HttpEvent(Action.ALLOWED, method, "api.github.com", 443, "/repos/a/b", CURL, rule="github", status=200))
    check_base(o, 4002, activity_id)
    assert o["activity_name"] == name
    assert o["http_request"]["http_method"] == method.upper()
    assert o["http_request"]["url"]["hostname"] == "api.github.com"
    assert o["http_request"]["url"]["path"] == "/repos/a/b"
    assert o["http_response"] == {"code": 200}
    assert o["firewall_rule"]["name"] == "github"


def test_http_denied_and_audit():
    denied = to_ocsf(HttpEvent(Action.DENIED, "POST", "h", 443, "/x", CURL, rule="r", reason="POST /x not allowed", status=403))
    assert (denied["action_id"], denied["disposition_id"], denied["severity_id"]) == (2, 2, 3)
    assert denied["status_detail"] == "POST /x not allowed"
    audit = to_ocsf(HttpEvent(Action.AUDIT, "DELETE", "h", 443, "/x", CURL, rule="r", reason="DELETE not allowed"))
    assert (audit["action_id"], audit["disposition_id"], audit["disposition"]) == (1, 15, "Detected")
    assert audit["severity_id"] == 2


def test_process_launch_exit_timeout():
    launch = to_ocsf(ProcessEvent("launch", ("/usr/bin/python3", "agent.py"), pid=42))
    check_base(launch, 1007, 1)
    assert launch["activity_name"] == "Launch" and launch["category_name"] == "System Activity"
    assert launch["process"] == {"name": "python3", "pid": 42, "cmd_line": "/usr/bin/python3 agent.py"}
    assert launch["launch_type_id"] == 1 and "actor" in launch
    exit_ = to_ocsf(ProcessEvent("exit", ("python3",), pid=42, exit_code=3))
    check_base(exit_, 1007, 2)
    assert exit_["exit_code"] == 3 and exit_["severity_id"] == 1
    timeout = to_ocsf(ProcessEvent("timeout", ("python3",), pid=42, exit_code=124))
    check_base(timeout, 1007, 2)
    assert timeout["action_id"] == 2 and timeout["severity_id"] == 3 and timeout["unmapped"]["activity"] == "timeout"


@pytest.mark.parametrize("kind", ["ssrf", "binary_changed", "placeholder_misuse", "unsolicited_upgrade"])
def test_findings_are_detection_findings(kind):
    e = FindingEvent(kind, f"{kind} title", "high", CURL, "the detail", host="169.254.169.254", port=80)
    o = to_ocsf(e, sandbox="s")
    check_base(o, 2004, 1)
    assert o["class_name"] == "Detection Finding" and o["category_uid"] == 2
    assert o["finding_info"]["title"] == f"{kind} title"
    assert o["finding_info"]["uid"] == kind and o["finding_info"]["types"] == [kind]
    assert (o["severity_id"], o["severity"]) == (4, "High")
    assert (o["action_id"], o["disposition_id"]) == (2, 2)
    assert o["evidences"][0]["dst_endpoint"] == {"ip": "169.254.169.254", "port": 80}
    assert o["evidences"][0]["actor"]["process"]["file"]["path"] == "/usr/bin/curl"
    assert o["is_alert"] is True


def test_a_binary_change_finding_carries_the_process_and_both_hashes():
    actor = Actor("/work/bin/fetch", 7, sha256="cd" * 32)
    o = to_ocsf(FindingEvent("binary_changed", "executable changed since first use", "critical", actor,
                             "the detail", trusted_sha256="ab" * 32))
    check_base(o, 2004, 1)
    evidence = o["evidences"][0]
    process = evidence["actor"]["process"]
    assert process["pid"] == 7 and process["file"]["path"] == "/work/bin/fetch"
    current = [{"algorithm_id": 3, "algorithm": "SHA-256", "value": "cd" * 32}]
    assert process["file"]["hashes"] == current and evidence["file"]["hashes"] == current
    assert evidence["file"]["path"] == "/work/bin/fetch"
    assert evidence["data"] == {"detail": "the detail", "trusted_sha256": "ab" * 32,
                                "observed_sha256": "cd" * 32}
    assert (o["severity_id"], o["is_alert"]) == (5, True)
    json.dumps(o)


def test_config_change():
    o = to_ocsf(ConfigEvent("policy reloaded", revision=3, sha256="c" * 64))
    check_base(o, 5019, 1)
    assert o["class_name"] == "Device Config State Change" and o["category_uid"] == 5
    assert o["message"] == "policy reloaded" and o["severity_id"] == 1
    assert o["unmapped"] == {"policy_revision": 3, "policy_sha256": "c" * 64}
    assert to_ocsf(ConfigEvent("landlock degraded", severity="medium"))["severity_id"] == 3


def test_inference_is_api_activity_without_prompt_text():
    e = InferenceEvent(route="openai", backend_host="api.openai.com", model="gpt-4o", status=200, latency_ms=812.4,
                       streamed=True, path="/v1/chat/completions", actor=CURL, input_tokens=10, output_tokens=20)
    o = to_ocsf(e)
    check_base(o, 6003, 1)
    assert o["class_name"] == "API Activity" and o["category_uid"] == 6
    assert o["api"]["operation"] == "POST /v1/chat/completions"
    assert o["http_response"] == {"code": 200, "latency": 812}
    assert o["dst_endpoint"] == {"hostname": "api.openai.com"}
    assert o["status_id"] == 1
    assert o["unmapped"]["inference"] == {"route": "openai", "model": "gpt-4o", "streamed": True,
                                          "input_tokens": 10, "output_tokens": 20}
    failed = to_ocsf(InferenceEvent(None, None, None, 502, 3.0, False, "/v1/models", method="GET", error="backend down"))
    assert (failed["activity_id"], failed["status_id"], failed["status_detail"]) == (2, 2, "backend down")


def test_not_an_event_is_a_type_error():
    with pytest.raises(TypeError):
        to_ocsf("nope")  # type: ignore[arg-type]
