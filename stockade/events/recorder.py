"""StoreRecorder: the Recorder the supervisor hands to the proxy, launcher and inference router.

`record(event)` appends to a bounded in-memory queue and returns: no lock, no I/O, no JSON, so
it costs the proxy's event loop well under a microsecond and can never block it. One writer
thread does everything else, in batches (every `batch_interval_s`, or sooner once `batch_max`
events wait):
  OCSF conversion → the `--log-file` JSON lines → one SQLite transaction holding the events and
  the run's allowed/denied counters → the denial aggregator, whose flush (every
  `flush_interval_s`) merges proposals into the store → periodic retention pruning.

When the queue is full an event is dropped and counted, never waited for; the writer records
the count as a finding (`events_dropped`) and in the run's `dropped` counter.

Lifecycle:
    store = Store.open_default(); run_id = store.start_run(name, pid=..., command=[...])
    recorder = StoreRecorder(name, run_id, log_file=path_or_None).start()
    ... recorder.record(event) from any thread ...
    recorder.close()            # flushes the queue and the aggregator, closes the log file
"""

from __future__ import annotations

import collections
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .. import __version__
from .aggregator import DenialAggregator
from .ocsf import to_ocsf
from .store import Proposal, Retention, Store
from .types import Action, Event, FindingEvent, HttpEvent, NetworkEvent, now_ms

_DB_RETRIES = 3


class StoreRecorder:
    def __init__(
        self,
        sandbox: str,
        run_id: int | None,
        *,
        db_path: str | os.PathLike[str] | None = None,
        store: Store | None = None,
        log_file: str | os.PathLike[str] | None = None,
        queue_max: int = 100_000,
        batch_interval_s: float = 0.05,
        batch_max: int = 500,
        flush_interval_s: float = 10.0,
        on_proposals: Callable[[list[Proposal]], None] | None = None,
        retention: Retention | None = None,
        version: str = __version__,
    ) -> None:
        from ..state import db_path as default_db_path

        self.sandbox = sandbox
        self.run_id = run_id
        self._queue: collections.deque[Any] = collections.deque()
        self._queue_max = queue_max
        self._interval = batch_interval_s
        self._batch_max = batch_max
        self._wake = threading.Event()
        self._closing = False
        self._closed = False
        self._version = version
        self._on_proposals = on_proposals
        self._retention = retention if retention is not None else Retention.from_env()
        self._next_prune = 0.0
        self.aggregator = DenialAggregator(flush_interval_s)
        # `store`: the caller's connection, shared (Store is thread-safe) and left open at close.
        # Otherwise opened here, not in the thread, so a bad path fails the supervisor before the run.
        self._owns_store = store is None
        self._store = store if store is not None else Store(db_path if db_path is not None else default_db_path())
        self._log = None
        if log_file is not None:
            fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            self._log = os.fdopen(fd, "a", encoding="utf-8")
        # Producers only ever increment `_dropped_total`; the writer only `_dropped_reported`.
        self._dropped_total = 0
        self._dropped_reported = 0
        # lag: from an event's time_ms to its commit; commit: time inside the SQLite transaction.
        self._stats = {"committed": 0, "batches": 0, "write_errors": 0, "lost": 0, "invalid": 0,
                       "max_lag_ms": 0, "lag_ms_total": 0, "commit_us_total": 0, "max_commit_us": 0,
                       "proposal_flushes": 0, "pruned": 0}
        self._warned = False
        self._thread = threading.Thread(target=self._run, name=f"stockade-recorder-{sandbox}", daemon=True)

    # -- producer side ----------------------------------------------------------------------

    def record(self, event: Event) -> None:
        """Enqueue one event. Never raises, never blocks; drops (and counts) when full."""
        q = self._queue
        if len(q) >= self._queue_max or self._closed:
            self._dropped_total += 1
            return
        q.append(event)
        if len(q) >= self._batch_max and not self._wake.is_set():
            self._wake.set()

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> StoreRecorder:
        self._thread.start()
        return self

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every event recorded before this call is committed (and logged)."""
        if not self._thread.is_alive():
            return False
        done = threading.Event()
        self._queue.append(done)
        self._wake.set()
        return done.wait(timeout)

    def flush_proposals(self, timeout: float = 10.0) -> bool:
        """Commit pending events, then flush the aggregator now instead of at the next interval."""
        done = threading.Event()
        self._queue.append(("flush_proposals", done))
        self._wake.set()
        return done.wait(timeout) if self._thread.is_alive() else False

    def close(self, timeout: float = 30.0) -> None:
        """Flush everything (events, aggregator) and stop the writer. Idempotent."""
        if self._closed:
            return
        self._closing = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        else:  # never started: still commit what was recorded
            self._drain()
            self._flush_proposals()
        self._closed = True
        if not self._thread.is_alive():
            if self._owns_store:
                self._store.close()
            if self._log is not None:
                self._log.close()

    def __enter__(self) -> StoreRecorder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def dropped(self) -> int:
        return self._dropped_total

    def stats(self) -> dict[str, int]:
        """Counters for status and benchmarks: committed, batches, dropped, max_lag_ms, ..."""
        return {**self._stats, "dropped": self._dropped_total, "queued": len(self._queue)}

    # -- writer thread ----------------------------------------------------------------------

    def _run(self) -> None:
        # The first round runs at once (pruning included): while the command starts, not at the
        # end of a short one.
        while True:
            closing = self._closing
            try:
                self._drain()
                now = time.monotonic()
                if self.aggregator.due(now_ms()):
                    self._flush_proposals()
                if now >= self._next_prune:
                    self._next_prune = now + self._retention.every_s
                    self._stats["pruned"] += self._store.prune(self._retention)
            except Exception as exc:  # noqa: BLE001 - the writer must outlive any one failure
                self._warn(f"recorder: {exc}")
            if closing and not self._queue:
                break
            self._wake.wait(self._interval)
            self._wake.clear()
        try:
            self._flush_proposals()  # the final flush (policy.md §5.1: on close)
        except Exception as exc:  # noqa: BLE001
            self._warn(f"recorder: final proposal flush failed: {exc}")

    def _drain(self) -> None:
        q = self._queue
        while q or self._dropped_total != self._dropped_reported:
            batch: list[Event] = []
            waiters: list[Any] = []
            while q and len(batch) < self._batch_max:
                item = q.popleft()
                if isinstance(item, (threading.Event, tuple)):
                    waiters.append(item)
                    break  # commit what precedes the marker before signalling it
                batch.append(item)
            dropped = self._dropped_total - self._dropped_reported
            if dropped:
                self._dropped_reported += dropped
                batch.append(FindingEvent(
                    kind="events_dropped", title="Events dropped", severity="medium", action=Action.AUDIT,
                    detail=f"{dropped} events were dropped: the recorder queue ({self._queue_max}) was full",
                ))
            self._commit(batch, dropped)
            for w in waiters:
                if isinstance(w, tuple):
                    self._flush_proposals()
                    w[1].set()
                else:
                    w.set()

    def _commit(self, batch: list[Event], dropped: int) -> None:
        if not batch and not dropped:
            return
        rows = []
        lines = []
        allowed = denied = 0
        oldest = None
        for event in batch:
            try:
                data = to_ocsf(event, sandbox=self.sandbox, run_id=self.run_id, version=self._version)
                text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
            except Exception:  # noqa: BLE001 - a producer bug must not lose the batch
                self._stats["invalid"] += 1
                continue
            action = getattr(event, "action", None)
            action_text = action.value if isinstance(action, Action) else None
            is_denied = isinstance(event, (NetworkEvent, HttpEvent)) and action is Action.DENIED
            if isinstance(event, (NetworkEvent, HttpEvent)):
                if is_denied:
                    denied += 1
                else:
                    allowed += 1
            rows.append((self.sandbox, self.run_id, data["time"], data["class_uid"], action_text, int(is_denied), text))
            lines.append(text)
            oldest = data["time"] if oldest is None else min(oldest, data["time"])
            self.aggregator.add(event)
        if self._log is not None and lines:
            try:
                self._log.write("\n".join(lines) + "\n")
                self._log.flush()
            except OSError as exc:
                self._warn(f"recorder: cannot write the log file: {exc}")
        started = time.perf_counter()
        for attempt in range(_DB_RETRIES):
            try:
                self._store.insert_batch(rows, run_id=self.run_id, allowed=allowed, denied=denied, dropped=dropped)
                break
            except Exception as exc:  # noqa: BLE001 - retried, then counted as lost
                self._stats["write_errors"] += 1
                if attempt == _DB_RETRIES - 1:
                    self._stats["lost"] += len(rows)
                    self._warn(f"recorder: {len(rows)} events lost: {exc}")
                    return
                time.sleep(0.1 * (attempt + 1))
        st = self._stats
        commit_us = int((time.perf_counter() - started) * 1e6)
        st["commit_us_total"] += commit_us
        st["max_commit_us"] = max(st["max_commit_us"], commit_us)
        st["committed"] += len(rows)
        st["batches"] += 1
        if oldest is not None:
            t = now_ms()
            st["max_lag_ms"] = max(st["max_lag_ms"], t - oldest)
            st["lag_ms_total"] += sum(t - r[2] for r in rows)

    def _flush_proposals(self) -> None:
        summaries = self.aggregator.drain()
        if not summaries:
            return
        self._stats["proposal_flushes"] += 1
        from .mapper import generate_proposals  # YAML and the address table: only once denials are flushed

        proposed = generate_proposals(summaries)
        if not proposed:
            return
        touched = self._store.merge_proposals(self.sandbox, proposed)
        if self._on_proposals is not None and touched:
            try:
                self._on_proposals(touched)
            except Exception as exc:  # noqa: BLE001 - the supervisor's callback must not stop the writer
                self._warn(f"recorder: on_proposals callback failed: {exc}")

    def _warn(self, message: str) -> None:
        # One line on stderr is enough to say something is wrong; stats() keeps the tally.
        if not self._warned:
            self._warned = True
            print(f"stockade: {message}", file=sys.stderr)
