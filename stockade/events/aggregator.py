"""The denial aggregator (sans-IO): L4 policy denials grouped by (host, port, binary).

Only NetworkEvents denied at the `policy` stage are counted: those are the ones a narrow rule
could fix. SSRF, identity and malformed-request denials are not a missing rule, and L7 denials
already tell the agent what failed in their structured 403 (policy.md §5: not mapped).

The recorder's writer thread calls `add` for each event and `drain` when `due`; the summaries go
to the mapper. The number of distinct keys is bounded so an agent spraying random names cannot
grow the supervisor's memory: beyond `max_keys` new keys are counted as dropped until the flush.
"""

from __future__ import annotations

from ..records import Struct
from .types import Action, Event, NetworkEvent


class DenialSummary(Struct, frozen=True):
    host: str
    port: int
    binary: str
    count: int
    first_seen_ms: int
    last_seen_ms: int
    reason: str | None  # of the first denial in the window
    stage: str
    ancestors: tuple[str, ...]


class _Entry(Struct):
    count: int
    first_seen_ms: int
    last_seen_ms: int
    reason: str | None
    stage: str
    ancestors: tuple[str, ...]


def is_mappable(event: Event) -> bool:
    """True for the denials a proposal could fix: L4, denied by the policy stage."""
    return isinstance(event, NetworkEvent) and event.action is Action.DENIED and event.stage == "policy"


class DenialAggregator:
    def __init__(self, flush_interval_s: float = 10.0, *, max_keys: int = 10_000) -> None:
        self.flush_interval_ms = int(flush_interval_s * 1000)
        self.max_keys = max_keys
        self.dropped = 0
        self._entries: dict[tuple[str, int, str], _Entry] = {}
        self._window_start_ms: int | None = None

    def add(self, event: Event, now_ms: int | None = None) -> bool:
        """Count one event if it is a mappable denial; returns whether it was counted."""
        if not is_mappable(event):
            return False
        assert isinstance(event, NetworkEvent)
        t = event.time_ms
        if self._window_start_ms is None:
            self._window_start_ms = now_ms if now_ms is not None else t
        key = (event.host.lower(), event.port, event.actor.binary)
        entry = self._entries.get(key)
        if entry is None:
            if len(self._entries) >= self.max_keys:
                self.dropped += 1
                return False
            # The first event of a key supplies reason, stage and ancestors (policy.md §5.1).
            self._entries[key] = _Entry(1, t, t, event.reason, event.stage, event.actor.ancestors)
        else:
            entry.count += 1
            entry.first_seen_ms = min(entry.first_seen_ms, t)
            entry.last_seen_ms = max(entry.last_seen_ms, t)
        return True

    def __len__(self) -> int:
        return len(self._entries)

    def due(self, now_ms: int) -> bool:
        """True when the window holding denials is at least one flush interval old."""
        return self._window_start_ms is not None and now_ms - self._window_start_ms >= self.flush_interval_ms

    def drain(self) -> list[DenialSummary]:
        """Everything counted so far, as summaries; starts a fresh window."""
        out = [
            DenialSummary(host, port, binary, e.count, e.first_seen_ms, e.last_seen_ms, e.reason, e.stage, e.ancestors)
            for (host, port, binary), e in self._entries.items()
        ]
        self._entries.clear()
        self._window_start_ms = None
        self.dropped = 0
        return out
