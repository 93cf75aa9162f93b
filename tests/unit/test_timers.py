"""The timer service on a fake clock: each message at exactly its deliver_at, in order, none early."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from stabilize_aio.messages.durable import CancelWorkflow, Durable
from stabilize_aio.runtime.timers import TimerService
from stabilize_aio.testing import FakeClock
from stabilize_aio.testing.clock import START


class Delivered:
    """What the service handed over, with the fake time it did so."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.log: list[tuple[str, float]] = []

    def __call__(self, workflow_id: str, message: Durable) -> None:
        self.log.append((workflow_id, self.clock.time()))


def due(offset: float | None) -> CancelWorkflow:
    return CancelWorkflow(id="c", deliver_at=None if offset is None else START + offset)


@asynccontextmanager
async def running(clock: FakeClock) -> AsyncIterator[tuple[TimerService, Delivered]]:
    delivered = Delivered(clock)
    timers = TimerService(delivered, clock=clock)
    async with anyio.create_task_group() as tg:
        tg.start_soon(timers.run)
        await clock.settle()
        yield timers, delivered
        tg.cancel_scope.cancel()


async def test_a_message_is_delivered_at_exactly_its_deliver_at_and_not_before() -> None:
    """The service sleeps until deliver_at; half a second short nothing is delivered; at it, the message is."""
    clock = FakeClock()
    async with running(clock) as (timers, delivered):
        timers.add("wf", due(5.0))
        await clock.advance(4.5)
        assert ([], 1, START + 5.0) == (delivered.log, timers.pending, clock.next_deadline)
        await clock.set(START + 5.0)
        assert ([("wf", START + 5.0)], 0, 1) == (delivered.log, timers.pending, timers.fired)


async def test_messages_are_delivered_in_deliver_at_order_ties_in_add_order() -> None:
    """Added out of order, each message is delivered at its own time, earliest first; equal times keep add order."""
    clock = FakeClock()
    async with running(clock) as (timers, delivered):
        for workflow_id, offset in (("c", 3.0), ("a", 1.0), ("d", 3.25), ("b1", 2.0), ("b2", 2.0)):
            timers.add(workflow_id, due(offset))
        await clock.advance(10.0)
        assert [
            ("a", START + 1.0),
            ("b1", START + 2.0),
            ("b2", START + 2.0),
            ("c", START + 3.0),
            ("d", START + 3.25),  # a quarter second after c: not handed over with it
        ] == delivered.log


async def test_an_earlier_message_added_later_is_delivered_first() -> None:
    """A new earliest entry cuts the service's sleep short: it sleeps until the new deadline instead."""
    clock = FakeClock()
    async with running(clock) as (timers, delivered):
        timers.add("late", due(10.0))
        await clock.settle()
        assert (1, START + 10.0) == (clock.sleepers, clock.next_deadline)
        timers.add("early", due(2.0))
        await clock.settle()
        assert (1, START + 2.0) == (clock.sleepers, clock.next_deadline)  # re-armed, the old sleep gone
        await clock.advance(2.0)
        assert [("early", START + 2.0)] == delivered.log
        await clock.advance(7.5)
        assert [("early", START + 2.0)] == delivered.log
        await clock.advance(0.5)
        assert [("early", START + 2.0), ("late", START + 10.0)] == delivered.log


async def test_a_later_message_does_not_disturb_the_wait() -> None:
    """An entry after the earliest one leaves the service sleeping until the earliest."""
    clock = FakeClock()
    async with running(clock) as (timers, delivered):
        timers.add("first", due(1.0))
        timers.add("second", due(4.0))
        await clock.settle()
        assert (1, START + 1.0) == (clock.sleepers, clock.next_deadline)
        await clock.advance(1.0)
        assert ([("first", START + 1.0)], START + 4.0) == (delivered.log, clock.next_deadline)


async def test_due_messages_go_out_without_advancing_and_an_idle_service_wakes_for_new_ones() -> None:
    """No deliver_at or one in the past is due now; once the heap is empty, the service waits for the next add."""
    clock = FakeClock()
    async with running(clock) as (timers, delivered):
        assert 0 == clock.sleepers  # nothing to wait for: the service does not sleep on the clock
        timers.add("now", due(None))
        timers.add("past", due(-30.0))
        await clock.settle()
        assert [("now", START), ("past", START)] == delivered.log
        timers.add("soon", due(0.25))
        await clock.advance(0.25)
        assert ("soon", START + 0.25) == delivered.log[-1]
        assert "<TimerService pending=0 fired=3>" == repr(timers)


async def test_on_the_real_clock_an_earlier_deadline_wakes_the_service_early() -> None:
    """With the default SystemClock, a message due in 50 ms added after one due in 30 s is delivered in time."""
    got = anyio.Event()
    log: list[str] = []

    def deliver(workflow_id: str, message: Durable) -> None:
        log.append(workflow_id)
        got.set()

    timers = TimerService(deliver)
    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        tg.start_soon(timers.run)
        timers.add("late", CancelWorkflow(id="c", deliver_at=time.time() + 30.0))
        await anyio.wait_all_tasks_blocked()  # the service is asleep until the late one
        timers.add("early", CancelWorkflow(id="c", deliver_at=time.time() + 0.05))
        with anyio.fail_after(5):
            await got.wait()
        tg.cancel_scope.cancel()
    elapsed = time.monotonic() - started
    assert (["early"], 1) == (log, timers.pending)
    assert 0.04 <= elapsed < 5  # not before the early one's deliver_at (wall time; measured on monotonic)
