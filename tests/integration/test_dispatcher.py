"""The dispatcher's entry points on a real store and a real pool: a run starts through its actor, stop_dispatching."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from runs import initial_state
from storekit import running_store

from stabilize_aio import ConcurrencyError, Stage, StageView, TaskResult, Workflow, WorkflowStatus
from stabilize_aio._clock import SYSTEM_CLOCK
from stabilize_aio.messages.durable import Durable, RunTask
from stabilize_aio.pool.pool import TaskPool
from stabilize_aio.pool.registry import make_definition
from stabilize_aio.runtime.dispatcher import Dispatcher
from stabilize_aio.runtime.timers import TimerService
from stabilize_aio.state.workflow import WorkflowState
from stabilize_aio.store import Store, store_from_url

S = WorkflowStatus


def fresh(workflow_id: str, *refs: str) -> WorkflowState:
    stages = [Stage(r, "noop") for r in refs or ("a",)]
    return initial_state(Workflow(application="app", name="w", stages=stages), workflow_id, {})


class Rig:
    """A dispatcher wired as the engine wires it: a store, a timer heap, and (optionally) a pool for ``noop``."""

    def __init__(self, store: Store, dispatcher: Dispatcher, pools: dict[str, TaskPool]) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.pools = pools
        self.calls: list[str] = []
        self.finished: dict[str, anyio.Event] = {}

    async def idle(self) -> None:
        """Until no call runs, no turn commits and nothing waits to be written."""
        for pool in self.pools.values():
            await pool.wait_idle()
        await self.dispatcher.wait_quiet()
        await self.store.flush()

    async def wait_finished(self, workflow_id: str) -> None:
        with anyio.fail_after(10):
            await self.finished.setdefault(workflow_id, anyio.Event()).wait()


@asynccontextmanager
async def rig(db_path: Path, *, with_task: bool = True) -> AsyncIterator[Rig]:
    async with running_store(store_from_url(f"sqlite:///{db_path}")) as store, anyio.create_task_group() as tg:
        pools: dict[str, TaskPool] = {}
        this: Rig

        def finished(state: WorkflowState) -> None:
            this.finished.setdefault(state.record.id, anyio.Event()).set()

        def due(workflow_id: str, message: Durable) -> None:
            dispatcher.deliver(workflow_id, message)  # a timer fires for the dispatcher made below

        timers = TimerService(due)
        dispatcher = Dispatcher(
            store=store, tg=tg, pools=pools, schedule=timers.add, on_finished=finished, clock=SYSTEM_CLOCK.time
        )
        this = Rig(store, dispatcher, pools)

        async def noop(stage: StageView) -> TaskResult:
            this.calls.append(stage.workflow_id)
            return TaskResult.success()

        if with_task:
            definition = make_definition("noop", noop)
            pools["noop"] = TaskPool(
                definition, tg, dispatcher.task_finished, lambda pool: None, anyio.CapacityLimiter(4)
            )
        tg.start_soon(timers.run)
        yield this
        tg.cancel_scope.cancel()


async def test_begin_commits_the_start_turn_with_the_insert_and_runs_the_workflow(db_path: Path) -> None:
    """The start turn goes through the run's actor and lands in the insert's own commit; then the run goes on."""
    async with rig(db_path) as r:
        before = r.store.statistics().commits
        await r.dispatcher.begin(fresh("wf-begin", "a", "b"), owned=True)
        live = r.dispatcher.live_state("wf-begin")
        status = live.record.status if live is not None else None
        commits = r.store.statistics().commits - before
        await r.wait_finished("wf-begin")
        loaded = await r.store.load("wf-begin")
        history = [e.kind for e in await r.store.events("wf-begin")]
    assert 1 == commits
    assert S.RUNNING == status  # the committed start turn, applied by the actor
    assert loaded is not None
    assert (S.SUCCEEDED, [S.SUCCEEDED, S.SUCCEEDED]) == (loaded.record.status, [run.status for run in loaded.runs])
    assert 1 == history.count("workflow.started")


async def test_a_second_begin_of_an_id_is_refused_and_changes_nothing(db_path: Path) -> None:
    """Beginning an existing id raises ConcurrencyError; the first run and its actor are untouched."""
    async with rig(db_path, with_task=False) as r:  # no task type: the first run parks
        await r.dispatcher.begin(fresh("wf-1"), owned=True)
        await r.idle()  # its ParkTask turn committed
        actor = r.dispatcher.actors.get("wf-1")
        first = await r.store.load("wf-1")
        with pytest.raises(ConcurrencyError):
            await r.dispatcher.begin(fresh("wf-1"), owned=True)
        with pytest.raises(ConcurrencyError):
            await r.dispatcher.begin(fresh("wf-1"), owned=False)
        again = await r.store.load("wf-1")
        history = [e.kind for e in await r.store.events("wf-1")]
        still = r.dispatcher.actors.get("wf-1")
    assert first == again
    assert still is actor
    assert 1 == history.count("workflow.started")


async def test_a_begin_for_another_owner_commits_and_acts_on_nothing_here(db_path: Path) -> None:
    """owned=False: the run is stored started with its RunTask pending, and no actor or call of it is left here."""
    async with rig(db_path) as r:
        await r.dispatcher.begin(fresh("wf-elsewhere"), owned=False)
        await r.idle()
        loaded = await r.store.load("wf-elsewhere")
        pending = await r.store.pending_for("wf-elsewhere")
        actors = dict(r.dispatcher.actors)
    assert loaded is not None
    assert S.RUNNING == loaded.record.status
    assert [RunTask] == [type(m) for m in pending]
    assert ({}, []) == (actors, r.calls)


async def test_stop_dispatching_starts_no_more_calls(db_path: Path) -> None:
    """After stop_dispatching() a run's RunTask stays pending and no call is made."""
    async with rig(db_path) as r:
        r.dispatcher.stop_dispatching()
        await r.dispatcher.begin(fresh("wf-late"), owned=True)
        await r.idle()
        pending = await r.store.pending_for("wf-late")
    assert ([], [RunTask]) == (r.calls, [type(m) for m in pending])
