-- stabilize_aio schema 2 (SQLite): the lease tables of PostgreSQL's schema 2, kept
-- for parity. SQLite runs one engine per file (its file lock) and never uses them.
CREATE TABLE leases (
    shard      INTEGER PRIMARY KEY,
    owner      TEXT,
    epoch      INTEGER NOT NULL DEFAULT 0,
    expires_at REAL NOT NULL DEFAULT 0
);
INSERT INTO leases (shard)
    WITH RECURSIVE n (shard) AS (SELECT 0 UNION ALL SELECT shard + 1 FROM n WHERE shard < 31)
    SELECT shard FROM n;

CREATE TABLE engines (
    owner   TEXT PRIMARY KEY,
    seen_at REAL NOT NULL
);
