-- stabilize_aio schema 2 (PostgreSQL): many engine processes on one database.
-- Workflows hash to 32 shards (store._base.SHARDS). An engine owns the actors of
-- the shards it leases here; epoch grows at every claim and fences its writes.
-- Times are the database clock's epoch seconds, so clock skew between machines
-- does not matter.
CREATE TABLE leases (
    shard      integer PRIMARY KEY,
    owner      text COLLATE "C",
    epoch      bigint NOT NULL DEFAULT 0,
    expires_at double precision NOT NULL DEFAULT 0
);
INSERT INTO leases (shard) SELECT generate_series(0, 31);

-- Engines alive (heartbeats): how many share the shards.
CREATE TABLE engines (
    owner   text COLLATE "C" PRIMARY KEY,
    seen_at double precision NOT NULL
);
