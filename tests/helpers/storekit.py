"""A store opened as an engine opens it, for store-level tests of every backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import asyncpg

from stabilize_aio.store import Store

S = TypeVar("S", bound=Store)
#: Makes a store on one database (the ``store_factory`` fixture of the integration tier).
StoreFactory = Callable[[], Store]


@asynccontextmanager
async def running_store(store: S) -> AsyncIterator[S]:
    """Open ``store`` with its group writer running (as inside an engine); close it afterwards."""
    await store.open()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(store.run_writer)
            yield store
            tg.cancel_scope.cancel()
    finally:
        await store.close()


@asynccontextmanager
async def admin(postgres_schema_url: str) -> AsyncIterator[Any]:
    """A plain connection with the test schema first in its search path."""
    schema = postgres_schema_url.rsplit("=", 1)[1]
    conn = await asyncpg.connect(postgres_schema_url.split("?", 1)[0], server_settings={"search_path": schema})
    try:
        yield conn
    finally:
        await conn.close()
