"""A store opened as an engine opens it, for store-level tests of every backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar

import anyio

from stabilize_aio.store import Store

S = TypeVar("S", bound=Store)


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
