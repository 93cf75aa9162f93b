"""Durable schedules fired by the leader, exactly once per tick; retention of finished workflows."""

from __future__ import annotations

import time

import anyio
import pytest

from stabilize_aio import DefinitionError, Engine, Stage, StageView, TaskResult, UnknownTaskError, Workflow
from stabilize_aio import WorkflowStatus as S

NIGHTLY = Workflow(application="ops", name="nightly", stages=[Stage("a", "tick")])


def setup(engine: Engine, seen: list[str], ran: anyio.Event | None = None) -> None:
    @engine.task("tick")
    async def tick(stage: StageView) -> TaskResult:
        seen.append(stage.workflow_id)
        if ran is not None:
            ran.set()
        return TaskResult.success(outputs={"run": stage.context["label"]})


async def test_a_due_schedule_starts_its_tick_once_and_moves_on(db_url: str) -> None:
    """The leader starts schedule:<name>:<tick> for a due tick, with the schedule's inputs, then the next tick."""
    seen: list[str] = []
    ran = anyio.Event()
    engine = Engine(db_url, leader_interval=0.02)
    setup(engine, seen, ran)
    first = time.time() - 1
    async with engine:
        info = await engine.schedule("nightly", NIGHTLY, cron="0 3 * * *", context={"label": "n"}, first_at=first)
        tick_id = f"schedule:nightly:{int(first)}"
        with anyio.fail_after(10):
            await ran.wait()  # the leader loop, on its own, started the tick's run
        view = await engine.handle(tick_id).wait(timeout=10)
        listed = await engine.schedules()
    assert (first, [tick_id]) == (info.next_at, seen)
    assert (S.SUCCEEDED, "n") == (view.status, view.outputs["run"])
    assert ["nightly"] == [s.name for s in listed]
    assert listed[0].next_at > time.time()  # moved to the cron's next tick, missed ones not replayed


async def test_firing_a_tick_twice_starts_one_run(db_url: str) -> None:
    """Two leaders firing the same tick (an overlap during a leader change) start one run."""
    seen: list[str] = []
    engine = Engine(db_url, leader_interval=3600)  # fire by hand, not by the loop
    setup(engine, seen)
    async with engine:
        await engine.schedule("once", NIGHTLY, cron="* * * * *", context={"label": "x"}, first_at=time.time() - 1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.fire_due_schedules)
            tg.start_soon(engine.fire_due_schedules)
        await engine.wait_idle()
        runs = await engine.list(application="ops")
    assert 1 == len(runs)
    assert 1 == len(seen)


async def test_bad_schedules_are_refused_at_the_door(db_url: str) -> None:
    """A bad cron or an unregistered task type raises a DefinitionError and stores nothing."""
    engine = Engine(db_url)
    setup(engine, [])
    async with engine:
        with pytest.raises(DefinitionError, match=r"schedule 'bad'.*outside 0-59"):
            await engine.schedule("bad", NIGHTLY, cron="61 * * * *")
        with pytest.raises(UnknownTaskError, match="'nope' is not registered"):
            await engine.schedule(
                "bad", Workflow(application="o", name="n", stages=[Stage("a", "nope")]), cron="* * * * *"
            )
        assert [] == await engine.schedules()


async def test_unschedule_removes_a_schedule(db_url: str) -> None:
    """unschedule() deletes the schedule (True), and a second call finds none (False)."""
    engine = Engine(db_url)
    setup(engine, [])
    async with engine:
        await engine.schedule("gone", NIGHTLY, cron="* * * * *", context={"label": "g"})
        removed, again = await engine.unschedule("gone"), await engine.unschedule("gone")
        left = await engine.schedules()
    assert (True, False, []) == (removed, again, left)


async def test_schedules_survive_a_restart(db_url: str) -> None:
    """A schedule is durable: a new engine on the same database lists it with its next tick."""
    first = Engine(db_url)
    setup(first, [])
    async with first:
        info = await first.schedule("kept", NIGHTLY, cron="0 3 * * *", context={"label": "k"})
    second = Engine(db_url)
    setup(second, [])
    async with second:
        listed = await second.schedules()
    assert [(info.name, info.cron, info.next_at)] == [(s.name, s.cron, s.next_at) for s in listed]


async def test_retention_deletes_finished_workflows_only(db_url: str) -> None:
    """Retention deletes finished workflows past it (their stages and history too) and keeps running ones."""
    gate = anyio.Event()
    engine = Engine(db_url, retention=0.0, leader_interval=3600)  # applied by hand, not by the loop

    @engine.task("quick")
    async def quick(stage: StageView) -> TaskResult:
        return TaskResult.success()

    @engine.task("slow")
    async def slow(stage: StageView) -> TaskResult:
        await gate.wait()
        return TaskResult.success()

    async with engine:
        done = await engine.submit(Workflow(application="r", name="q", stages=[Stage("a", "quick")]))
        await done.wait(timeout=10)
        running = await engine.submit(Workflow(application="r", name="s", stages=[Stage("a", "slow")]))
        deleted = await engine.apply_retention()
        gone = await engine.store.statuses([done.workflow_id, running.workflow_id])
        history = await engine.store.events(done.workflow_id)
        gate.set()
        await running.wait(timeout=10)
    assert (1, {running.workflow_id: S.RUNNING}, []) == (deleted, gone, history)
