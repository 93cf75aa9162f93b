"""The store contract, run against every backend (a conformance suite).

Each test opens a real store, writes through the group writer exactly as the
engine does, and reads back. Backends: SQLite (a fresh file) and PostgreSQL (a
fresh schema of the test server, migrated with ``upgrade()`` and dropped after
the test), through the ``store_factory`` parameters.
"""

from __future__ import annotations

import functools
from contextlib import AbstractAsyncContextManager

import anyio
import msgspec
import pytest
from runs import initial_state
from storekit import StoreFactory, running_store

from stabilize_aio import ConcurrencyError, Stage, Workflow, WorkflowStatus
from stabilize_aio.handlers import start
from stabilize_aio.messages.durable import CancelWorkflow, RunTask
from stabilize_aio.state.commit import Commit
from stabilize_aio.state.workflow import WorkflowState
from stabilize_aio.store import NewWorkflow, Store

S = WorkflowStatus


def opened(factory: StoreFactory) -> AbstractAsyncContextManager[Store]:
    """An open store with its group writer running (as inside an engine)."""
    return running_store(factory())


def new_workflow(wid: str, *refs: str) -> tuple[WorkflowState, NewWorkflow]:
    stages = [Stage(r, "t") for r in refs] or [Stage("a", "t")]
    state = initial_state(Workflow(application="app", name="wf", stages=stages), wid, {"in": 1})
    op = NewWorkflow(record=state.record, specs=state.specs, runs=list(state.runs))  # inserted NOT_STARTED
    return state, op


async def start_turns(store: Store, count: int, *, stale: int) -> list[Commit]:
    """Insert ``count`` workflows; return their start turns, the one at ``stale`` fenced on an unwritten version."""
    states = [new_workflow(f"wf-{i}") for i in range(count)]
    for _, op in states:
        await store.write(op)
    turns = [start(state, 1.0)[0] for state, _ in states]
    turns[stale] = msgspec.structs.replace(turns[stale], base_workflow_version=7)  # the row is at version 0
    return turns


async def statuses_of(store: Store, count: int) -> list[WorkflowStatus | None]:
    """The stored status of wf-0 .. wf-(count-1), None where missing."""
    loaded = [await store.load(f"wf-{i}") for i in range(count)]
    return [w.record.status if w is not None else None for w in loaded]


async def test_insert_then_load_round_trips(store_factory: StoreFactory) -> None:
    """A submitted workflow loads back with its record, specs and runs unchanged."""
    state, op = new_workflow("wf-1", "a", "b")
    async with opened(store_factory) as store:
        await store.write(op)
        loaded = await store.load("wf-1")
        missing = await store.load("nope")
    assert loaded is not None
    assert (state.record, state.specs, state.runs) == (loaded.record, loaded.specs, loaded.runs)
    assert missing is None


async def test_a_row_is_pending_until_a_turn_consumes_it(store_factory: StoreFactory) -> None:
    """A turn's emitted rows are pending work after it commits; a later turn that consumes one deletes it."""
    state, op = new_workflow("wf-1", "a", "b")
    async with opened(store_factory) as store:
        await store.write(op)
        before = await store.pending_messages()
        t, _ = start(state, 10.0)
        await store.write(t)
        after = await store.pending_messages()
        await store.write(Commit(workflow_id="wf-1", consumed=[t.emitted[0].id]))
        left = await store.pending_messages()
    assert [] == before  # an insert alone writes no row
    assert sorted(m.id for m in t.emitted) == sorted(m.id for _, m in after)
    assert all(isinstance(m, RunTask) for _, m in after)
    assert sorted(m.id for m in t.emitted[1:]) == sorted(m.id for _, m in left)


async def test_concurrent_writes_are_grouped_into_few_commits(store_factory: StoreFactory) -> None:
    """Many ops queued together commit in one transaction each group, not one per op."""
    ops = [new_workflow(f"wf-{i}")[1] for i in range(100)]
    async with opened(store_factory) as store:
        async with anyio.create_task_group() as tg:
            for op in ops:
                tg.start_soon(store.write, op)
        stats = store.statistics()
    assert 100 == stats.workflows_inserted
    assert stats.commits < 10
    assert stats.largest_group > 10


async def test_a_failed_fence_refuses_only_the_offending_turn(store_factory: StoreFactory) -> None:
    """A stale turn in a group is refused with ConcurrencyError; the others in the group commit."""
    async with opened(store_factory) as store:
        turns = await start_turns(store, 5, stale=2)
        results: dict[int, str] = {}

        async def write(i: int, t: Commit) -> None:
            try:
                await store.write(t)
                results[i] = "ok"
            except ConcurrencyError:
                results[i] = "refused"

        async with anyio.create_task_group() as tg:
            for i, t in enumerate(turns):
                tg.start_soon(write, i, t)
        statuses = await statuses_of(store, 5)
        replayed = store.statistics().groups_replayed
    assert {0: "ok", 1: "ok", 2: "refused", 3: "ok", 4: "ok"} == results
    assert [S.RUNNING, S.RUNNING, S.NOT_STARTED, S.RUNNING, S.RUNNING] == statuses
    assert replayed >= 1


async def test_enqueued_turns_report_back_after_their_group_commits(store_factory: StoreFactory) -> None:
    """enqueue() never waits: each op's callback runs once its group is durable, with the fence's verdict."""
    async with opened(store_factory) as store:
        turns = await start_turns(store, 4, stale=1)
        reports: dict[int, BaseException | None] = {}
        all_reported = anyio.Event()

        def then(i: int, error: BaseException | None) -> None:
            reports[i] = error
            if len(reports) == len(turns):
                all_reported.set()

        for i, t in enumerate(turns):
            store.enqueue(t, functools.partial(then, i))
        assert {} == reports  # nothing is reported before the writer has committed
        with anyio.fail_after(10):
            await all_reported.wait()
        statuses = await statuses_of(store, 4)
    assert [None, ConcurrencyError, None, None] == [None if reports[i] is None else type(reports[i]) for i in range(4)]
    assert [S.RUNNING, S.NOT_STARTED, S.RUNNING, S.RUNNING] == statuses


async def test_a_failing_callback_lets_the_round_finish_then_stops_the_writer(store_factory: StoreFactory) -> None:
    """A callback that raises does not strand the others: every op hears back, waiters wake, then the writer fails."""
    _, first = new_workflow("wf-1")
    _, second = new_workflow("wf-2")
    heard: list[BaseException | None] = []
    woken = anyio.Event()

    def explode(error: BaseException | None) -> None:
        raise RuntimeError("a bug in a callback")

    def record(error: BaseException | None) -> None:
        heard.append(error)
        woken.set()

    with pytest.RaisesGroup(pytest.RaisesExc(RuntimeError, match="a bug in a callback"), flatten_subgroups=True):
        async with opened(store_factory) as store:
            store.enqueue(first, explode)
            store.enqueue(second, record)
            with anyio.fail_after(10):
                await woken.wait()
                await store.flush()  # the round's event was set: a waiter does not hang
            await anyio.sleep_forever()  # until the writer's failure cancels this block
    assert [None] == heard


async def test_a_start_turn_committed_with_its_insert_lands_as_the_turn_left_it(store_factory: StoreFactory) -> None:
    """Submit's insert with its start turn folded in stores the started rows, its RunTasks and its events."""
    state, _ = new_workflow("wf-1", "a", "b")
    t, _ = start(state, 5.0)
    op = NewWorkflow(record=state.record, specs=state.specs, runs=list(state.runs), begin=t)
    async with opened(store_factory) as store:
        await store.write(op)
        loaded = await store.load("wf-1")
        pending = await store.pending_messages()
        events = await store.events("wf-1")
    assert loaded is not None
    assert t.workflow == loaded.record
    assert [t.stages.get(i, run) for i, run in enumerate(state.runs)] == loaded.runs
    assert sorted(m.id for m in t.emitted) == sorted(m.id for _, m in pending)
    assert [e.key for e in t.events] == [e.key for e in events]


async def test_consuming_a_row_twice_is_refused(store_factory: StoreFactory) -> None:
    """A transition whose consumed row is already gone is a duplicate and is refused."""
    _, op = new_workflow("wf-1")
    async with opened(store_factory) as store:
        await store.write(op)
        await store.write(Commit(workflow_id="wf-1", emitted=[CancelWorkflow(id="cancel")]))
        await store.write(Commit(workflow_id="wf-1", consumed=["cancel"]))
        with pytest.raises(ConcurrencyError):
            await store.write(Commit(workflow_id="wf-1", consumed=["cancel"]))
        assert [] == await store.pending_messages()


async def test_discarding_a_missing_row_is_not_an_error(store_factory: StoreFactory) -> None:
    """A discard (a late or repeated command) deletes the row if it is there and never fails."""
    _, op = new_workflow("wf-1")
    cancel = CancelWorkflow(id="cancel", reason="x")
    other = RunTask(id="r0.0.0.1.0", stage=0, task=0, task_type="t", generation=0, attempt=1)
    async with opened(store_factory) as store:
        await store.write(op)
        await store.write(Commit(workflow_id="wf-1", emitted=[other, cancel]))
        await store.write(Commit(workflow_id="wf-1", discarded=["cancel"]))
        await store.write(Commit(workflow_id="wf-1", discarded=["cancel"]))
        pending = await store.pending_messages()
    assert [("wf-1", other)] == pending


async def test_a_duplicate_row_or_event_is_refused(store_factory: StoreFactory) -> None:
    """Emitting an outbox row or an event key that exists already fails the turn."""
    state, op = new_workflow("wf-1")
    async with opened(store_factory) as store:
        await store.write(op)
        t, _ = start(state, 1.0)
        await store.write(t)
        again = Commit(workflow_id="wf-1", events=list(t.events))
        with pytest.raises(ConcurrencyError):
            await store.write(again)
        events = await store.events("wf-1")
    assert [e.key for e in t.events] == [e.key for e in events]


async def test_pending_runs_pages_by_key_and_skips_future_rows(store_factory: StoreFactory) -> None:
    """pending_runs returns due rows of one task type in key order, after a given key."""
    async with opened(store_factory) as store:
        for i in range(5):
            _, op = new_workflow(f"wf-{i}")
            await store.write(op)
            due = RunTask(id="r0.0.0.1.0", stage=0, task=0, task_type="t", generation=0, attempt=1)
            later = RunTask(id="r0.0.0.2.0", stage=0, task=0, task_type="t", generation=0, attempt=2, deliver_at=1e12)
            other = RunTask(id="r0.0.0.1.9", stage=0, task=0, task_type="other", generation=0, attempt=1)
            await store.write(Commit(workflow_id=f"wf-{i}", emitted=[due, later, other]))
        first = await store.pending_runs("t", 3, 1000.0)
        rest = await store.pending_runs("t", 3, 1000.0, after=(first[-1][0], first[-1][1].id))
    assert ["wf-0", "wf-1", "wf-2"] == [w for w, _ in first]
    assert ["wf-3", "wf-4"] == [w for w, _ in rest]
    assert {"r0.0.0.1.0"} == {m.id for _, m in first + rest}


async def test_list_filters_and_orders_newest_first(store_factory: StoreFactory) -> None:
    """list_workflows filters by status and application and returns the newest first."""
    async with opened(store_factory) as store:
        for i in range(3):
            _, op = new_workflow(f"wf-{i}")
            await store.write(msgspec.structs.replace(op, record=msgspec.structs.replace(op.record, created_at=i)))
        state, _ = new_workflow("wf-1")
        state.record = msgspec.structs.replace(state.record, created_at=1)
        await store.write(start(state, 5.0)[0])
        everything = await store.list_workflows(status=None, application=None, limit=10)
        running = await store.list_workflows(status="RUNNING", application=None, limit=10)
        none = await store.list_workflows(status=None, application="other", limit=10)
        limited = await store.list_workflows(status=None, application="app", limit=2)
    assert ["wf-2", "wf-1", "wf-0"] == [r.id for r in everything]
    assert ["wf-1"] == [r.id for r in running]
    assert ([], ["wf-2", "wf-1"]) == ([r.id for r in none], [r.id for r in limited])


async def test_state_survives_reopening(store_factory: StoreFactory) -> None:
    """What one store instance committed, a new instance on the same database reads."""
    state, op = new_workflow("wf-1", "a")
    async with opened(store_factory) as store:
        await store.write(op)
        await store.write(start(state, 1.0)[0])
    async with opened(store_factory) as store:
        loaded = await store.load("wf-1")
        pending = await store.pending_messages()
    assert loaded is not None
    assert (S.RUNNING, S.RUNNING) == (loaded.record.status, loaded.runs[0].status)
    assert ["r0.0.0.1.0"] == [m.id for _, m in pending]
