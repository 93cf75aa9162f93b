-- stabilize_aio schema 4 (SQLite): rows that could not be decoded, moved aside with
-- their raw bytes so one bad row never stops the engine (the workflow it belongs
-- to ends TERMINAL with an error of kind "engine").
CREATE TABLE quarantine (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow_id TEXT NOT NULL,
    source      TEXT NOT NULL,
    key         TEXT NOT NULL,
    body        BLOB NOT NULL,
    error       TEXT NOT NULL,
    at          REAL NOT NULL
);
CREATE INDEX quarantine_workflow_idx ON quarantine (workflow_id);
