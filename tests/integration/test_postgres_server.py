"""The PostgreSQL server the suite relies on is real and usable (the store itself is issue 4)."""

from __future__ import annotations

import asyncpg
import pytest


@pytest.mark.postgres
async def test_postgres_round_trip_in_a_transaction(postgres_url: str) -> None:
    """A temporary table written in a transaction reads back what was written."""
    conn = await asyncpg.connect(postgres_url)
    try:
        async with conn.transaction():
            await conn.execute("CREATE TEMP TABLE probe (id int primary key, v text) ON COMMIT DROP")
            await conn.executemany("INSERT INTO probe VALUES ($1, $2)", [(1, "a"), (2, "b")])
            rows = await conn.fetch("SELECT id, v FROM probe ORDER BY id")
        assert [(r["id"], r["v"]) for r in rows] == [(1, "a"), (2, "b")]
    finally:
        await conn.close()
