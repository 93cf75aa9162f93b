"""Refill: a pool that refused work reads its due RunTask rows back once it has room.

A refused row stays pending in the store, so nothing is lost; the pool only
marks itself overflowed. When its backlog has drained it asks for a refill,
which pages through the due RunTask rows of its task type (skipping those it
holds) and delivers them through their actors. The pool's overflow mark is
cleared only by a scan that reached the end with no refusal since it began,
and a refill asked for while a scan runs makes it scan again, so no refused row
is ever left without a refill to come.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import anyio.abc

from .._clock import Clock
from ..pool.pool import TaskPool
from ..store.protocol import Pending
from .recovery import Deliver

#: The smallest page a scan reads.
PAGE = 64


class RunReader(Protocol):
    """What a refill needs of a store."""

    async def pending_runs(
        self, task_type: str, limit: int, now: float, after: tuple[str, str] | None = None
    ) -> list[tuple[str, Pending]]: ...


class Refiller:
    """Runs the refill scans of every pool (at most one per pool at a time)."""

    def __init__(
        self,
        store: RunReader,
        *,
        deliver: Deliver,
        quiet: Callable[[], Awaitable[None]],
        clock: Clock,
    ) -> None:
        self._store = store
        self._deliver = deliver
        self._quiet = quiet  # waits until no actor has a turn committing
        self._clock = clock
        self._tg: anyio.abc.TaskGroup | None = None
        self._running: set[str] = set()  # pools whose scan runs
        self._again: set[str] = set()  # pools asked for a refill while their scan ran

    def start(self, tg: anyio.abc.TaskGroup) -> None:
        """Scans run in ``tg`` from now on."""
        self._tg = tg

    def stop(self) -> None:
        """No more scans start."""
        self._tg = None

    def request(self, pool: TaskPool) -> None:
        """A pool that refused work has room again (its callback): scan now, or again after the scan under way."""
        if self._tg is None:
            return
        name = pool.definition.name
        if name in self._running:
            self._again.add(name)
            return
        self._running.add(name)
        self._tg.start_soon(self._refill, pool, name=f"refill {name}")

    async def _refill(self, pool: TaskPool) -> None:
        """Page through the pool's due rows until its room is filled or none are left; again if asked meanwhile."""
        name = pool.definition.name
        try:
            while True:
                self._again.discard(name)
                rejected = pool.rejected
                if await self._scan(pool):
                    pool.refilled(rejected)
                if name not in self._again:
                    break
        finally:
            self._running.discard(name)
        if pool.overflowed and pool.active == 0 and pool.queued == 0:
            await self._quiet()  # let the stale results commit, then look again
            self.request(pool)

    async def _scan(self, pool: TaskPool) -> bool:
        """Deliver due rows of the pool's task type up to its room; True if the scan reached the end."""
        room = pool.room()
        page = max(room, PAGE)
        after: tuple[str, str] | None = None
        delivered = 0
        while delivered < room:
            rows = await self._store.pending_runs(pool.definition.name, page, self._clock.time(), after)
            for workflow_id, message in rows:
                if not pool.knows(workflow_id, message.id):
                    self._deliver(workflow_id, message)
                    delivered += 1
            if len(rows) < page:
                return True
            after = (rows[-1][0], rows[-1][1].id)
        return False
