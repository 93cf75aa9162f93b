"""The reuse policy of a caller-given workflow id (issue 12): if_exists="return" | "reject", run.created."""

from __future__ import annotations

import anyio
import pytest

from stabilize_aio import (
    Engine,
    EngineStateError,
    RunStateError,
    Stage,
    StageView,
    TaskResult,
    Workflow,
    WorkflowExists,
    WorkflowRun,
    WorkflowStatus,
)


def order(n: int = 1) -> Workflow:
    return Workflow(application="t", name="order", stages=[Stage(f"s{k}", "ok") for k in range(n)])


async def test_return_gives_the_existing_run_and_says_it_was_not_made(db_url: str) -> None:
    engine = Engine(db_url)
    calls = 0

    @engine.task("ok")
    async def ok(stage: StageView) -> TaskResult:
        nonlocal calls
        calls += 1
        return TaskResult.success()

    async with engine:
        first = await engine.submit(order(), workflow_id="order-7")
        again = await engine.submit(order(3), workflow_id="order-7", context={"other": "input"})
        view = await again.wait(timeout=10)
    assert (first.created, again.created) == (True, False)
    assert again.workflow_id == "order-7"
    assert [s.ref_id for s in view.stages] == ["s0"]  # the existing run, not the new definition
    assert view.status is WorkflowStatus.SUCCEEDED
    assert calls == 1


async def test_reject_raises_workflow_exists_whatever_the_input(db_url: str) -> None:
    engine = Engine(db_url)

    @engine.task("ok")
    async def ok(stage: StageView) -> TaskResult:
        return TaskResult.success()

    async with engine:
        run = await engine.submit(order(), workflow_id="order-8", if_exists="reject")
        assert run.created
        await run.wait(timeout=10)
        for context in (None, {"x": 1}):
            with pytest.raises(WorkflowExists, match="'order-8'") as info:
                await engine.submit(order(2), workflow_id="order-8", context=context, if_exists="reject")
            assert info.value.workflow_id == "order-8"
        with pytest.raises(ValueError, match="if_exists must be"):
            await engine.submit(order(), workflow_id="order-9", if_exists="replace")
        assert [s.workflow_id for s in await engine.list()] == ["order-8"]


async def test_concurrent_submits_of_one_id_make_it_once(db_url: str) -> None:
    """Twenty submits of one id racing: exactly one made it; the rest return it (or, rejecting, raise)."""
    engine = Engine(db_url)

    @engine.task("ok")
    async def ok(stage: StageView) -> TaskResult:
        return TaskResult.success()

    async with engine:
        runs: list[WorkflowRun] = []
        rejected = 0

        async def submit(k: int) -> None:
            nonlocal rejected
            try:
                runs.append(await engine.submit(order(), workflow_id="once", if_exists="reject" if k % 2 else "return"))
            except WorkflowExists:
                rejected += 1

        async with anyio.create_task_group() as tg:
            for k in range(20):
                tg.start_soon(submit, k)
        made = [r for r in runs if r.created]
    assert len(made) == 1
    assert len(runs) + rejected == 20
    assert rejected >= 9  # every rejecting submit but (maybe) the one that made it


def test_run_state_error_is_an_engine_state_error() -> None:
    assert issubclass(RunStateError, EngineStateError)
