"""The SQLite store shared by every sandbox of the user: runs, events, policy revisions,
rule proposals and inference routes (stdlib sqlite3).

Why these settings:
- WAL: readers (`stockade logs --follow`, `stockade list`) never block the recorder's writer,
  and the writer never blocks them.
- synchronous=NORMAL: a committed batch survives the process being killed at any instant (the
  WAL is written before commit returns); only a power loss can drop the last few batches, and
  even then the database stays consistent.
- busy_timeout: several supervisors (one per sandbox) write to the same file; a writer waits
  for the lock instead of failing.
- Every write is one explicit `BEGIN IMMEDIATE` transaction, so a batch is all or nothing and
  two writers never deadlock upgrading a read lock.
- Event ids are AUTOINCREMENT: they only grow and are never reused after pruning, and since
  writes are serialised, commit order is id order. A follower that remembers the last id it
  printed never misses or repeats an event.

A Store object owns one connection guarded by a lock; use one per thread that writes a lot
(the recorder's writer opens its own).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import StockadeError
from ..records import Struct
from .schema import MIGRATIONS, SCHEMA_VERSION

BUSY_TIMEOUT_MS = 10_000
WAL_AUTOCHECKPOINT_PAGES = 100  # (SQLite's default: 1,000)
_LEFT_OPEN: list[sqlite3.Connection] = []  # Store.leave_open: connections that end with the process


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Run(Struct, frozen=True):
    id: int
    sandbox: str
    pid: int | None
    command: tuple[str, ...]
    status: str
    started_ms: int
    ended_ms: int | None
    exit_code: int | None
    policy_source: str | None
    policy_revision: int | None
    allowed: int
    denied: int
    dropped: int


class EventRow(Struct, frozen=True):
    id: int
    sandbox: str
    run_id: int | None
    time_ms: int
    class_uid: int
    action: str | None
    denied: bool
    ocsf: str  # JSON text, as stored

    def data(self) -> dict[str, Any]:
        return json.loads(self.ocsf)


class Revision(Struct, frozen=True):
    sandbox: str
    revision: int
    sha256: str
    time_ms: int
    source: str
    yaml: str
    run_id: int | None


class Proposal(Struct, frozen=True):
    id: int
    sandbox: str
    status: str
    rule_key: str
    host: str
    port: int
    binaries: tuple[str, ...]
    hit_count: int
    first_seen_ms: int
    last_seen_ms: int
    rationale: str
    rule_yaml: str
    stage: str | None
    created_ms: int
    decided_ms: int | None
    revision: int | None


class Route(Struct, frozen=True):
    name: str
    protocol: str  # "openai" | "anthropic"
    base_url: str
    model: str | None = None
    api_key_env: str | None = None
    api_key_file: str | None = None
    is_default: bool = False


class Retention(Struct, frozen=True):
    """How much history the store keeps: events older than `max_age_s`, or beyond `max_bytes`
    of database pages (oldest first), are pruned by the recorder's writer every `every_s`."""

    max_age_s: float = 7 * 86400
    max_bytes: int = 100 * 1024 * 1024
    every_s: float = 60.0

    @classmethod
    def from_env(cls) -> Retention:
        """`STOCKADE_LOG_MAX_AGE_DAYS` and `STOCKADE_LOG_MAX_MB` override the defaults."""
        base = cls()
        try:
            days = float(os.environ.get("STOCKADE_LOG_MAX_AGE_DAYS", base.max_age_s / 86400))
            mb = float(os.environ.get("STOCKADE_LOG_MAX_MB", base.max_bytes / 2**20))
        except ValueError:
            return base
        return cls(max_age_s=days * 86400, max_bytes=int(mb * 2**20), every_s=base.every_s)


class Store:
    """One connection to the store. Thread-safe (one lock); cheap methods, short transactions."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._lock = threading.RLock()
        # Create the file private before SQLite opens it; the -wal and -shm files copy its mode.
        # O_EXCL: never open and close an existing database file ourselves. Closing any fd of
        # the file drops every POSIX lock this process holds on it, the locks of other Store
        # connections included; another process then believes it is the last connection,
        # checkpoints and deletes the WAL, and our later commits go to an unlinked file.
        try:
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        except FileExistsError:
            pass
        try:
            self._conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
            self._configure()
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StockadeError(f"cannot open the state database {self.path}: {exc}") from None

    @classmethod
    def open_default(cls) -> Store:
        from ..state import db_path

        return cls(db_path())

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def leave_open(self) -> None:
        """For a process that ends right after (`stockade run`): instead of closing, the
        connection stays open until the process is gone, as if it were killed then. Closing the
        last connection checkpoints the WAL into the database file with two fsyncs (~3 ms at the
        end of every run on a small machine). SQLite is built to be killed at any moment: what
        was committed is in the WAL, the next connection takes it up, and the WAL stays bounded
        by the automatic checkpoints (WAL_AUTOCHECKPOINT_PAGES) and by other commands' closes."""
        with self._lock:
            _LEFT_OPEN.append(self._conn)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- setup ------------------------------------------------------------------------------

    def _configure(self) -> None:
        c = self._conn
        c.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        # Only effective on a brand-new file, before WAL writes its header: lets pruning give
        # pages back to the file system (incremental_vacuum).
        c.execute("PRAGMA auto_vacuum=INCREMENTAL")
        for _ in range(50):  # switching to WAL needs a moment alone with a brand-new file
            try:
                mode = c.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                break
            except sqlite3.OperationalError:
                time.sleep(0.02)
        else:
            mode = c.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.DatabaseError(f"could not enable WAL mode (journal_mode={mode})")
        c.execute("PRAGMA synchronous=NORMAL")
        # `stockade run` leaves its connection open at the end (leave_open): the WAL is not
        # checkpointed by a close, and the next run's first reader takes up all of it on the
        # critical path of its start (~3 ms for a 4 MB WAL, SQLite's default bound): checkpoint
        # at ~400 KB instead.
        c.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        c.execute("PRAGMA journal_size_limit=67108864")  # truncate the WAL back to 64 MB after checkpoints

    def _migrate(self) -> None:
        if self._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return
        with self.transaction() as c:
            version = c.execute("PRAGMA user_version").fetchone()[0]  # re-read under the lock
            if version > SCHEMA_VERSION:
                raise sqlite3.DatabaseError(
                    f"schema version {version} is newer than this stockade understands ({SCHEMA_VERSION})"
                )
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[target].split(";"):
                    if statement.strip():
                        c.execute(statement)
                c.execute(f"PRAGMA user_version={target}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any error)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        # fetchall() ends the implicit read transaction at once, so readers never pin the WAL.
        with self._lock:
            return self._conn.execute(sql, tuple(params)).fetchall()

    # -- runs -------------------------------------------------------------------------------

    def start_run(
        self, sandbox: str, *, pid: int | None, command: Iterable[str], policy_source: str | None = None,
        started_ms: int | None = None,
    ) -> int:
        """Register a run (status "running"); returns its id, which events and counters use."""
        with self.transaction() as c:
            cur = c.execute(
                "INSERT INTO runs (sandbox, pid, command, status, started_ms, policy_source)"
                " VALUES (?, ?, ?, 'running', ?, ?)",
                (sandbox, pid, json.dumps(list(command)), started_ms or _now_ms(), policy_source),
            )
            return int(cur.lastrowid)

    def update_run(self, run_id: int, *, pid: int | None = None, policy_revision: int | None = None) -> None:
        with self.transaction() as c:
            if pid is not None:
                c.execute("UPDATE runs SET pid = ? WHERE id = ?", (pid, run_id))
            if policy_revision is not None:
                c.execute("UPDATE runs SET policy_revision = ? WHERE id = ?", (policy_revision, run_id))

    def finish_run(self, run_id: int, *, status: str, exit_code: int | None, ended_ms: int | None = None) -> None:
        with self.transaction() as c:
            c.execute(
                "UPDATE runs SET status = ?, exit_code = ?, ended_ms = ? WHERE id = ?",
                (status, exit_code, ended_ms or _now_ms(), run_id),
            )

    _RUN_COLUMNS = (
        "id, sandbox, pid, command, status, started_ms, ended_ms, exit_code, policy_source,"
        " policy_revision, allowed, denied, dropped"
    )

    @staticmethod
    def _run(row: tuple[Any, ...]) -> Run:
        values = list(row)
        values[3] = tuple(json.loads(values[3]))
        return Run(*values)

    def run(self, run_id: int) -> Run | None:
        rows = self._query(f"SELECT {self._RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,))
        return self._run(rows[0]) if rows else None

    def latest_run(self, sandbox: str) -> Run | None:
        rows = self._query(
            f"SELECT {self._RUN_COLUMNS} FROM runs WHERE sandbox = ? ORDER BY started_ms DESC, id DESC LIMIT 1",
            (sandbox,),
        )
        return self._run(rows[0]) if rows else None

    def latest_runs(self, limit: int = 100) -> list[Run]:
        """The most recent run of each sandbox name, newest first."""
        rows = self._query(
            f"SELECT {self._RUN_COLUMNS} FROM runs WHERE id IN (SELECT max(id) FROM runs GROUP BY sandbox)"
            " ORDER BY started_ms DESC, id DESC LIMIT ?",
            (limit,),
        )
        return [self._run(r) for r in rows]

    def latest_sandbox(self) -> str | None:
        rows = self._query("SELECT sandbox FROM runs ORDER BY started_ms DESC, id DESC LIMIT 1")
        return rows[0][0] if rows else None

    # -- events -----------------------------------------------------------------------------

    def insert_batch(
        self, rows: list[tuple[str, int | None, int, int, str | None, int, str]], *,
        run_id: int | None = None, allowed: int = 0, denied: int = 0, dropped: int = 0,
    ) -> None:
        """Insert events and bump the run's counters in one transaction (all or nothing).

        A row is (sandbox, run_id, time_ms, class_uid, action, denied, ocsf_json).
        """
        with self.transaction() as c:
            c.executemany(
                "INSERT INTO events (sandbox, run_id, time_ms, class_uid, action, denied, ocsf)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            if run_id is not None and (allowed or denied or dropped):
                c.execute(
                    "UPDATE runs SET allowed = allowed + ?, denied = denied + ?, dropped = dropped + ? WHERE id = ?",
                    (allowed, denied, dropped, run_id),
                )

    def events(
        self, sandbox: str, *, after_id: int = 0, since_ms: int | None = None, denied: bool = False,
        limit: int = 1000,
    ) -> list[EventRow]:
        """Events of a sandbox name (every run) with id > after_id, oldest first."""
        if since_ms is not None and after_id == 0:
            # Start at the first event in the window (time index), then walk by id.
            first = self._query(
                "SELECT min(id) FROM events WHERE sandbox = ? AND time_ms >= ?", (sandbox, since_ms)
            )[0][0]
            if first is None:
                return []
            after_id = first - 1
        sql = "SELECT id, sandbox, run_id, time_ms, class_uid, action, denied, ocsf FROM events WHERE sandbox = ? AND id > ?"
        params: list[Any] = [sandbox, after_id]
        if denied:
            sql += " AND denied = 1"
        if since_ms is not None:
            sql += " AND time_ms >= ?"
            params.append(since_ms)
        sql += " ORDER BY id LIMIT ?"
        params.append(limit)
        return [EventRow(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]), r[7]) for r in self._query(sql, params)]

    def last_event_id(self, sandbox: str | None = None) -> int:
        if sandbox is None:
            row = self._query("SELECT max(id) FROM events")
        else:
            row = self._query("SELECT max(id) FROM events WHERE sandbox = ?", (sandbox,))
        return row[0][0] or 0

    # -- policy revisions -------------------------------------------------------------------

    def add_revision(
        self, sandbox: str, *, yaml_text: str, sha256: str, source: str, run_id: int | None = None,
        time_ms: int | None = None, approve: int | None = None,
        before_commit: Callable[[int], None] | None = None,
    ) -> Revision:
        """Record a policy revision (numbered per sandbox name, across runs). A policy whose
        SHA-256 equals the latest revision's is not stored again: that revision is returned.
        With `run_id`, the run's current revision is set in the same transaction.

        With `approve`, that pending proposal is marked approved with this revision in the same
        transaction (StockadeError, and nothing stored, when it is not pending).
        `before_commit(revision)` runs last inside the transaction, holding the write lock: if it
        raises, nothing is stored (LivePolicy installs the new policy there, so a revision is
        stored exactly when its policy went live)."""
        with self.transaction() as c:
            latest = c.execute(
                "SELECT revision, sha256 FROM policy_revisions WHERE sandbox = ? ORDER BY revision DESC LIMIT 1",
                (sandbox,),
            ).fetchone()
            if latest is not None and latest[1] == sha256:
                number = latest[0]
            else:
                number = (latest[0] if latest else 0) + 1
                c.execute(
                    "INSERT INTO policy_revisions (sandbox, revision, sha256, time_ms, source, yaml, run_id)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (sandbox, number, sha256, time_ms or _now_ms(), source, yaml_text, run_id),
                )
            if run_id is not None:
                c.execute("UPDATE runs SET policy_revision = ? WHERE id = ?", (number, run_id))
            if approve is not None:
                self._decide(c, sandbox, approve, "approved", number)
            if before_commit is not None:
                before_commit(number)
        rev = self.revision(sandbox, number)
        assert rev is not None
        return rev

    def revision(self, sandbox: str, number: int | None = None) -> Revision | None:
        """Revision `number` of a sandbox, or its latest."""
        sql = "SELECT sandbox, revision, sha256, time_ms, source, yaml, run_id FROM policy_revisions WHERE sandbox = ?"
        if number is None:
            rows = self._query(sql + " ORDER BY revision DESC LIMIT 1", (sandbox,))
        else:
            rows = self._query(sql + " AND revision = ?", (sandbox, number))
        return Revision(*rows[0]) if rows else None

    def revisions(self, sandbox: str) -> list[Revision]:
        rows = self._query(
            "SELECT sandbox, revision, sha256, time_ms, source, '', run_id FROM policy_revisions"
            " WHERE sandbox = ? ORDER BY revision",
            (sandbox,),
        )
        return [Revision(*r) for r in rows]

    # -- proposals (see mapper.py for how they are made) ------------------------------------

    _PROPOSAL_COLUMNS = (
        "id, sandbox, status, rule_key, host, port, binaries, hit_count, first_seen_ms, last_seen_ms,"
        " rationale, rule_yaml, stage, created_ms, decided_ms, revision"
    )

    @staticmethod
    def _proposal(row: tuple[Any, ...]) -> Proposal:
        values = list(row)
        values[6] = tuple(json.loads(values[6]))
        return Proposal(*values)

    def proposals(self, sandbox: str | None = None, *, status: str | None = None) -> list[Proposal]:
        sql, params = f"SELECT {self._PROPOSAL_COLUMNS} FROM proposals WHERE 1=1", []
        if sandbox is not None:
            sql += " AND sandbox = ?"
            params.append(sandbox)
        if status is not None:
            sql += " AND status = ?"
            params.append(status)
        return [self._proposal(r) for r in self._query(sql + " ORDER BY id", params)]

    def proposal(self, sandbox: str, proposal_id: int) -> Proposal | None:
        rows = self._query(
            f"SELECT {self._PROPOSAL_COLUMNS} FROM proposals WHERE sandbox = ? AND id = ?", (sandbox, proposal_id)
        )
        return self._proposal(rows[0]) if rows else None

    def merge_proposals(self, sandbox: str, proposed: Iterable[Any], *, now_ms: int | None = None) -> list[Proposal]:
        """Merge the mapper's ProposedRules into the sandbox's proposals, in one transaction.

        Exactly one pending proposal per (sandbox, host, port): a later flush adds its hits and
        binaries to the pending one. A host:port the user rejected stays rejected (its counts
        are updated so `rules --status rejected` shows it is still being hit); after an
        approval, new denials open a new pending proposal. Returns the touched proposals.
        """
        from .mapper import combine  # the rule text of a merged proposal is the mapper's job

        now = now_ms or _now_ms()
        touched: list[int] = []
        with self.transaction() as c:
            for p in proposed:
                row = c.execute(
                    f"SELECT {self._PROPOSAL_COLUMNS} FROM proposals WHERE sandbox = ? AND host = ? AND port = ?"
                    " AND status IN ('pending', 'rejected') ORDER BY status = 'pending' DESC, id DESC LIMIT 1",
                    (sandbox, p.host, p.port),
                ).fetchone()
                if row is None:
                    cur = c.execute(
                        "INSERT INTO proposals (sandbox, status, rule_key, host, port, binaries, hit_count,"
                        " first_seen_ms, last_seen_ms, rationale, rule_yaml, stage, created_ms)"
                        " VALUES (?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (sandbox, p.rule_key, p.host, p.port, json.dumps(list(p.binaries)), p.hit_count,
                         p.first_seen_ms, p.last_seen_ms, p.rationale, p.rule_yaml, p.stage, now),
                    )
                    touched.append(int(cur.lastrowid))
                    continue
                existing = self._proposal(row)
                if existing.status == "rejected":
                    c.execute(
                        "UPDATE proposals SET hit_count = hit_count + ?, last_seen_ms = max(last_seen_ms, ?) WHERE id = ?",
                        (p.hit_count, p.last_seen_ms, existing.id),
                    )
                    continue
                merged = combine(existing, p)
                c.execute(
                    "UPDATE proposals SET binaries = ?, hit_count = ?, first_seen_ms = ?, last_seen_ms = ?,"
                    " rationale = ?, rule_yaml = ? WHERE id = ?",
                    (json.dumps(list(merged.binaries)), merged.hit_count, merged.first_seen_ms,
                     merged.last_seen_ms, merged.rationale, merged.rule_yaml, existing.id),
                )
                touched.append(existing.id)
        return [p for p in (self.proposal(sandbox, i) for i in touched) if p is not None]

    def decide_proposal(
        self, sandbox: str, proposal_id: int, status: str, *, revision: int | None = None
    ) -> Proposal:
        """Mark a pending proposal approved or rejected (only a pending one can be decided)."""
        if status not in ("approved", "rejected"):
            raise ValueError(f"invalid decision {status!r}")
        with self.transaction() as c:
            self._decide(c, sandbox, proposal_id, status, revision)
        result = self.proposal(sandbox, proposal_id)
        assert result is not None
        return result

    @staticmethod
    def _decide(c: sqlite3.Connection, sandbox: str, proposal_id: int, status: str, revision: int | None) -> None:
        row = c.execute("SELECT status FROM proposals WHERE sandbox = ? AND id = ?", (sandbox, proposal_id)).fetchone()
        if row is None:
            raise StockadeError(f"sandbox {sandbox!r} has no proposal {proposal_id}")
        if row[0] != "pending":
            raise StockadeError(f"proposal {proposal_id} is already {row[0]}")
        c.execute(
            "UPDATE proposals SET status = ?, decided_ms = ?, revision = ? WHERE id = ?",
            (status, _now_ms(), revision, proposal_id),
        )

    # -- inference routes (the CLI of issue 5 is built on these) ----------------------------

    def put_route(self, route: Route) -> None:
        """Add or replace a route by name; a default route clears its protocol's previous default."""
        if route.protocol not in ("openai", "anthropic"):
            raise StockadeError(f"invalid route protocol {route.protocol!r}", hint="use openai or anthropic")
        if route.api_key_env and route.api_key_file:
            raise StockadeError("a route takes api_key_env or api_key_file, not both")
        with self.transaction() as c:
            if route.is_default:
                c.execute("UPDATE inference_routes SET is_default = 0 WHERE is_default = 1 AND protocol = ?",
                          (route.protocol,))
            c.execute(
                "INSERT OR REPLACE INTO inference_routes (name, protocol, base_url, model, api_key_env,"
                " api_key_file, is_default, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (route.name, route.protocol, route.base_url, route.model, route.api_key_env,
                 route.api_key_file, int(route.is_default), _now_ms()),
            )

    def route(self, name: str) -> Route | None:
        rows = self._query(
            "SELECT name, protocol, base_url, model, api_key_env, api_key_file, is_default"
            " FROM inference_routes WHERE name = ?", (name,),
        )
        return Route(*rows[0][:6], is_default=bool(rows[0][6])) if rows else None

    def routes(self) -> list[Route]:
        rows = self._query(
            "SELECT name, protocol, base_url, model, api_key_env, api_key_file, is_default"
            " FROM inference_routes ORDER BY name"
        )
        return [Route(*r[:6], is_default=bool(r[6])) for r in rows]

    def default_route(self, protocol: str) -> Route | None:
        """Each protocol has at most one default route (an OpenAI and an Anthropic one coexist)."""
        return next((r for r in self.routes() if r.is_default and r.protocol == protocol), None)

    def set_default_route(self, name: str) -> None:
        with self.transaction() as c:
            row = c.execute("SELECT protocol FROM inference_routes WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise StockadeError(f"no inference route named {name!r}")
            c.execute("UPDATE inference_routes SET is_default = 0 WHERE is_default = 1 AND protocol = ?", row)
            c.execute("UPDATE inference_routes SET is_default = 1 WHERE name = ?", (name,))

    def delete_route(self, name: str) -> bool:
        with self.transaction() as c:
            return c.execute("DELETE FROM inference_routes WHERE name = ?", (name,)).rowcount > 0

    # -- retention --------------------------------------------------------------------------

    def used_bytes(self) -> int:
        """Bytes of database pages in use (the file minus its free list)."""
        page_size, pages, free = (self._query(f"PRAGMA {p}")[0][0] for p in ("page_size", "page_count", "freelist_count"))
        return (pages - free) * page_size

    def prune(self, retention: Retention, *, now_ms: int | None = None, chunk: int = 5000) -> int:
        """Delete events beyond the age and size bounds (oldest first, in short transactions so
        writers of other sandboxes are not held up), and finished runs and approved proposals
        older than the age bound (rejected proposals are kept). Returns the number of events
        deleted."""
        cutoff = (now_ms or _now_ms()) - int(retention.max_age_s * 1000)
        deleted = 0
        while True:
            with self.transaction() as c:
                n = c.execute(
                    "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE time_ms < ? ORDER BY time_ms LIMIT ?)",
                    (cutoff, chunk),
                ).rowcount
            deleted += n
            if n < chunk:
                break
        while self.used_bytes() > retention.max_bytes:
            total = self._query("SELECT count(*) FROM events")[0][0]
            if total == 0:
                break
            with self.transaction() as c:
                n = c.execute(
                    "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT ?)",
                    (max(1, min(chunk, total // 10)),),
                ).rowcount
            deleted += n
        with self.transaction() as c:
            c.execute("DELETE FROM runs WHERE status != 'running' AND ended_ms < ?", (cutoff,))
            # Rejected proposals are kept however old: each is the user's decision that keeps its
            # host:port from being proposed again (merge_proposals), and they are tiny. Approved
            # ones go with the events: nothing reads them to decide anything (new denials open a
            # new proposal after an approval), and the policy revision each produced, which is
            # never pruned, keeps the rule and its source (`rules approve ID`). Pending ones stay.
            c.execute("DELETE FROM proposals WHERE status = 'approved' AND decided_ms < ?", (cutoff,))
        if deleted:
            with self._lock:
                self._conn.execute("PRAGMA incremental_vacuum")
        return deleted

    def integrity_check(self) -> str:
        return str(self._query("PRAGMA integrity_check")[0][0])
