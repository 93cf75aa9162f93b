"""Time, injected: what the engine's parts read and wait on.

Two timelines that must not be mixed:

* :meth:`Clock.time`, wall time in epoch seconds: what is persisted and
  compared across processes and restarts (``deliver_at``, ``created_at``,
  lease expiries). It can be stepped by the operating system.
* :meth:`Clock.monotonic`, for durations inside one process (a breaker's
  cooldown). Its zero means nothing; only differences do.

:class:`SystemClock` is the real one; tests use
:class:`stabilize_aio.testing.FakeClock`, which stands still until the test
advances it. This module imports nothing of the package.
"""

from __future__ import annotations

import time
from typing import Protocol

import anyio

__all__ = ("SYSTEM_CLOCK", "Clock", "SystemClock")


class Clock(Protocol):
    """Where time comes from."""

    def time(self) -> float:
        """Wall time, epoch seconds (the value persisted as ``deliver_at``)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back, for durations."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (0 or less: a checkpoint)."""
        ...

    async def sleep_until(self, wall_time: float) -> None:
        """Wait until :meth:`time` reaches ``wall_time`` (already past: a checkpoint)."""
        ...


class SystemClock:
    """The real clock: ``time.time``, ``time.monotonic``, ``anyio.sleep``."""

    def __repr__(self) -> str:
        return "<SystemClock>"

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))

    async def sleep_until(self, wall_time: float) -> None:
        # a wall-clock step during the wait is not followed: callers re-read time() on waking
        await anyio.sleep(max(0.0, wall_time - time.time()))


#: The default clock of every part that takes one.
SYSTEM_CLOCK = SystemClock()
