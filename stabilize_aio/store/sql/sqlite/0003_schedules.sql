-- stabilize_aio schema 3 (SQLite): durable schedules, fired by the engine (the
-- single engine of a file is the leader). A tick starts the run
-- "schedule:<name>:<tick>", so a tick is never started twice.
CREATE TABLE schedules (
    name    TEXT PRIMARY KEY,
    cron    TEXT NOT NULL,
    next_at REAL NOT NULL,
    body    BLOB NOT NULL
);
CREATE INDEX schedules_next_idx ON schedules (next_at);
