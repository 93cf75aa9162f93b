"""``Stage(enabled=...)``: a condition over the stage's context, asked when the stage becomes ready."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from stabilize_aio import DefinitionError, Engine, Stage, StageView, TaskResult, Workflow, WorkflowStatus, WorkflowView

S = WorkflowStatus


@dataclass
class Ran:
    """What a run of some stages did: its final view, the task calls made, its history, its rows left."""

    view: WorkflowView
    calls: list[str]
    history: list[tuple[str, str | None]]
    pending: int

    @property
    def statuses(self) -> list[WorkflowStatus]:
        return [s.status for s in self.view.stages]


async def run(db_url: str, *stages: Stage, context: dict[str, Any] | None = None) -> Ran:
    """Run ``stages`` on an engine with tasks ``score`` (outputs tier and points) and ``mail``."""
    engine = Engine(db_url)
    calls: list[str] = []

    @engine.task("score")
    async def score(stage: StageView) -> TaskResult:
        calls.append(stage.ref_id)
        return TaskResult.success(outputs={"tier": stage.context["tier"], "points": 7})

    @engine.task("mail")
    async def mail(stage: StageView) -> TaskResult:
        calls.append(stage.ref_id)
        return TaskResult.success(outputs={"mailed": True})

    async with engine:
        handle = await engine.submit(Workflow(application="t", name="w", stages=list(stages)), context=context)
        view = await handle.wait(timeout=10)
        await engine.wait_idle()
        history = [(e.kind, e.stage) for e in await engine.history(handle.workflow_id)]
        pending = len(await engine.store.pending_for(handle.workflow_id))
    return Ran(view, calls, history, pending)


async def test_a_false_condition_skips_the_stage_and_its_downstream_goes_on(db_url: str) -> None:
    """enabled false: the stage ends SKIPPED without its task, ``stage.skipped`` is recorded, the run SUCCEEDS."""
    ran = await run(
        db_url,
        Stage("score", "score"),
        Stage("notify", "mail", requisites=["score"], enabled="tier == 'gold' and not dry_run"),
        Stage("after", "mail", requisites=["notify"]),
        context={"tier": "silver", "dry_run": False},
    )
    assert S.SUCCEEDED == ran.view.status
    assert [S.SUCCEEDED, S.SKIPPED, S.SUCCEEDED] == ran.statuses
    assert ["score", "after"] == ran.calls
    assert ("stage.skipped", "notify") in ran.history
    assert ("stage.started", "notify") not in ran.history


async def test_a_condition_reads_the_outputs_of_an_upstream_that_ended_in_the_same_turn(db_url: str) -> None:
    """The condition sees the ancestors' outputs, also those committed in the turn that makes the stage ready."""
    ran = await run(
        db_url,
        Stage("score", "score"),
        Stage("gold", "mail", requisites=["score"], enabled="tier == 'gold' and points > 5"),
        Stage("silver", "mail", requisites=["score"], enabled="tier == 'silver'"),
        context={"tier": "gold"},
    )
    assert [S.SUCCEEDED, S.SUCCEEDED, S.SKIPPED] == ran.statuses
    assert ["score", "gold"] == ran.calls


async def test_a_condition_that_cannot_be_evaluated_fails_the_stage_naming_it(db_url: str) -> None:
    """A missing name fails the stage (here TERMINAL, so the run) with a ConditionError, never a silent skip."""
    ran = await run(
        db_url,
        Stage("score", "score"),
        Stage("notify", "mail", requisites=["score"], enabled="customer.vip"),
        context={"tier": "gold"},
    )
    notify = ran.view.stage("notify")
    assert (S.TERMINAL, S.TERMINAL) == (ran.view.status, notify.status)
    assert notify.error is not None
    assert "ConditionError" == notify.error.type
    assert "stage 'notify'" in notify.error.message
    assert "'customer'" in notify.error.message
    assert ["score"] == ran.calls


def test_a_condition_that_does_not_parse_fails_at_the_door_naming_the_stage() -> None:
    """Stage(enabled=...) with a call or bad syntax raises DefinitionError for that stage; nothing is built."""
    with pytest.raises(DefinitionError, match=r"stage 'notify': enabled .* a call") as caught:
        Stage("notify", "mail", enabled="send_mail()")
    assert "notify" == caught.value.stage
    with pytest.raises(DefinitionError, match="does not parse"):
        Stage("notify", "mail", enabled="tier ==")


async def test_a_condition_that_halts_the_run_starts_none_of_the_stages_after_it(db_url: str) -> None:
    """Roots b (broken condition, TERMINAL) and c (after it): c never starts, the run ends TERMINAL, nothing runs."""
    ran = await run(db_url, Stage("a", "mail"), Stage("b", "mail", enabled="missing == 1"), Stage("c", "mail"))
    assert (S.TERMINAL, [S.CANCELED, S.TERMINAL, S.NOT_STARTED]) == (ran.view.status, ran.statuses)
    assert ([], 0) == (ran.calls, ran.pending)


async def test_a_stage_that_ends_at_once_does_not_complete_the_run_before_its_siblings_start(db_url: str) -> None:
    """A taskless root, or one skipped by its condition, before another root: the run waits for that root's task."""
    ran = await run(db_url, Stage("noop"), Stage("off", "mail", enabled="false"), Stage("work", "mail"))
    assert (S.SUCCEEDED, [S.SUCCEEDED, S.SKIPPED, S.SUCCEEDED]) == (ran.view.status, ran.statuses)
    assert ["work"] == ran.calls
