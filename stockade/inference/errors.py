"""The router's own answers, in the shape each protocol's SDKs parse (sans-IO).

OpenAI clients read `{"error": {"message", "type", "param", "code"}}`; Anthropic clients read
`{"type": "error", "error": {"type", "message"}}`. Answering in the caller's shape makes the
SDK raise its ordinary exception class with our message (BadRequestError, NotFoundError,
InternalServerError, ...), instead of a parse error. Messages name routes, protocols and
environment variable names, never a key, a file's content or a backend's error text.

Mid-stream failures cannot change the status line any more: they end the stream with one
error event in the protocol's SSE format, which both SDKs raise as an error.
"""

from __future__ import annotations

import json
from http import HTTPStatus

from ..records import Struct
from .shapes import Protocol

_OPENAI_TYPES = {400: "invalid_request_error", 404: "invalid_request_error", 413: "invalid_request_error"}
_ANTHROPIC_TYPES = {400: "invalid_request_error", 404: "not_found_error", 413: "request_too_large",
                    504: "timeout_error"}


class RouterError(Struct, frozen=True):
    status: int
    code: str  # stable: invalid_request, unknown_endpoint, request_too_large, inference_not_configured,
    #            api_key_unavailable, backend_unreachable, backend_timeout, backend_error
    message: str
    retryable: bool = True  # False adds `x-should-retry: false` (both SDKs honour it)


def error_payload(protocol: Protocol, err: RouterError) -> dict[str, object]:
    if protocol is Protocol.ANTHROPIC:
        kind = _ANTHROPIC_TYPES.get(err.status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": err.message}}
    kind = _OPENAI_TYPES.get(err.status, "server_error")
    return {"error": {"message": err.message, "type": kind, "param": None, "code": err.code}}


def reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def encode_json_response(status: int, payload: dict[str, object], *, close: bool,
                         extra: tuple[tuple[str, str], ...] = (), version: str = "1.1") -> bytes:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=True).encode() + b"\n"
    lines = [f"HTTP/{version} {status} {reason_phrase(status)}",
             "content-type: application/json", f"content-length: {len(body)}",
             "cache-control: no-store"]
    lines += [f"{k}: {v}" for k, v in extra]
    if close:
        lines.append("connection: close")
    elif version == "1.0":
        lines.append("connection: keep-alive")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def encode_error(protocol: Protocol, err: RouterError, *, close: bool, version: str = "1.1") -> bytes:
    extra = () if err.retryable else (("x-should-retry", "false"),)
    return encode_json_response(err.status, error_payload(protocol, err), close=close, extra=extra,
                                version=version)


def encode_forbidden(path: str, *, version: str = "1.1") -> bytes:
    """403 for a request on inference.local that is not an inference API call (proxy shape)."""
    payload = {
        "error": "not_inference",
        "detail": "inference.local only serves model API requests; the connection is closed",
        "path": path,
        "hint": "use https://inference.local/v1 as the base URL of an OpenAI or Anthropic client",
    }
    return encode_json_response(403, payload, close=True, version=version)


def encode_malformed(detail: str, status: int = 400) -> bytes:
    """A request that could not be parsed as HTTP/1.1 (proxy shape; the protocol is unknown)."""
    return encode_json_response(status, {"error": "bad_request", "detail": detail}, close=True)


# -- errors inside an event stream -----------------------------------------------------------

def sse_error_event(protocol: Protocol, code: str, message: str) -> bytes:
    """One SSE event that makes the protocol's SDK raise: OpenAI's `data: {"error": ...}` frame
    (what OpenAI itself sends), Anthropic's `event: error` (what Anthropic sends when
    overloaded mid-stream)."""
    if protocol is Protocol.ANTHROPIC:
        kind = "timeout_error" if code == "stream_idle_timeout" else "api_error"
        data = {"type": "error", "error": {"type": kind, "message": message}}
        return b"event: error\ndata: " + _compact(data) + b"\n\n"
    data = {"error": {"message": message, "type": "stream_error", "param": None, "code": code}}
    return b"data: " + _compact(data) + b"\n\n"


def _compact(data: object) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=True).encode()
