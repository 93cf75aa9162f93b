"""The clocks: FakeClock's semantics (time stands still, advance wakes sleepers in order) and SystemClock."""

from __future__ import annotations

import math
import time

import anyio
import anyio.lowlevel
import pytest

from stabilize_aio._clock import SYSTEM_CLOCK, Clock, SystemClock
from stabilize_aio.testing import FakeClock
from stabilize_aio.testing.clock import MONOTONIC_START, START


async def test_time_stands_still_until_advanced_and_both_timelines_move_together() -> None:
    """A new clock reads its fixed epoch; real time passing changes nothing; advance moves wall and monotonic."""
    clock: Clock = FakeClock()
    assert (START, MONOTONIC_START) == (clock.time(), clock.monotonic())
    await anyio.sleep(0.01)  # real time passes
    assert (START, MONOTONIC_START) == (clock.time(), clock.monotonic())
    assert isinstance(clock, FakeClock)
    await clock.advance(2.5)
    await clock.set(START + 4.0)
    assert (START + 4.0, MONOTONIC_START + 4.0) == (clock.time(), clock.monotonic())
    assert 1_000.0 == FakeClock(start=1_000.0).time()


async def test_a_sleeper_wakes_at_exactly_its_deadline_and_not_before() -> None:
    """sleep(5) does not return after 4.5 s of fake time; it returns on reaching 5 s and reads exactly that time."""
    clock = FakeClock()
    woke_at: list[float] = []

    async def sleeper() -> None:
        await clock.sleep(5.0)
        woke_at.append(clock.time())

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper)
        await clock.advance(4.5)
        assert ([], 1, START + 5.0) == (woke_at, clock.sleepers, clock.next_deadline)
        await clock.advance(10.0)  # past the deadline: the sleeper still reads its own deadline
    assert [START + 5.0] == woke_at
    assert (START + 14.5, 0, None) == (clock.time(), clock.sleepers, clock.next_deadline)


async def test_advance_wakes_sleepers_in_deadline_order_each_at_its_time() -> None:
    """Sleepers started latest-deadline first wake earliest-deadline first, each seeing its own deadline."""
    clock = FakeClock()
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, wall_time: float) -> None:
        await clock.sleep_until(wall_time)
        woke.append((name, clock.time()))

    async with anyio.create_task_group() as tg:
        for name, offset in (("c", 3.0), ("a", 1.0), ("b", 2.0)):
            tg.start_soon(sleeper, name, START + offset)
        await clock.advance(3.0)
    assert [("a", START + 1.0), ("b", START + 2.0), ("c", START + 3.0)] == woke


async def test_a_sleep_begun_on_waking_is_honoured_within_the_same_advance() -> None:
    """A task that sleeps again after waking is woken again if its new deadline lies inside the advance."""
    clock = FakeClock()
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            await clock.sleep(1.0)
            ticks.append(clock.time())

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        await clock.advance(3.5)
        assert [START + 1.0, START + 2.0, START + 3.0] == ticks
        assert START + 4.0 == clock.next_deadline
        tg.cancel_scope.cancel()


async def test_a_due_sleep_is_a_checkpoint_and_registers_nothing() -> None:
    """sleep(0), a negative sleep and sleep_until(the past) return at once (still cancellable)."""
    clock = FakeClock()
    await clock.sleep(0)
    await clock.sleep(-1.0)
    await clock.sleep_until(START - 60.0)
    assert (0, None, START) == (clock.sleepers, clock.next_deadline, clock.time())
    with anyio.CancelScope() as scope:
        scope.cancel()
        await clock.sleep(0)
        pytest.fail("a due sleep must still be a cancellation point")  # pragma: no cover


async def test_a_cancelled_sleeper_is_forgotten() -> None:
    """A sleep cancelled before its deadline leaves no sleeper behind and is not woken later."""
    clock = FakeClock()
    woke: list[str] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(name)

    async with anyio.create_task_group() as tg:
        with anyio.CancelScope() as doomed:
            async with anyio.create_task_group() as inner:
                inner.start_soon(sleeper, "cancelled", 1.0)
                tg.start_soon(sleeper, "kept", 2.0)
                await clock.settle()
                assert (2, START + 1.0) == (clock.sleepers, clock.next_deadline)
                doomed.cancel()
        assert (1, START + 2.0) == (clock.sleepers, clock.next_deadline)
        await clock.advance(5.0)
    assert ["kept"] == woke


@pytest.mark.parametrize("seconds", [-0.001, math.nan, math.inf])
async def test_advance_only_moves_forward_by_a_finite_amount(seconds: float) -> None:
    """Going back, NaN and infinity are refused and leave the clock where it was."""
    clock = FakeClock()
    with pytest.raises(ValueError, match="forward"):
        await clock.advance(seconds)
    assert START == clock.time()


async def test_set_refuses_to_go_back() -> None:
    """set() to an earlier wall time raises; to the current one is allowed."""
    clock = FakeClock()
    await clock.set(START)
    with pytest.raises(ValueError, match="does not go back"):
        await clock.set(START - 1.0)
    with pytest.raises(ValueError, match="finite"):
        FakeClock(start=math.nan)


async def test_advance_through_many_wakeups_takes_no_real_time() -> None:
    """Settling between deadlines does not poll: 20 wake-ups of a task that yields a few times each are instant.

    (anyio.wait_all_tasks_blocked() on asyncio sleeps 0.1 s whenever a task is still runnable: 2 s here.)
    """
    clock = FakeClock()
    rounds: list[float] = []

    async def busy() -> None:
        for _ in range(20):
            await clock.sleep(1.0)
            for _ in range(5):
                await anyio.lowlevel.checkpoint()
            rounds.append(clock.time())

    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        tg.start_soon(busy)
        await clock.advance(20.0)
    elapsed = time.monotonic() - started
    assert [START + n for n in range(1, 21)] == rounds
    assert elapsed < 1.0, f"advance took {elapsed:.2f} s of real time"


async def test_repr_shows_time_offset_sleepers_and_next_deadline() -> None:
    """The repr says where the clock stands and what waits on it."""
    clock = FakeClock()
    assert "<FakeClock time=1700000000.000 (+0s) sleepers=0>" == repr(clock)
    async with anyio.create_task_group() as tg:
        tg.start_soon(clock.sleep, 3.0)
        await clock.advance(1.5)
        assert "<FakeClock time=1700000001.500 (+1.5s) sleepers=1 next=+1.5s>" == repr(clock)
        tg.cancel_scope.cancel()


async def test_system_clock_reads_the_real_clocks_and_really_sleeps() -> None:
    """SystemClock is time.time, time.monotonic and anyio.sleep (a short real sleep)."""
    clock: Clock = SYSTEM_CLOCK
    assert isinstance(clock, SystemClock)
    before_wall, before_mono = time.time(), time.monotonic()
    assert before_wall <= clock.time() <= time.time()
    assert before_mono <= clock.monotonic() <= time.monotonic()
    await clock.sleep_until(time.time() - 10.0)  # past: returns at once
    await clock.sleep(-1.0)
    assert time.monotonic() - before_mono < 0.5
    start = time.monotonic()
    await clock.sleep_until(clock.time() + 0.05)
    await clock.sleep(0.02)
    assert time.monotonic() - start >= 0.06
    assert "<SystemClock>" == repr(clock)
