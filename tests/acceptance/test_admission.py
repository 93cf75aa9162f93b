"""Admission limits and global mutexes in one process (issue 12), on both backends.

Runs beyond ``max_concurrent`` of one ``concurrency_key`` wait BUFFERED and
start in insertion order as slots free; a BUFFERED run can be cancelled or
miss its ``start_deadline``; ``keep_waiting=False`` purges the runs a freed
slot does not take. The tasks count how many runs of the key run at once.
"""

from __future__ import annotations

import itertools
import time

import anyio
import pytest

from stabilize_aio import DefinitionError, Engine, Stage, StageView, TaskResult, Workflow, WorkflowStatus
from stabilize_aio.testing import FakeClock

S = WorkflowStatus


class Meter:
    """A task that counts the calls running at once and the order they started in."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.order: list[str] = []
        self.release = anyio.Event()
        self.entered = anyio.Event()  # set by the first call
        self.hold = False

    async def run(self, stage: StageView) -> TaskResult:
        self.running += 1
        self.peak = max(self.peak, self.running)
        self.order.append(stage.workflow_id)
        self.entered.set()
        try:
            if self.hold:
                await self.release.wait()
            else:
                await anyio.sleep(0.01)  # (work: the calls overlap when admission lets them)
        finally:
            self.running -= 1
        return TaskResult.success()


def etl(*, limit: int = 2, keep_waiting: bool = True, start_deadline: float | None = None) -> Workflow:
    return Workflow(
        application="t", name="etl", concurrency_key="nightly-etl", max_concurrent=limit,
        keep_waiting=keep_waiting, start_deadline=start_deadline, stages=[Stage("load", "meter")],
    )  # fmt: skip


async def test_twenty_concurrent_submits_never_run_more_than_two(backend_url: str) -> None:
    engine = Engine(backend_url)
    meter = Meter()
    engine.register("meter", meter.run, concurrency=20)
    async with engine:
        runs: list[str] = []

        async def submit(k: int) -> None:
            runs.append((await engine.submit(etl(), workflow_id=f"etl-{k}")).workflow_id)

        async with anyio.create_task_group() as tg:
            for k in range(20):
                tg.start_soon(submit, k)
        views = [await engine.wait(wid, timeout=30) for wid in runs]
        claims = await engine.store.grant(None)  # nothing is left to grant
    assert [S.SUCCEEDED] * 20 == [v.status for v in views]
    assert (2, 20) == (meter.peak, len(meter.order))
    assert [] == claims


async def test_waiting_runs_start_in_submit_order_and_hold_their_slot_while_paused(backend_url: str) -> None:
    engine = Engine(backend_url)
    meter = Meter()
    meter.hold = True
    engine.register("meter", meter.run, concurrency=20)
    async with engine:
        first = await engine.submit(etl(limit=1), workflow_id="etl-0")
        rest = [await engine.submit(etl(limit=1), workflow_id=f"etl-{k}") for k in range(1, 4)]
        with anyio.fail_after(10):
            await meter.entered.wait()
        assert [S.BUFFERED] * 3 == [(await r.get()).status for r in rest]  # (durable as submit returned)
        assert S.RUNNING == (await first.get()).status
        await first.pause()  # a paused run keeps its slot
        assert [S.BUFFERED] * 3 == [(await r.get()).status for r in rest]
        meter.release.set()
        await first.resume()
        views = [await r.wait(timeout=10) for r in (first, *rest)]
    assert [S.SUCCEEDED] * 4 == [v.status for v in views]
    assert ["etl-0", "etl-1", "etl-2", "etl-3"] == meter.order


async def test_a_buffered_run_can_be_cancelled_and_keep_waiting_false_purges(backend_url: str) -> None:
    engine = Engine(backend_url)
    meter = Meter()
    meter.hold = True
    engine.register("meter", meter.run, concurrency=20)
    async with engine:
        first = await engine.submit(etl(limit=1, keep_waiting=False), workflow_id="p-0")
        second = await engine.submit(etl(limit=1, keep_waiting=False), workflow_id="p-1")
        third = await engine.submit(etl(limit=1, keep_waiting=False), workflow_id="p-2")
        fourth = await engine.submit(etl(limit=1, keep_waiting=False), workflow_id="p-3")
        with anyio.fail_after(10):
            await meter.entered.wait()
        cancelled = await fourth.cancel("not needed")
        meter.release.set()
        views = [await r.wait(timeout=10) for r in (first, second, third)]
    assert (S.CANCELED, "not needed") == (cancelled.status, cancelled.cancel_reason)
    # stabilize's purge: the freed slot takes the oldest waiting run, the others that asked are cancelled
    assert [S.SUCCEEDED, S.SUCCEEDED, S.CANCELED] == [v.status for v in views]
    assert ["p-0", "p-1"] == meter.order
    assert "keep_waiting=False" in (views[2].cancel_reason or "")


async def test_a_run_that_misses_its_start_deadline_is_cancelled(db_url: str) -> None:
    clock = FakeClock()
    engine = Engine(db_url, clock=clock)
    meter = Meter()
    meter.hold = True
    engine.register("meter", meter.run)
    async with engine:
        first = await engine.submit(etl(limit=1))
        late = await engine.submit(etl(limit=1, start_deadline=60))
        with anyio.fail_after(10):
            await meter.entered.wait()
        await clock.advance(59)
        assert S.BUFFERED == (await late.get()).status
        await clock.advance(2)
        view = await late.wait(timeout=10)
        meter.release.set()
        assert S.SUCCEEDED == (await first.wait(timeout=10)).status
    assert (S.CANCELED, "start_deadline: the run did not start within 60s") == (view.status, view.cancel_reason)


async def test_global_mutex_stages_of_several_runs_never_overlap(backend_url: str) -> None:
    engine = Engine(backend_url)
    spans: list[tuple[float, float]] = []

    @engine.task("migrate", concurrency=8)
    async def migrate(stage: StageView) -> TaskResult:
        start = time.monotonic()
        await anyio.sleep(0.02)
        spans.append((start, time.monotonic()))
        return TaskResult.success()

    wf = Workflow(application="t", name="m", stages=[
        Stage("a", "migrate", mutex_key="db", mutex_scope="global"),
        Stage("b", "migrate", mutex_key="db", mutex_scope="global")])  # fmt: skip
    async with engine:
        runs = [await engine.submit(wf) for _ in range(4)]
        views = [await r.wait(timeout=20) for r in runs]
    assert [S.SUCCEEDED] * 4 == [v.status for v in views]
    spans.sort()
    assert 8 == len(spans)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start


def test_admission_and_coordination_options_fail_at_the_door() -> None:
    with pytest.raises(DefinitionError, match="max_concurrent must be an int >= 1"):
        Workflow(application="t", name="w", concurrency_key="k", max_concurrent=0, stages=[Stage("a", "t")])
    with pytest.raises(DefinitionError, match="max_concurrent needs a concurrency_key"):
        Workflow(application="t", name="w", max_concurrent=2, stages=[Stage("a", "t")])
    with pytest.raises(DefinitionError, match="start_deadline must be a number of seconds > 0"):
        Workflow(application="t", name="w", start_deadline=0, stages=[Stage("a", "t")])
    with pytest.raises(DefinitionError, match="stage 'a': mutex_scope must be 'workflow' or 'global'"):
        Stage("a", "t", mutex_key="k", mutex_scope="cluster")
    with pytest.raises(DefinitionError, match="milestone_ref_id 'nope' is not a stage of this workflow"):
        Workflow(application="t", name="w", stages=[Stage("a", "t", milestone_ref_id="nope")])
    with pytest.raises(DefinitionError, match="stage 'a': a stage cannot be its own milestone"):
        Stage("a", "t", milestone_ref_id="a")
    with pytest.raises(DefinitionError, match="milestone_status NOT_STARTED is not a status"):
        Stage("a", "t", milestone_ref_id="b", milestone_status="NOT_STARTED")


async def test_a_run_that_ends_in_the_turn_it_claims_a_key_leaves_no_claim_behind(backend_url: str) -> None:
    engine = Engine(backend_url)
    engine.register("t", lambda stage: TaskResult.success())
    async with engine:
        first = await engine.submit(Workflow(application="t", name="w1", stages=[
            Stage("m", "t", mutex_key="db", mutex_scope="global"),
            Stage("f", "t", enabled="nosuchvar > 1"),  # fails when ready: the start turn ends the run
        ]))  # fmt: skip
        assert S.TERMINAL == (await first.wait(timeout=10)).status
        second = await engine.submit(Workflow(application="t", name="w2", stages=[
            Stage("m", "t", mutex_key="db", mutex_scope="global")]))  # fmt: skip
        assert S.SUCCEEDED == (await second.wait(timeout=10)).status
        await engine.wait_idle()
        assert [] == await engine.store.grant(None)  # nothing waits, nothing is left
