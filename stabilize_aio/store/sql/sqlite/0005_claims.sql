-- stabilize_aio schema 5 (SQLite): claims on shared keys, first come first served.
-- A global mutex stage ("mutex:<key>", limit 1) and a run under an admission limit
-- ("admit:<key>", stage -1, limit max_concurrent) each insert a claim in the turn
-- that wants the key (an insert never conflicts), the first `lim` claims of a key by
-- seq are granted (a "grant" outbox row for their run), and a claim is deleted in the
-- turn that ends its stage or run.
CREATE TABLE claims (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    key         TEXT NOT NULL,
    workflow_id TEXT NOT NULL,
    stage       INTEGER NOT NULL,
    generation  INTEGER NOT NULL,
    lim         INTEGER NOT NULL,
    purge       INTEGER NOT NULL DEFAULT 0,
    granted     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX claims_key_idx ON claims (key, granted, seq);
CREATE INDEX claims_workflow_idx ON claims (workflow_id, stage);
