"""Shared test configuration.

Fixtures hand out paths and URLs, never running engines: pytest-asyncio runs an
async fixture's setup and teardown in different tasks, and an engine's task
group must be entered and left by the same task (STYLE.md item 16). Tests open
engines themselves with ``async with``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from storekit import StoreFactory

from stabilize_aio.store import store_from_url

POSTGRES_URL = os.environ.get("STABILIZE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
#: Set by .ci/run: a PostgreSQL test that cannot reach the server fails instead of skipping.
REQUIRE_POSTGRES = os.environ.get("STABILIZE_REQUIRE_POSTGRES") == "1"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A fresh SQLite file path in the test's temporary directory."""
    return tmp_path / "engine.db"


@pytest.fixture
def db_url(db_path: Path) -> str:
    """The engine URL of ``db_path``."""
    return f"sqlite:///{db_path}"


@pytest.fixture
async def postgres_url() -> str:
    """The URL of a reachable PostgreSQL server, or a skip saying why there is none."""
    try:
        conn = await asyncpg.connect(POSTGRES_URL, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        reason = f"PostgreSQL not reachable at {POSTGRES_URL}: {exc!r}"
        if REQUIRE_POSTGRES:
            pytest.fail(reason + " (STABILIZE_REQUIRE_POSTGRES=1)")
        pytest.skip(reason)
    await conn.close()
    return POSTGRES_URL


@pytest.fixture
async def postgres_schema_url(postgres_url: str) -> AsyncIterator[str]:
    """The URL of a fresh schema (``?schema=t_<random>``), migrated by ``upgrade()``; dropped afterwards."""
    from stabilize_aio.store.postgres.store import upgrade  # noqa: PLC0415 - the driver only for PostgreSQL tests

    schema = f"t_{uuid.uuid4().hex[:16]}"
    url = f"{postgres_url}?schema={schema}"
    await upgrade(url)
    try:
        yield url
    finally:
        conn = await asyncpg.connect(postgres_url)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await conn.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database of the parametrized backend: an SQLite file, or a migrated PostgreSQL schema."""
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_schema_url"))
    return f"sqlite:///{tmp_path / 'engine.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """A factory of stores on one fresh database of the parametrized backend."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_schema_url")
    else:
        url = f"sqlite:///{tmp_path / 'store.db'}"
    return lambda: store_from_url(url)
