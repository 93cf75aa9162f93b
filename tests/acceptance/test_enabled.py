"""``Stage(enabled=...)``: a condition over the stage's context, asked when the stage becomes ready."""

from __future__ import annotations

import pytest

from stabilize_aio import DefinitionError, Engine, Stage, StageView, TaskResult, Workflow, WorkflowStatus

S = WorkflowStatus


def engine_with_tasks(db_url: str, calls: list[str]) -> Engine:
    engine = Engine(db_url)

    @engine.task("score")
    async def score(stage: StageView) -> TaskResult:
        calls.append(stage.ref_id)
        return TaskResult.success(outputs={"tier": stage.context["tier"], "points": 7})

    @engine.task("mail")
    async def mail(stage: StageView) -> TaskResult:
        calls.append(stage.ref_id)
        return TaskResult.success(outputs={"mailed": True})

    return engine


async def test_a_false_condition_skips_the_stage_and_its_downstream_goes_on(db_url: str) -> None:
    """enabled false: the stage ends SKIPPED without its task, ``stage.skipped`` is recorded, the run SUCCEEDS."""
    calls: list[str] = []
    engine = engine_with_tasks(db_url, calls)
    workflow = Workflow(
        application="t",
        name="w",
        stages=[
            Stage("score", "score"),
            Stage("notify", "mail", requisites=["score"], enabled="tier == 'gold' and not dry_run"),
            Stage("after", "mail", requisites=["notify"]),
        ],
    )
    async with engine:
        run = await engine.submit(workflow, context={"tier": "silver", "dry_run": False})
        view = await run.wait(timeout=10)
        kinds = [(e.kind, e.stage) for e in await engine.history(run.workflow_id)]
    assert S.SUCCEEDED == view.status
    assert [S.SUCCEEDED, S.SKIPPED, S.SUCCEEDED] == [s.status for s in view.stages]
    assert ["score", "after"] == calls
    assert ("stage.skipped", "notify") in kinds
    assert ("stage.started", "notify") not in kinds


async def test_a_condition_reads_the_outputs_of_an_upstream_that_ended_in_the_same_turn(db_url: str) -> None:
    """The condition sees the ancestors' outputs, also those committed in the turn that makes the stage ready."""
    calls: list[str] = []
    engine = engine_with_tasks(db_url, calls)
    workflow = Workflow(
        application="t",
        name="w",
        stages=[
            Stage("score", "score"),
            Stage("gold", "mail", requisites=["score"], enabled="tier == 'gold' and points > 5"),
            Stage("silver", "mail", requisites=["score"], enabled="tier == 'silver'"),
        ],
    )
    async with engine:
        view = await (await engine.submit(workflow, context={"tier": "gold"})).wait(timeout=10)
    assert (S.SUCCEEDED, S.SUCCEEDED, S.SKIPPED) == tuple(s.status for s in view.stages)
    assert ["score", "gold"] == calls


async def test_a_condition_that_cannot_be_evaluated_fails_the_stage_naming_it(db_url: str) -> None:
    """A missing name fails the stage (here TERMINAL, so the run) with a ConditionError, never a silent skip."""
    calls: list[str] = []
    engine = engine_with_tasks(db_url, calls)
    workflow = Workflow(
        application="t",
        name="w",
        stages=[Stage("score", "score"), Stage("notify", "mail", requisites=["score"], enabled="customer.vip")],
    )
    async with engine:
        view = await (await engine.submit(workflow, context={"tier": "gold"})).wait(timeout=10)
    notify = view.stage("notify")
    assert (S.TERMINAL, S.TERMINAL) == (view.status, notify.status)
    assert notify.error is not None
    assert "ConditionError" == notify.error.type
    assert "stage 'notify'" in notify.error.message
    assert "'customer'" in notify.error.message
    assert ["score"] == calls


def test_a_condition_that_does_not_parse_fails_at_the_door_naming_the_stage() -> None:
    """Stage(enabled=...) with a call or bad syntax raises DefinitionError for that stage; nothing is built."""
    with pytest.raises(DefinitionError, match=r"stage 'notify': enabled .* a call") as caught:
        Stage("notify", "mail", enabled="send_mail()")
    assert "notify" == caught.value.stage
    with pytest.raises(DefinitionError, match="does not parse"):
        Stage("notify", "mail", enabled="tier ==")


async def test_a_condition_that_halts_the_run_starts_none_of_the_stages_after_it(db_url: str) -> None:
    """Roots b (broken condition, TERMINAL) and c (after it): c never starts, the run ends TERMINAL, nothing runs."""
    calls: list[str] = []
    engine = engine_with_tasks(db_url, calls)
    workflow = Workflow(
        application="t",
        name="w",
        stages=[Stage("a", "mail"), Stage("b", "mail", enabled="missing == 1"), Stage("c", "mail")],
    )
    async with engine:
        run = await engine.submit(workflow)
        view = await run.wait(timeout=10)
        await engine.wait_idle()
        pending = await engine.store.pending_for(run.workflow_id)
    assert (S.TERMINAL, [S.CANCELED, S.TERMINAL, S.NOT_STARTED]) == (view.status, [s.status for s in view.stages])
    assert ([], []) == (calls, pending)


async def test_a_stage_that_ends_at_once_does_not_complete_the_run_before_its_siblings_start(db_url: str) -> None:
    """A taskless root, or one skipped by its condition, before another root: the run waits for that root's task."""
    calls: list[str] = []
    engine = engine_with_tasks(db_url, calls)
    workflow = Workflow(
        application="t",
        name="w",
        stages=[Stage("noop"), Stage("off", "mail", enabled="false"), Stage("work", "mail")],
    )
    async with engine:
        view = await (await engine.submit(workflow)).wait(timeout=10)
    assert (S.SUCCEEDED, [S.SUCCEEDED, S.SKIPPED, S.SUCCEEDED]) == (view.status, [s.status for s in view.stages])
    assert ["work"] == calls
