-- stabilize_aio schema 4 (PostgreSQL): rows that could not be decoded, moved aside
-- with their raw bytes so one bad row never stops the engine (the workflow it
-- belongs to ends TERMINAL with an error of kind "engine").
CREATE TABLE quarantine (
    seq         bigserial PRIMARY KEY,
    workflow_id text COLLATE "C" NOT NULL,
    source      text NOT NULL,
    key         text NOT NULL,
    body        bytea NOT NULL,
    error       text NOT NULL,
    at          double precision NOT NULL
);
CREATE INDEX quarantine_workflow_idx ON quarantine (workflow_id);
