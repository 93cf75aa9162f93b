"""Compensation (issue 11): a saga run when a run fails or is cancelled, in reverse order of completion."""

from __future__ import annotations

import anyio
import pytest

from stabilize_aio import DefinitionError, Engine, Stage, StageView, TaskResult, Workflow, WorkflowStatus

S = WorkflowStatus


class Saga:
    """Tasks: ``do`` (succeeds), ``fail`` (fails for good), ``slow`` (waits for :attr:`gate`), ``undo`` (notes
    what it undoes and the run's status at that moment), ``undo_fails`` (raises), ``undo_waits`` (waits for
    :attr:`undo_gate`); ``charge`` is ``slow`` registered with ``compensate_unknown``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.undone: list[str] = []
        self.run_status_while_undoing: list[WorkflowStatus] = []
        self.cancelled: list[str] = []
        self.gate = anyio.Event()
        self.undo_gate = anyio.Event()
        self.undo_started = anyio.Event()
        self.slow_started = anyio.Event()

        @engine.task("do")
        async def do(stage: StageView) -> TaskResult:
            return TaskResult.success(outputs={f"{stage.ref_id}_id": f"{stage.ref_id}-42"})

        @engine.task("fail")
        async def fail(stage: StageView) -> TaskResult:
            return TaskResult.terminal("payment declined")

        async def slow(stage: StageView) -> TaskResult:
            self.slow_started.set()
            try:
                await self.gate.wait()
            except anyio.get_cancelled_exc_class():
                self.cancelled.append(stage.ref_id)
                raise
            return TaskResult.success()

        engine.register("slow", slow)
        engine.register("charge", slow, compensate_unknown=True)

        @engine.task("undo")
        async def undo(stage: StageView) -> TaskResult:
            self.undone.append(f"{stage.ref_id}:{stage.context.get(stage.ref_id.split('/')[0] + '_id')}")
            self.run_status_while_undoing.append((await engine.get(stage.workflow_id)).status)
            return TaskResult.success()

        @engine.task("undo_fails", retry=None)
        async def undo_fails(stage: StageView) -> TaskResult:
            self.undone.append(stage.ref_id)
            return TaskResult.terminal("cannot undo")

        @engine.task("undo_waits")
        async def undo_waits(stage: StageView) -> TaskResult:
            self.undone.append(stage.ref_id)
            self.undo_started.set()
            await self.undo_gate.wait()
            return TaskResult.success()


def chain(*stages: Stage) -> Workflow:
    return Workflow(application="t", name="saga", stages=list(stages))


async def history(engine: Engine, wid: str) -> list[tuple[str, str | None]]:
    return [(e.kind, e.stage) for e in await engine.history(wid)]


async def test_a_failed_run_compensates_its_succeeded_stages_in_reverse_order(db_url: str) -> None:
    engine = Engine(db_url)
    saga = Saga(engine)
    async with engine:
        run = await engine.submit(
            chain(
                Stage("reserve", "do", compensate="undo"),
                Stage("audit", "do", requisites=["reserve"]),  # nothing to undo
                Stage("ship", "do", requisites=["audit"], compensate="undo"),
                Stage("pay", "fail", requisites=["ship"], compensate="undo"),  # failed: nothing to undo
            )
        )
        view = await run.wait(timeout=10)
        events = await history(engine, run.workflow_id)
    assert view.status is S.TERMINAL
    assert view.compensation == "done"
    assert saga.undone == ["ship/compensate:ship-42", "reserve/compensate:reserve-42"]  # each sees its stage
    assert saga.run_status_while_undoing == [S.RUNNING, S.RUNNING]  # halted but RUNNING until they ran
    assert view.stage("ship/compensate").status is S.SUCCEEDED
    assert view.stage("pay/compensate").status is S.NOT_STARTED
    kinds = [k for k, _ in events]
    assert (
        kinds.index("compensation.started") < kinds.index("compensation.completed") < kinds.index("workflow.completed")
    )


async def test_a_cancel_compensates_cancels_the_running_call_and_returns_after_it(db_url: str) -> None:
    engine = Engine(db_url)
    saga = Saga(engine)
    async with engine:
        run = await engine.submit(
            chain(Stage("reserve", "do", compensate="undo"), Stage("wait", "slow", requisites=["reserve"]))
        )
        with anyio.fail_after(10):
            await saga.slow_started.wait()
        view = await engine.cancel(run.workflow_id, reason="customer left")
    assert view.status is S.CANCELED
    assert view.cancel_reason == "customer left"
    assert view.compensation == "done"
    assert saga.undone == ["reserve/compensate:reserve-42"]  # done before cancel() returned
    assert saga.cancelled == ["wait"]


@pytest.mark.parametrize(("task", "compensated"), [("charge", True), ("slow", False)])
async def test_a_call_in_flight_is_compensated_only_if_its_type_says_so(
    db_url: str, task: str, compensated: bool
) -> None:
    engine = Engine(db_url)
    saga = Saga(engine)
    async with engine:
        run = await engine.submit(
            chain(Stage("pay", task, compensate="undo"), Stage("reserve", "do", compensate="undo"))
        )
        with anyio.fail_after(10):
            await saga.slow_started.wait()
            while (await run.get()).stage("reserve").status is not S.SUCCEEDED:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        view = await engine.cancel(run.workflow_id)
    assert view.compensation == "done"
    expected = (
        ["pay/compensate:None", "reserve/compensate:reserve-42"] if compensated else ["reserve/compensate:reserve-42"]
    )
    assert saga.undone == expected


async def test_a_compensation_that_fails_is_recorded_and_the_others_still_run(db_url: str) -> None:
    engine = Engine(db_url)
    saga = Saga(engine)
    async with engine:
        run = await engine.submit(
            chain(
                Stage("a", "do", compensate="undo"),
                Stage("b", "do", requisites=["a"], compensate="undo_fails"),
                Stage("c", "fail", requisites=["b"]),
            )
        )
        view = await run.wait(timeout=10)
        events = await history(engine, run.workflow_id)
    assert view.status is S.TERMINAL
    assert view.compensation == "failed"
    assert saga.undone == ["b/compensate", "a/compensate:a-42"]
    assert view.stage("b/compensate").status is S.TERMINAL
    assert ("compensation.failed", "b/compensate") in events


async def test_a_cancel_does_not_stop_a_running_compensation(db_url: str) -> None:
    engine = Engine(db_url)
    saga = Saga(engine)
    async with engine:
        run = await engine.submit(
            chain(
                Stage("a", "do", compensate="undo"),
                Stage("b", "do", requisites=["a"], compensate="undo_waits"),
                Stage("c", "fail", requisites=["b"]),
            )
        )
        with anyio.fail_after(10):
            await saga.undo_started.wait()
        cancelled = []

        async def cancel() -> None:
            cancelled.append(await engine.cancel(run.workflow_id, reason="stop it"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(cancel)
            with anyio.fail_after(10):  # the cancel is committed (and recorded) while b's undo still runs
                while (await run.get()).cancel_reason != "stop it":  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            assert (await run.get()).status is S.RUNNING
            saga.undo_gate.set()
        view = cancelled[0]
    assert view.status is S.TERMINAL  # it was failing: the cancel changed nothing
    assert view.compensation == "done"
    assert saga.undone == ["b/compensate", "a/compensate:a-42"]


def test_compensate_is_checked_when_built() -> None:
    with pytest.raises(DefinitionError, match=r"'d'.*compensate must be a task type"):
        Stage("d", "t", compensate="")
    with pytest.raises(DefinitionError, match=r"'d'.*after stage 'x' has synthetic stages, a type or a compensate"):
        Stage("d", "t", after=[Stage("x", "t", compensate="u")])
