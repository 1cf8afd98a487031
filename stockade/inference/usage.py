"""Token usage as backends report it (sans-IO). Only counts are read, never text.

Where each protocol puts it:
- OpenAI chat/completions/embeddings: `usage.prompt_tokens` / `usage.completion_tokens`; in a
  stream, the last chunk when the client asked for `stream_options.include_usage` (the router
  does not add that option: it would change the stream the client sees);
- OpenAI responses: `usage.input_tokens` / `usage.output_tokens`, in a stream inside the
  `response.completed` (or `.incomplete`, `.failed`) event's `response`;
- Anthropic messages: `usage.input_tokens` / `usage.output_tokens`; in a stream, input in
  `message_start`'s `message.usage`, the cumulative output in `message_delta`'s `usage`.
Later reports win field by field, which gives the final counts for every stream above.
"""

from __future__ import annotations

import json
from typing import Any

from ..records import Struct
from .sse import parse_event

MAX_JSON_CAPTURE = 8 * 1024 * 1024  # larger non-streamed bodies are relayed without usage


class Usage(Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None

    def merge(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        found_in = _count(usage, "input_tokens", "prompt_tokens")
        found_out = _count(usage, "output_tokens", "completion_tokens")
        if found_in is not None:
            self.input_tokens = found_in
        if found_out is not None:
            self.output_tokens = found_out


def _count(usage: dict[str, Any], *names: str) -> int | None:
    for name in names:
        value = usage.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def _usage_objects(data: Any) -> list[Any]:
    if not isinstance(data, dict):
        return []
    found = [data.get("usage")]
    for container in ("response", "message"):  # responses stream events, anthropic message_start
        inner = data.get(container)
        if isinstance(inner, dict):
            found.append(inner.get("usage"))
    return [u for u in found if u is not None]


def usage_from_json(raw: bytes) -> Usage:
    usage = Usage()
    if b'"usage"' not in raw:
        return usage
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return usage
    for found in _usage_objects(data):
        usage.merge(found)
    return usage


class StreamUsage:
    """Feed it each complete SSE event; `usage` holds the counts seen so far."""

    def __init__(self) -> None:
        self.usage = Usage()
        self.finished = False  # a terminal event ([DONE], message_stop, response.completed) was seen

    def observe(self, raw_event: bytes) -> None:
        if b"[DONE]" in raw_event or b"message_stop" in raw_event or b"response.completed" in raw_event:
            name, data = parse_event(raw_event)
            if data == "[DONE]" or name in ("message_stop", "response.completed"):
                self.finished = True
        if b'"usage"' not in raw_event:  # most events: no JSON parse at all
            return
        _name, data = parse_event(raw_event)
        try:
            payload = json.loads(data)
        except (ValueError, RecursionError):
            return
        for found in _usage_objects(payload):
            self.usage.merge(found)
