"""Which requests on `inference.local` are inference calls (sans-IO).

A request is either a recognised inference shape (protocol, kind) or it is not, and then the
router refuses it and closes the connection (issue 5, OpenShell PR #819). Matching is exact on
the path with the query string removed: no trailing-slash tolerance, no case folding, no
percent-decoding, so nothing can be smuggled past the router by spelling a path differently.

Two kinds of "not inference" are told apart, only to answer helpfully:
- `UNKNOWN_API`: the path is under `/v1/` (an SDK aimed at an endpoint we do not route, or the
  wrong method): answered 404 in the protocol's own error shape so the SDK surfaces it;
- `FORBIDDEN`: anything else (`GET /`, `/admin`, another host in absolute form): 403.
Both close the connection.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from ..records import Struct

HOST = "inference.local"


class Protocol(str, enum.Enum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"


class Shape(Struct, frozen=True):
    protocol: Protocol
    kind: str  # chat_completions, completions, responses, embeddings, models_list, models_get, messages, count_tokens
    path: str  # the request path without its query string

    @property
    def has_model(self) -> bool:
        """True when the request body names a model (the route may rewrite it)."""
        return self.kind not in ("models_list", "models_get")


class Refusal(enum.Enum):
    UNKNOWN_API = "unknown_api"  # 404 in the protocol's shape, then close
    FORBIDDEN = "forbidden"  # 403, then close


class NotInference(Struct, frozen=True):
    refusal: Refusal
    protocol: Protocol  # the error shape to answer in (a guess from the headers for 404s)
    path: str  # for the event; "-" when the target is unusable


_EXACT: dict[tuple[str, str], tuple[Protocol | None, str]] = {
    # None: the protocol is told by the headers (both APIs serve these paths).
    ("POST", "/v1/chat/completions"): (Protocol.OPENAI, "chat_completions"),
    ("POST", "/v1/completions"): (Protocol.OPENAI, "completions"),
    ("POST", "/v1/responses"): (Protocol.OPENAI, "responses"),
    ("POST", "/v1/embeddings"): (Protocol.OPENAI, "embeddings"),
    ("POST", "/v1/messages"): (Protocol.ANTHROPIC, "messages"),
    ("POST", "/v1/messages/count_tokens"): (Protocol.ANTHROPIC, "count_tokens"),
    ("GET", "/v1/models"): (None, "models_list"),
}
_MODELS_PREFIX = "/v1/models/"


def split_target(target: str) -> tuple[str, str, str | None] | None:
    """(path, query, authority host) of a request-target; None when it is unusable.

    Origin-form `/v1/x?y` gives host None; absolute-form `http://inference.local/v1/x` (a
    forward-proxy request on port 80) gives its host, which the caller must check.
    """
    host: str | None = None
    if not target.startswith("/"):
        scheme, sep, rest = target.partition("://")
        if not sep or scheme.lower() not in ("http", "https"):
            return None
        authority, slash, rest = rest.partition("/")
        if "@" in authority:
            return None
        host = authority.rsplit(":", 1)[0] if not authority.endswith("]") else authority
        target = slash + rest if slash else "/"
    path, _, query = target.partition("?")
    return path, query, host.lower() if host is not None else None


def protocol_hint(headers: Iterable[tuple[str, str]]) -> Protocol:
    """Anthropic's SDKs always send `anthropic-version`; OpenAI-style clients never do."""
    for name, _ in headers:
        if name.lower() in ("anthropic-version", "x-api-key"):
            return Protocol.ANTHROPIC
    return Protocol.OPENAI


def classify(method: str, target: str, headers: Iterable[tuple[str, str]]) -> Shape | NotInference:
    headers = list(headers)
    hint = protocol_hint(headers)
    parts = split_target(target)
    if parts is None:
        return NotInference(Refusal.FORBIDDEN, hint, "-")
    path, _query, host = parts
    if host is not None and host != HOST:
        return NotInference(Refusal.FORBIDDEN, hint, path)
    found = _EXACT.get((method, path))
    if found is not None:
        protocol, kind = found
        return Shape(protocol or hint, kind, path)
    if method == "GET" and path.startswith(_MODELS_PREFIX) and len(path) > len(_MODELS_PREFIX):
        return Shape(hint, "models_get", path)
    if path.startswith("/v1/"):
        return NotInference(Refusal.UNKNOWN_API, hint, path)
    return NotInference(Refusal.FORBIDDEN, hint, path)


def recognised() -> list[str]:
    """The recognised shapes, for error messages."""
    return [f"{m} {p}" for (m, p) in _EXACT] + ["GET /v1/models/{model}"]
