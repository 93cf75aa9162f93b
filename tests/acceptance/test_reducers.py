"""Output reducers on a join stage: the requisites' values per key, in ``requisites`` order, combined."""

from __future__ import annotations

from typing import Any

import pytest

from stabilize_aio import DefinitionError, Engine, RegistrationError, Stage, StageView, TaskResult, Workflow
from stabilize_aio import WorkflowStatus as S
from stabilize_aio.model.reducers import BUILTIN, ReducerError, reduce_outputs

SEEN: dict[str, dict[str, Any]] = {}


def engine_for(db_url: str) -> Engine:
    engine = Engine(db_url)

    @engine.task("emit")
    async def emit(stage: StageView) -> TaskResult:
        return TaskResult.success(outputs=dict(stage.context["emit"]))

    @engine.task("look")
    async def look(stage: StageView) -> TaskResult:
        SEEN[stage.workflow_id] = {k: stage.context.get(k) for k in ("rows", "n", "all", "best", "first", "m")}
        return TaskResult.success()

    @engine.reducer("top1")
    def top1(values: list[Any]) -> Any:
        return sorted(values, reverse=True)[:1]

    return engine


def join_workflow(**reducers: str) -> Workflow:
    """x and y emit; j (requisites declared y first) reduces; its task records what it sees."""
    return Workflow(
        application="t",
        name="w",
        stages=[
            Stage("x", "emit", context={"emit": {"rows": [1, 2], "n": 3, "all": "x", "best": 5, "m": {"a": 1}}}),
            Stage("y", "emit", context={"emit": {"rows": [9], "n": 4, "all": "y", "best": 8, "m": {"a": 2, "b": 3}}}),
            Stage("j", "look", requisites=["y", "x"], output_reducers=reducers),
        ],
    )


async def test_built_in_and_registered_reducers_combine_the_requisites_outputs_in_declared_order(db_url: str) -> None:
    """extend, sum, collect, a registered one and merge give the join's tasks one value per key, y before x."""
    engine = engine_for(db_url)
    workflow = join_workflow(rows="extend", n="sum", all="collect", best="top1", m="merge")
    async with engine:
        run = await engine.submit(workflow)
        view = await run.wait(timeout=10)
    assert S.SUCCEEDED == view.status
    seen = SEEN[run.workflow_id]
    assert ([9, 1, 2], 7, ["y", "x"], [8], {"a": 1, "b": 3}) == (
        seen["rows"],
        seen["n"],
        seen["all"],
        seen["best"],
        seen["m"],
    )


async def test_without_reducers_the_later_ancestor_wins_as_before(db_url: str) -> None:
    """No output_reducers: the context is the ancestors' outputs merged in declaration order (x, then y)."""
    engine = engine_for(db_url)
    async with engine:
        run = await engine.submit(join_workflow())
        await run.wait(timeout=10)
    assert ([9], 4, "y") == (SEEN[run.workflow_id]["rows"], SEEN[run.workflow_id]["n"], SEEN[run.workflow_id]["all"])


async def test_a_reducer_given_values_it_cannot_combine_fails_the_stage_naming_the_key(db_url: str) -> None:
    """extend over strings fails the join stage with a ReducerError (its error type) naming stage and key."""
    engine = engine_for(db_url)
    async with engine:
        view = await (await engine.submit(join_workflow(all="extend"))).wait(timeout=10)
    j = view.stage("j")
    assert (S.TERMINAL, S.TERMINAL) == (view.status, j.status)
    assert j.error is not None
    assert "ReducerError" == j.error.type
    assert "stage 'j'" in j.error.message
    assert "'all'" in j.error.message


async def test_an_unknown_reducer_is_refused_at_submit_and_nothing_is_written(db_url: str) -> None:
    """A reducer neither built in nor registered fails submit with a DefinitionError naming the stage."""
    engine = engine_for(db_url)
    async with engine:
        with pytest.raises(DefinitionError, match="stage 'j': output reducer 'median'") as caught:
            await engine.submit(join_workflow(n="median"))
        listed = await engine.list()
    assert isinstance(caught.value, ReducerError)
    assert [] == listed


def test_reducers_need_requisites_and_a_name_cannot_be_registered_twice() -> None:
    """Stage(output_reducers=...) without requisites is refused; registering a built-in or twice is refused."""
    with pytest.raises(DefinitionError, match="need requisites"):
        Stage("j", "look", output_reducers={"n": "sum"})
    engine = Engine("sqlite:///never-opened.db")
    with pytest.raises(RegistrationError, match="built in"):
        engine.reducer("sum")(sum)


def test_the_built_in_reducers() -> None:
    """Each built-in reducer's value; keys no upstream produced are left out."""
    ups: list[dict[str, Any]] = [
        {"v": [1], "n": 2, "m": {"a": 1}},
        {"v": [2, 3], "n": 5, "m": {"a": 0, "b": 1}},
        {"other": 1},
    ]
    names = {"v": "extend", "n": "sum", "m": "merge", "missing": "collect"}
    assert {"v": [1, 2, 3], "n": 7, "m": {"a": 0, "b": 1}} == reduce_outputs("j", names, ups, {})
    values = [3, 1, 2]
    assert [[3, 1, 2], 3, 1, 3, 2] == [BUILTIN[k](values) for k in ("collect", "max", "min", "first", "last")]
