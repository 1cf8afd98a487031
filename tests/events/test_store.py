"""The SQLite store: WAL, schema, runs/revisions/routes, retention, SIGKILL mid-write, readers."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from stockade.errors import StockadeError
from stockade.events.store import SCHEMA_VERSION, Retention, Route, Store


@pytest.fixture()
def db(tmp_path):
    return tmp_path / "stockade.db"


@pytest.fixture()
def store(db):
    with Store(db) as s:
        yield s


def row(sandbox="sb", run_id=None, t=1000, denied=0, cls=4001, action="allowed", payload="x"):
    return (sandbox, run_id, t, cls, action, denied, json.dumps({"time": t, "p": payload}))


def test_wal_synchronous_schema_and_private_file(store, db):
    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 1
    assert raw.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
    tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"runs", "events", "policy_revisions", "proposals", "inference_routes"} <= tables
    indexes = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"events_by_sandbox", "events_by_time", "events_denied", "proposals_one_pending"} <= indexes
    raw.close()
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600


def test_reopening_keeps_data_and_a_newer_schema_is_refused(db):
    with Store(db) as s:
        run = s.start_run("sb", pid=1, command=["true"])
    with Store(db) as s:
        assert s.run(run).command == ("true",)
    raw = sqlite3.connect(db)
    raw.execute("PRAGMA user_version=99")
    raw.commit()
    raw.close()
    with pytest.raises(StockadeError, match="newer"):
        Store(db)


def test_runs_lifecycle_and_counters(store):
    run = store.start_run("brave-otter", pid=10, command=["claude", "--x"], policy_source="p.yaml", started_ms=5)
    store.insert_batch([row(run_id=run)], run_id=run, allowed=3, denied=2, dropped=1)
    store.update_run(run, pid=11, policy_revision=4)
    r = store.run(run)
    assert (r.sandbox, r.pid, r.status, r.allowed, r.denied, r.dropped, r.policy_revision) == (
        "brave-otter", 11, "running", 3, 2, 1, 4)
    store.finish_run(run, status="exited", exit_code=0, ended_ms=9)
    r = store.run(run)
    assert (r.status, r.exit_code, r.ended_ms) == ("exited", 0, 9)
    second = store.start_run("brave-otter", pid=12, command=["sh"], started_ms=20)
    store.start_run("calm-koala", pid=13, command=["sh"], started_ms=15)
    assert store.latest_run("brave-otter").id == second
    assert [x.sandbox for x in store.latest_runs()] == ["brave-otter", "calm-koala"]
    assert store.latest_sandbox() == "brave-otter"


def test_events_follow_since_and_denied(store):
    store.insert_batch([row(t=1000), row(t=2000, denied=1, action="denied"), row(sandbox="other", t=2500),
                        row(t=3000)])
    everything = store.events("sb")
    assert [e.time_ms for e in everything] == [1000, 2000, 3000]
    assert [e.time_ms for e in store.events("sb", after_id=everything[0].id)] == [2000, 3000]
    assert [e.time_ms for e in store.events("sb", since_ms=1500)] == [2000, 3000]
    assert [e.time_ms for e in store.events("sb", since_ms=9999)] == []
    [d] = store.events("sb", denied=True)
    assert d.denied and d.action == "denied" and d.data()["time"] == 2000
    assert store.last_event_id("sb") == everything[-1].id
    assert [e.time_ms for e in store.events("sb", limit=2)] == [1000, 2000]


def test_event_ids_are_never_reused_after_pruning(store):
    store.insert_batch([row(t=1)] * 3)
    last = store.last_event_id()
    store.prune(Retention(max_age_s=1), now_ms=10_000)
    assert store.events("sb") == []
    store.insert_batch([row(t=20_000)])
    assert store.events("sb")[0].id > last


def test_revisions_are_numbered_per_sandbox_and_deduplicated(store):
    run = store.start_run("sb", pid=1, command=["sh"])
    r1 = store.add_revision("sb", yaml_text="version: 1\n", sha256="a" * 64, source="p.yaml", run_id=run)
    again = store.add_revision("sb", yaml_text="version: 1\n", sha256="a" * 64, source="p.yaml", run_id=run)
    r2 = store.add_revision("sb", yaml_text="version: 1\n# b\n", sha256="b" * 64, source="policy set")
    other = store.add_revision("other", yaml_text="x", sha256="a" * 64, source="x")
    assert (r1.revision, again.revision, r2.revision, other.revision) == (1, 1, 2, 1)
    assert store.revision("sb").revision == 2 and store.revision("sb", 1).yaml == "version: 1\n"
    assert store.revision("sb", 7) is None
    assert [r.revision for r in store.revisions("sb")] == [1, 2]
    assert store.run(run).policy_revision == 1


def test_inference_routes_crud(store):
    store.put_route(Route("openai", "openai", "https://api.openai.com/v1", "gpt-4o", api_key_env="OPENAI_API_KEY",
                          is_default=True))
    store.put_route(Route("claude", "anthropic", "https://api.anthropic.com", None, api_key_file="/k", is_default=True))
    # One default per protocol: an OpenAI default and an Anthropic default coexist.
    assert [(r.name, r.is_default) for r in store.routes()] == [("claude", True), ("openai", True)]
    store.put_route(Route("local", "openai", "http://localhost:11434/v1", "llama3.2", is_default=True))
    assert store.default_route("openai").name == "local" and store.default_route("anthropic").name == "claude"
    store.set_default_route("openai")
    assert store.default_route("openai").name == "openai" and store.default_route("anthropic").name == "claude"
    assert not store.route("local").is_default
    assert store.route("claude").api_key_file == "/k"
    assert store.delete_route("claude") and not store.delete_route("claude")
    with pytest.raises(StockadeError, match="protocol"):
        store.put_route(Route("x", "grpc", "http://x"))
    with pytest.raises(StockadeError, match="not both"):
        store.put_route(Route("x", "openai", "http://x", api_key_env="A", api_key_file="/f"))
    with pytest.raises(StockadeError, match="no inference route"):
        store.set_default_route("missing")


def test_retention_by_age_removes_old_events_and_finished_runs(store):
    day = 86_400_000
    now = 30 * day
    old_run = store.start_run("old", pid=1, command=["sh"], started_ms=now - 20 * day)
    store.finish_run(old_run, status="exited", exit_code=0, ended_ms=now - 19 * day)
    live_run = store.start_run("live", pid=2, command=["sh"], started_ms=now - 20 * day)
    store.insert_batch([row(t=now - 8 * day), row(t=now - 6 * day), row(t=now)])
    deleted = store.prune(Retention(max_age_s=7 * 86400), now_ms=now)
    assert deleted == 1
    assert [e.time_ms for e in store.events("sb")] == [now - 6 * day, now]
    assert store.run(old_run) is None and store.run(live_run) is not None


def test_retention_by_size_keeps_the_newest_events(store):
    big = "x" * 2000
    for batch in range(20):
        store.insert_batch([row(t=10_000 + batch * 100 + i, payload=big) for i in range(100)])
    before = store.used_bytes()
    assert before > 4_000_000
    limit = 1_000_000
    store.prune(Retention(max_age_s=10**9, max_bytes=limit), now_ms=20_000)
    assert store.used_bytes() <= limit
    kept = [e.time_ms for e in store.events("sb", limit=10_000)]
    assert kept and kept[-1] == 10_000 + 19 * 100 + 99  # the newest survive
    assert kept == sorted(kept) and len(kept) < 2000
    assert store.integrity_check() == "ok"


CHILD = textwrap.dedent("""
    import json, sys
    from stockade.events.store import Store
    store = Store(sys.argv[1])
    print("ready", flush=True)
    batch = 0
    while True:
        rows = [("sb", None, batch, 4001, "allowed", 0, json.dumps({"batch": batch, "i": i, "pad": "x" * 200}))
                for i in range(500)]
        store.insert_batch(rows)
        batch += 1
""")


def test_sigkill_mid_write_leaves_a_consistent_store_without_partial_batches(db):
    Store(db).close()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 20
        with Store(db) as reader:
            while reader.last_event_id() < 20_000 and time.monotonic() < deadline:
                time.sleep(0.05)
        time.sleep(0.037)  # land somewhere inside a later batch
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with Store(db) as s:
        assert s.integrity_check() == "ok"
        counts = dict(s._conn.execute("SELECT time_ms, count(*) FROM events GROUP BY time_ms").fetchall())
    assert len(counts) >= 40
    assert set(counts.values()) == {500}, "a batch was partially committed"
    assert sorted(counts) == list(range(len(counts)))  # and none is missing


def test_readers_do_not_block_the_writer_and_see_only_whole_batches(db):
    stop = threading.Event()
    seen_partial = []
    errors = []

    def reader():
        try:
            with Store(db) as s:
                while not stop.is_set():
                    n = s._query("SELECT count(*) FROM events")[0][0]
                    if n % 100:
                        seen_partial.append(n)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    with Store(db) as writer:
        threads = [threading.Thread(target=reader) for _ in range(4)]
        for t in threads:
            t.start()
        for b in range(50):
            writer.insert_batch([row(t=b)] * 100)
        stop.set()
        for t in threads:
            t.join()
        assert writer._query("SELECT count(*) FROM events")[0][0] == 5000
    assert not errors and not seen_partial


def test_a_second_store_in_one_process_does_not_cost_the_first_its_locks(db):
    """The supervisor holds several Store connections (services, recorder, route refreshes)
    while CLI processes come and go. Opening another Store must not drop the first one's POSIX
    locks, or a CLI closing its connection deletes the WAL under our feet and later commits
    vanish."""
    first = Store(db)
    run = first.start_run("sb", pid=1, command=["a"])
    Store(db).close()  # e.g. the recorder's own connection, opened and closed
    second = Store(db)
    reader = f"from stockade.events.store import Store\ns = Store({str(db)!r})\ns.latest_runs()\ns.close()\n"
    subprocess.run([sys.executable, "-c", reader], check=True, timeout=30)  # a CLI, come and gone
    first.finish_run(run, status="exited", exit_code=0)
    first.add_revision("sb", yaml_text="version: 1\n", sha256="a" * 64, source="f")
    check = (f"from stockade.events.store import Store\ns = Store({str(db)!r})\n"
             "print(s.run(1).status, s.revision('sb').revision)\n")
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=30)
    assert out.stdout.split() == ["exited", "1"], out.stderr
    first.close()
    second.close()


def test_a_store_left_open_ends_with_its_process_and_the_next_one_takes_up_the_wal(db):
    """Store.leave_open (`stockade run`'s end): no checkpoint, the WAL stays, nothing is lost."""
    code = textwrap.dedent("""
        import os, sys
        from stockade.events.store import Store
        s = Store(sys.argv[1])
        run = s.start_run("left", pid=1, command=["true"])
        s.finish_run(run, status="exited", exit_code=0)
        s.leave_open()
        del s  # the connection outlives its Store: only the process's end closes it
        import gc; gc.collect()
        sys.stdout.flush()
        os._exit(0)
    """)
    for _ in range(2):
        subprocess.run([sys.executable, "-c", code, str(db)], check=True, timeout=60)
        wal = db.with_name(db.name + "-wal")
        assert wal.exists() and wal.stat().st_size > 0  # closing the last connection would delete it
    with Store(db) as s:
        assert s.integrity_check() == "ok"
        assert [(s.run(i).sandbox, s.run(i).status) for i in (1, 2)] == [("left", "exited")] * 2
    assert not wal.exists()  # a plain close still checkpoints


def test_stores_left_open_keep_the_wal_small(db):
    """Runs that end with leave_open never checkpoint by closing: the automatic checkpoints
    keep the WAL (which the next run's first reader takes up) small."""
    code = textwrap.dedent("""
        import os, sys
        from stockade.events.store import Store
        s = Store(sys.argv[1])
        for i in range(40):
            run = s.start_run("left", pid=1, command=["x" * 3000])
            s.finish_run(run, status="exited", exit_code=0)
        s.leave_open()
        os._exit(0)
    """)
    for _ in range(5):
        subprocess.run([sys.executable, "-c", code, str(db)], check=True, timeout=60)
    assert db.with_name(db.name + "-wal").stat().st_size < 2**20  # SQLite's default lets it reach ~4 MB
    with Store(db) as s:
        assert s.integrity_check() == "ok" and s.latest_run("left").id == 200
