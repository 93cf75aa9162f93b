"""Many engine processes on one PostgreSQL schema: shard leases, fencing by epoch, LISTEN/NOTIFY.

Every test runs on a fresh schema of the real server. Lease times are the
database's clock; where a test needs a lease to run out it uses a tiny lease
and polls the database until its clock has passed it (a condition with a
deadline, never a bare sleep). "Other processes" are other store instances
with their own connections.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, closing
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import msgspec
import pytest
from storekit import admin, running_store

from stabilize_aio import ConcurrencyError, LeaseLostError
from stabilize_aio.messages.durable import CancelWorkflow, RunTask
from stabilize_aio.model.records import WorkflowRecord
from stabilize_aio.model.status import WorkflowStatus
from stabilize_aio.state.commit import Commit
from stabilize_aio.store import NewWorkflow, upgrade
from stabilize_aio.store.postgres.store import PostgresStore
from stabilize_aio.store.shards import SHARDS, shard_of

pytestmark = pytest.mark.postgres


# helpers ---------------------------------------------------------------------
def opened(url: str, owner: str = "") -> AbstractAsyncContextManager[PostgresStore]:
    """An open store with its group writer running (as inside an engine), lease owner ``owner``."""
    store = PostgresStore(url)
    store.set_fence(owner, None)  # named; fenced once a test hands it shards
    return running_store(store)


def in_shard(shard: int, prefix: str = "wf") -> str:
    """A workflow id that hashes to ``shard``."""
    return next(f"{prefix}-{i}" for i in range(10_000) if shard_of(f"{prefix}-{i}") == shard)


def record(wid: str, version: int = 0) -> WorkflowRecord:
    """A workflow's record at ``version``."""
    return WorkflowRecord(id=wid, application="app", name="wf", version=version, created_at=1.0)


#: The row a submitted workflow of these tests has pending.
ROW = RunTask(id="r0.0.0.1.0", stage=0, task=0, task_type="t", generation=0, attempt=1)


def submit(wid: str, *, notify: bool = False) -> NewWorkflow:
    """The op that submits a workflow without stages, with a pending row (``ROW``) its start turn emits."""
    begin = Commit(workflow_id=wid, emitted=[ROW])
    return NewWorkflow(record=record(wid), specs=[], runs=[], begin=begin, notify=notify)


def turn(wid: str, base: int, *, finished: bool = False, notify: bool = False) -> Commit:
    """A turn that rewrites the workflow's row from version ``base`` to ``base + 1`` (finished: SUCCEEDED)."""
    written = record(wid, base + 1)
    if finished:
        written = msgspec.structs.replace(written, status=WorkflowStatus.SUCCEEDED)
    return Commit(workflow_id=wid, workflow=written, base_workflow_version=base, notify=notify)


async def until(condition: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll ``condition`` until it holds (fails the test after ``timeout`` seconds)."""
    with anyio.fail_after(timeout):
        while True:
            if await condition():
                return
            await anyio.sleep(0.02)  # polling the database: there is nothing to wait on


async def until_expired(conn: Any) -> None:
    """Wait until the database clock has passed every lease's end."""

    async def expired() -> bool:
        return bool(
            await conn.fetchval("SELECT bool_and(expires_at < extract(epoch FROM clock_timestamp())) FROM leases")
        )

    await until(expired)


async def versions(store: PostgresStore, *wids: str) -> list[int]:
    """The workflow rows' versions."""
    out = []
    for wid in wids:
        loaded = await store.load(wid)
        assert loaded is not None
        out.append(loaded.record.version)
    return out


class Inbox:
    """What a ``listen`` callback received, with a way to wait for one id."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self._arrived = anyio.Event()

    def __call__(self, workflow_id: str) -> None:
        self.received.append(workflow_id)
        self._arrived.set()

    async def wait_for(self, workflow_id: str, timeout: float = 10.0) -> None:
        """Wait until ``workflow_id`` has arrived."""
        with anyio.fail_after(timeout):
            while workflow_id not in self.received:
                await self._arrived.wait()
                self._arrived = anyio.Event()


# the tables -----------------------------------------------------------------
async def test_both_dialects_start_with_one_free_lease_per_shard(postgres_schema_url: str, tmp_path: Path) -> None:
    """Migration 0002 fills ``leases`` with shards 0..SHARDS-1, unowned at epoch 0, on PostgreSQL and SQLite."""
    query = "SELECT count(*), min(shard), max(shard), count(owner), sum(epoch), sum(expires_at) FROM leases"
    async with admin(postgres_schema_url) as conn:
        pg = tuple(await conn.fetchrow(query))
    path = tmp_path / "lite.db"
    await upgrade(f"sqlite:///{path}")
    with closing(sqlite3.connect(path)) as lite:
        sq = lite.execute(query).fetchone()
    assert (SHARDS, 0, SHARDS - 1, 0, 0, 0) == pg
    assert (SHARDS, 0, SHARDS - 1, 0, 0, 0) == sq


# claim, renew, release ---------------------------------------------------------
async def test_claims_give_owners_distinct_shards_lowest_first_and_bump_epochs(postgres_schema_url: str) -> None:
    """Two owners claim disjoint shards; a shard claimed again after release has its epoch bumped."""
    async with opened(postgres_schema_url) as store:
        a = await store.claim("a", 3, 30)
        b = await store.claim("b", 3, 30)
        await store.release("a", [0, 1])
        c = await store.claim("c", 3, 30)
    assert {0: 1, 1: 1, 2: 1} == a
    assert {3: 1, 4: 1, 5: 1} == b
    assert {0: 2, 1: 2, 6: 1} == c


async def test_a_live_lease_is_not_claimed_until_it_expires(postgres_schema_url: str) -> None:
    """While an owner's leases are live another gets nothing; once the database clock passes them, it gets them all."""
    async with opened(postgres_schema_url) as store, admin(postgres_schema_url) as conn:
        first = await store.claim("a", SHARDS, 0.2)
        while_live = await store.claim("b", SHARDS, 30)
        await until_expired(conn)
        after = await store.claim("b", SHARDS, 30)
        owners = {str(r[0]) for r in await conn.fetch("SELECT owner FROM leases")}
    assert dict.fromkeys(range(SHARDS), 1) == first
    assert {} == while_live
    assert dict.fromkeys(range(SHARDS), 2) == after
    assert {"b"} == owners


async def test_renew_reports_the_shards_lost_to_a_takeover(postgres_schema_url: str) -> None:
    """Renewal keeps an expired lease nobody took, and reports the one another owner claimed in between."""
    async with opened(postgres_schema_url) as store, admin(postgres_schema_url) as conn:
        held = await store.claim("a", 2, 0.2)
        await until_expired(conn)
        taken = await store.claim("b", 1, 30)
        lost = await store.renew("a", held, 30)
        next_free = await store.claim("b", 1, 30)
        nothing = await store.renew("a", {}, 30)
    assert {0: 1, 1: 1} == held
    assert {0: 2} == taken
    assert {0} == lost
    assert {2: 1} == next_free  # shard 1 was renewed: live again, not claimable
    assert set() == nothing


async def test_renew_does_not_extend_a_lease_at_another_epoch(postgres_schema_url: str) -> None:
    """An owner that claimed a shard again (a new epoch) cannot renew it with the old epoch."""
    async with opened(postgres_schema_url) as store:
        await store.claim("a", 1, 30)
        await store.release("a", [0])
        again = await store.claim("a", 1, 30)
        stale = await store.renew("a", {0: 1}, 30)
        current = await store.renew("a", again, 30)
    assert {0: 2} == again
    assert ({0}, set()) == (stale, current)


async def test_release_frees_only_the_owners_shards_at_once(postgres_schema_url: str) -> None:
    """A released lease is claimable at once; releasing someone else's shards does nothing."""
    async with opened(postgres_schema_url) as store:
        await store.claim("a", 4, 30)
        await store.release("b", [2, 3])
        await store.release("a", [0, 1])
        claimed = await store.claim("b", 4, 30)
    assert {0: 2, 1: 2, 4: 1, 5: 1} == claimed


async def test_a_claim_skips_a_lease_row_locked_by_a_committing_writer(postgres_schema_url: str) -> None:
    """While a transaction holds a lease row FOR SHARE (a writer's fence), a claim skips it instead of waiting."""
    async with opened(postgres_schema_url) as store, admin(postgres_schema_url) as conn:
        tx = conn.transaction()
        await tx.start()
        await conn.execute("SELECT shard FROM leases WHERE shard = 0 FOR SHARE")
        with anyio.fail_after(5):
            during = await store.claim("a", 1, 30)
        await tx.commit()
        after = await store.claim("a", 1, 30)
    assert ({1: 1}, {0: 1}) == (during, after)


async def test_concurrent_claims_never_give_a_shard_to_two_owners(postgres_schema_url: str) -> None:
    """Four stores claim at the same instant, twenty rounds: every shard goes to exactly one of them."""
    stores = [PostgresStore(postgres_schema_url) for _ in range(4)]
    rounds: list[list[dict[int, int]]] = []
    async with admin(postgres_schema_url) as conn:
        try:
            for store in stores:
                await store.open()
            for n in range(20):
                await conn.execute("UPDATE leases SET owner = NULL, expires_at = 0")
                go = anyio.Event()
                got: list[dict[int, int]] = [{} for _ in stores]
                async with anyio.create_task_group() as tg:
                    for i, store in enumerate(stores):
                        tg.start_soon(claim_at, go, got, i, store)
                    await anyio.wait_all_tasks_blocked()
                    go.set()
                rounds.append(got)
                rows = {
                    int(r[0]): (str(r[1]), int(r[2]))
                    for r in await conn.fetch("SELECT shard, owner, epoch FROM leases")
                }
                expected = {s: (f"owner-{i}", n + 1) for i, claimed in enumerate(got) for s in claimed}
                assert expected == rows
        finally:
            for store in stores:
                await store.close()
    for got in rounds:
        shards = [s for claimed in got for s in claimed]
        assert sorted(shards) == list(range(SHARDS))  # all taken, none twice
        assert all(len(claimed) <= 10 for claimed in got)


async def claim_at(go: anyio.Event, got: list[dict[int, int]], i: int, store: PostgresStore) -> None:
    """Claim 10 shards as ``owner-<i>`` the moment ``go`` is set, into ``got[i]``."""
    await go.wait()
    got[i] = await store.claim(f"owner-{i}", 10, 30)


async def test_heartbeat_counts_live_engines_and_forgets_dead_ones(postgres_schema_url: str) -> None:
    """Engines seen within a lease count; those silent for longer are not counted, and after three leases forgotten."""
    async with opened(postgres_schema_url) as store, admin(postgres_schema_url) as conn:
        alone = await store.heartbeat("a", 30)
        two = await store.heartbeat("b", 30)
        again = await store.heartbeat("a", 30)
        for owner, age in (("b", 45), ("d", 100)):
            await conn.execute(
                "INSERT INTO engines (owner, seen_at) VALUES ($1, extract(epoch FROM clock_timestamp()) - $2)"
                " ON CONFLICT (owner) DO UPDATE SET seen_at = excluded.seen_at",
                owner,
                float(age),
            )
        live = await store.heartbeat("c", 30)
        known = sorted(str(r[0]) for r in await conn.fetch("SELECT owner FROM engines"))
    assert (1, 2, 2) == (alone, two, again)
    assert 2 == live  # a and c; b is silent (kept), d is dead (forgotten)
    assert ["a", "b", "c"] == known


# fencing ------------------------------------------------------------------------
async def test_a_turn_of_a_lost_shard_is_refused_while_the_same_group_commits_a_held_one(
    postgres_schema_url: str,
) -> None:
    """After another owner takes shard s1, the old holder's turn there writes nothing; its turn in s2 commits."""
    w1, w2 = in_shard(1), in_shard(2)
    async with opened(postgres_schema_url, owner="a") as store, admin(postgres_schema_url) as conn:
        store.set_fence(store.owner, await store.claim("a", SHARDS, 30))
        await store.write(submit(w1))
        await store.write(submit(w2))
        await store.write(turn(w1, 0))
        await conn.execute("UPDATE leases SET expires_at = 0 WHERE shard = 1")  # a lease that ran out
        taken = await store.claim("b", SHARDS, 30)
        before = await store.table_counts()
        outcomes: dict[str, BaseException | None] = {}

        async def write(wid: str, op: Commit) -> None:
            try:
                await store.write(op)
            except LeaseLostError as exc:
                outcomes[wid] = exc
            else:
                outcomes[wid] = None

        async with anyio.create_task_group() as tg:  # both turns reach the writer in one round
            tg.start_soon(write, w1, msgspec.structs.replace(turn(w1, 1), consumed=[ROW.id]))
            tg.start_soon(write, w2, msgspec.structs.replace(turn(w2, 0), consumed=[ROW.id]))
        after = await store.table_counts()
        stats = store.statistics()
        rows = await versions(store, w1, w2)
    assert {1: 2} == taken
    refused = outcomes[w1]
    assert isinstance(refused, LeaseLostError)
    assert frozenset({1}) == refused.shards
    assert outcomes[w2] is None
    assert [1, 1] == rows  # w1 stays at the version of its last accepted turn
    assert (before["outbox"] - 1, 2, 1) == (after["outbox"], stats.largest_group, stats.groups_replayed)


async def test_no_claim_takes_a_shard_while_a_turn_fenced_in_it_commits(postgres_schema_url: str) -> None:
    """A fenced transaction holds its lease rows until COMMIT: an expired shard is claimable only after it."""
    wid = in_shard(6)
    schema = postgres_schema_url.rsplit("=", 1)[1]
    async with opened(postgres_schema_url, owner="a") as store, admin(postgres_schema_url) as conn:
        store.set_fence(store.owner, await store.claim("a", SHARDS, 30))
        await store.write(submit(wid))
        await conn.execute(  # the writer's UPDATE of workflows waits for advisory lock 7, which this test holds
            f"""
            CREATE FUNCTION {schema}.hold() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_advisory_xact_lock(7); RETURN NULL; END $$;
            CREATE TRIGGER hold BEFORE UPDATE ON {schema}.workflows FOR EACH STATEMENT EXECUTE FUNCTION {schema}.hold();
            UPDATE leases SET expires_at = 0 WHERE shard = 6;
            SELECT pg_advisory_lock(7);
            """
        )
        writer = store.writer_pid

        async def writer_waits() -> bool:
            return bool(await conn.fetchval("SELECT count(*) FROM pg_locks WHERE pid = $1 AND NOT granted", writer))

        async with anyio.create_task_group() as tg:
            tg.start_soon(store.write, turn(wid, 0))
            await until(writer_waits)  # inside the turn's transaction, after its fence check
            during = await store.claim("b", SHARDS, 30)
            await conn.execute("SELECT pg_advisory_unlock(7)")
        after = await store.claim("b", SHARDS, 30)
        rows = await versions(store, wid)
    assert ({}, {6: 2}) == (during, after)
    assert [1] == rows


async def test_a_turn_in_a_shard_not_held_at_all_is_refused(postgres_schema_url: str) -> None:
    """A turn of a workflow whose shard is missing from the fence is refused before anything is written."""
    wid = in_shard(5)
    async with opened(postgres_schema_url, owner="a") as store:
        await store.write(submit(wid))
        store.set_fence(store.owner, {})
        with pytest.raises(LeaseLostError) as caught:
            await store.write(turn(wid, 0))
        rows = await versions(store, wid)
    assert frozenset({5}) == caught.value.shards
    assert [0] == rows


async def test_an_expired_lease_nobody_took_still_fences_in(postgres_schema_url: str) -> None:
    """The epoch is the fence, not the time: a turn under an expired lease at the same owner and epoch commits."""
    wid = in_shard(0)
    async with opened(postgres_schema_url, owner="a") as store, admin(postgres_schema_url) as conn:
        store.set_fence(store.owner, await store.claim("a", 1, 0.2))
        await store.write(submit(wid))
        await until_expired(conn)
        await store.write(turn(wid, 0))
        rows = await versions(store, wid)
    assert [1] == rows


async def test_new_workflows_and_outside_commands_are_not_fenced(postgres_schema_url: str) -> None:
    """A process holding no lease may submit a workflow and write a command row for its owner."""
    wid = in_shard(3)
    async with opened(postgres_schema_url, owner="client") as store:
        store.set_fence(store.owner, {})
        await store.write(submit(wid, notify=True))
        await store.write(Commit(workflow_id=wid, emitted=[CancelWorkflow(id="cancel")], notify=True))
        pending = await store.pending_for(wid)
        reads = store.statistics().outbox_reads
    assert [CancelWorkflow(id="cancel"), ROW] == pending  # by deliver_at, then id
    assert 1 == reads


# notifications ----------------------------------------------------------------------
def test_channels_are_per_schema_and_fit_postgres_names() -> None:
    """Channel names carry the schema; a long schema name is cut to 63 bytes and ends in a hash."""
    plain = PostgresStore("postgresql://u@h/db")
    short = PostgresStore("postgresql://u@h/db?schema=tenant_a")
    longer = [PostgresStore(f"postgresql://u@h/db?schema={'s' * 60}{c}") for c in "xy"]
    assert ("stabilize_wake", "stabilize_done") == (plain.wake_channel, plain.done_channel)
    assert ("stabilize_wake_tenant_a", "stabilize_done_tenant_a") == (short.wake_channel, short.done_channel)
    assert [63, 63] == [len(s.wake_channel) for s in longer]
    assert longer[0].wake_channel != longer[1].wake_channel


async def test_committed_ops_wake_a_listener_in_another_store(postgres_schema_url: str) -> None:
    """A submitted workflow and an outside command marked ``notify`` wake ``on_wake``; a finished turn ``on_done``."""
    woken, done = Inbox(), Inbox()
    async with opened(postgres_schema_url) as listener, opened(postgres_schema_url) as sender:
        await listener.listen(woken, done)
        await sender.write(submit("wf-new", notify=True))
        await woken.wait_for("wf-new")
        async with anyio.create_task_group() as tg:  # one group: one set-based NOTIFY per channel
            tg.start_soon(sender.write, submit("wf-2", notify=True))
            tg.start_soon(sender.write, Commit(workflow_id="wf-new", emitted=[CancelWorkflow(id="c")], notify=True))
            tg.start_soon(sender.write, submit("wf-quiet"))
        await woken.wait_for("wf-2")
        await sender.write(turn("wf-new", 0, finished=True))
        await done.wait_for("wf-new")
    assert ["wf-new", "wf-2", "wf-new"] == woken.received
    assert ["wf-new"] == done.received


async def test_a_refused_or_rolled_back_turn_notifies_nobody(postgres_schema_url: str) -> None:
    """Turns refused by the lease fence or by a version fence send nothing; a later marker arrives alone."""
    woken, done = Inbox(), Inbox()
    wid = in_shard(4)
    async with opened(postgres_schema_url) as listener, opened(postgres_schema_url, owner="a") as sender:
        await listener.listen(woken, done)
        await sender.write(submit(wid))
        sender.set_fence(sender.owner, {4: 99})  # an epoch this owner never had
        with pytest.raises(LeaseLostError):
            await sender.write(turn(wid, 0, finished=True, notify=True))
        sender.set_fence(sender.owner, None)
        with pytest.raises(ConcurrencyError):
            await sender.write(turn(wid, 7, finished=True, notify=True))  # wrong base version
        await sender.write(
            msgspec.structs.replace(submit("marker", notify=True), begin=turn("marker", 0, finished=True))
        )
        await woken.wait_for("marker")
        await done.wait_for("marker")
    assert (["marker"], ["marker"]) == (woken.received, done.received)


async def test_a_store_does_not_hear_its_own_commits(postgres_schema_url: str) -> None:
    """Notifications from a store's own writer are not reported to it; another store's are."""
    woken, done = Inbox(), Inbox()
    async with opened(postgres_schema_url) as store, opened(postgres_schema_url) as other:
        await store.listen(woken, done)
        await store.write(msgspec.structs.replace(submit("mine", notify=True), begin=turn("mine", 0, finished=True)))
        await other.write(
            msgspec.structs.replace(submit("theirs", notify=True), begin=turn("theirs", 0, finished=True))
        )
        await woken.wait_for("theirs")
        await done.wait_for("theirs")
    assert (["theirs"], ["theirs"]) == (woken.received, done.received)


async def test_listeners_on_other_schemas_hear_nothing(postgres_url: str, postgres_schema_url: str) -> None:
    """A notification on one schema does not reach a listener on another schema of the same database."""
    other = f"{postgres_url}?schema=t_{uuid.uuid4().hex[:16]}"
    await upgrade(other)
    woken = Inbox()
    try:
        async with (
            opened(postgres_schema_url) as listener,
            opened(other) as stranger,
            opened(postgres_schema_url) as sender,
        ):
            await listener.listen(woken, Inbox())
            await stranger.write(submit("elsewhere", notify=True))
            await sender.write(submit("marker", notify=True))
            await woken.wait_for("marker")
    finally:
        conn = await asyncpg.connect(postgres_url)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {other.rsplit('=', 1)[1]} CASCADE")
        finally:
            await conn.close()
    assert ["marker"] == woken.received


async def test_a_dropped_listen_connection_is_replaced(postgres_url: str, postgres_schema_url: str) -> None:
    """The server kills the LISTEN connection: a new one listens again and later notifications arrive."""
    woken = Inbox()
    server = await asyncpg.connect(postgres_url)
    try:
        async with opened(postgres_schema_url) as listener, opened(postgres_schema_url) as sender:
            await listener.listen(woken, Inbox())
            killed = listener.listener_pid
            assert await server.fetchval("SELECT pg_terminate_backend($1, 10000)", killed)

            async def replaced() -> bool:
                return listener.listener_pid not in (None, killed)

            await until(replaced)
            await sender.write(submit("after", notify=True))
            await woken.wait_for("after")
            reconnects = listener.listener_reconnects
    finally:
        await server.close()
    assert 1 == reconnects
    assert ["after"] == woken.received


async def test_a_listener_that_stops_answering_is_replaced(postgres_schema_url: str) -> None:
    """A LISTEN connection that no longer answers its periodic ping is dropped and opened again."""
    woken = Inbox()
    store = PostgresStore(postgres_schema_url, listen_check=0.5)  # a ping answers in ~1 ms
    await store.open()
    try:
        async with opened(postgres_schema_url) as sender, anyio.create_task_group() as tg:
            tg.start_soon(store.run_writer)
            await store.listen(woken, Inbox())
            first = store.listener_pid
            listener = store._listener
            assert listener is not None
            listener._conn._transport.pause_reading()  # a stalled network: the server's answers stop arriving

            async def replaced() -> bool:
                return store.listener_pid not in (None, first)

            await until(replaced, timeout=30)
            listener.check = 30.0  # no more pings: the notification below must find this connection listening
            await sender.write(submit("after", notify=True))
            await woken.wait_for("after")
            tg.cancel_scope.cancel()
    finally:
        await store.close()
    assert ["after"] == woken.received
