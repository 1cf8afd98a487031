"""Removing the route's key from what a backend sends back (sans-IO).

Some backends echo the credential they were given in an error body ("invalid api key
sk-..."), which would hand the agent the very key the router exists to keep from it. Error
responses (status >= 400) are therefore relayed through a Redactor. It holds back the last
len(key)-1 bytes of each piece until the next one arrives, so a key split across two reads is
still found; successful responses are not delayed by it.
"""

from __future__ import annotations

REPLACEMENT = b"[REDACTED]"


class Redactor:
    def __init__(self, secret: str | None) -> None:
        needles: list[bytes] = []
        if secret:
            raw = secret.encode()
            needles.append(raw)
            escaped = raw.replace(b"/", b"\\/")  # how some JSON encoders write it
            if escaped != raw:
                needles.append(escaped)
        self._needles = needles
        self._hold = max((len(n) for n in needles), default=1) - 1
        self._buf = b""
        self.hits = 0

    def feed(self, data: bytes) -> bytes:
        if not self._needles:
            return data
        buf = self._scrub(self._buf + data)
        if self._hold and len(buf) > self._hold:
            self._buf = buf[-self._hold:]
            return buf[:-self._hold]
        if self._hold:
            self._buf = buf
            return b""
        return buf

    def flush(self) -> bytes:
        out, self._buf = self._buf, b""
        return self._scrub(out)

    def _scrub(self, data: bytes) -> bytes:
        for needle in self._needles:
            if needle in data:
                self.hits += data.count(needle)
                data = data.replace(needle, REPLACEMENT)
        return data
