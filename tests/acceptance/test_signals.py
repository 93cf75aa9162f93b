"""Signals: a task suspends its stage until engine.signal() resumes it, from any process."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from stabilize_aio import (
    DefinitionError,
    Engine,
    EngineStateError,
    Stage,
    StageView,
    TaskResult,
    Workflow,
    WorkflowNotFound,
)
from stabilize_aio import WorkflowStatus as S

APPROVAL = Workflow(
    application="hitl",
    name="approval",
    stages=[Stage("ask", "approve"), Stage("after", "noop", requisites=["ask"])],
)


def setup(engine: Engine, gate: anyio.Event | None = None) -> None:
    @engine.task("approve")
    async def approve(stage: StageView) -> TaskResult:
        if "_signal_name" not in stage.context:
            if gate is not None:
                await gate.wait()
            return TaskResult.suspend(context={"asked": True})
        return TaskResult.success(
            outputs={"decision": stage.context["_signal_name"], "by": stage.context["_signal_data"]["user"]}
        )

    @engine.task("noop")
    async def noop(stage: StageView) -> TaskResult:
        return TaskResult.success()


async def test_a_suspended_stage_waits_then_a_signal_resumes_it(db_url: str) -> None:
    """A suspended stage keeps the workflow RUNNING until a signal resumes its task with the signal's data."""
    engine = Engine(db_url)
    setup(engine)
    async with engine:
        run = await engine.submit(APPROVAL)
        await engine.wait_idle()
        waiting = await engine.get(run.workflow_id)
        await engine.signal(run.workflow_id, "ask", "approved", {"user": "ada"})
        done = await run.wait(timeout=10)
        events = [e.kind for e in await engine.history(run.workflow_id)]
    assert (S.RUNNING, S.SUSPENDED, True) == (
        waiting.status,
        waiting.stage("ask").status,
        waiting.stage("ask").context["asked"],
    )
    assert (S.SUCCEEDED, "approved", "ada") == (
        done.status,
        done.stage("ask").outputs["decision"],
        done.stage("ask").outputs["by"],
    )
    assert ["stage.suspended", "stage.signaled"] == [k for k in events if k in ("stage.suspended", "stage.signaled")]


async def test_a_signal_before_the_suspension_is_kept_and_consumed(db_url: str) -> None:
    """A signal that arrives while the stage still runs is kept, and resumes it as soon as it suspends."""
    gate = anyio.Event()
    engine = Engine(db_url)
    setup(engine, gate)
    async with engine:
        run = await engine.submit(APPROVAL)
        await engine.signal(run.workflow_id, "ask", "approved", {"user": "bo"})
        gate.set()
        done = await run.wait(timeout=10)
    assert (S.SUCCEEDED, "bo") == (done.status, done.stage("ask").outputs["by"])


async def test_a_suspended_workflow_can_be_canceled(db_url: str) -> None:
    """Cancel ends a workflow whose stage waits for a signal."""
    engine = Engine(db_url)
    setup(engine)
    async with engine:
        run = await engine.submit(APPROVAL)
        await engine.wait_idle()
        view = await engine.cancel(run.workflow_id, reason="nobody answered")
    assert (S.CANCELED, S.CANCELED, S.CANCELED) == (view.status, view.stage("ask").status, view.stage("after").status)


async def test_a_suspension_survives_a_restart(db_path: Path) -> None:
    """A stage suspended before a restart is resumed by a signal sent to the next engine."""
    url = f"sqlite:///{db_path}"
    first = Engine(url)
    setup(first)
    async with first:
        run = await first.submit(APPROVAL)
        await first.wait_idle()
    second = Engine(url)
    setup(second)
    async with second:
        await second.signal(run.workflow_id, "ask", "approved", {"user": "cy"})
        done = await second.handle(run.workflow_id).wait(timeout=10)
    assert (S.SUCCEEDED, "cy") == (done.status, done.stage("ask").outputs["by"])


async def test_bad_signals_fail_at_the_door(db_url: str) -> None:
    """An unknown run, an unknown stage, data msgspec cannot encode, and a finished run are refused."""
    engine = Engine(db_url)
    setup(engine)
    async with engine:
        run = await engine.submit(APPROVAL)
        await engine.wait_idle()
        with pytest.raises(WorkflowNotFound):
            await engine.signal("nope", "ask", "x")
        with pytest.raises(DefinitionError, match="no stage 'missing'"):
            await engine.signal(run.workflow_id, "missing", "x")
        with pytest.raises(DefinitionError, match="signal data cannot be encoded"):
            await engine.signal(run.workflow_id, "ask", "x", object())
        await engine.cancel(run.workflow_id)
        with pytest.raises(EngineStateError, match="is CANCELED: signal 'late'"):
            await engine.signal(run.workflow_id, "ask", "late")


@pytest.mark.postgres
async def test_a_signal_from_a_pure_client_resumes_the_stage_on_its_owner(postgres_schema_url: str) -> None:
    """A client (owning nothing) submits and signals; LISTEN/NOTIFY alone wakes the owner and the waiter."""
    worker = Engine(postgres_schema_url, poll_interval=60)  # the safety-net poll cannot be what delivers here
    setup(worker)
    client = Engine(postgres_schema_url, client=True, poll_interval=60)
    async with worker, client:
        run = await client.submit(APPROVAL)
        with anyio.fail_after(20):
            while (await client.get(run.workflow_id)).stage("ask").status is not S.SUSPENDED:
                await worker.wait_idle()
        await client.signal(run.workflow_id, "ask", "approved", {"user": "di"})
        done = await run.wait(timeout=20)
    assert (S.SUCCEEDED, "di") == (done.status, done.stage("ask").outputs["by"])
