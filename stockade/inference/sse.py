"""Server-sent events, as far as the router needs them (sans-IO).

`EventAligner` cuts a byte stream at event boundaries (a blank line, with any of the three line
endings SSE allows) and releases only complete events, each as soon as its blank line arrives.
The relay forwards exactly those bytes, unchanged. Holding back the unfinished tail of an event
costs the client nothing (it cannot act on half an event) and buys one guarantee: when the
backend fails mid-stream, the router's error event starts on an event boundary, so the SDK
raises our error instead of choking on half a JSON document.

An event larger than `max_pending` is released unaligned (counted in `unaligned`), which keeps
memory bounded against a backend that never sends a blank line.
"""

from __future__ import annotations

import re

_EOL = re.compile(rb"\r\n|\r|\n")
MAX_PENDING = 1024 * 1024


class EventAligner:
    def __init__(self, max_pending: int = MAX_PENDING) -> None:
        self._buf = bytearray()
        self._scan = 0  # where the next line terminator search starts
        self._line_start = 0  # start of the current line; -1: inside a line released unaligned
        self.max_pending = max_pending
        self.unaligned = 0

    @property
    def pending(self) -> bool:
        """True when part of an event has arrived but not its end."""
        return bool(self._buf) or self._line_start < 0

    def feed(self, data: bytes) -> bytes:
        """Append `data`; return the complete events it finishes (b"" when none)."""
        buf = self._buf
        buf += data
        cut = 0
        pos, line_start = self._scan, self._line_start
        while True:
            m = _EOL.search(buf, pos)
            if m is None:
                pos = len(buf)
                break
            if m.group() == b"\r" and m.end() == len(buf):
                pos = m.start()  # a CR at the end may be the first half of CRLF: wait
                break
            if m.start() == line_start:
                cut = m.end()  # a blank line: the event ends here
            line_start = pos = m.end()
        if cut:
            out = bytes(buf[:cut])
            del buf[:cut]
            pos -= cut
            line_start -= cut
        else:
            out = b""
        if len(buf) > self.max_pending:
            self.unaligned += 1
            out += bytes(buf)
            at_line_start = line_start == len(buf)
            buf.clear()
            pos, line_start = 0, (0 if at_line_start else -1)
        self._scan, self._line_start = pos, line_start
        return out

    def discard(self) -> None:
        """Forget an unfinished event (the stream failed; it will never complete)."""
        self._buf.clear()
        self._scan = 0
        self._line_start = 0


def parse_event(raw: bytes) -> tuple[str | None, str]:
    """(event name, data) of one complete event; data lines joined with LF, as SSE defines."""
    name: str | None = None
    data: list[str] = []
    for line in _EOL.split(raw):
        if not line or line.startswith(b":"):
            continue
        field, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if field == b"event":
            name = value.decode("utf-8", "replace")
        elif field == b"data":
            data.append(value.decode("utf-8", "replace"))
    return name, "\n".join(data)


def split_events(raw: bytes) -> list[bytes]:
    """The complete events in `raw` (for callers that already hold aligned bytes)."""
    out: list[bytes] = []
    pos = 0
    line_start = 0
    for m in _EOL.finditer(raw):
        if m.start() == line_start:
            out.append(raw[pos:m.end()])
            pos = m.end()
        line_start = m.end()
    return out
