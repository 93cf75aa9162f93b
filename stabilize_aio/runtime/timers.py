"""The timer service: one in-memory heap of ``deliver_at`` messages per engine.

Fed after each commit and once from the outbox at start; it never queries rows,
so it cannot re-fire work already in flight. ``deliver_at`` is wall time
(persisted, comparable across restarts): the service reads ``clock.time()`` and
waits with ``clock.sleep_until``, so a test runs it on a fake clock.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

import anyio

from .._clock import SYSTEM_CLOCK, Clock
from ..messages.durable import Durable


class TimerService:
    """Sleeps until the earliest entry is due, then hands it to ``deliver``."""

    def __init__(self, deliver: Callable[[str, Durable], None], *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._deliver = deliver
        self._clock = clock
        self._heap: list[tuple[float, int, str, Durable]] = []
        self._seq = itertools.count()
        self._waiting: anyio.CancelScope | None = None  # the wait of run(), cut short by an earlier entry
        self.fired = 0

    def __repr__(self) -> str:
        return f"<TimerService pending={len(self._heap)} fired={self.fired}>"

    def add(self, workflow_id: str, message: Durable) -> None:
        """Schedule a committed message for its ``deliver_at``."""
        at = message.deliver_at or 0.0
        earliest = self._heap[0][0] if self._heap else None
        heapq.heappush(self._heap, (at, next(self._seq), workflow_id, message))
        if self._waiting is not None and (earliest is None or at < earliest):
            self._waiting.cancel()

    @property
    def pending(self) -> int:
        """Entries waiting."""
        return len(self._heap)

    async def run(self) -> None:
        """Fire due entries forever (cancelled with the engine's task group)."""
        while True:
            if not self._heap or self._heap[0][0] > self._clock.time():
                with anyio.CancelScope() as self._waiting:
                    if self._heap:
                        await self._clock.sleep_until(self._heap[0][0])
                    else:
                        await anyio.sleep_forever()
                self._waiting = None
                continue
            _, _, workflow_id, message = heapq.heappop(self._heap)
            self.fired += 1
            self._deliver(workflow_id, message)
            if self.fired % 256 == 0:
                await anyio.lowlevel.checkpoint()
