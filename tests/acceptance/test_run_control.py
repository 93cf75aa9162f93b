"""Run control end to end (issue 12): pause, resume, restart in place, skip, on both backends.

Each verb is a durable command; these tests drive them through the public API
against real stores and real task coroutines (cancellations are observed inside
the coroutines), and race a pause against a task completion.
"""

from __future__ import annotations

import anyio
import pytest

from stabilize_aio import (
    DefinitionError,
    Engine,
    RunStateError,
    Stage,
    StageView,
    TaskResult,
    Workflow,
    WorkflowStatus,
)

S = WorkflowStatus


class Gate:
    """A task that waits until released, recording its calls and cancellations."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, str]] = []  # (ref, attempt, idempotency key)
        self.cancelled: list[str] = []
        self.entered = anyio.Event()
        self.release = anyio.Event()

    async def run(self, stage: StageView) -> TaskResult:
        self.calls.append((stage.ref_id, stage.attempt, stage.idempotency_key))
        self.entered.set()
        try:
            await self.release.wait()
        except anyio.get_cancelled_exc_class():
            self.cancelled.append(stage.ref_id)
            raise
        return TaskResult.success(outputs={stage.ref_id: True})


async def release(gate: Gate) -> None:
    gate.release.set()


def chain(*refs: str, task: str = "gate") -> Workflow:
    stages = [Stage(ref, task, requisites=[refs[k - 1]] if k else []) for k, ref in enumerate(refs)]
    return Workflow(application="t", name="chain", stages=stages)


async def test_pause_racing_a_task_completion_records_the_result_and_starts_nothing(backend_url: str) -> None:
    engine = Engine(backend_url)
    gate = Gate()
    engine.register("gate", gate.run)
    engine.register("ok", lambda stage: TaskResult.success(outputs={stage.ref_id: True}))
    async with engine:
        run = await engine.submit(Workflow(application="t", name="w", stages=[
            Stage("a", "gate"), Stage("b", "ok", requisites=["a"])]))  # fmt: skip
        with anyio.fail_after(10):
            await gate.entered.wait()
        async with anyio.create_task_group() as tg:  # the pause and the result race
            tg.start_soon(release, gate)
            paused = await run.pause(reason="deploy")
        assert (S.PAUSED, "deploy") == (paused.status, paused.pause_reason)
        await engine.wait_idle()
        view = await run.get()
        # whichever came first, a's result is recorded and the run does not end while paused: b either had not
        # started (the pause came first) or was dispatched before it and its result is recorded too
        assert (S.PAUSED, S.SUCCEEDED) == (view.status, view.stage("a").status)
        assert view.stage("b").status in (S.NOT_STARTED, S.SUCCEEDED)
        resumed = await run.resume()
        assert resumed.status is not S.PAUSED
        final = await run.wait(timeout=10)
    assert (S.SUCCEEDED, {"a": True, "b": True}) == (final.status, final.outputs)
    assert [("a", 1)] == [(ref, attempt) for ref, attempt, _ in gate.calls]  # the result was not lost nor redone


async def test_pause_with_cancel_cancels_the_call_and_resume_runs_it_again_with_the_same_key(
    backend_url: str,
) -> None:
    engine = Engine(backend_url)
    gate = Gate()
    engine.register("gate", gate.run)
    async with engine:
        run = await engine.submit(chain("a"))
        with anyio.fail_after(10):
            await gate.entered.wait()
        paused = await engine.pause(run.workflow_id, cancel=True)
        await engine.wait_idle()
        assert (S.PAUSED, ["a"], S.RUNNING) == (paused.status, gate.cancelled, paused.stage("a").status)
        gate.release.set()
        await engine.resume(run.workflow_id)
        final = await run.wait(timeout=10)
        history = [e.kind for e in await engine.history(run.workflow_id)]
    assert S.SUCCEEDED == final.status
    (first, second) = gate.calls
    assert first == second  # the same stage, attempt and idempotency key
    assert ["workflow.paused", "workflow.resumed"] == [
        k for k in history if k in ("workflow.paused", "workflow.resumed")
    ]


async def test_pause_and_resume_refuse_and_forgive_as_their_status_says(backend_url: str) -> None:
    engine = Engine(backend_url)
    engine.register("ok", lambda stage: TaskResult.success())
    gate = Gate()
    engine.register("gate", gate.run)
    async with engine:
        done = await engine.submit(chain("a", task="ok"))
        await done.wait(timeout=10)
        with pytest.raises(RunStateError, match="SUCCEEDED: pause refused"):
            await done.pause()
        running = await engine.submit(chain("a"))
        assert (await running.resume()).status is S.RUNNING  # not paused: nothing to do
        first = await running.pause()
        second = await running.pause()  # idempotent
        assert (S.PAUSED, S.PAUSED) == (first.status, second.status)
        await running.resume()
        gate.release.set()
        assert (await running.wait(timeout=10)).status is S.SUCCEEDED


async def test_skip_cancels_the_running_call_and_the_downstream_goes_on(backend_url: str) -> None:
    engine = Engine(backend_url)
    gate = Gate()
    engine.register("gate", gate.run)
    engine.register("ok", lambda stage: TaskResult.success(outputs={"after": True}))
    async with engine:
        run = await engine.submit(Workflow(application="t", name="w", stages=[
            Stage("stuck", "gate"), Stage("next", "ok", requisites=["stuck"])]))  # fmt: skip
        with anyio.fail_after(10):
            await gate.entered.wait()
        await run.skip("stuck")
        final = await run.wait(timeout=10)
        with pytest.raises(RunStateError, match="skip refused"):
            await run.skip("next")
        with pytest.raises(DefinitionError, match="no stage 'nope'"):
            await engine.skip(run.workflow_id, "nope")
        history = [(e.kind, e.stage, e.message) for e in await engine.history(run.workflow_id)]
    assert (S.SUCCEEDED, S.SKIPPED, ["stuck"]) == (final.status, final.stage("stuck").status, gate.cancelled)
    assert ("stage.skipped", "stuck", "skipped by an operator") in history
    assert S.SUCCEEDED == final.stage("next").status


async def test_restarting_twice_gives_three_completions_and_keeps_what_succeeded(backend_url: str) -> None:
    engine = Engine(backend_url)
    calls: dict[str, int] = {}

    @engine.task("count")
    async def count(stage: StageView) -> TaskResult:
        calls[stage.ref_id] = calls.get(stage.ref_id, 0) + 1
        if stage.ref_id == "flaky" and calls["flaky"] < 3:
            return TaskResult.terminal(f"failure {calls['flaky']}")
        return TaskResult.success(outputs={stage.ref_id: stage.idempotency_key})

    async with engine:
        run = await engine.submit(chain("setup", "flaky", "report", task="count"))
        first = await run.wait(timeout=10)
        assert S.TERMINAL == first.status
        for epoch in (1, 2):
            reopened = await run.restart()
            assert epoch == reopened.epoch
            final = await run.wait(timeout=10)
        history = await engine.history(run.workflow_id)
    assert (S.SUCCEEDED, 2) == (final.status, final.epoch)
    assert {"setup": 1, "flaky": 3, "report": 1} == calls  # setup ran once: its outputs were kept
    completions = [e.key for e in history if e.kind == "workflow.completed"]
    assert ["workflow.completed:0", "workflow.completed:1", "workflow.completed:2"] == completions
    assert 2 == sum(1 for e in history if e.kind == "workflow.restarted")
    assert final.stage("flaky").generation == 2
    assert final.outputs["flaky"].endswith(":2")  # each reset a new generation: a new idempotency key


async def test_restart_refuses_an_unfinished_run_and_a_succeeded_one_without_a_stage(backend_url: str) -> None:
    engine = Engine(backend_url)
    gate = Gate()
    engine.register("gate", gate.run)
    engine.register("ok", lambda stage: TaskResult.success())
    async with engine:
        running = await engine.submit(chain("a"))
        with pytest.raises(RunStateError, match="only a finished run restarts"):
            await running.restart()
        gate.release.set()
        await running.wait(timeout=10)
        done = await engine.submit(chain("x", "y", task="ok"))
        await done.wait(timeout=10)
        with pytest.raises(RunStateError, match="restarts from a stage"):
            await done.restart()
        again = await done.restart(stage="y")
        final = await done.wait(timeout=10)
    assert (1, S.SUCCEEDED) == (again.epoch, final.status)
    assert (0, 1) == (final.stage("x").generation, final.stage("y").generation)


async def test_a_pure_client_pauses_and_resumes_a_run_another_engine_runs(postgres_schema_url: str) -> None:
    worker = Engine(postgres_schema_url)
    gate = Gate()
    worker.register("gate", gate.run)
    worker.register("ok", lambda stage: TaskResult.success())
    async with worker, Engine(postgres_schema_url, client=True) as client:
        run = await client.submit(Workflow(application="t", name="w", stages=[
            Stage("a", "gate"), Stage("b", "ok", requisites=["a"])]))  # fmt: skip
        with anyio.fail_after(10):
            await gate.entered.wait()
        paused = await client.pause(run.workflow_id)
        gate.release.set()
        await worker.wait_idle()
        view = await client.get(run.workflow_id)
        assert (S.PAUSED, S.PAUSED) == (paused.status, view.status)
        await client.resume(run.workflow_id)
        final = await client.wait(run.workflow_id, timeout=10)
    assert S.SUCCEEDED == final.status


async def test_restart_gives_a_sub_workflow_stage_a_new_child(backend_url: str) -> None:
    engine = Engine(backend_url)
    seen: list[str] = []

    @engine.task("score")
    async def score(stage: StageView) -> TaskResult:
        seen.append(stage.workflow_id)
        if len(seen) == 1:
            return TaskResult.terminal("the first child fails")
        return TaskResult.success(outputs={"score": 7})

    child = Workflow(application="t", name="child", stages=[Stage("score", "score")])
    parent = Workflow(application="t", name="parent", stages=[Stage("enrich", workflow=child)])
    async with engine:
        run = await engine.submit(parent, workflow_id="family")
        first = await run.wait(timeout=10)
        await run.restart()
        final = await run.wait(timeout=10)
        old_child = await engine.get("family/enrich.0")
    assert (S.TERMINAL, S.SUCCEEDED) == (first.status, final.status)
    assert ["family/enrich.0", "family/enrich.1"] == seen  # the reset stage started a new child run
    assert (S.TERMINAL, {"score": 7}) == (old_child.status, final.outputs)


async def test_a_call_cancelled_by_pause_still_unwinding_at_resume_runs_again_once_it_has_ended(
    backend_url: str,
) -> None:
    engine = Engine(backend_url)
    entered, cleaning, release = anyio.Event(), anyio.Event(), anyio.Event()
    calls: list[tuple[int, str]] = []

    async def slow_to_cancel(stage: StageView) -> TaskResult:
        calls.append((stage.attempt, stage.idempotency_key))
        if len(calls) == 1:
            entered.set()
            try:
                await anyio.sleep_forever()
            finally:  # cancelled: its cleanup takes a while (shielded), the call is not over until then
                with anyio.CancelScope(shield=True):
                    cleaning.set()
                    await release.wait()
        return TaskResult.success(outputs={"calls": len(calls)})

    def refused() -> int:
        (pool,) = [p for p in engine.statistics().pools if p.task_type == "slow"]
        return pool.rejected

    engine.register("slow", slow_to_cancel)
    async with engine:
        run = await engine.submit(chain("a", task="slow"))
        with anyio.fail_after(10):
            await entered.wait()
        await run.pause(cancel=True)
        with anyio.fail_after(10):
            await cleaning.wait()
        await run.resume()  # the cancelled call still cleans up: the new one must wait for it, not be lost
        with anyio.fail_after(10):
            while not refused():  # noqa: ASYNC110 - the resume's redelivery runs in a task of the engine's own
                await anyio.sleep(0.01)
        release.set()
        final = await run.wait(timeout=20)
    assert (S.SUCCEEDED, {"calls": 2}) == (final.status, final.outputs)
    assert calls[0] == calls[1]  # the same attempt and idempotency key
