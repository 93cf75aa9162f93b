"""Sub-workflow stages end to end (issue 11): a child run started by a stage, which ends with it."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from stabilize_aio import DefinitionError, Engine, Stage, StageView, TaskResult, Workflow, WorkflowStatus

S = WorkflowStatus


def child(*stages: Stage, name: str = "child") -> Workflow:
    return Workflow(application="t", name=name, stages=list(stages))


class Family:
    """Tasks ``enrich`` (outputs what it saw), ``broken`` (fails), ``hang`` (waits to be cancelled)."""

    def __init__(self, engine: Engine) -> None:
        self.seen: dict[str, dict[str, Any]] = {}
        self.cancelled: list[str] = []
        self.hanging = anyio.Event()
        self.hangs = 0

        @engine.task("enrich")
        async def enrich(stage: StageView) -> TaskResult:
            self.seen[stage.workflow_id] = dict(stage.context)
            return TaskResult.success(outputs={"score": stage.context.get("customer", 0) * 2})

        @engine.task("broken")
        async def broken(stage: StageView) -> TaskResult:
            return TaskResult.terminal("the child broke")

        @engine.task("hang")
        async def hang(stage: StageView) -> TaskResult:
            self.hangs += 1
            if self.hangs >= 1:
                self.hanging.set()
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                self.cancelled.append(stage.workflow_id)
                raise
            raise AssertionError("unreachable")


async def test_a_sub_workflow_stage_runs_its_child_and_ends_with_its_outputs(db_url: str) -> None:
    engine = Engine(db_url)
    fam = Family(engine)
    async with engine:
        run = await engine.submit(
            Workflow(
                application="t",
                name="parent",
                stages=[
                    Stage("enrich", workflow=child(Stage("score", "enrich")), context={"customer": 7}),
                    Stage("after", "enrich", requisites=["enrich"]),
                ],
            ),
            context={"region": "eu"},
        )
        view = await run.wait(timeout=10)
        child_id = f"{run.workflow_id}/enrich.0"
        kid = await engine.get(child_id)
    assert view.status is S.SUCCEEDED
    assert view.stage("enrich").outputs == {"score": 14}
    assert kid.status is S.SUCCEEDED
    assert kid.inputs["customer"] == 7  # the child's inputs: the stage's full context
    assert kid.inputs["region"] == "eu"
    assert fam.seen[child_id]["customer"] == 7
    assert fam.seen[run.workflow_id]["score"] == 14  # the stage after sees the child's outputs


async def test_a_failing_child_fails_its_stage_with_its_error(db_url: str) -> None:
    engine = Engine(db_url)
    Family(engine)
    async with engine:
        run = await engine.submit(
            Workflow(application="t", name="parent", stages=[Stage("sub", workflow=child(Stage("x", "broken")))])
        )
        view = await run.wait(timeout=10)
    assert view.status is S.TERMINAL
    err = view.stage("sub").error
    assert err is not None
    assert err.type == "ChildFailed"
    assert "the child broke" in err.message


async def test_cancelling_the_parent_cancels_the_child_and_the_grandchild(db_url: str) -> None:
    engine = Engine(db_url)
    fam = Family(engine)
    grandchild = child(Stage("deep", "hang"), name="grandchild")
    async with engine:
        run = await engine.submit(
            Workflow(
                application="t",
                name="parent",
                stages=[Stage("sub", workflow=child(Stage("inner", workflow=grandchild)))],
            )
        )
        with anyio.fail_after(10):
            await fam.hanging.wait()
        view = await engine.cancel(run.workflow_id, reason="stop")
        kid_id = f"{run.workflow_id}/sub.0"
        grand_id = f"{kid_id}/inner.0"
        with anyio.fail_after(10):
            kid = await engine.wait(kid_id)
            grand = await engine.wait(grand_id)
    assert view.status is S.CANCELED
    assert (kid.status, grand.status) == (S.CANCELED, S.CANCELED)
    assert fam.cancelled == [grand_id]  # the grandchild's running coroutine got CancelledError


async def test_depth_and_child_task_types_are_checked_at_the_parents_submit(db_url: str) -> None:
    engine = Engine(db_url, max_depth=2)
    Family(engine)
    deep = child(Stage("a", "enrich"))
    for _ in range(2):
        deep = child(Stage("n", workflow=deep))
    async with engine:
        with pytest.raises(DefinitionError, match="nest 3 deep; the engine's max_depth is 2"):
            await engine.submit(deep)
        with pytest.raises(DefinitionError, match=r"'x'.*task type 'nope' is not registered"):
            await engine.submit(child(Stage("sub", workflow=child(Stage("x", "nope")))))
        assert await engine.list() == []
