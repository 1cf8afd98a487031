"""What producers (the proxy, the supervisor, the inference router) record: plain domain events.

Producers call `recorder.record(event)` with one of the records below; the events package
turns them into OCSF 1.7 JSON, stores them, writes JSON lines, feeds the denial aggregator and
counts allows/denies. `record` must be cheap and must never raise or block the event loop: it
only enqueues.
"""

from __future__ import annotations

import enum
import time
from typing import Protocol

from ..records import Struct, field


class Action(enum.Enum):
    ALLOWED = "allowed"
    DENIED = "denied"
    AUDIT = "audit"  # an L7 violation forwarded because the endpoint's enforcement is audit


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Actor(Struct, frozen=True):
    """The process behind a connection; binary "-" when identity is unavailable."""

    binary: str = "-"
    pid: int | None = None  # in the sandbox's pid namespace
    ancestors: tuple[str, ...] = ()
    sha256: str | None = None


class NetworkEvent(Struct, frozen=True):
    """An L4 decision: a CONNECT or forward-proxy connection allowed or denied."""

    action: Action
    host: str
    port: int
    actor: Actor
    via: str  # "connect" | "forward" | "bypass"
    rule: str | None = None  # the policy rule key that decided it
    stage: str = "policy"  # "policy" | "identity" | "ssrf" | "dns" | "upstream" | "malformed" | "limit"
    reason: str | None = None  # precise human reason for a deny
    reason_code: str | None = None
    upstream: str | None = None  # the dialled address "ip:port" when allowed
    time_ms: int = field(default_factory=now_ms)


class HttpEvent(Struct, frozen=True):
    """An L7 decision on one HTTP request (forward proxy or inside a terminated tunnel)."""

    action: Action
    method: str
    host: str
    port: int
    path: str  # canonical, with credentials redacted; no query string
    actor: Actor
    rule: str | None = None
    reason: str | None = None
    status: int | None = None  # the status the client received when known
    time_ms: int = field(default_factory=now_ms)


class FindingEvent(Struct, frozen=True):
    """A security finding: SSRF attempt, binary hash change, placeholder misuse, unsolicited 101."""

    kind: str  # "ssrf" | "binary_changed" | "placeholder_misuse" | "unsolicited_upgrade" | ...
    title: str
    severity: str  # "low" | "medium" | "high" | "critical"
    actor: Actor = field(default_factory=Actor)
    detail: str = ""
    host: str | None = None
    port: int | None = None
    # What was done about it: DENIED (the default: the attempt was blocked), AUDIT (only recorded).
    action: Action = Action.DENIED
    # binary_changed: the hash trusted on first use (the actor's sha256 is the one seen now).
    trusted_sha256: str | None = None
    time_ms: int = field(default_factory=now_ms)


class ProcessEvent(Struct, frozen=True):
    """A lifecycle step of the sandboxed command: launch, exit, timeout kill."""

    activity: str  # "launch" | "exit" | "timeout"
    command: tuple[str, ...]
    pid: int | None = None
    exit_code: int | None = None
    time_ms: int = field(default_factory=now_ms)


class ConfigEvent(Struct, frozen=True):
    """A configuration change: policy loaded or reloaded (revision, sha256), layer degraded."""

    message: str
    revision: int | None = None
    sha256: str | None = None
    severity: str = "info"
    time_ms: int = field(default_factory=now_ms)


class InferenceEvent(Struct, frozen=True):
    """One call routed through inference.local. Never carries prompt or completion text."""

    route: str | None
    backend_host: str | None
    model: str | None
    status: int
    latency_ms: float
    streamed: bool
    path: str
    actor: Actor = field(default_factory=Actor)
    input_tokens: int | None = None
    output_tokens: int | None = None
    error: str | None = None
    method: str = "POST"
    time_ms: int = field(default_factory=now_ms)


Event = NetworkEvent | HttpEvent | FindingEvent | ProcessEvent | ConfigEvent | InferenceEvent


class Recorder(Protocol):
    def record(self, event: Event) -> None: ...


class NullRecorder:
    """Records nothing (the standalone proxy without a store, unit tests that do not look)."""

    def record(self, event: Event) -> None:
        return None


class ListRecorder:
    """Keeps events in a list: for tests that assert on what was recorded."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def record(self, event: Event) -> None:
        self.events.append(event)
