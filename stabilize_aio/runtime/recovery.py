"""Recovery and wake-ups: pending rows read from the store go to their actors (or to the timer heap).

* At start (SQLite) or when a shard lease is gained (PostgreSQL), every outbox
  row of those shards is redelivered: the outbox is all pending work.
* Another process's wake-up (LISTEN) names one workflow: its rows are read and
  routed. Wake-ups of one workflow coalesce: one queued, at most one read at a
  time, read again if woken meanwhile (duplicates drop by id in the actor).
* The safety-net poll behind LISTEN/NOTIFY redelivers due rows of owned
  workflows without a live actor and checks awaited completions.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Protocol

import anyio
import anyio.abc

from .._clock import Clock
from ..messages.durable import Durable
from ..messages.memory import Undecodable
from ..store.protocol import Pending
from ..store.shards import shard_of
from .waiters import Waiters

log = logging.getLogger("stabilize_aio.engine")

Deliver = Callable[[str, Pending], None]


class PendingReader(Protocol):
    """What recovery needs of a store."""

    async def pending_messages(self) -> list[tuple[str, Pending]]: ...
    async def pending_for(self, workflow_id: str) -> list[Pending]: ...


def is_future(message: Pending, now: float) -> bool:
    """Whether a row's time has not come yet."""
    return message.deliver_at is not None and message.deliver_at > now


class Recovery:
    """Routes the store's pending rows: due ones to their actors, future ones to the timer heap."""

    def __init__(
        self,
        store: PendingReader,
        *,
        deliver: Deliver,
        schedule: Callable[[str, Durable], None],
        live: Callable[[], Collection[str]],
        accepts: Callable[[str], bool],
        clock: Clock,
    ) -> None:
        self._store = store
        self._deliver = deliver
        self._schedule = schedule
        self._live = live  # the ids of the workflows with a live actor
        self._accepts = accepts  # the engine runs and owns this workflow
        self._clock = clock
        self._wake_queue: dict[str, None] = {}  # an ordered set: a second wake-up of a queued one is dropped
        self._picking: set[str] = set()  # their rows are being read
        self._pick_again: set[str] = set()  # woken again while being read
        self._wake_ready: anyio.Event | None = None

    def route(self, workflow_id: str, message: Pending, now: float) -> None:
        """A pending row: to the timer heap if its time has not come, else to its actor."""
        if not isinstance(message, Undecodable) and is_future(message, now):
            self._schedule(workflow_id, message)
        else:
            self._deliver(workflow_id, message)

    async def recover(self, shards: Collection[int] | None, *, due_only: bool = False) -> None:
        """Redeliver what the outbox holds (of the given shards).

        ``due_only`` (the safety-net poll) skips rows whose time has not come (the
        timer heap has those already) and the rows of workflows that had a live
        actor before or after the read: the actor has those rows in hand, and a row
        it consumed while the read ran would come back stale.
        """
        was_live = set(self._live()) if due_only else set()
        rows = await self._store.pending_messages()
        if due_only:
            was_live.update(self._live())  # and those live after it (not those this loop activates)
        now = self._clock.time()
        count = 0
        for workflow_id, message in rows:
            if shards is not None and shard_of(workflow_id) not in shards:
                continue
            if due_only and workflow_id in was_live:
                continue
            count += 1
            if not (due_only and is_future(message, now)):
                self.route(workflow_id, message, now)
        if count and not due_only:
            log.info("recovered %d pending messages", count)

    async def reread(self, workflow_id: str) -> None:
        """Read one workflow's pending rows and route them (a resumed run's calls go again)."""
        now = self._clock.time()
        for message in await self._store.pending_for(workflow_id):
            self.route(workflow_id, message, now)

    # wake-ups from other processes ---------------------------------------------
    def woken(self, workflow_id: str) -> None:
        """Another process committed work for a workflow (LISTEN): queue it for its owner.

        The driver calls this outside any task (no anyio backend is detectable
        there), so it only queues and sets an event; :meth:`wake_loop` does the rest.
        """
        if self._accepts(workflow_id):
            self._wake_queue[workflow_id] = None
            if self._wake_ready is not None:
                self._wake_ready.set()

    async def wake_loop(self, tg: anyio.abc.TaskGroup) -> None:
        """Pick up the workflows other processes woke this owner for (each read in a task of ``tg``)."""
        while True:
            self._wake_ready = anyio.Event()
            if not self._wake_queue:
                await self._wake_ready.wait()
            while self._wake_queue:
                workflow_id = next(iter(self._wake_queue))
                del self._wake_queue[workflow_id]
                if workflow_id in self._picking:
                    self._pick_again.add(workflow_id)  # read again once the read under way is done
                else:
                    self._picking.add(workflow_id)
                    tg.start_soon(self._pick_up, workflow_id)

    async def _pick_up(self, workflow_id: str) -> None:
        try:
            while True:
                self._pick_again.discard(workflow_id)
                now = self._clock.time()
                for message in await self._store.pending_for(workflow_id):
                    self.route(workflow_id, message, now)
                if workflow_id not in self._pick_again:
                    return
        finally:
            self._picking.discard(workflow_id)

    async def safety_net(
        self,
        interval: float,
        held: Callable[[], Collection[int]],
        waiters: Waiters,
        grant: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """A slow poll behind LISTEN/NOTIFY: due work of the held shards, completions awaited here, and
        (``grant``) claims on shared keys whose grant a crashed process never made."""
        while True:
            await self._clock.sleep(interval)
            try:
                shards = held()
                if shards:
                    await self.recover(set(shards), due_only=True)
                await waiters.check()
                if grant is not None:
                    await grant()
            except Exception:
                log.exception("safety-net poll failed; retrying in %ss", interval)
