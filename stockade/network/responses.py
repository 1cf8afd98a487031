"""The proxy's own responses: JSON errors (DESIGN.md §5) and the CONNECT success line.

Every failure the proxy detects is answered with one of these before the connection is closed,
never with a silent reset (OpenShell closes without a response on several paths, network.md
Appendix A.1). Bodies start with `error` (a stable code) and `detail` (one human sentence);
deny bodies add what makes them actionable: `host`, `port`, `binary`, `policy` (the rule key
that matched, if any), `reason` (which condition failed) and `hint` (the smallest policy
change that would allow it).
"""

from __future__ import annotations

import json
from typing import Any

from ..records import Struct, field

CONNECT_ESTABLISHED = b"HTTP/1.1 200 Connection Established\r\n\r\n"

REASONS: dict[int, str] = {
    200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 413: "Content Too Large", 414: "URI Too Long",
    421: "Misdirected Request", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported",
}


def reason_phrase(status: int) -> str:
    return REASONS.get(status, "Error")


class ErrorResponse(Struct, frozen=True):
    status: int
    error: str  # stable machine code: policy_denied, ssrf_denied, dns_failed, ...
    detail: str  # one sentence for a human
    fields: dict[str, Any] = field(default_factory=dict)  # host, port, binary, policy, reason, hint
    headers: tuple[tuple[str, str], ...] = ()

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.error, "detail": self.detail}
        out.update(self.fields)
        return out

    def encode(self, *, head_only: bool = False) -> bytes:
        """The full HTTP/1.1 response; `head_only` for an answer to a HEAD request."""
        payload = json.dumps(self.body(), separators=(",", ":"), ensure_ascii=True).encode() + b"\n"
        lines = [
            f"HTTP/1.1 {self.status} {reason_phrase(self.status)}",
            "Content-Type: application/json",
            f"Content-Length: {len(payload)}",
            "Connection: close",
            "Cache-Control: no-store",
        ]
        lines += [f"{name}: {value}" for name, value in self.headers]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if head_only else head + payload


class ProxyError(Exception):
    """A failure that ends the exchange with `response` (the event was already recorded)."""

    def __init__(self, response: ErrorResponse) -> None:
        super().__init__(f"{response.status} {response.error}: {response.detail}")
        self.response = response


# -- builders for the common cases -------------------------------------------------------

def bad_request(detail: str, *, status: int = 400, error: str = "bad_request") -> ErrorResponse:
    return ErrorResponse(status, error, detail)


def head_timeout(seconds: float) -> ErrorResponse:
    return ErrorResponse(408, "request_timeout",
                         f"no complete request head within {seconds:g} s")


def use_connect(host: str, port: int) -> ErrorResponse:
    return ErrorResponse(
        400, "use_connect",
        f"https:// URLs must be tunnelled: send CONNECT {host}:{port} and speak TLS inside "
        "the tunnel (set HTTPS_PROXY, not an https:// URL to an http proxy)",
        {"host": host, "port": port},
    )


def denied(
    *, error: str, detail: str, host: str, port: int, binary: str | None,
    policy: str | None, reason: str | None, hint: str | None, status: int = 403,
    extra: dict[str, Any] | None = None,
) -> ErrorResponse:
    fields: dict[str, Any] = {
        "host": host, "port": port, "binary": binary or "-", "policy": policy,
        "reason": reason, "hint": hint,
    }
    if extra:
        fields.update(extra)
    headers = (("X-Stockade-Policy", policy),) if policy else ()
    return ErrorResponse(status, error, detail, fields, headers)


def inference_unavailable(host: str, port: int) -> ErrorResponse:
    return ErrorResponse(503, "inference_unavailable", "inference.local is not configured for "
                         "this sandbox (no inference routes)", {"host": host, "port": port})


def upstream_unreachable(host: str, port: int, why: str) -> ErrorResponse:
    return ErrorResponse(502, "upstream_unreachable", f"connection to {host}:{port} failed: {why}",
                         {"host": host, "port": port})


def upstream_timeout(host: str, port: int, seconds: float) -> ErrorResponse:
    return ErrorResponse(504, "upstream_timeout",
                         f"connection to {host}:{port} timed out after {seconds:g} s",
                         {"host": host, "port": port})


def dns_failed(host: str, port: int, why: str) -> ErrorResponse:
    return ErrorResponse(502, "dns_failed", f"could not resolve {host}: {why}",
                         {"host": host, "port": port})

