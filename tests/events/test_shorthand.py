"""The one-line shorthand `stockade logs` prints (process.md §8 83-85, adapted)."""

from __future__ import annotations

from stockade.events.ocsf import to_ocsf
from stockade.events.shorthand import format_ts, severity_char, severity_tag, shorthand
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

T = 1742047200000  # 2025-03-15 14:00:00.000 UTC
CURL = Actor(binary="/usr/bin/curl", pid=1234)


def line(event, **kw) -> str:
    return shorthand(to_ocsf(event, sandbox="s"), **kw)


def test_83_format_ts():
    assert format_ts(T) == "14:00:00.000"
    assert format_ts(T + 123) == "14:00:00.123"
    assert format_ts(2**63 - 1) == "??:??:??.???"
    assert format_ts(-(2**63)) == "??:??:??.???"


def test_84_severity_chars_and_tags():
    assert [severity_char(i) for i in range(7)] == [" ", "I", "L", "M", "H", "C", "F"]
    assert [severity_tag(i) for i in range(1, 7)] == ["[INFO]", "[LOW]", "[MED]", "[HIGH]", "[CRIT]", "[FATAL]"]


def test_85_network_denial_line():
    e = NetworkEvent(Action.DENIED, "evil.example.com", 443, CURL, "connect",
                     reason="no endpoint matches evil.example.com:443", time_ms=T + 123)
    assert line(e) == "14:00:00.123 DENY  /usr/bin/curl -> evil.example.com:443  [no rule]  no endpoint matches evil.example.com:443"


def test_85_network_allow_shows_the_requested_name_and_rule_without_reason():
    e = NetworkEvent(Action.ALLOWED, "api.github.com", 443, CURL, "connect", rule="github",
                     upstream="140.82.112.5:443", reason="ignored", time_ms=T)
    assert line(e) == "14:00:00.000 ALLOW /usr/bin/curl -> api.github.com:443  [github]"


def test_network_denial_by_another_stage_names_the_stage():
    e = NetworkEvent(Action.DENIED, "10.0.0.5", 80, CURL, "forward", rule="corp", stage="ssrf",
                     reason="10.0.0.5 is internal", time_ms=T)
    assert line(e) == "14:00:00.000 DENY  /usr/bin/curl -> 10.0.0.5:80  [corp ssrf]  10.0.0.5 is internal"


def test_http_lines_carry_method_and_path():
    denied = HttpEvent(Action.DENIED, "POST", "api.github.com", 443, "/repos/a/b/issues", CURL, rule="github",
                       reason="POST /repos/a/b/issues not allowed", status=403, time_ms=T)
    assert line(denied) == ("14:00:00.000 DENY  /usr/bin/curl -> POST api.github.com:443/repos/a/b/issues  [github]"
                            "  403  POST /repos/a/b/issues not allowed")
    audit = HttpEvent(Action.AUDIT, "DELETE", "h", 443, "/x", CURL, rule="r", reason="DELETE /x not allowed", time_ms=T)
    assert line(audit) == "14:00:00.000 AUDIT /usr/bin/curl -> DELETE h:443/x  [r]  DELETE /x not allowed"


def test_85_process_lines():
    assert line(ProcessEvent("launch", ("claude", "--resume"), pid=42, time_ms=T)) == "14:00:00.000 START pid 42  claude --resume"
    assert line(ProcessEvent("exit", ("python3",), pid=42, exit_code=0, time_ms=T)) == "14:00:00.000 EXIT  pid 42  exit 0"
    assert line(ProcessEvent("timeout", ("python3",), pid=42, exit_code=124, time_ms=T)) == (
        "14:00:00.000 KILL  pid 42  exit 124  killed: the run's timeout expired")


def test_85_finding_line():
    e = FindingEvent("ssrf", "SSRF attempt", "high", CURL, "metadata.google.internal is a metadata name",
                     host="169.254.169.254", port=80, time_ms=T)
    assert line(e) == ("14:00:00.000 FIND  [HIGH] SSRF attempt  /usr/bin/curl -> 169.254.169.254:80"
                       "  metadata.google.internal is a metadata name")


def test_config_and_inference_lines():
    assert line(ConfigEvent("policy reloaded", revision=3, sha256="0123456789abcdef" * 4, time_ms=T)) == (
        "14:00:00.000 CONF  policy reloaded  [rev 3 sha256:0123456789ab]")
    e = InferenceEvent("openai", "api.openai.com", "gpt-4o", 200, 812.0, True, "/v1/chat/completions",
                       Actor("/usr/bin/python3"), 10, 20, time_ms=T)
    assert line(e) == ("14:00:00.000 INFER /usr/bin/python3 -> openai gpt-4o  POST /v1/chat/completions"
                       "  200 812ms  tokens 10/20")


def test_colour_only_when_asked():
    e = NetworkEvent(Action.DENIED, "h", 443, CURL, "connect", time_ms=T)
    assert "\x1b[" not in line(e)
    coloured = line(e, color=True)
    assert "\x1b[31mDENY " in coloured and coloured.endswith("[no rule]")


def test_long_reasons_are_cut_and_newlines_flattened():
    e = NetworkEvent(Action.DENIED, "h", 443, CURL, "connect", reason="a\nb " + "x" * 500, time_ms=T)
    out = line(e)
    assert "\n" not in out and out.endswith("…") and len(out) < 250


def test_unknown_or_broken_objects_still_give_a_line():
    assert shorthand({"class_uid": 9999, "time": T, "message": "hello", "severity_id": 1}) == "14:00:00.000 EVENT [INFO] hello"
    assert shorthand({"class_uid": 4001, "time": T, "actor": "not a dict"}).startswith("14:00:00.000 EVENT")
    assert shorthand({}) == "00:00:00.000 EVENT [UNKNOWN] ?"
