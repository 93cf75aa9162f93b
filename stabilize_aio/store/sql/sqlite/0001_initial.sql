-- stabilize_aio schema 1 (SQLite). Applied in one transaction by the store at start.
CREATE TABLE stabilize_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE workflows (
    id          TEXT PRIMARY KEY,
    application TEXT NOT NULL,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL,
    version     INTEGER NOT NULL,
    created_at  REAL NOT NULL,
    ended_at    REAL,
    body        BLOB NOT NULL
);
CREATE INDEX workflows_status_idx ON workflows (status, application, created_at);
CREATE INDEX workflows_created_idx ON workflows (created_at);

-- One row per stage: spec is written once at submit, run is the small runtime
-- record a step rewrites (O(1) writes per transition).
CREATE TABLE stages (
    workflow_id TEXT NOT NULL,
    idx         INTEGER NOT NULL,
    ref_id      TEXT NOT NULL,
    status      TEXT NOT NULL,
    version     INTEGER NOT NULL,
    spec        BLOB NOT NULL,
    run         BLOB NOT NULL,
    PRIMARY KEY (workflow_id, idx)
) WITHOUT ROWID;

-- Pending work that must survive a crash. A row is deleted in the
-- transaction of its effect.
CREATE TABLE outbox (
    workflow_id TEXT NOT NULL,
    id          TEXT NOT NULL,
    deliver_at  REAL,
    kind        TEXT NOT NULL,
    task_type   TEXT,
    body        BLOB NOT NULL,
    PRIMARY KEY (workflow_id, id)
) WITHOUT ROWID;
CREATE INDEX outbox_task_type_idx ON outbox (task_type, deliver_at) WHERE task_type IS NOT NULL;

-- Append-only history, written in the transaction of each step. The key is
-- deterministic per step (stage.completed:<stage>:<generation>), so a step
-- recorded twice violates the primary key.
CREATE TABLE events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow_id TEXT NOT NULL,
    key         TEXT NOT NULL,
    kind        TEXT NOT NULL,
    stage       TEXT,
    at          REAL NOT NULL,
    body        BLOB NOT NULL,
    UNIQUE (workflow_id, key)
);
