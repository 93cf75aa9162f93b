-- The SQLite store's statements, by name (loaded by stabilize_aio.store.queries).
-- Parameters are positional (?). The writes of a group run in the order of
-- stabilize_aio.store.rows.BATCHES, one executemany each.

-- connections ---------------------------------------------------------------

-- name: journal_wal
PRAGMA journal_mode = WAL

-- A pragma takes no parameters: {level} is FULL, NORMAL or EXTRA, checked by the store.
-- name: synchronous
PRAGMA synchronous = {level}

-- name: busy_timeout
PRAGMA busy_timeout = 10000

-- name: begin
BEGIN IMMEDIATE

-- name: commit
COMMIT

-- name: rollback
ROLLBACK

-- the file and its schema ------------------------------------------------------

-- name: tables
SELECT name FROM sqlite_master WHERE type = 'table'

-- name: meta
SELECT key, value FROM stabilize_meta

-- By its key: through the meta table's index, so a damaged index is found before anything is written.
-- name: schema_version
SELECT value FROM stabilize_meta WHERE key = 'schema_version'

-- name: meta_put
INSERT INTO stabilize_meta (key, value) VALUES (?, ?)
ON CONFLICT (key) DO UPDATE SET value = excluded.value

-- a group's writes ---------------------------------------------------------------

-- name: wf_insert
INSERT INTO workflows (id, application, name, status, version, created_at, ended_at, body)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)

-- name: stage_insert
INSERT INTO stages (workflow_id, idx, ref_id, status, version, spec, run) VALUES (?, ?, ?, ?, ?, ?, ?)

-- Fenced: the row must be at the version before this turn.
-- name: wf_update
UPDATE workflows SET status = ?, version = ?, ended_at = ?, body = ? WHERE id = ? AND version = ?

-- Fenced: the row must be at the version before this turn.
-- name: stage_update
UPDATE stages SET status = ?, version = ?, run = ? WHERE workflow_id = ? AND idx = ? AND version = ?

-- A consumed row (fenced: it must be there) or a discarded one (it may be gone).
-- name: outbox_delete
DELETE FROM outbox WHERE workflow_id = ? AND id = ?

-- name: outbox_purge
DELETE FROM outbox WHERE workflow_id = ?

-- name: outbox_insert
INSERT INTO outbox (workflow_id, id, deliver_at, kind, task_type, body) VALUES (?, ?, ?, ?, ?, ?)

-- name: event_insert
INSERT INTO events (workflow_id, key, kind, stage, at, body) VALUES (?, ?, ?, ?, ?, ?)

-- name: stage_respec
UPDATE stages SET spec = ? WHERE workflow_id = ? AND idx = ?

-- name: quarantine_insert
INSERT INTO quarantine (workflow_id, source, key, body, error, at) VALUES (?, ?, ?, ?, ?, ?)

-- Claims on shared keys (schema 5): written with the turns that make and end them.
-- name: claim_delete
DELETE FROM claims WHERE workflow_id = ? AND stage = ?

-- name: claim_delete_all
DELETE FROM claims WHERE workflow_id = ?

-- name: claim_insert
INSERT INTO claims (key, workflow_id, stage, generation, lim, purge) VALUES (?, ?, ?, ?, ?, ?)

-- Granting a key (store/claims.py), in one transaction of the writer.
-- name: claim_keys_waiting
SELECT DISTINCT key FROM claims WHERE granted = 0

-- How many hold the key, counted up to its limit (? 2) at most.
-- name: claim_held
SELECT count(*) FROM (SELECT 1 FROM claims WHERE key = ? AND granted = 1 LIMIT ?)

-- name: claim_limit
SELECT lim FROM claims WHERE key = ? AND granted = 0 ORDER BY seq LIMIT 1

-- name: claim_waiting
SELECT seq, workflow_id, stage, generation FROM claims WHERE key = ? AND granted = 0 ORDER BY seq LIMIT ?

-- name: claim_purged
SELECT seq, workflow_id, generation FROM claims WHERE key = ? AND granted = 0 AND purge = 1 ORDER BY seq

-- name: claim_grant
UPDATE claims SET granted = 1 WHERE seq = ?

-- name: claim_drop
DELETE FROM claims WHERE seq = ?

-- name: outbox_insert_new
INSERT OR IGNORE INTO outbox (workflow_id, id, deliver_at, kind, task_type, body) VALUES (?, ?, ?, ?, ?, ?)

-- reads ------------------------------------------------------------------------------
-- A workflow's and a stage's columns are those stabilize_aio.store.decode reads (the plain
-- columns make a placeholder when a body cannot be decoded).

-- name: workflow
SELECT body, application, name, status, version, created_at, ended_at FROM workflows WHERE id = ?

-- name: stages
SELECT idx, ref_id, status, version, spec, run FROM stages WHERE workflow_id = ? ORDER BY idx

-- name: pending_all
SELECT workflow_id, id, body FROM outbox ORDER BY deliver_at

-- name: pending_for
SELECT id, body FROM outbox WHERE workflow_id = ? ORDER BY id

-- Due rows of a task type after the key (workflow_id, id) given: a pool refilling, page by page.
-- name: pending_runs
SELECT workflow_id, id, body FROM outbox WHERE task_type = ? AND (deliver_at IS NULL OR deliver_at <= ?)
AND (workflow_id, id) > (?, ?) ORDER BY workflow_id, id LIMIT ?

-- name: events
SELECT body, key, kind, stage, at FROM events WHERE workflow_id = ? ORDER BY seq

-- name: quarantine_all
SELECT workflow_id, source, key, body, error, at FROM quarantine ORDER BY seq

-- name: quarantine_of
SELECT workflow_id, source, key, body, error, at FROM quarantine WHERE workflow_id = ? ORDER BY seq

-- The ids come as one JSON array: no limit on their number, one statement.
-- name: statuses
SELECT id, status FROM workflows WHERE id IN (SELECT value FROM json_each(?))

-- Newest first; one statement per filter, so each uses its index.
-- name: workflows_newest
SELECT id, body, application, name, status, version, created_at, ended_at FROM workflows
ORDER BY created_at DESC LIMIT ?

-- name: workflows_newest_by_status
SELECT id, body, application, name, status, version, created_at, ended_at FROM workflows
WHERE status = ? ORDER BY created_at DESC LIMIT ?

-- name: workflows_newest_by_application
SELECT id, body, application, name, status, version, created_at, ended_at FROM workflows
WHERE application = ? ORDER BY created_at DESC LIMIT ?

-- name: workflows_newest_by_status_and_application
SELECT id, body, application, name, status, version, created_at, ended_at FROM workflows
WHERE status = ? AND application = ? ORDER BY created_at DESC LIMIT ?

-- name: table_counts
SELECT (SELECT COUNT(*) FROM workflows), (SELECT COUNT(*) FROM stages), (SELECT COUNT(*) FROM outbox),
(SELECT COUNT(*) FROM events)

-- schedules (written by the writer task) --------------------------------------------------

-- name: schedules_all
SELECT name, cron, next_at, body FROM schedules ORDER BY name

-- name: schedules_due
SELECT name, cron, next_at, body FROM schedules WHERE next_at <= ? ORDER BY name

-- name: schedule_put
INSERT INTO schedules (name, cron, next_at, body) VALUES (?, ?, ?, ?)
ON CONFLICT (name) DO UPDATE SET cron = excluded.cron, next_at = excluded.next_at, body = excluded.body

-- name: schedule_delete
DELETE FROM schedules WHERE name = ? RETURNING name

-- Compare-and-set: only from the tick that fired.
-- name: schedule_advance
UPDATE schedules SET next_at = ? WHERE name = ? AND next_at = ? RETURNING name

-- retention (the writer task, one transaction) ----------------------------------------------

-- name: finished_before
SELECT id FROM workflows WHERE ended_at IS NOT NULL AND ended_at < ? LIMIT ?

-- The ids of finished_before, as one JSON array.
-- name: delete_events_of
DELETE FROM events WHERE workflow_id IN (SELECT value FROM json_each(?))

-- name: delete_outbox_of
DELETE FROM outbox WHERE workflow_id IN (SELECT value FROM json_each(?))

-- name: delete_stages_of
DELETE FROM stages WHERE workflow_id IN (SELECT value FROM json_each(?))

-- name: delete_workflows_of
DELETE FROM workflows WHERE id IN (SELECT value FROM json_each(?))
