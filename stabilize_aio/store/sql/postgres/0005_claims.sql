-- stabilize_aio schema 5 (PostgreSQL): claims on shared keys, first come first served.
-- A global mutex stage ("mutex:<key>", limit 1) and a run under an admission limit
-- ("admit:<key>", stage -1, limit max_concurrent) each insert a claim in the turn
-- that wants the key (an insert never conflicts), the first `lim` claims of a key by
-- seq are granted under a transaction-level advisory lock on the key (a "grant"
-- outbox row for their run, and a wake-up for its owner), and a claim is deleted in
-- the turn that ends its stage or run.
CREATE TABLE claims (
    seq         bigserial PRIMARY KEY,
    key         text COLLATE "C" NOT NULL,
    workflow_id text COLLATE "C" NOT NULL,
    stage       integer NOT NULL,
    generation  integer NOT NULL,
    lim         integer NOT NULL,
    purge       integer NOT NULL DEFAULT 0,
    granted     integer NOT NULL DEFAULT 0
);
CREATE INDEX claims_key_idx ON claims (key, granted, seq);
CREATE INDEX claims_workflow_idx ON claims (workflow_id, stage);
