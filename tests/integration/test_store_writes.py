"""Schedules and retention, on every backend; on SQLite they are written by the writer task, in queue order.

Each test opens a real store with its group writer running (as inside an
engine). Backends: SQLite (a fresh file) and PostgreSQL (a fresh schema).
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import anyio
import pytest
from storekit import StoreFactory, running_store

from stabilize_aio import DataError, WorkflowStatus
from stabilize_aio.messages.durable import CancelWorkflow
from stabilize_aio.model.records import StageRun, StageSpec, WorkflowRecord
from stabilize_aio.model.values import Event
from stabilize_aio.state.commit import Commit
from stabilize_aio.store import NewWorkflow
from stabilize_aio.store.protocol import ScheduleRow
from stabilize_aio.store.sqlite.store import SqliteStore


def workflow(wid: str, *, ended_at: float | None) -> NewWorkflow:
    """A workflow with one stage, finished at ``ended_at`` (None: still running)."""
    status = WorkflowStatus.RUNNING if ended_at is None else WorkflowStatus.SUCCEEDED
    record = WorkflowRecord(id=wid, application="app", name="wf", status=status, created_at=0.5, ended_at=ended_at)
    spec = StageSpec(ref_id="a", index=0, name="a", tasks=(), context={}, requisites=())
    return NewWorkflow(record=record, specs=[spec], runs=[StageRun()])


def noted(wid: str) -> Commit:
    """A turn that only records an event."""
    return Commit(workflow_id=wid, events=[Event(key=f"note:{wid}", kind="note", at=1.0)])


def schedule(name: str, next_at: float, cron: str = "* * * * *") -> ScheduleRow:
    return ScheduleRow(name=name, cron=cron, next_at=next_at, body=b"wf")


async def test_schedules_are_replaced_listed_advanced_once_and_deleted(store_factory: StoreFactory) -> None:
    """put replaces by name; advance is a compare-and-set on the tick; delete says whether there was one."""
    async with running_store(store_factory()) as store:
        await store.put_schedule(schedule("b", 20.0))
        await store.put_schedule(schedule("a", 5.0))
        await store.put_schedule(schedule("a", 10.0, cron="0 * * * *"))
        listed = await store.list_schedules()
        due = await store.list_schedules(due_before=10.0)
        advanced = [await store.advance_schedule("a", 10.0, 70.0), await store.advance_schedule("a", 10.0, 80.0)]
        deleted = [await store.delete_schedule("b"), await store.delete_schedule("b")]
        left = await store.list_schedules()
    assert [schedule("a", 10.0, cron="0 * * * *"), schedule("b", 20.0)] == listed
    assert ["a"] == [row.name for row in due]
    assert ([True, False], [True, False]) == (advanced, deleted)
    assert [schedule("a", 70.0, cron="0 * * * *")] == left


async def test_retention_deletes_finished_workflows_with_their_stages_and_events(store_factory: StoreFactory) -> None:
    """Up to ``limit`` workflows ended before the time go, with their rows; running and newer ones stay."""
    async with running_store(store_factory()) as store:
        for wid, ended in (("old-1", 1.0), ("old-2", 2.0), ("old-3", 3.0), ("new", 50.0), ("running", None)):
            await store.write(workflow(wid, ended_at=ended))
            await store.write(noted(wid))
        counts = [await store.delete_finished(10.0, 2), await store.delete_finished(10.0, 2)]
        counts.append(await store.delete_finished(10.0, 2))
        left = await store.statuses(["old-1", "old-2", "old-3", "new", "running"])
        history = [len(await store.events(wid)) for wid in ("old-1", "new", "running")]
        stages = [await store.load(wid) is not None for wid in ("old-3", "new")]
    assert [2, 1, 0] == counts
    assert {"new", "running"} == set(left)
    assert ([0, 1, 1], [False, True]) == (history, stages)


async def test_retention_deletes_a_finished_workflows_leftover_outbox_rows(store_factory: StoreFactory) -> None:
    """A command that came after the end (its row never consumed) goes with the workflow, not into every recovery."""
    async with running_store(store_factory()) as store:
        await store.write(workflow("old", ended_at=1.0))
        await store.write(Commit(workflow_id="old", emitted=[CancelWorkflow(id="cancel", reason="too late")]))
        before = [wid for wid, _ in await store.pending_messages()]
        deleted = await store.delete_finished(10.0, 10)
        after = ([wid for wid, _ in await store.pending_messages()], await store.pending_for("old"))
    assert (["old"], 1, ([], [])) == (before, deleted, after)


async def test_sqlite_schedule_writes_and_retention_run_in_the_writer_task_after_what_was_queued(
    tmp_path: Path,
) -> None:
    """Queued behind an op not yet committed, retention sees it; a schedule write waits for the writer task."""
    store = SqliteStore(tmp_path / "store.db")
    async with running_store(store):
        store.enqueue(workflow("done", ended_at=1.0), lambda error: None)  # not committed yet
        deleted = await store.delete_finished(10.0, 10)
    await store.open()  # no writer task: a schedule write is queued, not written by the caller
    try:
        with anyio.move_on_after(0.3) as waited:
            await store.put_schedule(schedule("a", 1.0))
        listed = await store.list_schedules()
    finally:
        await store.close()
    assert (1, True, []) == (deleted, waited.cancelled_caught, listed)


async def test_sqlite_retention_is_one_transaction(tmp_path: Path) -> None:
    """When deleting the workflow rows fails, the stages and events deleted before it come back."""
    path = tmp_path / "store.db"
    async with running_store(SqliteStore(path)) as store:
        await store.write(workflow("old", ended_at=1.0))
        await store.write(noted("old"))
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TRIGGER keep BEFORE DELETE ON workflows BEGIN SELECT RAISE(ABORT, 'kept'); END")
        conn.commit()
    async with running_store(SqliteStore(path)) as store:
        with pytest.raises(DataError, match="kept"):
            await store.delete_finished(10.0, 10)
        counts = await store.table_counts()
    assert {"workflows": 1, "stages": 1, "outbox": 0, "events": 1} == counts
