"""The dispatcher's entry points: a run starts through its actor (one commit), stop_dispatching."""

from __future__ import annotations

import pytest

from stabilize_aio import ConcurrencyError, Engine, Stage, StageView, TaskResult, Workflow, WorkflowStatus
from stabilize_aio._engine import _initial_state
from stabilize_aio.messages.durable import RunTask
from stabilize_aio.runtime.dispatcher import Dispatcher
from stabilize_aio.state.workflow import WorkflowState
from stabilize_aio.testing import running_engine

S = WorkflowStatus


def fresh(workflow_id: str, *refs: str) -> WorkflowState:
    stages = [Stage(r, "noop") for r in refs or ("a",)]
    return _initial_state(Workflow(application="app", name="w", stages=stages), workflow_id, {})


def dispatcher_of(engine: Engine) -> Dispatcher:
    dispatcher = engine._dispatcher
    assert dispatcher is not None
    return dispatcher


calls: list[str] = []


async def noop(stage: StageView) -> TaskResult:
    calls.append(stage.workflow_id)
    return TaskResult.success()


def setup(engine: Engine) -> None:
    engine.register("noop", noop)


async def test_begin_commits_the_start_turn_with_the_insert_and_runs_the_workflow() -> None:
    """The start turn goes through the run's actor and lands in the insert's own commit; then the run goes on."""
    async with running_engine(setup) as engine:
        dispatcher = dispatcher_of(engine)
        before = engine.statistics().commits
        await dispatcher.begin(fresh("wf-begin", "a", "b"), owned=True)
        live = dispatcher.live_state("wf-begin")
        status = live.record.status if live is not None else None
        commits = engine.statistics().commits - before
        view = await engine.handle("wf-begin").wait(10)
        history = [e.kind for e in await engine.history("wf-begin")]
    assert 1 == commits
    assert S.RUNNING == status  # the committed start turn, applied by the actor
    assert (S.SUCCEEDED, [S.SUCCEEDED, S.SUCCEEDED]) == (view.status, [s.status for s in view.stages])
    assert 1 == history.count("workflow.started")


async def test_a_second_begin_of_an_id_is_refused_and_changes_nothing() -> None:
    """Beginning an existing id raises ConcurrencyError; the first run and its actor are untouched."""
    async with running_engine(lambda e: None) as engine:  # no task type: the first run parks
        dispatcher = dispatcher_of(engine)
        await dispatcher.begin(fresh("wf-1"), owned=True)
        await engine.wait_idle()  # its ParkTask turn committed
        actor = dispatcher.actors.get("wf-1")
        first = await engine.get("wf-1")
        with pytest.raises(ConcurrencyError):
            await dispatcher.begin(fresh("wf-1"), owned=True)
        with pytest.raises(ConcurrencyError):
            await dispatcher.begin(fresh("wf-1"), owned=False)
        again = await engine.get("wf-1")
        history = [e.kind for e in await engine.history("wf-1")]
        still = dispatcher.actors.get("wf-1")
    assert first == again
    assert still is actor
    assert 1 == history.count("workflow.started")


async def test_a_begin_for_another_owner_commits_and_acts_on_nothing_here() -> None:
    """owned=False: the run is stored started with its RunTask pending, and no actor or call of it is left here."""
    calls.clear()
    async with running_engine(setup) as engine:
        dispatcher = dispatcher_of(engine)
        await dispatcher.begin(fresh("wf-elsewhere"), owned=False)
        await engine.wait_idle()
        view = await engine.get("wf-elsewhere")
        pending = await engine.store.pending_for("wf-elsewhere")
        actors = dict(dispatcher.actors)
    assert S.RUNNING == view.status
    assert [RunTask] == [type(m) for m in pending]
    assert ({}, []) == (actors, calls)


async def test_stop_dispatching_starts_no_more_calls() -> None:
    """After stop_dispatching() a run's RunTask stays pending; the deprecated attribute says the same."""
    calls.clear()
    async with running_engine(setup) as engine:
        dispatcher = dispatcher_of(engine)
        assert dispatcher.accept_dispatch
        dispatcher.stop_dispatching()
        await dispatcher.begin(fresh("wf-late"), owned=True)
        await engine.wait_idle()
        pending = await engine.store.pending_for("wf-late")
        accepting = dispatcher.accept_dispatch
        dispatcher.accept_dispatch = True  # the old attribute still works until the engine is switched
    assert (False, [], [RunTask]) == (accepting, calls, [type(m) for m in pending])
