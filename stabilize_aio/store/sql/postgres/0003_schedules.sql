-- stabilize_aio schema 3 (PostgreSQL): durable schedules, fired by the leader
-- (the engine holding shard 0). A tick starts the run "schedule:<name>:<tick>",
-- so a tick fired twice (two leaders overlapping) still starts one run.
CREATE TABLE schedules (
    name    text COLLATE "C" PRIMARY KEY,
    cron    text NOT NULL,
    next_at double precision NOT NULL,
    body    bytea NOT NULL
);
CREATE INDEX schedules_next_idx ON schedules (next_at);
