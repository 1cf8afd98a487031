"""StoreRecorder: batching writer, counters, log file, drops, proposals, SIGKILL survival."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from stockade.events.recorder import StoreRecorder
from stockade.events.store import Retention, Store
from stockade.events.types import Action, Actor, HttpEvent, NetworkEvent, ProcessEvent

CURL = Actor("/usr/bin/curl", 7)


def allow(host="api.github.com"):
    return NetworkEvent(Action.ALLOWED, host, 443, CURL, "connect", rule="github")


def deny(host="evil.example.com", binary="/usr/bin/curl"):
    return NetworkEvent(Action.DENIED, host, 443, Actor(binary), "connect", reason="no rule")


@pytest.fixture()
def db(tmp_path):
    return tmp_path / "stockade.db"


@pytest.fixture()
def run_id(db):
    with Store(db) as s:
        return s.start_run("sb", pid=1, command=["sh"])


def test_events_are_stored_as_ocsf_with_counters_and_json_lines(db, run_id, tmp_path):
    log = tmp_path / "events.jsonl"
    rec = StoreRecorder("sb", run_id, db_path=db, log_file=log).start()
    events = [ProcessEvent("launch", ("sh",), pid=3), allow(), deny(),
              HttpEvent(Action.DENIED, "POST", "api.github.com", 443, "/x", CURL, rule="github", status=403),
              HttpEvent(Action.AUDIT, "DELETE", "api.github.com", 443, "/x", CURL, rule="github")]
    for e in events:
        rec.record(e)
    assert rec.flush()
    with Store(db) as s:
        rows = s.events("sb")
        assert [r.class_uid for r in rows] == [1007, 4001, 4001, 4002, 4002]
        assert [r.action for r in rows] == [None, "allowed", "denied", "denied", "audit"]
        assert [r.denied for r in rows] == [False, False, True, True, False]
        assert all(r.run_id == run_id and r.data()["unmapped"]["sandbox"] == "sb" for r in rows)
        run = s.run(run_id)
        assert (run.allowed, run.denied) == (2, 2)  # audit was forwarded: it counts as allowed
    lines = log.read_text().splitlines()
    assert [json.loads(x)["class_uid"] for x in lines] == [1007, 4001, 4001, 4002, 4002]
    rec.close()
    rec.close()  # idempotent
    rec.record(allow())  # after close: dropped, never raises


def test_a_full_queue_drops_counts_and_reports_the_drop(db, run_id):
    rec = StoreRecorder("sb", run_id, db_path=db, queue_max=10)
    for _ in range(25):
        rec.record(allow())  # the writer is not running yet: the queue fills
    assert rec.dropped == 15
    rec.start()
    rec.close()
    with Store(db) as s:
        rows = s.events("sb")
        assert len(rows) == 11
        finding = rows[-1].data()
        assert finding["class_uid"] == 2004 and finding["finding_info"]["uid"] == "events_dropped"
        assert "15 events were dropped" in finding["status_detail"]
        run = s.run(run_id)
        assert (run.allowed, run.dropped) == (10, 15)


def test_denials_become_one_pending_proposal_per_host_port(db, run_id):
    seen = []
    rec = StoreRecorder("sb", run_id, db_path=db, on_proposals=seen.append).start()
    for _ in range(3):
        rec.record(deny())
    rec.record(deny(binary="/usr/bin/wget"))
    rec.record(deny("169.254.169.254"))  # never proposed
    rec.record(NetworkEvent(Action.DENIED, "ssrf.example", 443, CURL, "connect", stage="ssrf"))  # not mapped
    assert rec.flush_proposals()
    rec.record(deny())
    rec.close()  # the final flush merges into the same pending proposal
    with Store(db) as s:
        [p] = s.proposals("sb")
    assert (p.status, p.rule_key, p.hit_count, p.binaries) == (
        "pending", "allow_evil_example_com_443", 5, ("/usr/bin/curl", "/usr/bin/wget"))
    assert [len(batch) for batch in seen] == [1, 1]


def test_the_aggregator_flushes_on_its_interval(db, run_id):
    rec = StoreRecorder("sb", run_id, db_path=db, flush_interval_s=0.2).start()
    rec.record(deny())
    deadline = time.monotonic() + 5
    with Store(db) as s:
        while not s.proposals("sb") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(s.proposals("sb")) == 1
    rec.close()


def test_the_writer_prunes_by_retention(db, run_id):
    with Store(db) as s:
        s.insert_batch([("sb", None, 1, 4001, "allowed", 0, "{}")])  # 1970: far beyond any age bound
    rec = StoreRecorder("sb", run_id, db_path=db, retention=Retention(max_age_s=3600)).start()
    rec.record(allow())
    rec.close()
    with Store(db) as s:
        assert [r.class_uid for r in s.events("sb")] == [4001] and s.events("sb")[0].time_ms > 1


def test_the_writer_prunes_as_it_starts_not_at_its_first_interval(db, run_id):
    """A short command's run must not pay for pruning at its end: the first round runs at once."""
    with Store(db) as s:
        s.insert_batch([("sb", None, 1, 4001, "allowed", 0, "{}")])
    rec = StoreRecorder("sb", run_id, db_path=db, batch_interval_s=60, retention=Retention(max_age_s=3600)).start()
    try:
        deadline = time.monotonic() + 10
        with Store(db) as s:
            while s.events("sb") and time.monotonic() < deadline:
                time.sleep(0.01)
            assert s.events("sb") == [] and rec.stats()["pruned"] == 1
    finally:
        rec.close()


def test_a_shared_store_is_used_and_left_open(db, run_id):
    with Store(db) as store:
        rec = StoreRecorder("sb", run_id, store=store).start()
        rec.record(allow())
        rec.close()
        assert rec.stats()["committed"] == 1
        assert [r.class_uid for r in store.events("sb")] == [4001]  # still open: the caller closes it
        assert store.run(run_id).allowed == 1


def test_a_bad_event_is_skipped_not_fatal(db, run_id):
    rec = StoreRecorder("sb", run_id, db_path=db).start()
    rec.record("not an event")  # type: ignore[arg-type]
    rec.record(allow())
    rec.close()
    assert rec.stats()["invalid"] == 1
    with Store(db) as s:
        assert len(s.events("sb")) == 1


def test_record_is_cheap(db, run_id):
    rec = StoreRecorder("sb", run_id, db_path=db).start()
    event = allow()
    n = 20_000
    t0 = time.perf_counter()
    for _ in range(n):
        rec.record(event)
    per_call_us = (time.perf_counter() - t0) / n * 1e6
    rec.close()
    print(f"record(): {per_call_us:.2f} us per call")  # reported, never asserted (no timed asserts)
    with Store(db) as s:
        assert s.run(run_id).allowed == n


CHILD = textwrap.dedent("""
    import sys
    from stockade.events.recorder import StoreRecorder
    from stockade.events.store import Store
    from stockade.events.types import Action, Actor, NetworkEvent, FindingEvent
    store = Store(sys.argv[1]); run = store.start_run("sb", pid=1, command=["sh"]); store.close()
    rec = StoreRecorder("sb", run, db_path=sys.argv[1], batch_interval_s=0.005).start()
    print(run, flush=True)
    i = 0
    while True:
        action = Action.DENIED if i % 3 == 0 else Action.ALLOWED
        rec.record(NetworkEvent(action, f"h{i % 50}.example", 443, Actor("/usr/bin/curl"), "connect"))
        if i % 7 == 0:
            rec.record(FindingEvent("ssrf", "SSRF attempt", "high"))
        i += 1
        if i % 200 == 0:
            rec.flush()
""")


def test_supervisor_sigkilled_mid_write_leaves_counters_and_events_consistent(db):
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        run = int(proc.stdout.readline())
        deadline = time.monotonic() + 20
        with Store(db) as s:
            while s.last_event_id() < 5000 and time.monotonic() < deadline:
                time.sleep(0.02)
        time.sleep(0.013)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with Store(db) as s:
        assert s.integrity_check() == "ok"
        r = s.run(run)
        n_allowed, n_denied = s._query(
            "SELECT sum(action = 'allowed'), sum(action = 'denied') FROM events WHERE class_uid = 4001")[0]
        assert r.status == "running"  # the supervisor never recorded its end
        # Counters move in the same transaction as their events: no batch is half there.
        assert (r.allowed, r.denied) == (n_allowed, n_denied)
        assert n_allowed + n_denied >= 4000


def test_no_state_file_descriptor_is_inheritable(db, run_id, tmp_path):
    """The sandbox is forked from the supervisor: the store and the log file must not leak into it."""
    import fcntl
    import os

    rec = StoreRecorder("sb", run_id, db_path=db, log_file=tmp_path / "events.jsonl").start()
    rec.record(allow())
    rec.flush()
    try:
        leaked = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if target.startswith(str(tmp_path)) and not fcntl.fcntl(int(fd), fcntl.F_GETFD) & fcntl.FD_CLOEXEC:
                leaked.append(target)
        assert leaked == []
    finally:
        rec.close()
