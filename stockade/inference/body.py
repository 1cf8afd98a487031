"""Request bodies (sans-IO): validation, the requested model, and the route's model rewrite.

The body is never re-serialised: when the route names a model, only the text of the top-level
`model` value is replaced (or a `model` member is inserted), so every other byte the client sent
(key order, number spelling, whitespace, unicode escapes) reaches the backend as written.
A top-level `model` given twice is refused: JSON parsers disagree on which one wins, and the
router must select and rewrite the same one the backend will read.
"""

from __future__ import annotations

import json
import re

from ..records import Struct

MAX_BODY = 10 * 1024 * 1024  # 413 beyond (issue 5)

_WS = re.compile(r"[ \t\n\r]*")


class BodyError(Exception):
    """The body is not a JSON object the router can route; answered 400 in the protocol's shape."""


def _no_constants(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_no_constants)


class RequestBody(Struct, frozen=True):
    raw: bytes
    model: str | None  # the requested model when it is a string
    model_span: tuple[int, int] | None  # where its value is in `text` (character offsets)
    text: str


def parse_body(raw: bytes) -> RequestBody:
    """Validate a JSON object body and find its top-level `model`."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BodyError("the request body is not UTF-8 JSON") from None
    model: str | None = None
    span: tuple[int, int] | None = None
    for key, value, start, end in _members(text):
        if key == "model":
            if span is not None:
                raise BodyError("the request body has the top-level key 'model' more than once")
            span = (start, end)
            model = value if isinstance(value, str) else None
    return RequestBody(raw, model, span, text)


def rewrite_model(body: RequestBody, model: str) -> bytes:
    """The body with its top-level `model` set to `model`, every other byte unchanged."""
    value = json.dumps(model, ensure_ascii=False)
    text = body.text
    if body.model_span is not None:
        start, end = body.model_span
        return (text[:start] + value + text[end:]).encode("utf-8")
    brace = _WS.match(text, 0).end()  # type: ignore[union-attr]
    rest = text[brace + 1:]
    empty = rest.lstrip(" \t\n\r").startswith("}")
    member = f'"model":{value}' + ("" if empty else ",")
    return (text[:brace + 1] + member + rest).encode("utf-8")


def _members(text: str):  # -> Iterator[tuple[str, object, int, int]]
    """(key, value, value start, value end) of each top-level member; raises BodyError."""
    try:
        i = _skip(text, 0)
        if text[i:i + 1] != "{":
            raise BodyError("the request body must be a JSON object")
        i = _skip(text, i + 1)
        if text[i:i + 1] == "}":
            _end(text, i + 1)
            return
        while True:
            if text[i:i + 1] != '"':
                raise BodyError(f"invalid JSON in the request body at character {i}: expected a key")
            key, i = json.decoder.scanstring(text, i + 1)  # type: ignore[attr-defined]
            i = _skip(text, i)
            if text[i:i + 1] != ":":
                raise BodyError(f"invalid JSON in the request body at character {i}: expected ':'")
            start = _skip(text, i + 1)
            value, end = _DECODER.raw_decode(text, start)
            yield key, value, start, end
            i = _skip(text, end)
            sep = text[i:i + 1]
            if sep == ",":
                i = _skip(text, i + 1)
            elif sep == "}":
                _end(text, i + 1)
                return
            else:
                raise BodyError(f"invalid JSON in the request body at character {i}: expected ',' or '}}'")
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        if isinstance(exc, BodyError):
            raise
        raise BodyError(f"invalid JSON in the request body: {exc}") from None


def _skip(text: str, i: int) -> int:
    return _WS.match(text, i).end()  # type: ignore[union-attr]


def _end(text: str, i: int) -> None:
    if _skip(text, i) != len(text):
        raise BodyError("invalid JSON in the request body: extra data after the object")
