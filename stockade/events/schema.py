"""The store's schema and its migrations (PRAGMA user_version says which version a file has).

To change the schema: add `MIGRATIONS[n + 1]` with the SQL that takes a version-n file there
(ALTER TABLE / CREATE INDEX ...), and bump SCHEMA_VERSION. Store runs every missing step in
one transaction when it opens a file, so old databases upgrade in place. Statements are split
on `;`, so none may contain one inside a literal or comment.
"""

from __future__ import annotations

SCHEMA_VERSION = 1

_SCHEMA_V1 = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sandbox TEXT NOT NULL,
    pid INTEGER,
    command TEXT NOT NULL,                 -- JSON array
    status TEXT NOT NULL,                  -- running | exited | failed | killed
    started_ms INTEGER NOT NULL,
    ended_ms INTEGER,
    exit_code INTEGER,
    policy_source TEXT,
    policy_revision INTEGER,
    allowed INTEGER NOT NULL DEFAULT 0,
    denied INTEGER NOT NULL DEFAULT 0,
    dropped INTEGER NOT NULL DEFAULT 0     -- events lost to a full recorder queue
);
CREATE INDEX runs_by_sandbox ON runs(sandbox, started_ms);
CREATE INDEX runs_by_start ON runs(started_ms);

CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sandbox TEXT NOT NULL,
    run_id INTEGER,
    time_ms INTEGER NOT NULL,
    class_uid INTEGER NOT NULL,
    action TEXT,                           -- allowed | denied | audit | NULL
    denied INTEGER NOT NULL DEFAULT 0,
    ocsf TEXT NOT NULL                     -- the OCSF 1.7 JSON object
);
CREATE INDEX events_by_sandbox ON events(sandbox, id);        -- follow by id
CREATE INDEX events_by_time ON events(sandbox, time_ms);      -- --since
CREATE INDEX events_denied ON events(sandbox, id) WHERE denied = 1;  -- --denied
CREATE INDEX events_by_age ON events(time_ms);                -- retention

CREATE TABLE policy_revisions (
    sandbox TEXT NOT NULL,
    revision INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    source TEXT NOT NULL,
    yaml TEXT NOT NULL,
    run_id INTEGER,
    PRIMARY KEY (sandbox, revision)
);

CREATE TABLE proposals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sandbox TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected')),
    rule_key TEXT NOT NULL,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    binaries TEXT NOT NULL,                -- JSON array of paths
    hit_count INTEGER NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    rationale TEXT NOT NULL,
    rule_yaml TEXT NOT NULL,
    stage TEXT,
    created_ms INTEGER NOT NULL,
    decided_ms INTEGER,
    revision INTEGER                       -- the policy revision an approval produced
);
CREATE UNIQUE INDEX proposals_one_pending ON proposals(sandbox, host, port) WHERE status = 'pending';
CREATE INDEX proposals_by_sandbox ON proposals(sandbox, status, id);

CREATE TABLE inference_routes (
    name TEXT PRIMARY KEY,
    protocol TEXT NOT NULL CHECK (protocol IN ('openai', 'anthropic')),
    base_url TEXT NOT NULL,
    model TEXT,
    api_key_env TEXT,
    api_key_file TEXT,
    is_default INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL,
    CHECK (api_key_env IS NULL OR api_key_file IS NULL)
);
CREATE UNIQUE INDEX routes_one_default ON inference_routes(protocol) WHERE is_default = 1;
"""

# version reached -> SQL that reaches it from the previous version.
MIGRATIONS: dict[int, str] = {1: _SCHEMA_V1}
