"""PostgreSQL faults that must never stop an engine, and engines that join or leave without a lease's wait.

Everything runs against the real server. A connection "cut while the event loop
was blocked" is a real ``pg_terminate_backend`` sent from another thread while
this thread's event loop sits in ``time.sleep`` (a GC pause, SIGSTOP or a
stalled VM): when the loop resumes, the idle connection reads the server's
FATAL one loop iteration before its EOF, and a statement sent in between finds
the driver in a broken state. A write or read "due right after the pause" is
one a timer sets off: the resumed loop reads the sockets first, then runs the
timers that fell due while it was blocked.

Membership tests use a long heartbeat (lease 30 s, heartbeat 10 s), so a
heartbeat cannot be what rebalances within their deadlines.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import asyncpg
import msgspec
import pytest
from runs import initial_state
from storekit import admin, running_store
from test_leases import Inbox

from stabilize_aio import (
    ConcurrencyError,
    DataError,
    Engine,
    Stage,
    StageView,
    TaskResult,
    Workflow,
    WorkflowStatus,
)
from stabilize_aio.handlers import start
from stabilize_aio.messages.durable import CancelWorkflow
from stabilize_aio.model.records import WorkflowRecord
from stabilize_aio.model.values import Event
from stabilize_aio.state.commit import Commit
from stabilize_aio.store import NewWorkflow
from stabilize_aio.store.postgres.store import PostgresStore
from stabilize_aio.store.shards import SHARDS, shard_of

pytestmark = pytest.mark.postgres

#: How long the event loop stays blocked after the kill: the FATAL and the EOF wait in the sockets.
PAUSE = 0.5
#: A timer that falls due while the loop is blocked (well inside PAUSE): what the resumed loop runs first.
DUE_IN_THE_PAUSE = 0.05
ONE_STAGE = Workflow(application="r", name="one", stages=[Stage("a", "step")])


# helpers -------------------------------------------------------------------------
def named(url: str) -> tuple[str, str]:
    """``url`` with a fresh ``application_name`` (its connections are found in ``pg_stat_activity`` by it)."""
    name = f"res_{uuid.uuid4().hex[:12]}"
    return f"{url}&application_name={name}", name


def opened(store: PostgresStore, owner: str = "") -> AbstractAsyncContextManager[PostgresStore]:
    """``store`` open with its group writer running (as inside an engine), lease owner ``owner``."""
    store.set_fence(owner, None)
    return running_store(store)


async def backends(conn: Any, application_name: str) -> set[int]:
    """The server pids of every connection opened under ``application_name``."""
    rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE application_name = $1", application_name)
    return {int(r[0]) for r in rows}


def kill_while_the_loop_is_blocked(url: str, pids: Sequence[int]) -> None:
    """Block the event loop (this is a plain function) while the server terminates ``pids``, then a while longer."""
    failures: list[BaseException] = []

    async def kill() -> None:
        conn = await asyncpg.connect(url)
        try:
            for pid in pids:  # the two-argument form returns once the backend has exited
                assert await conn.fetchval("SELECT pg_terminate_backend($1, 10000)", pid)
        finally:
            await conn.close()

    def run() -> None:
        try:
            anyio.run(kill)
        except BaseException as exc:  # handed to the test's thread
            failures.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    time.sleep(PAUSE)  # the fault itself: the loop stays blocked after the server cut the connections
    if failures:
        raise failures[0]


async def after_the_pause(
    action: Callable[[], Awaitable[Any]],
    done: list[Any],
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``action`` when a timer due during the coming pause fires; its result goes into ``done``."""
    task_status.started()
    await anyio.sleep(DUE_IN_THE_PAUSE)  # not a wait for anything: the work a timer sets off after the pause
    done.append(await action())


async def until(condition: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll ``condition`` (the database, another process's doing) until it holds; fail after ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        while not await condition():  # noqa: ASYNC110 - nothing in this process signals it
            await anyio.sleep(0.02)


def new_workflow(wid: str) -> NewWorkflow:
    """The op that submits a one-stage workflow with id ``wid``."""
    state = initial_state(Workflow(application="app", name="wf", stages=[Stage("a", "t")]), wid, {})
    begin, _ = start(state, 1.0)  # the start turn, committed with the insert as submit does
    return NewWorkflow(record=state.record, specs=state.specs, runs=list(state.runs), begin=begin)


def turn(wid: str, base: int) -> Commit:
    """A turn that rewrites a stage-less workflow's row from version ``base`` to ``base + 1``."""
    record = WorkflowRecord(id=wid, application="app", name="wf", version=base + 1, created_at=1.0)
    return Commit(workflow_id=wid, workflow=record, base_workflow_version=base)


def bare(wid: str, name: str = "wf") -> NewWorkflow:
    """The op that submits a workflow without stages or rows (built past the door's checks)."""
    record = WorkflowRecord(id=wid, application="app", name=name, version=0, created_at=1.0)
    return NewWorkflow(record=record, specs=[], runs=[])


def in_shard(shard: int) -> str:
    """A workflow id that hashes to ``shard``."""
    return next(f"wf-{i}" for i in range(10_000) if shard_of(f"wf-{i}") == shard)


def leases(engine: Engine) -> tuple[int, ...]:
    """The shards the engine holds (its public statistics)."""
    return engine.statistics().leases


def worker(url: str) -> Engine:
    """An engine with a long heartbeat and task ``step``."""
    engine = Engine(url, lease=30, heartbeat=10)

    @engine.task("step")
    async def step(stage: StageView) -> TaskResult:
        return TaskResult.success()

    return engine


async def shares(*engines: Engine, expected: tuple[int, ...], timeout: float = 3.0) -> None:
    """Wait until the engines hold ``expected`` shards each (woken by any of their leases changing)."""
    with anyio.fail_after(timeout):
        while tuple(len(leases(e)) for e in engines) != expected:
            async with anyio.create_task_group() as tg:

                async def changed(engine: Engine) -> None:
                    await engine.wait_leases_changed()
                    tg.cancel_scope.cancel()

                for engine in engines:
                    tg.start_soon(changed, engine)


# bug 5: connections cut while the loop was blocked ----------------------------------
async def test_a_writer_cut_while_the_loop_was_blocked_is_replaced_and_the_next_group_commits(
    postgres_url: str, postgres_schema_url: str
) -> None:
    """The writer's backend is killed during a blocked loop; the group written right after reconnects and commits."""
    async with opened(PostgresStore(postgres_schema_url)) as store:
        await store.write(new_workflow("wf-1"))
        killed = store.writer_pid
        assert killed is not None
        done: list[Any] = []
        async with anyio.create_task_group() as tg:
            await tg.start(after_the_pause, lambda: store.write(new_workflow("wf-2")), done)
            kill_while_the_loop_is_blocked(postgres_url, [killed])
        loaded = await store.load("wf-2")
        after = (store.reconnects, store.writer_pid not in (None, killed), store.statistics().commits)
    assert loaded is not None
    assert (1, True, 2) == after


async def test_reads_work_after_the_pools_connections_were_cut_while_the_loop_was_blocked(
    postgres_url: str, postgres_schema_url: str
) -> None:
    """Every reader of the pool is killed during a blocked loop; the read right after gets fresh connections."""
    url, name = named(postgres_schema_url)
    async with opened(PostgresStore(url, readers=2)) as store, admin(postgres_schema_url) as conn:
        await store.write(new_workflow("wf-1"))
        async with anyio.create_task_group() as tg:  # two reads at once: the pool opens both its readers
            tg.start_soon(store.load, "wf-1")
            tg.start_soon(store.load, "wf-1")
        readers = await backends(conn, name) - {store.writer_pid}
        done: list[Any] = []
        async with anyio.create_task_group() as tg:
            await tg.start(after_the_pause, lambda: store.load("wf-1"), done)
            kill_while_the_loop_is_blocked(postgres_url, sorted(readers))
        statuses = await store.statuses(["wf-1"])
        alive = await backends(conn, name)
    assert 2 == len(readers)
    assert done[0] is not None
    assert ["wf-1"] == list(statuses)
    assert set() == readers & alive  # the cut ones were discarded, not reused


async def test_listen_wake_ups_still_arrive_after_the_listener_was_cut_while_the_loop_was_blocked(
    postgres_url: str, postgres_schema_url: str
) -> None:
    """The LISTEN backend is killed during a blocked loop with its ping due: it is replaced and wake-ups arrive."""
    woken = Inbox()
    listener = PostgresStore(postgres_schema_url, listen_check=4 * DUE_IN_THE_PAUSE)  # a ping falls due in the pause
    async with opened(listener) as store, opened(PostgresStore(postgres_schema_url)) as sender:
        await store.listen(woken, Inbox())
        killed = store.listener_pid
        assert killed is not None
        await anyio.wait_all_tasks_blocked()  # the keeper loop is waiting for its next ping
        kill_while_the_loop_is_blocked(postgres_url, [killed])

        async def replaced() -> bool:
            return store.listener_pid not in (None, killed)

        await until(replaced)
        await sender.write(msgspec.structs.replace(bare("after"), notify=True))
        await woken.wait_for("after")
    assert ["after"] == woken.received


async def test_an_engine_whose_connections_were_cut_while_its_loop_was_blocked_completes_a_workflow(
    postgres_url: str, postgres_schema_url: str
) -> None:
    """Writer, readers and listener killed during a blocked loop: a workflow submitted right after completes."""
    url, name = named(postgres_schema_url)
    engine = worker(url)
    async with engine, admin(postgres_schema_url) as conn:
        cut = await backends(conn, name)
        runs: list[Any] = []
        async with anyio.create_task_group() as tg:
            await tg.start(after_the_pause, lambda: engine.submit(ONE_STAGE), runs)
            kill_while_the_loop_is_blocked(postgres_url, sorted(cut))
        view = await runs[0].wait(timeout=10)
        listed = await engine.list()
        alive = await backends(conn, name)
    assert 3 <= len(cut)  # the writer, the LISTEN connection and at least one reader
    assert WorkflowStatus.SUCCEEDED == view.status
    assert [runs[0].workflow_id] == [s.workflow_id for s in listed]
    assert set() == cut & alive


# bug 5: a COMMIT whose answer was lost ---------------------------------------------
async def hold_commits_of(conn: Any, schema: str, table: str, condition: str) -> None:
    """Make COMMITs of transactions that wrote a matching row of ``table`` wait for advisory lock 7 (held here)."""
    await conn.execute(
        f"""
        CREATE FUNCTION {schema}.hold() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_advisory_xact_lock(7); RETURN NULL; END $$;
        CREATE CONSTRAINT TRIGGER hold AFTER INSERT OR UPDATE ON {schema}.{table}
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN ({condition}) EXECUTE FUNCTION {schema}.hold();
        SELECT pg_advisory_lock(7);
        """
    )


async def commit_answer_lost(store: PostgresStore, conn: Any, committed: Callable[[], Awaitable[bool]]) -> None:
    """The writer is in its COMMIT, held by lock 7: let the server commit, and cut the connection before the answer."""
    writer = store.writer_pid

    async def waits() -> bool:
        return bool(await conn.fetchval("SELECT count(*) FROM pg_locks WHERE pid = $1 AND NOT granted", writer))

    await until(waits)  # COMMIT was sent; the deferred trigger waits for the lock
    store._write_conn.conn._transport.pause_reading()  # the server's answer will not be read
    await conn.execute("SELECT pg_advisory_unlock(7)")
    await until(committed)  # committed on the server, the answer unread
    store._write_conn.conn.terminate()  # the connection dies before the answer arrives


async def test_a_command_whose_commit_answer_was_lost_is_not_written_twice(postgres_schema_url: str) -> None:
    """COMMIT committed but its answer was lost, and the owner consumed the row: the retry does not write it again."""
    schema = postgres_schema_url.rsplit("=", 1)[1]
    command = Commit(workflow_id="wf-1", emitted=[CancelWorkflow(id="cmd")], notify=True)
    async with opened(PostgresStore(postgres_schema_url)) as store, admin(postgres_schema_url) as conn:
        await store.write(bare("wf-1"))
        await hold_commits_of(conn, schema, "outbox", "NEW.id = 'cmd'")

        async def consumed_by_its_owner() -> bool:  # visible, so committed; the owner takes the row at once
            return bool(await conn.fetchval("DELETE FROM outbox WHERE id = 'cmd' RETURNING id"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(store.write, command)
            await commit_answer_lost(store, conn, consumed_by_its_owner)
        rows = await conn.fetchval("SELECT count(*) FROM outbox WHERE id = 'cmd'")
        stats = (store.reconnects, store.statistics().commits)
    assert 0 == rows  # written once, consumed once
    assert (1, 2) == stats


async def test_a_turn_whose_commit_answer_was_lost_fails_its_fence_on_the_retry(postgres_schema_url: str) -> None:
    """COMMIT committed but its answer was lost: the retried turn is refused by its version fence, not applied twice."""
    schema = postgres_schema_url.rsplit("=", 1)[1]
    async with opened(PostgresStore(postgres_schema_url)) as store, admin(postgres_schema_url) as conn:
        await store.write(bare("wf-1"))
        await hold_commits_of(conn, schema, "workflows", "NEW.version = 1")

        async def committed() -> bool:
            return 1 == int(await conn.fetchval("SELECT version FROM workflows WHERE id = 'wf-1'"))

        outcome: list[BaseException] = []

        async def write() -> None:
            try:
                await store.write(turn("wf-1", 0))
            except ConcurrencyError as exc:
                outcome.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(write)
            await commit_answer_lost(store, conn, committed)
        version = await conn.fetchval("SELECT version FROM workflows WHERE id = 'wf-1'")
    assert [ConcurrencyError] == [type(e) for e in outcome]
    assert 1 == version


async def test_a_command_cut_while_its_commit_still_runs_is_rolled_back_then_written_once(
    postgres_schema_url: str,
) -> None:
    """The connection dies while the server still runs the COMMIT: that backend is ended, and the retry commits once."""
    schema = postgres_schema_url.rsplit("=", 1)[1]
    command = Commit(workflow_id="wf-1", emitted=[CancelWorkflow(id="cmd")], notify=True)
    async with opened(PostgresStore(postgres_schema_url)) as store, admin(postgres_schema_url) as conn:
        await store.write(bare("wf-1"))
        await hold_commits_of(conn, schema, "outbox", "NEW.id = 'cmd'")
        first = store.writer_pid

        async def held(pid: int | None) -> bool:
            return bool(await conn.fetchval("SELECT count(*) FROM pg_locks WHERE pid = $1 AND NOT granted", pid))

        async def retry_held() -> bool:
            return store.writer_pid not in (None, first) and await held(store.writer_pid)

        async with anyio.create_task_group() as tg:
            tg.start_soon(store.write, command)
            await until(lambda: held(first))  # in its COMMIT, waiting for the lock
            store._write_conn.conn.terminate()  # the client side dies; the server still runs the COMMIT
            await until(retry_held)  # the old backend was ended, and the retry waits in its own COMMIT
            gone = not await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", first)
            await conn.execute("SELECT pg_advisory_unlock(7)")
        rows = await conn.fetchval("SELECT count(*) FROM outbox WHERE id = 'cmd'")
    assert gone
    assert 1 == rows


# the containment rule: data PostgreSQL refuses -------------------------------------------
async def test_data_postgres_refuses_is_a_data_error_and_the_next_op_commits(postgres_schema_url: str) -> None:
    """A NUL byte in a name (class 22) and an event key too big to index (class 54) are DataErrors; then writes land."""
    big_key = secrets.token_urlsafe(12_000)  # random: it does not compress under the index's 2,704-byte limit
    event = Event(key=big_key, kind="note", at=1.0)
    async with opened(PostgresStore(postgres_schema_url)) as store:
        with pytest.raises(DataError) as nul:
            await store.write(bare("wf-nul", name="bad\x00name"))
        await store.write(bare("wf-1"))
        with pytest.raises(DataError) as big:
            await store.write(Commit(workflow_id="wf-1", events=[event]))
        await store.write(new_workflow("wf-ok"))
        loaded = (await store.load("wf-nul"), await store.load("wf-ok"))
        stats = (store.reconnects, store.statistics().commits)
    assert (asyncpg.CharacterNotInRepertoireError, asyncpg.ProgramLimitExceededError) == (
        type(nul.value.__cause__),
        type(big.value.__cause__),
    )
    assert postgres_schema_url in str(nul.value)
    assert (None, "wf-ok") == (loaded[0], loaded[1].record.id if loaded[1] else None)
    assert (0, 2) == stats  # refused data is not a lost connection: nothing retried or reconnected


# bug 7: engines that join or leave --------------------------------------------------------
async def test_a_second_engine_gets_half_the_shards_at_once(postgres_schema_url: str) -> None:
    """A alone holds all 32 shards; B starts: within seconds (not a 10 s heartbeat) each holds 16, none twice."""
    first, second = worker(postgres_schema_url), worker(postgres_schema_url)
    async with first:
        alone = len(leases(first))
        async with second:
            await shares(first, second, expected=(SHARDS // 2, SHARDS // 2))
            overlap = set(leases(first)) & set(leases(second))
    assert SHARDS == alone
    assert set() == overlap


async def test_a_stopped_engine_leaves_at_once_and_its_work_goes_on(postgres_schema_url: str) -> None:
    """A stops gracefully: its engines row is gone, B holds all 32 at once, and a run in A's shard completes."""
    stays, leaves = worker(postgres_schema_url), worker(postgres_schema_url)
    async with stays, admin(postgres_schema_url) as conn:
        async with leaves:
            await shares(leaves, stays, expected=(SHARDS // 2, SHARDS // 2))
            left_owner, shard = leaves.statistics().owner, min(leases(leaves))
        run = await stays.submit(ONE_STAGE, workflow_id=in_shard(shard))
        await shares(stays, expected=(SHARDS,))
        view = await run.wait(timeout=5)
        rows = [str(r[0]) for r in await conn.fetch("SELECT owner FROM engines")]
    assert left_owner not in rows
    assert [stays.statistics().owner] == rows
    assert WorkflowStatus.SUCCEEDED == view.status


async def test_two_engines_started_together_share_the_shards_promptly(postgres_schema_url: str) -> None:
    """Two engines started at the same instant end up with 16 shards each within seconds."""
    engines = [worker(postgres_schema_url), worker(postgres_schema_url)]
    go, stop = anyio.Event(), anyio.Event()
    started = [anyio.Event(), anyio.Event()]

    async def run(i: int) -> None:  # each engine is entered and left by its own task
        await go.wait()
        async with engines[i]:
            started[i].set()
            await stop.wait()

    async with anyio.create_task_group() as tg, admin(postgres_schema_url) as conn:
        tg.start_soon(run, 0)
        tg.start_soon(run, 1)
        await anyio.wait_all_tasks_blocked()
        go.set()
        for event in started:
            await event.wait()

        async def balanced() -> bool:
            rows = await conn.fetch("SELECT count(*) FROM leases WHERE owner IS NOT NULL GROUP BY owner")
            return sorted(int(r[0]) for r in rows) == [SHARDS // 2, SHARDS // 2]

        await until(balanced, timeout=3)
        await shares(*engines, expected=(SHARDS // 2, SHARDS // 2))  # each has read its claim's answer
        held = [len(leases(e)) for e in engines]
        stop.set()
    assert [SHARDS // 2, SHARDS // 2] == held


async def test_a_pure_client_is_not_a_member(postgres_schema_url: str) -> None:
    """A client beside an engine owns nothing and has no engines row: the engine keeps all 32 shards."""
    engine, client = worker(postgres_schema_url), Engine(postgres_schema_url, client=True, lease=30, heartbeat=10)
    async with engine, client, admin(postgres_schema_url) as conn:
        run = await client.submit(ONE_STAGE)
        view = await run.wait(timeout=5)
        rows = [str(r[0]) for r in await conn.fetch("SELECT owner FROM engines")]
        held = (len(leases(engine)), len(leases(client)))
    assert [engine.statistics().owner] == rows
    assert (SHARDS, 0) == held
    assert WorkflowStatus.SUCCEEDED == view.status
