"""Coordinating stages end to end (issue 12): deferred choice, mutex, milestone, cancel region, signal waits.

Real stores, real coroutines: cancellations are seen inside the tasks, mutual
exclusion is proven by the tasks' own timestamps.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

import anyio
import anyio.lowlevel
import pytest
from hang import Hang

from stabilize_aio import (
    DefinitionError,
    Engine,
    Stage,
    StageView,
    TaskResult,
    Workflow,
    WorkflowStatus,
    WorkflowView,
)
from stabilize_aio.testing import FakeClock

S = WorkflowStatus


async def test_a_deferred_choice_loser_is_cancelled_for_real_and_never_completes(backend_url: str) -> None:
    engine = Engine(backend_url)
    slow = Hang()
    engine.register("slow", slow.run)

    @engine.task("fast")
    async def fast(stage: StageView) -> TaskResult:
        await slow.wait_started()  # the loser is running when the winner commits
        return TaskResult.success(outputs={"by": stage.ref_id})

    async with engine:
        run = await engine.submit(Workflow(application="t", name="w", stages=[
            Stage("bob", "slow", deferred_choice_group="reviewers"),
            Stage("alice", "fast", deferred_choice_group="reviewers"),
            Stage("done", "fast", requisites=["alice", "bob"], join_type="OR"),
        ]))  # fmt: skip
        final = await run.wait(timeout=10)
        history = [(e.kind, e.stage) for e in await engine.history(run.workflow_id)]
    assert (S.SUCCEEDED, S.SUCCEEDED, S.SKIPPED) == (final.status, final.stage("alice").status,
                                                     final.stage("bob").status)  # fmt: skip
    assert (True, ["bob"]) == (final.stage("bob").pruned, slow.cancelled)
    assert ("stage.completed", "bob") not in history
    assert S.SUCCEEDED == final.stage("done").status


async def test_stages_on_one_mutex_never_overlap_and_hold_no_slot_while_waiting(backend_url: str) -> None:
    engine = Engine(backend_url)
    spans: list[tuple[str, float, float]] = []

    @engine.task("migrate", concurrency=4)
    async def migrate(stage: StageView) -> TaskResult:
        start = time.monotonic()
        await anyio.sleep(0.05)
        spans.append((stage.ref_id, start, time.monotonic()))
        return TaskResult.success()

    async with engine:
        run = await engine.submit(Workflow(application="t", name="w", stages=[
            Stage(f"m{k}", "migrate", mutex_key="db") for k in range(4)]))  # fmt: skip
        final = await run.wait(timeout=10)
    assert S.SUCCEEDED == final.status
    ordered = sorted(spans, key=lambda s: s[1])
    assert ["m0", "m1", "m2", "m3"] == [ref for ref, _, _ in ordered]  # first come, first served
    for (_, _, end), (_, start, _) in itertools.pairwise(ordered):
        assert end <= start  # never two at once


async def test_a_milestone_stage_runs_only_while_the_milestone_holds(backend_url: str) -> None:
    engine = Engine(backend_url)

    @engine.task("approve")
    async def approve(stage: StageView) -> TaskResult:
        if "_signal_name" in stage.context:
            return TaskResult.success(outputs={"approved": True})
        return TaskResult.suspend()

    @engine.task("ok")
    async def ok(stage: StageView) -> TaskResult:
        return TaskResult.success(outputs={stage.ref_id: True})

    async with engine:
        run = await engine.submit(Workflow(application="t", name="w", stages=[
            Stage("approve", "approve"),
            Stage("edit", "ok", milestone_ref_id="approve", milestone_status="SUSPENDED"),
        ]))  # fmt: skip
        edited = await _until(engine, run.workflow_id, lambda v: v.stage("edit").status.is_complete)
        assert (S.SUCCEEDED, S.SUSPENDED) == (edited.stage("edit").status, edited.stage("approve").status)
        await run.signal("approve", "ok")
        final = await run.wait(timeout=10)
        late = await engine.submit(Workflow(application="t", name="w2", stages=[
            Stage("approve", "ok"),
            Stage("prep", "ok", requisites=["approve"]),
            Stage("edit", "ok", requisites=["prep"], milestone_ref_id="approve"),
        ]))  # fmt: skip
        passed = await late.wait(timeout=10)
    assert S.SUCCEEDED == final.status
    assert (S.SUCCEEDED, S.SKIPPED) == (passed.status, passed.stage("edit").status)


async def _until(engine: Engine, wid: str, done: Callable[[WorkflowView], bool]) -> WorkflowView:
    """The run's view once ``done(view)`` holds, looked at each time the engine is idle (nothing left to run)."""
    with anyio.fail_after(10):
        while True:
            await engine.wait_idle()
            view = await engine.get(wid)
            if done(view):
                return view
            await anyio.lowlevel.checkpoint()


async def test_cancel_region_cancels_its_stages_for_real(backend_url: str) -> None:
    engine = Engine(backend_url)
    hang = Hang()
    engine.register("hang", hang.run)

    @engine.task("ok")
    async def ok(stage: StageView) -> TaskResult:
        return TaskResult.success()

    async with engine:
        run = await engine.submit(Workflow(application="t", name="w", stages=[
            Stage("charge", "hang", cancel_region="payment"),
            Stage("receipt", "ok", requisites=["charge"], cancel_region="payment"),
            Stage("other", "ok"),
        ]))  # fmt: skip
        await hang.wait_started()
        with pytest.raises(DefinitionError, match="no stage in cancel region 'nope'"):
            await run.cancel_region("nope")
        await run.cancel_region("payment")
        final = await run.wait(timeout=10)
    assert (S.CANCELED, ["charge"]) == (final.status, hang.cancelled)
    assert (S.CANCELED, S.CANCELED, S.SUCCEEDED) == tuple(final.stage(r).status for r in ("charge", "receipt", "other"))


@pytest.mark.parametrize(
    ("on_timeout", "status"), [("fail", S.TERMINAL), ("skip", S.SKIPPED), ("continue", S.SUCCEEDED)]
)
async def test_a_signal_wait_with_a_timeout_ends_as_on_timeout_says(
    db_url: str, on_timeout: str, status: WorkflowStatus
) -> None:
    clock = FakeClock()
    engine = Engine(db_url, clock=clock)
    calls: list[bool] = []

    @engine.task("wait")
    async def wait(stage: StageView) -> TaskResult:
        calls.append(bool(stage.context.get("_signal_timed_out")))
        if calls[-1]:
            return TaskResult.success(outputs={"timed_out": True})
        return TaskResult.suspend(timeout=600, on_timeout=on_timeout)

    async with engine:
        run = await engine.submit(Workflow(application="t", name="w", stages=[Stage("gate", "wait")]))
        await _until(engine, run.workflow_id, lambda v: v.stage("gate").status is S.SUSPENDED)
        await clock.advance(599)
        assert (await run.get()).stage("gate").status is S.SUSPENDED
        await clock.advance(2)
        final = await run.wait(timeout=10)
        pending = await engine.store.pending_for(run.workflow_id)
    assert status == final.stage("gate").status
    assert ([False, True] if on_timeout == "continue" else [False]) == calls
    assert [] == pending
