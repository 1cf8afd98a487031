"""The proxy's own responses (network.md §9 case 101, DESIGN.md §5)."""

from __future__ import annotations

import json

from stockade.network.responses import (
    CONNECT_ESTABLISHED,
    ErrorResponse,
    denied,
    dns_failed,
    upstream_timeout,
    upstream_unreachable,
    use_connect,
)


def split(raw: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    return lines[0], dict(line.split(": ", 1) for line in lines[1:]), body


def test_policy_denied_shape():
    raw = denied(error="policy_denied", detail="CONNECT api.example.com:443 not permitted by policy",
                 host="api.example.com", port=443, binary="/usr/bin/curl", policy=None,
                 reason="no rule has an endpoint matching api.example.com:443",
                 hint="add a rule ...").encode()
    status, headers, body = split(raw)
    assert status == "HTTP/1.1 403 Forbidden"
    assert headers["Content-Type"] == "application/json" and headers["Connection"] == "close"
    assert int(headers["Content-Length"]) == len(body)
    parsed = json.loads(body)
    assert parsed == {"error": "policy_denied",
                      "detail": "CONNECT api.example.com:443 not permitted by policy",
                      "host": "api.example.com", "port": 443, "binary": "/usr/bin/curl",
                      "policy": None, "reason": "no rule has an endpoint matching api.example.com:443",
                      "hint": "add a rule ..."}
    assert "X-Stockade-Policy" not in headers


def test_rule_key_travels_in_a_header_too():
    raw = denied(error="policy_denied", detail="d", host="h", port=1, binary=None, policy="github",
                 reason="r", hint=None).encode()
    _, headers, body = split(raw)
    assert headers["X-Stockade-Policy"] == "github" and json.loads(body)["binary"] == "-"


def test_upstream_failures():
    status, _, body = split(upstream_unreachable("api.example.com", 443, "Connection refused").encode())
    assert status.startswith("HTTP/1.1 502 ") and json.loads(body)["error"] == "upstream_unreachable"
    assert json.loads(body)["detail"].startswith("connection to api.example.com:443 failed")
    status, _, body = split(dns_failed("nope.invalid", 80, "Name or service not known").encode())
    assert status.startswith("HTTP/1.1 502 ") and json.loads(body)["error"] == "dns_failed"
    status, _, body = split(upstream_timeout("h", 80, 10).encode())
    assert status == "HTTP/1.1 504 Gateway Timeout" and json.loads(body)["error"] == "upstream_timeout"


def test_other_shapes():
    status, headers, body = split(use_connect("api.example.com", 443).encode())
    assert status == "HTTP/1.1 400 Bad Request" and "CONNECT api.example.com:443" in json.loads(body)["detail"]
    assert int(headers["Content-Length"]) == len(body)  # OpenShell's is one byte off (A.3)
    head_only = ErrorResponse(403, "policy_denied", "x").encode(head_only=True)
    assert head_only.endswith(b"\r\n\r\n") and b"Content-Length: " in head_only
    assert CONNECT_ESTABLISHED == b"HTTP/1.1 200 Connection Established\r\n\r\n"
