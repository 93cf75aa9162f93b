"""A workflow's timeout (issue 12): past it, the run ends CANCELED for real, its compensations run."""

from __future__ import annotations

import pytest
from hang import Hang

from stabilize_aio import DefinitionError, Engine, Stage, StageView, TaskResult, Workflow, WorkflowStatus
from stabilize_aio.testing import FakeClock

S = WorkflowStatus


async def test_a_run_past_its_timeout_ends_canceled_for_real_and_compensates(db_url: str) -> None:
    clock = FakeClock()
    engine = Engine(db_url, clock=clock)
    undone: list[str] = []
    hang = Hang()
    engine.register("hang", hang.run)

    @engine.task("ok")
    async def ok(stage: StageView) -> TaskResult:
        return TaskResult.success()

    @engine.task("undo")
    async def undo(stage: StageView) -> TaskResult:
        undone.append(stage.ref_id)
        return TaskResult.success()

    async with engine:
        run = await engine.submit(
            Workflow(
                application="t",
                name="w",
                timeout=3600,
                stages=[Stage("book", "ok", compensate="undo"), Stage("wait", "hang", requisites=["book"])],
            )
        )
        await hang.wait_started()
        await clock.advance(3599)
        assert (await run.get()).status is S.RUNNING  # not yet
        await clock.advance(2)
        view = await run.wait(timeout=10)
        await engine.wait_idle()
        pending = await engine.store.pending_for(run.workflow_id)
    assert view.status is S.CANCELED
    assert view.cancel_reason == "timeout: the run passed its timeout of 3600s"
    assert hang.cancelled == ["wait"]
    assert undone == ["book/compensate"]
    assert view.compensation == "done"
    assert pending == []


async def test_a_run_that_ends_in_time_leaves_no_deadline_row(db_url: str) -> None:
    engine = Engine(db_url)

    @engine.task("ok")
    async def ok(stage: StageView) -> TaskResult:
        return TaskResult.success()

    async with engine:
        for stages in ([Stage("a", "ok")], [Stage("none")]):  # a task, and a run that ends in its start turn
            run = await engine.submit(Workflow(application="t", name="w", timeout=60, stages=stages))
            view = await run.wait(timeout=10)
            await engine.wait_idle()
            assert view.status is S.SUCCEEDED
            assert await engine.store.pending_for(run.workflow_id) == []


def test_a_timeout_must_be_positive() -> None:
    with pytest.raises(DefinitionError, match="timeout must be a number of seconds > 0"):
        Workflow(application="t", name="w", timeout=0, stages=[Stage("a", "t")])
