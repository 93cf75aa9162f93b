"""The PostgreSQL store at its boundary: driver errors become ours, a lost connection is retried, an engine runs on it.

Everything runs against the real server (``postgres_url``); a lost connection
is a real ``pg_terminate_backend`` of the writer's server process.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

import asyncpg
import pytest
from runs import initial_state
from storekit import running_store

from stabilize_aio import (
    ConcurrencyError,
    Engine,
    Stage,
    StageView,
    StoreError,
    TaskResult,
    Workflow,
    WorkflowStatus,
)
from stabilize_aio.handlers import start
from stabilize_aio.store import NewWorkflow, store_from_url
from stabilize_aio.store.postgres.store import PostgresStore

pytestmark = pytest.mark.postgres


def opened(url: str) -> AbstractAsyncContextManager[PostgresStore]:
    """An open PostgreSQL store with its group writer running (as inside an engine)."""
    store = store_from_url(url)
    assert isinstance(store, PostgresStore)
    return running_store(store)


def new_workflow(wid: str) -> NewWorkflow:
    """The op that submits a one-stage workflow with id ``wid``."""
    state = initial_state(Workflow(application="app", name="wf", stages=[Stage("a", "t")]), wid, {})
    begin, _ = start(state, 1.0)  # the start turn, committed with the insert as submit does
    return NewWorkflow(record=state.record, specs=state.specs, runs=list(state.runs), begin=begin)


async def test_a_duplicate_key_is_a_concurrency_error_chained_from_the_driver(postgres_schema_url: str) -> None:
    """Submitting the same workflow id twice raises ConcurrencyError whose cause is asyncpg's unique violation."""
    async with opened(postgres_schema_url) as store:
        await store.write(new_workflow("wf-1"))
        with pytest.raises(ConcurrencyError) as caught:
            await store.write(new_workflow("wf-1"))
        counts = await store.table_counts()
    assert asyncpg.UniqueViolationError is type(caught.value.__cause__)
    assert {"workflows": 1, "stages": 1, "outbox": 1, "events": 2} == counts


async def test_a_terminated_writer_connection_is_replaced_and_the_write_lands(
    postgres_url: str, postgres_schema_url: str
) -> None:
    """After the server kills the writer's backend, the next write reconnects in place and commits."""
    admin = await asyncpg.connect(postgres_url)
    try:
        async with opened(postgres_schema_url) as store:
            await store.write(new_workflow("wf-1"))
            killed = store.writer_pid
            # the two-argument form waits until the backend has exited (no sleep needed)
            assert await admin.fetchval("SELECT pg_terminate_backend($1, 10000)", killed)
            await store.write(new_workflow("wf-2"))
            loaded = await store.load("wf-2")
            after = (store.reconnects, store.writer_pid != killed, store.statistics().commits)
    finally:
        await admin.close()
    assert loaded is not None
    assert (1, True, 2) == after


async def install_trigger(postgres_url: str, schema: str, action: str) -> None:
    """Run ``action`` (PL/pgSQL) at every INSERT into ``workflows``, with ``n``: how many times it has run."""
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(
            f"""
            CREATE SEQUENCE {schema}.trigger_calls;
            CREATE FUNCTION {schema}.on_insert() RETURNS trigger LANGUAGE plpgsql AS $$
            DECLARE n bigint := nextval('{schema}.trigger_calls');  -- sequences ignore rollbacks
            BEGIN {action}; RETURN NULL; END $$;
            CREATE TRIGGER on_insert BEFORE INSERT ON {schema}.workflows
                FOR EACH STATEMENT EXECUTE FUNCTION {schema}.on_insert();
            """
        )
    finally:
        await admin.close()


async def trigger_calls(postgres_url: str, schema: str) -> int:
    """How many times the trigger of ``install_trigger`` ran."""
    admin = await asyncpg.connect(postgres_url)
    try:
        return int(await admin.fetchval(f"SELECT last_value FROM {schema}.trigger_calls"))
    finally:
        await admin.close()


async def test_a_connection_lost_inside_a_group_is_retried_on_a_new_one(
    postgres_url: str, postgres_schema_url: str
) -> None:
    """The writer's backend dies in the middle of a group's transaction: the group is retried and commits once."""
    schema = postgres_schema_url.rsplit("=", 1)[1]
    await install_trigger(postgres_url, schema, "IF n = 1 THEN PERFORM pg_terminate_backend(pg_backend_pid()); END IF")
    async with opened(postgres_schema_url) as store:
        await store.write(new_workflow("wf-1"))
        loaded = await store.load("wf-1")
        counts = await store.table_counts()
        stats = (store.reconnects, store.statistics().commits)
    assert loaded is not None
    assert {"workflows": 1, "stages": 1, "outbox": 1, "events": 2} == counts
    assert (1, 1) == stats
    assert 2 == await trigger_calls(postgres_url, schema)


async def test_a_serialization_failure_is_retried_in_place(postgres_url: str, postgres_schema_url: str) -> None:
    """A group that loses a serialization race once is run again on the same connection and commits."""
    schema = postgres_schema_url.rsplit("=", 1)[1]
    await install_trigger(postgres_url, schema, "IF n = 1 THEN RAISE EXCEPTION USING ERRCODE = '40001'; END IF")
    async with opened(postgres_schema_url) as store:
        await store.write(new_workflow("wf-1"))
        loaded = await store.load("wf-1")
        stats = (store.reconnects, store.statistics().commits)
    assert loaded is not None
    assert (0, 1) == stats
    assert 2 == await trigger_calls(postgres_url, schema)


async def test_retries_are_bounded_then_a_store_error(postgres_url: str, postgres_schema_url: str) -> None:
    """A serialization failure on every attempt ends, after ``attempts`` tries, in StoreError chained from it."""
    schema = postgres_schema_url.rsplit("=", 1)[1]
    await install_trigger(postgres_url, schema, "RAISE EXCEPTION USING ERRCODE = '40001'")
    async with opened(postgres_schema_url) as store:
        with pytest.raises(StoreError) as caught:
            await store.write(new_workflow("wf-1"))
        attempts = store.attempts
    assert StoreError is type(caught.value)
    assert asyncpg.SerializationError is type(caught.value.__cause__)
    assert attempts == await trigger_calls(postgres_url, schema)


async def test_other_database_errors_are_store_errors_naming_the_database(
    postgres_url: str, postgres_schema_url: str
) -> None:
    """A table gone under an open store fails reads and writes with StoreError (not a fence), chained."""
    admin = await asyncpg.connect(postgres_url)
    try:
        async with opened(postgres_schema_url) as store:
            await admin.execute(f"DROP TABLE {postgres_schema_url.rsplit('=', 1)[1]}.outbox")
            with pytest.raises(StoreError) as read:
                await store.pending_messages()
            with pytest.raises(StoreError) as write:
                await store.write(new_workflow("wf-1"))
            loaded = await store.load("wf-1")
    finally:
        await admin.close()
    assert (StoreError, StoreError) == (type(read.value), type(write.value))
    assert postgres_schema_url in str(read.value)
    assert postgres_schema_url in str(write.value)
    assert asyncpg.UndefinedTableError is type(read.value.__cause__)
    assert asyncpg.UndefinedTableError is type(write.value.__cause__)
    assert loaded is None  # the failed group was rolled back: no workflow row without its outbox row


async def test_an_unreachable_server_is_a_store_error_naming_it() -> None:
    """Opening a store on a port nobody listens on raises StoreError naming the URL, chained from OSError."""
    store = PostgresStore("postgresql://postgres:secret@127.0.0.1:1/nothing", attempts=2)
    with pytest.raises(StoreError) as caught:
        await store.open()
    assert "postgresql://postgres:***@127.0.0.1:1/nothing" in str(caught.value)
    assert "secret" not in str(caught.value)
    assert isinstance(caught.value.__cause__, OSError)


async def test_an_engine_runs_the_readme_diamond_on_postgres(postgres_schema_url: str) -> None:
    """The README's diamond workflow runs to SUCCEEDED on a PostgreSQL schema, with its history recorded."""
    engine = Engine(postgres_schema_url)

    @engine.task("fetch")
    async def fetch(stage: StageView) -> TaskResult:
        return TaskResult.success(outputs={f"rows_{stage.ref_id}": stage.context["n"] * 2})

    @engine.task("report")
    async def report(stage: StageView) -> TaskResult:
        return TaskResult.success(outputs={"total": stage.context["rows_b"] + stage.context["rows_c"]})

    workflow = Workflow(
        application="demo",
        name="diamond",
        stages=[
            Stage("a", task="fetch", context={"n": 1}),
            Stage("b", task="fetch", context={"n": 2}, requisites=["a"]),
            Stage("c", task="fetch", context={"n": 3}, requisites=["a"]),
            Stage("d", task="report", requisites=["b", "c"]),
        ],
    )
    async with engine:
        run = await engine.submit(workflow)
        result = await run.wait(timeout=30)
        history = await engine.history(run.workflow_id)
        pending = await engine.store.pending_messages()
    assert (WorkflowStatus.SUCCEEDED, 10) == (result.status, result.stage("d").outputs["total"])
    assert "workflow.completed" in [e.kind for e in history]
    assert [] == pending


def test_engine_repr_masks_the_password() -> None:
    """An engine's repr shows its URL without the password."""
    engine = Engine("postgresql://app:s3cret@db.example:5432/prod?schema=wf")
    assert "s3cret" not in repr(engine)
    assert "postgresql://app:***@db.example:5432/prod?schema=wf" in repr(engine)
