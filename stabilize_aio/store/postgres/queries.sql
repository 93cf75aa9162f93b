-- The PostgreSQL store's statements, by name (loaded by stabilize_aio.store.queries).
-- Parameters are positional ($n). A group's writes are one set-based statement per
-- table: parameter $n is the array of column n of the batch rows_for() built, and
-- they run in the order of stabilize_aio.store.rows.BATCHES.
-- Lease times are the database clock's: extract(epoch FROM clock_timestamp())::float8,
-- so machines' clocks never matter; lease rows are locked in shard order, so two
-- statements never deadlock.

-- the writer's transaction -------------------------------------------------------

-- name: begin
BEGIN

-- name: commit
COMMIT

-- name: rollback
ROLLBACK

-- Read first by a group a blind retry could write twice: a lost COMMIT is resolved by this id.
-- name: txid_current
SELECT txid_current()

-- name: txid_status
SELECT txid_status($1)

-- A transaction whose COMMIT's answer was lost and is still in progress: end its backend.
-- name: terminate_backend
SELECT pg_terminate_backend(pid) FROM pg_stat_activity
WHERE pid = $1 AND backend_xid::text = ($2::bigint % 4294967296)::text

-- a group's writes -------------------------------------------------------------------

-- name: wf_insert
INSERT INTO workflows (id, application, name, status, version, created_at, ended_at, body)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::float8[],
$7::float8[], $8::bytea[])

-- name: stage_insert
INSERT INTO stages (workflow_id, idx, ref_id, status, version, spec, run)
SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::bigint[], $6::bytea[], $7::bytea[])

-- Fenced: each row must be at the version before its turn.
-- name: wf_update
UPDATE workflows AS w SET status = u.status, version = u.version, ended_at = u.ended_at,
body = u.body FROM unnest($1::text[], $2::bigint[], $3::float8[], $4::bytea[], $5::text[], $6::bigint[])
AS u (status, version, ended_at, body, id, base) WHERE w.id = u.id AND w.version = u.base

-- Fenced: each row must be at the version before its turn.
-- name: stage_update
UPDATE stages AS s SET status = u.status, version = u.version, run = u.run
FROM unnest($1::text[], $2::bigint[], $3::bytea[], $4::text[], $5::int[], $6::bigint[])
AS u (status, version, run, workflow_id, idx, base)
WHERE s.workflow_id = u.workflow_id AND s.idx = u.idx AND s.version = u.base

-- Consumed rows (fenced: they must be there) or discarded ones (they may be gone).
-- name: outbox_delete
DELETE FROM outbox AS o USING unnest($1::text[], $2::text[]) AS d (workflow_id, id)
WHERE o.workflow_id = d.workflow_id AND o.id = d.id

-- name: outbox_purge
DELETE FROM outbox WHERE workflow_id = ANY($1::text[])

-- name: outbox_insert
INSERT INTO outbox (workflow_id, id, deliver_at, kind, task_type, body)
SELECT * FROM unnest($1::text[], $2::text[], $3::float8[], $4::text[], $5::text[], $6::bytea[])

-- name: event_insert
INSERT INTO events (workflow_id, key, kind, stage, at, body)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::bytea[])

-- name: stage_respec
UPDATE stages AS s SET spec = u.spec FROM unnest($1::bytea[], $2::text[], $3::int[])
AS u (spec, workflow_id, idx) WHERE s.workflow_id = u.workflow_id AND s.idx = u.idx

-- name: quarantine_insert
INSERT INTO quarantine (workflow_id, source, key, body, error, at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::text[], $6::float8[])

-- Claims on shared keys (schema 5): written with the turns that make and end them.
-- name: claim_delete
DELETE FROM claims AS c USING unnest($1::text[], $2::int[]) AS d (workflow_id, stage)
WHERE c.workflow_id = d.workflow_id AND c.stage = d.stage

-- name: claim_delete_all
DELETE FROM claims WHERE workflow_id = ANY($1::text[])

-- name: claim_insert
INSERT INTO claims (key, workflow_id, stage, generation, lim, purge)
SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::int[], $5::int[], $6::int[])

-- Granting a key (store/claims.py), in one transaction under the key's advisory lock
-- (class 1935, the key's hash): two processes never grant one key at once.
-- name: claim_lock
SELECT pg_advisory_xact_lock(1935, hashtext($1::text))

-- name: claim_keys_waiting
SELECT DISTINCT key FROM claims WHERE granted = 0

-- How many hold the key, counted up to its limit ($2) at most.
-- name: claim_held
SELECT count(*) FROM (SELECT 1 FROM claims WHERE key = $1 AND granted = 1 LIMIT $2) AS h

-- name: claim_limit
SELECT lim FROM claims WHERE key = $1 AND granted = 0 ORDER BY seq LIMIT 1

-- name: claim_waiting
SELECT seq, workflow_id, stage, generation FROM claims WHERE key = $1 AND granted = 0 ORDER BY seq LIMIT $2

-- name: claim_purged
SELECT seq, workflow_id, generation FROM claims WHERE key = $1 AND granted = 0 AND purge = 1 ORDER BY seq

-- name: claim_grant
UPDATE claims SET granted = 1 WHERE seq = $1

-- name: claim_drop
DELETE FROM claims WHERE seq = $1

-- name: outbox_insert_new
INSERT INTO outbox (workflow_id, id, deliver_at, kind, task_type, body)
SELECT * FROM unnest($1::text[], $2::text[], $3::float8[], $4::text[], $5::text[], $6::bytea[])
ON CONFLICT DO NOTHING

-- One notification per workflow id ($2) on a channel ($1), sent by a group's transaction.
-- name: notify
SELECT pg_notify($1::text, w) FROM unnest($2::text[]) AS w

-- The fence, first in a group's transaction: the shards still held at their epochs,
-- locked FOR SHARE until the commit, so a claim (an UPDATE) cannot slip in between.
-- An expired lease nobody took is still ours: the epoch is the fence, not the time.
-- name: fence
SELECT l.shard FROM leases AS l JOIN unnest($1::int[], $2::bigint[]) AS f (shard, epoch) ON l.shard = f.shard
WHERE l.owner = $3::text AND l.epoch = f.epoch
ORDER BY l.shard FOR SHARE OF l

-- leases ----------------------------------------------------------------------------------

-- Count the engines seen within a lease (this one included), forget those silent for three.
-- An engine that joins (it was not counted: no row, or a row older than a lease) tells
-- the others on the members channel ($3), in the same statement: they rebalance at once.
-- (Every part of the statement sees the table as it was before the INSERT.)
-- name: heartbeat
WITH now AS (SELECT extract(epoch FROM clock_timestamp())::float8 AS t),
seen AS (
    INSERT INTO engines (owner, seen_at) SELECT $1::text, t FROM now
    ON CONFLICT (owner) DO UPDATE SET seen_at = excluded.seen_at
),
gone AS (DELETE FROM engines AS e USING now WHERE e.owner <> $1::text AND e.seen_at < now.t - 3 * $2::float8),
joined AS (
    SELECT pg_notify($3::text, $1::text) FROM now WHERE NOT EXISTS (
        SELECT 1 FROM engines AS e WHERE e.owner = $1::text AND e.seen_at >= now.t - $2::float8
    )
)
SELECT 1 + (SELECT count(*) FROM engines AS e, now WHERE e.owner <> $1::text AND e.seen_at >= now.t - $2::float8),
    (SELECT count(*) FROM joined)

-- Take up to $2 free or expired shards, lowest first; rows another claimer (or a
-- committing writer's fence) has locked are skipped, never waited for.
-- name: claim
WITH free AS (
    SELECT shard FROM leases WHERE owner IS NULL OR expires_at < extract(epoch FROM clock_timestamp())::float8
    ORDER BY shard LIMIT $2::int FOR UPDATE SKIP LOCKED
)
UPDATE leases AS l SET owner = $1::text, epoch = l.epoch + 1,
    expires_at = extract(epoch FROM clock_timestamp())::float8 + $3::float8
FROM free WHERE l.shard = free.shard
RETURNING l.shard, l.epoch

-- Extend the leases still held at the epochs claimed; the shards not returned are lost.
-- name: renew
WITH held AS (
    SELECT l.shard FROM leases AS l JOIN unnest($2::int[], $3::bigint[]) AS h (shard, epoch)
    ON l.shard = h.shard AND l.epoch = h.epoch AND l.owner = $1::text
    ORDER BY l.shard FOR NO KEY UPDATE OF l
)
UPDATE leases AS l SET expires_at = extract(epoch FROM clock_timestamp())::float8 + $4::float8
FROM held WHERE l.shard = held.shard
RETURNING l.shard

-- Hand leases back; if any was freed, tell the members channel ($3) so a claimer takes them at once.
-- name: release
WITH mine AS (
    SELECT shard FROM leases WHERE owner = $1::text AND shard = ANY($2::int[])
    ORDER BY shard FOR NO KEY UPDATE
),
freed AS (UPDATE leases AS l SET owner = NULL, expires_at = 0 FROM mine WHERE l.shard = mine.shard RETURNING l.shard)
SELECT pg_notify($3::text, $1::text) WHERE EXISTS (SELECT 1 FROM freed)

-- A graceful stop: every lease of the owner handed back and its engine row gone, one
-- statement and one notification ($2), so the others count one engine fewer and claim
-- the freed shards in the same step.
-- name: leave
WITH mine AS (SELECT shard FROM leases WHERE owner = $1::text ORDER BY shard FOR NO KEY UPDATE),
freed AS (UPDATE leases AS l SET owner = NULL, expires_at = 0 FROM mine WHERE l.shard = mine.shard),
gone AS (DELETE FROM engines WHERE owner = $1::text)
SELECT pg_notify($2::text, $1::text)

-- reads ------------------------------------------------------------------------------------
-- A workflow's and a stage's columns are those stabilize_aio.store.decode reads (the plain
-- columns make a placeholder when a body cannot be decoded).

-- name: workflow
SELECT body, application, name, status, version, created_at, ended_at FROM workflows WHERE id = $1

-- name: stages
SELECT idx, ref_id, status, version, spec, run FROM stages WHERE workflow_id = $1 ORDER BY idx

-- name: pending_all
SELECT workflow_id, id, body FROM outbox ORDER BY deliver_at NULLS FIRST, workflow_id, id

-- name: pending_for
SELECT id, body FROM outbox WHERE workflow_id = $1 ORDER BY deliver_at NULLS FIRST, id

-- Due rows of a task type after the key (workflow_id, id) given: a pool refilling, page by page.
-- name: pending_runs
SELECT workflow_id, id, body FROM outbox WHERE task_type = $1 AND (deliver_at IS NULL OR deliver_at <= $2)
AND (workflow_id, id) > ($3, $4) ORDER BY workflow_id, id LIMIT $5

-- name: events
SELECT body, key, kind, stage, at FROM events WHERE workflow_id = $1 ORDER BY seq

-- name: quarantine_all
SELECT workflow_id, source, key, body, error, at FROM quarantine ORDER BY seq

-- name: quarantine_of
SELECT workflow_id, source, key, body, error, at FROM quarantine WHERE workflow_id = $1 ORDER BY seq

-- name: statuses
SELECT id, status FROM workflows WHERE id = ANY($1::text[])

-- Newest first; one statement per filter, so each uses its index.
-- name: workflows_newest
SELECT id, body, application, name, status, version, created_at, ended_at FROM workflows
ORDER BY created_at DESC LIMIT $1

-- name: workflows_newest_by_status
SELECT id, body, application, name, status, version, created_at, ended_at FROM workflows
WHERE status = $1 ORDER BY created_at DESC LIMIT $2

-- name: workflows_newest_by_application
SELECT id, body, application, name, status, version, created_at, ended_at FROM workflows
WHERE application = $1 ORDER BY created_at DESC LIMIT $2

-- name: workflows_newest_by_status_and_application
SELECT id, body, application, name, status, version, created_at, ended_at FROM workflows
WHERE status = $1 AND application = $2 ORDER BY created_at DESC LIMIT $3

-- name: table_counts
SELECT (SELECT count(*) FROM workflows), (SELECT count(*) FROM stages), (SELECT count(*) FROM outbox),
(SELECT count(*) FROM events)

-- schedules and retention (the leader's; one statement each) ------------------------------------

-- name: schedules_all
SELECT name, cron, next_at, body FROM schedules ORDER BY name

-- name: schedules_due
SELECT name, cron, next_at, body FROM schedules WHERE next_at <= $1 ORDER BY name

-- name: schedule_put
INSERT INTO schedules (name, cron, next_at, body) VALUES ($1, $2, $3, $4)
ON CONFLICT (name) DO UPDATE SET cron = excluded.cron, next_at = excluded.next_at, body = excluded.body

-- name: schedule_delete
DELETE FROM schedules WHERE name = $1 RETURNING name

-- Compare-and-set: only from the tick that fired.
-- name: schedule_advance
UPDATE schedules SET next_at = $1 WHERE name = $2 AND next_at = $3 RETURNING name

-- name: delete_finished
WITH old AS (SELECT id FROM workflows WHERE ended_at IS NOT NULL AND ended_at < $1 LIMIT $2),
e AS (DELETE FROM events WHERE workflow_id IN (SELECT id FROM old)),
o AS (DELETE FROM outbox WHERE workflow_id IN (SELECT id FROM old)),
s AS (DELETE FROM stages WHERE workflow_id IN (SELECT id FROM old))
DELETE FROM workflows WHERE id IN (SELECT id FROM old) RETURNING id

-- the schema (stabilize-aio db upgrade) ---------------------------------------------------------

-- Every migration runs under this transaction-level advisory lock ($1: "stabilz").
-- name: migration_lock
SELECT pg_advisory_xact_lock($1)

-- A plain identifier, checked by the store: a schema name takes no parameter.
-- name: create_schema
CREATE SCHEMA IF NOT EXISTS {schema}

-- name: our_tables
SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename = ANY($1::text[])

-- name: meta
SELECT key, value FROM stabilize_meta

-- name: meta_put
INSERT INTO stabilize_meta (key, value) VALUES ($1, $2)
ON CONFLICT (key) DO UPDATE SET value = excluded.value

-- the LISTEN connection ---------------------------------------------------------------------------

-- name: ping
SELECT 1
