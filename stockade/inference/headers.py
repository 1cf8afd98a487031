"""Which headers cross the router, each way (sans-IO).

Requests: an allowlist, not a denylist (OpenShell forwarded everything but a few names until
its #826): a header we do not know could carry a credential, a tenant or routing hint, or
telemetry about the sandbox. Everything else is dropped, then the route's credential is
injected. What is forwarded:
- `content-type`, `accept`, `user-agent`;
- OpenAI: `openai-beta` (API feature flags). Not `openai-organization` / `openai-project`: they
  choose which account the *user's* key bills, which is the user's decision, not the agent's;
- Anthropic: `anthropic-version`, `anthropic-beta`; `anthropic-version: 2023-06-01` is added
  when the client sent none (the API refuses requests without it).
Not `accept-encoding`: the router decodes what the backend compresses and always answers the
client uncompressed, so it can read SSE event boundaries and usage, and append an error event
to a stream without corrupting it.

Responses: the backend's headers minus hop-by-hop and framing fields (the router re-frames
with chunked encoding), `content-encoding` (the body was decoded), cookies and `alt-svc`.
Rate-limit, request-id and `retry-after` headers pass, so SDK retries keep working.
"""

from __future__ import annotations

from collections.abc import Iterable

from .routes import ApiKey
from .shapes import Protocol

Headers = list[tuple[str, str]]

DEFAULT_ANTHROPIC_VERSION = "2023-06-01"

_COMMON = frozenset({"content-type", "accept", "user-agent"})
_FORWARDED: dict[Protocol, frozenset[str]] = {
    Protocol.OPENAI: _COMMON | {"openai-beta"},
    Protocol.ANTHROPIC: _COMMON | {"anthropic-version", "anthropic-beta"},
}

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authorization",
    "proxy-authenticate", "te", "trailer", "transfer-encoding", "upgrade",
})
_RESPONSE_DROP = HOP_BY_HOP | {"content-length", "content-encoding", "set-cookie", "set-cookie2", "alt-svc"}


def upstream_request_headers(client: Iterable[tuple[str, str]], protocol: Protocol,
                             key: ApiKey | None, *, has_body: bool) -> Headers:
    """The headers sent to the backend: the allowlisted client headers plus the route's key."""
    allowed = _FORWARDED[protocol]
    out: Headers = [(name.lower(), value) for name, value in client if name.lower() in allowed]
    names = {name for name, _ in out}
    if has_body and "content-type" not in names:
        out.append(("content-type", "application/json"))
    if protocol is Protocol.ANTHROPIC:
        if "anthropic-version" not in names:
            out.append(("anthropic-version", DEFAULT_ANTHROPIC_VERSION))
        if key is not None:
            out.append(("x-api-key", key.reveal()))
    elif key is not None:
        out.append(("authorization", f"Bearer {key.reveal()}"))
    return out


def client_response_headers(upstream: Iterable[tuple[str, str]]) -> Headers:
    """The backend's response headers as the client receives them (before framing is added)."""
    items = [(name.lower(), value) for name, value in upstream]
    named = {t.strip().lower() for name, value in items if name == "connection" for t in value.split(",")}
    drop = _RESPONSE_DROP | named
    return [(name, value) for name, value in items if name not in drop]


def is_event_stream(headers: Iterable[tuple[str, str]]) -> bool:
    for name, value in headers:
        if name.lower() == "content-type":
            return value.split(";", 1)[0].strip().lower() == "text/event-stream"
    return False
