"""The leader's global services: due schedules and retention, run by one engine at a time.

On SQLite the one engine leads; on PostgreSQL the holder of shard 0 does (a pure
client never leads). A lost lease moves the services with shard 0, so at most
one engine runs them at once; each is safe to run twice anyway (idempotent
submits, compare-and-set advances, deletes of what is already old).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from .._clock import Clock
from .schedules import Schedules, StartRun

log = logging.getLogger("stabilize_aio.engine")

#: How many finished workflows one retention pass deletes at most.
RETENTION_BATCH = 1_000


class RetentionStore(Protocol):
    """What retention needs of a store."""

    async def delete_finished(self, ended_before: float, limit: int) -> int: ...


class LeaderServices:
    """Fires due schedules and applies retention while ``is_leader()`` holds."""

    def __init__(
        self,
        *,
        store: RetentionStore,
        schedules: Schedules,
        start_run: StartRun,
        is_leader: Callable[[], bool],
        clock: Clock,
        interval: float,
        retention: float | None,
    ) -> None:
        self._store = store
        self._schedules = schedules
        self._start_run = start_run
        self._is_leader = is_leader
        self._clock = clock
        self._interval = interval
        self._retention = retention

    async def run(self) -> None:
        """The loop: every ``interval`` seconds, if this engine leads, run the services (errors are logged)."""
        while True:
            await self._clock.sleep(self._interval)
            if not self._is_leader():
                continue
            try:
                await self.fire_due_schedules()
                await self.apply_retention()
            except Exception:
                log.exception("leader services failed; retrying in %ss", self._interval)

    async def fire_due_schedules(self) -> int:
        """Start the runs of every due schedule tick; returns the ticks fired."""
        return await self._schedules.fire_due(self._start_run)

    async def apply_retention(self) -> int:
        """Delete finished workflows older than ``retention``; returns how many."""
        if self._retention is None:
            return 0
        return await self._store.delete_finished(self._clock.time() - self._retention, RETENTION_BATCH)
