-- stabilize_aio schema 1 (PostgreSQL). Applied by `stabilize-aio db upgrade`, in
-- one transaction under an advisory lock, into the first schema of search_path.
-- Keys are COLLATE "C": they are opaque ids, ordered by bytes as in SQLite.
CREATE TABLE stabilize_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE workflows (
    id          text COLLATE "C" PRIMARY KEY,
    application text NOT NULL,
    name        text NOT NULL,
    status      text NOT NULL,
    version     bigint NOT NULL,
    created_at  double precision NOT NULL,
    ended_at    double precision,
    body        bytea NOT NULL
);
CREATE INDEX workflows_status_idx ON workflows (status, application, created_at);
CREATE INDEX workflows_created_idx ON workflows (created_at);

-- One row per stage: spec is written once at submit, run is the small runtime
-- record a step rewrites (O(1) writes per transition).
CREATE TABLE stages (
    workflow_id text COLLATE "C" NOT NULL,
    idx         integer NOT NULL,
    ref_id      text NOT NULL,
    status      text NOT NULL,
    version     bigint NOT NULL,
    spec        bytea NOT NULL,
    run         bytea NOT NULL,
    PRIMARY KEY (workflow_id, idx)
);

-- Pending work that must survive a crash. A row is deleted in the
-- transaction of its effect.
CREATE TABLE outbox (
    workflow_id text COLLATE "C" NOT NULL,
    id          text COLLATE "C" NOT NULL,
    deliver_at  double precision,
    kind        text NOT NULL,
    task_type   text,
    body        bytea NOT NULL,
    PRIMARY KEY (workflow_id, id)
);
CREATE INDEX outbox_task_type_idx ON outbox (task_type, deliver_at) WHERE task_type IS NOT NULL;

-- Append-only history, written in the transaction of each step. The key is
-- deterministic per step (stage.completed:<stage>:<generation>), so a step
-- recorded twice violates the unique constraint.
CREATE TABLE events (
    seq         bigserial PRIMARY KEY,
    workflow_id text COLLATE "C" NOT NULL,
    key         text COLLATE "C" NOT NULL,
    kind        text NOT NULL,
    stage       text,
    at          double precision NOT NULL,
    body        bytea NOT NULL,
    UNIQUE (workflow_id, key)
);
