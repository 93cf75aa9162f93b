"""A fake :class:`~stabilize_aio._clock.Clock` for tests (after trio's ``MockClock``).

Time stands still until the test moves it::

    clock = FakeClock()
    timers = TimerService(deliver, clock=clock)
    ...
    await clock.advance(5)  # sleepers due within 5 s wake, in deadline order

:meth:`FakeClock.advance` is a coroutine: it steps from deadline to deadline,
and at each one sets the clock to exactly that deadline, wakes the sleepers due
then and lets every task run until all wait again (:meth:`FakeClock.settle`)
before it looks for the next deadline. So a woken task reads the time it asked
for, and a sleep it starts on waking is honoured within the same ``advance``.
Nothing waits for real time, nothing polls.

Wall time starts at a fixed epoch (:data:`START`) and monotonic time at
:data:`MONOTONIC_START`, far apart, so code that mixes the two timelines gives
visibly wrong answers in tests. Both move together and never go back.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math

import anyio
import anyio.lowlevel

__all__ = ("MONOTONIC_START", "START", "FakeClock")

#: Default wall time of a new FakeClock: 2023-11-14T22:13:20Z.
START = 1_700_000_000.0
#: Monotonic time of a new FakeClock.
MONOTONIC_START = 1_000.0
# settle(): passes through the event loop before falling back to anyio's (polling) check
_QUICK_PASSES = 100


class _Sleeper:
    __slots__ = ("deadline", "done", "event")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.event = anyio.Event()
        self.done = False


class FakeClock:
    """A clock that moves only when told to; see the module docstring.

    Args:
        start: the wall time (epoch seconds) it reads until advanced.
    """

    def __init__(self, start: float = START) -> None:
        if not math.isfinite(start):
            raise ValueError(f"start must be a finite time, not {start!r}")
        self._start = start
        self._now = start
        self._heap: list[tuple[float, int, _Sleeper]] = []
        self._seq = itertools.count()
        self._sleepers = 0

    def __repr__(self) -> str:
        due = self.next_deadline
        until = "" if due is None else f" next=+{due - self._now:g}s"
        return f"<FakeClock time={self._now:.3f} (+{self._now - self._start:g}s) sleepers={self._sleepers}{until}>"

    # the Clock protocol

    def time(self) -> float:
        """The fake wall time."""
        return self._now

    def monotonic(self) -> float:
        """The fake monotonic time: :data:`MONOTONIC_START` plus the seconds advanced."""
        return MONOTONIC_START + (self._now - self._start)

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock has been advanced by ``seconds`` (0 or less: a checkpoint)."""
        await self.sleep_until(self._now + seconds)

    async def sleep_until(self, wall_time: float) -> None:
        """Wait until :meth:`time` reaches ``wall_time`` (already reached: a checkpoint)."""
        if wall_time <= self._now:
            await anyio.lowlevel.checkpoint()
            return
        sleeper = _Sleeper(wall_time)
        heapq.heappush(self._heap, (wall_time, next(self._seq), sleeper))
        self._sleepers += 1
        try:
            await sleeper.event.wait()
        finally:
            if not sleeper.done:  # cancelled: its heap entry is skipped when reached
                sleeper.done = True
                self._sleepers -= 1

    # what tests call

    @property
    def sleepers(self) -> int:
        """How many tasks are sleeping on this clock."""
        return self._sleepers

    @property
    def next_deadline(self) -> float | None:
        """The wall time the earliest sleeper waits for (None: nobody sleeps)."""
        self._drop_cancelled()
        return self._heap[0][0] if self._heap else None

    async def advance(self, seconds: float) -> None:
        """Move time forward ``seconds``, waking sleepers at their deadlines in order.

        Returns once every sleeper due by then has been woken and every task has
        run until it waits again; :meth:`time` then reads the old time plus ``seconds``.
        """
        if not seconds >= 0 or not math.isfinite(seconds):
            raise ValueError(f"a FakeClock only moves forward by a finite amount, not {seconds!r}")
        await self._run_until(self._now + seconds)

    async def set(self, wall_time: float) -> None:
        """Advance to the wall time ``wall_time`` (not earlier than :meth:`time`)."""
        if not wall_time >= self._now or not math.isfinite(wall_time):
            raise ValueError(f"a FakeClock does not go back: it reads {self._now!r}, asked for {wall_time!r}")
        await self._run_until(wall_time)

    async def settle(self) -> None:
        """Let every other task run until each one waits on something.

        ``anyio.wait_all_tasks_blocked()``, but on asyncio without its 0.1 s
        polling: this yields to the event loop until no other task is ready to
        run (and only falls back to anyio's check when tasks keep running for
        many passes). A task waiting for a worker thread or a socket counts as
        waiting.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # trio: its own check is exact and immediate
            await anyio.wait_all_tasks_blocked()
            return
        this = asyncio.current_task()
        for _ in range(_QUICK_PASSES):
            await anyio.lowlevel.checkpoint()
            if all(_waiting(task) for task in asyncio.all_tasks() if task is not this):
                return
        await anyio.wait_all_tasks_blocked()

    async def _run_until(self, target: float) -> None:
        while True:
            await self.settle()  # let tasks reach their sleeps at the current time first
            self._drop_cancelled()
            if not self._heap or self._heap[0][0] > target:
                break
            self._now = max(self._now, self._heap[0][0])
            while self._heap and self._heap[0][0] <= self._now:
                _, _, sleeper = heapq.heappop(self._heap)
                if not sleeper.done:
                    sleeper.done = True
                    self._sleepers -= 1
                    sleeper.event.set()
        self._now = target

    def _drop_cancelled(self) -> None:
        while self._heap and self._heap[0][2].done:
            heapq.heappop(self._heap)


def _waiting(task: asyncio.Task[object]) -> bool:
    """Whether an asyncio task is suspended on a future that has not completed (as anyio checks it)."""
    waiter: asyncio.Future[object] | None = getattr(task, "_fut_waiter", None)
    return waiter is not None and not waiter.done()
