"""The server store: PostgreSQL through asyncpg, one writer connection and a pool of readers.

* The schema is never created or changed on start: :func:`~.upgrade.upgrade`
  (the CLI's ``stabilize-aio db upgrade``) applies the numbered migrations of
  ``store/sql/postgres/``, one transaction each under an advisory lock, so two
  processes upgrading at once are safe. :meth:`PostgresStore.open` only checks
  the version and refuses a missing, older, newer or foreign schema.
* ``?schema=NAME`` in the URL keeps the tables in their own schema (the
  connections' ``search_path``); ``db upgrade`` creates it.
* Writes are group commits on the writer connection (:mod:`.commit`): per
  group ``BEGIN``, one set-based statement per table, fence checks on the
  command tags' row counts, ``COMMIT``. Serialization failures, deadlocks and
  lost connections are retried in place (a few times, with backoff), then
  raise StoreError; data the database refuses (SQLSTATE classes 22 and 54, and
  23 but a unique violation) is a DataError: one op's fault, not the
  database's (:mod:`.errors`).
* Many engine processes share a schema through shard leases (:mod:`.leases`,
  the :class:`~stabilize_aio.store.protocol.LeaseStore` capability): once
  :meth:`PostgresStore.set_fence` named the keeper's live ``{shard: epoch}``,
  every group first locks its shards' lease rows ``FOR SHARE`` and checks
  owner and epoch, so a process that lost a lease writes nothing
  (:class:`LeaseLostError`).
* Commits wake other processes with ``pg_notify`` in the same transaction
  (delivered at commit, never after a rollback); :meth:`PostgresStore.listen`
  (the :class:`~stabilize_aio.store.protocol.NotifyStore` capability) receives
  them on a dedicated connection (:class:`.notify.Listener`), kept up by a loop
  beside the writer. A join heartbeat, a release and a leave notify the
  members channel in their own statement, so the other engines rebalance at
  once.
* The statements are the named queries of ``postgres/queries.sql``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio

from ..._errors import StoreError
from ...messages.durable import Durable
from ...model.records import WorkflowRecord
from ...model.status import WorkflowStatus
from ...model.values import Event
from .. import claims
from ..decode import decode_event_row, decode_loaded, decode_pending, decode_pending_rows, decode_workflow_row
from ..decode import encode_row as _enc
from ..protocol import LoadedWorkflow, Op, Pending, QuarantinedRow, ScheduleRow
from ..queries import listing, queries
from ..rows import outbox_row
from ..writer import GroupWriter, WritesThroughGroupWriter
from .commit import WriterConnection
from .errors import DRIVER_ERRORS, connection_gone, retrying
from .leases import Leases
from .notify import Listener, channel
from .target import Target
from .upgrade import SCHEMA_VERSION, schema_version, upgrade

__all__ = ("PostgresStore", "upgrade")  # upgrade: where it was found before the store was split

SQL = queries("stabilize_aio.store.postgres")


class PostgresStore(WritesThroughGroupWriter):
    """A store on a PostgreSQL database (or one schema of it).

    Args:
        url: ``postgresql://user[:password]@host[:port]/database[?schema=NAME]``;
            other query options go to asyncpg (``sslmode=...``, server settings).
        readers: the size of the read pool.
        attempts: how many times a statement is tried when the failure is
            transient (a serialization failure, a deadlock, a lost connection).
        listen_check: seconds between pings of an idle LISTEN connection (a
            silently dead one is replaced).
    """

    def __init__(self, url: str, *, readers: int = 4, attempts: int = 4, listen_check: float = 30.0) -> None:
        self._target = Target.parse(url)
        self.readers = readers
        self.attempts = attempts
        self.listen_check = listen_check
        #: The NOTIFY channels: work for a workflow's owner, and a workflow finished.
        self.wake_channel = channel("wake", self._target.schema)
        self.done_channel = channel("done", self._target.schema)
        #: Engines joined, left or released shards (payload: the owner): a membership step is due.
        self.members_channel = channel("members", self._target.schema)
        self.writer = GroupWriter(self)
        self.outbox_reads = 0
        self._leases = Leases(self._fetch, self.members_channel)
        self._write_conn = WriterConnection(
            self._target, self._leases, (self.wake_channel, self.done_channel), attempts=attempts
        )
        self._pool: Any = None  # asyncpg.Pool of readers
        self._listener: Listener | None = None  # after listen()
        self._listening = anyio.Event()  # set by listen(): the keeper loop starts

    def __repr__(self) -> str:
        return f"<PostgresStore {self._target.display!r} open={self._pool is not None}>"

    @property
    def writer_pid(self) -> int | None:
        """The server process id of the writer connection (see ``pg_stat_activity``), if connected."""
        return self._write_conn.pid

    @property
    def reconnects(self) -> int:
        """How many times the writer connection was opened again after it was lost."""
        return self._write_conn.reconnects

    @property
    def listener_pid(self) -> int | None:
        """The server process id of the LISTEN connection, if connected."""
        return None if self._listener is None else self._listener.pid

    @property
    def listener_reconnects(self) -> int:
        """How many times the LISTEN connection was replaced."""
        return 0 if self._listener is None else self._listener.reconnects

    # lifecycle ---------------------------------------------------------------
    async def open(self) -> None:
        """Connect and check the schema; raise a StoreError subclass if it is missing, older, newer or foreign."""
        try:
            conn = self._write_conn.attach(await retrying(self.attempts)(self._target.connect))
            version = await schema_version(conn, self._target.display)
            if version < SCHEMA_VERSION:
                found = "has no stabilize_aio schema" if version == 0 else f"is at schema version {version}"
                raise StoreError(
                    f"{self._target.display} {found}; this stabilize_aio needs version {SCHEMA_VERSION}: "
                    f"run `stabilize-aio db upgrade --url {self._target.display}`"
                )
            self._pool = await self._target.pool(self.readers)
        except DRIVER_ERRORS as exc:
            await self.close()
            raise StoreError(f"cannot open PostgreSQL at {self._target.display}: {exc!r}") from exc
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the LISTEN connection, the reader pool and the writer connection (idempotent)."""
        pool, writer, listener = self._pool, self._write_conn.detach(), self._listener
        self._pool = self._listener = None
        self._listening = anyio.Event()
        if listener is not None:
            await listener.close()
        if pool is not None:
            try:
                with anyio.fail_after(10):
                    await pool.close()
            except (TimeoutError, *DRIVER_ERRORS):
                pool.terminate()
        if writer is not None and not writer.is_closed():
            try:
                with anyio.fail_after(10):
                    await writer.close()
            except (TimeoutError, *DRIVER_ERRORS):
                writer.terminate()

    async def run_writer(self) -> None:
        """The group writer loop and, beside it, the loop that keeps the LISTEN connection up."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._keep_listening, name="store listener")
            await self.writer.run()

    async def _keep_listening(self) -> None:
        await self._listening.wait()
        if self._listener is not None:
            await self._listener.keep()

    # writes ------------------------------------------------------------------
    async def commit_group(self, ops: Sequence[Op]) -> int:
        """Write ``ops`` in one transaction on the writer connection, fenced by the leases (see :mod:`.commit`)."""
        if self._pool is None:
            raise StoreError("the store is not open")
        return await self._write_conn.commit(ops)

    # leases (LeaseStore) -------------------------------------------------------
    @property
    def owner(self) -> str:
        """This engine process's lease owner id (see :meth:`set_fence`)."""
        return self._leases.owner

    @property
    def fence(self) -> Mapping[int, int] | None:
        """The {shard: epoch} every state-changing turn is checked against, or None (see :meth:`set_fence`)."""
        return self._leases.fence

    def set_fence(self, owner: str, held: Mapping[int, int] | None) -> None:
        """Fence every state-changing turn against ``held``, read at each group (pass the keeper's live mapping).

        ``owner`` is this process's lease owner; ``None`` turns fencing off,
        an empty mapping refuses every fenced turn (LeaseLostError).
        """
        self._leases.set_fence(owner, held)

    async def heartbeat(self, owner: str, lease: float) -> int:
        """Record ``owner`` as alive; return how many engines are alive (see :meth:`.leases.Leases.heartbeat`)."""
        return await self._leases.heartbeat(owner, lease)

    async def claim(self, owner: str, count: int, lease: float) -> dict[int, int]:
        """Lease up to ``count`` free or expired shards, lowest first: {shard: new epoch} (tried once)."""
        return await self._leases.claim(owner, count, lease)

    async def renew(self, owner: str, held: dict[int, int], lease: float) -> set[int]:
        """Extend the leases ``owner`` still holds at the given epochs; return the shards it lost."""
        return await self._leases.renew(owner, held, lease)

    async def release(self, owner: str, shards: Sequence[int]) -> None:
        """Hand ``owner``'s leases of ``shards`` back: free for the next claim at once (the members hear it)."""
        await self._leases.release(owner, shards)

    async def leave(self, owner: str) -> None:
        """A graceful stop: hand back every lease of ``owner`` and delete its engine row, then notify the members."""
        await self._leases.leave(owner)

    # notifications (NotifyStore) -----------------------------------------------------
    async def listen(
        self,
        on_wake: Callable[[str], None],
        on_done: Callable[[str], None],
        on_members: Callable[[str], None] | None = None,
    ) -> None:
        """Receive other processes' notifications: ``on_wake(workflow id)``, ``on_done(workflow id)``.

        ``on_members(owner)`` hears :attr:`members_channel`: an engine joined,
        left or released shards (this process's own membership statements too:
        they run on reader connections).

        The callbacks are plain functions, called in the event loop; this
        store's own commits are not reported (they can arrive before the
        writer's caller has even seen its COMMIT return). A dedicated
        connection LISTENs on :attr:`wake_channel` and :attr:`done_channel`; a
        loop beside the writer (:meth:`run_writer`) replaces it when it drops or
        stops answering. Notifications sent meanwhile are lost: poll as a safety
        net. A second call replaces the callbacks. :meth:`close` stops it.
        """
        if self._pool is None:
            raise StoreError("the store is not open")
        callbacks = {self.wake_channel: on_wake, self.done_channel: on_done}
        callbacks[self.members_channel] = on_members or _ignore
        if self._listener is not None:
            self._listener.replace_callbacks(callbacks)
            return
        listener = Listener(
            self._target.connect,
            callbacks,
            check=self.listen_check,
            display=self._target.display,
            own=lambda: self.writer_pid,
        )
        try:
            await retrying(self.attempts)(listener.open)
        except DRIVER_ERRORS as exc:
            raise StoreError(f"cannot LISTEN on {self._target.display}: {exc!r}") from exc
        self._listener = listener
        self._listening.set()

    # reads -------------------------------------------------------------------
    async def _fetch(self, sql: str, *args: Any, what: str = "read", attempts: int | None = None) -> list[Any]:
        pool = self._pool
        if pool is None:
            raise StoreError("the store is not open")
        try:
            rows: list[Any] = await retrying(attempts or self.attempts)(_fetch_once, pool, sql, args)
        except DRIVER_ERRORS as exc:
            raise StoreError(f"PostgreSQL {what} failed on {self._target.display}: {exc!r}") from exc
        return list(rows)

    async def load(self, workflow_id: str) -> LoadedWorkflow | None:
        """Read one workflow with its stages, or None."""
        rows = await self._fetch(SQL["workflow"], workflow_id)
        if not rows:
            return None
        return decode_loaded(workflow_id, rows[0], await self._fetch(SQL["stages"], workflow_id))

    async def pending_messages(self) -> list[tuple[str, Pending]]:
        """Every outbox row (recovery): (workflow id, message)."""
        self.outbox_reads += 1
        return decode_pending_rows(await self._fetch(SQL["pending_all"]))

    async def pending_for(self, workflow_id: str) -> list[Pending]:
        """The outbox rows of one workflow (another process woke us for it)."""
        self.outbox_reads += 1
        rows = await self._fetch(SQL["pending_for"], workflow_id)
        return [decode_pending(workflow_id, str(r[0]), r[1]) for r in rows]

    async def pending_runs(
        self, task_type: str, limit: int, now: float, after: tuple[str, str] | None = None
    ) -> list[tuple[str, Pending]]:
        """Due RunTask rows of one task type in key order, after the key ``after``."""
        self.outbox_reads += 1
        start = after if after is not None else ("", "")
        return decode_pending_rows(await self._fetch(SQL["pending_runs"], task_type, now, start[0], start[1], limit))

    async def events(self, workflow_id: str) -> list[Event]:
        """A workflow's history, in commit order."""
        return [decode_event_row(r) for r in await self._fetch(SQL["events"], workflow_id)]

    async def quarantined(self, workflow_id: str | None = None) -> list[QuarantinedRow]:
        """The rows moved to the quarantine table (of one workflow), oldest first."""
        rows = await (
            self._fetch(SQL["quarantine_all"])
            if workflow_id is None
            else self._fetch(SQL["quarantine_of"], workflow_id)
        )
        return [
            QuarantinedRow(workflow_id=str(r[0]), source=r[1], key=r[2], body=bytes(r[3]), error=r[4], at=r[5])
            for r in rows
        ]

    async def statuses(self, workflow_ids: Sequence[str]) -> dict[str, WorkflowStatus]:
        """The status of each of these workflows that exists (one query)."""
        rows = await self._fetch(SQL["statuses"], list(workflow_ids))
        return {str(r[0]): WorkflowStatus(r[1]) for r in rows}

    async def list_workflows(self, *, status: str | None, application: str | None, limit: int) -> list[WorkflowRecord]:
        """Workflow records, newest first, filtered."""
        name = listing(status, application)
        params = [value for value in (status, application) if value is not None]
        rows = await self._fetch(SQL[name], *params, limit)
        return [decode_workflow_row(str(r[0]), tuple(r)[1:])[0] for r in rows]

    async def table_counts(self) -> dict[str, int]:
        """Row counts per table (for tests and the CLI)."""
        (counts,) = await self._fetch(SQL["table_counts"])
        return dict(zip(("workflows", "stages", "outbox", "events"), (int(n) for n in counts), strict=True))

    # schedules and retention (one statement each, on a reader connection) ----------------
    async def grant(self, keys: Sequence[str] | None, *, freed: bool = False) -> list[tuple[str, Durable]]:
        """Grant claims on shared keys (``store/claims.py``) under each key's advisory lock, writing their rows
        and waking their runs' owners, in one transaction (retried whole when the failure is transient)."""
        pool = self._pool
        if pool is None:
            raise StoreError("the store is not open")
        try:
            return await retrying(self.attempts)(self._grant_once, pool, keys, freed)
        except DRIVER_ERRORS as exc:
            raise StoreError(f"PostgreSQL grant failed on {self._target.display}: {exc!r}") from exc

    async def _grant_once(self, pool: Any, keys: Sequence[str] | None, freed: bool) -> list[tuple[str, Durable]]:
        async with pool.acquire() as conn:
            try:
                async with conn.transaction():

                    async def fetch(name: str, params: tuple[Any, ...]) -> list[Any]:
                        return list(await conn.fetch(SQL[name], *params))

                    async def many(name: str, params: list[tuple[Any, ...]]) -> None:
                        if params:
                            await conn.executemany(SQL[name], params)

                    rows = await claims.grant(fetch, many, keys, freed=freed, lock=True)
                    if rows:
                        columns = list(zip(*(outbox_row(w, m, _enc) for w, m in rows), strict=True))
                        await conn.execute(SQL["outbox_insert_new"], *columns)
                        await conn.execute(SQL["notify"], self.wake_channel, sorted({w for w, _ in rows}))
            except Exception as exc:
                if connection_gone(exc):
                    conn.terminate()
                raise
        return rows

    async def put_schedule(self, row: ScheduleRow) -> None:
        """Create or replace a schedule."""
        await self._fetch(SQL["schedule_put"], row.name, row.cron, row.next_at, row.body, what="schedule write")

    async def delete_schedule(self, name: str) -> bool:
        """Remove a schedule; False if there was none."""
        return bool(await self._fetch(SQL["schedule_delete"], name, what="write"))

    async def list_schedules(self, *, due_before: float | None = None) -> list[ScheduleRow]:
        """Schedules by name, or only those whose next tick is at or before ``due_before``."""
        rows = await (
            self._fetch(SQL["schedules_all"]) if due_before is None else self._fetch(SQL["schedules_due"], due_before)
        )
        return [ScheduleRow(name=r[0], cron=r[1], next_at=r[2], body=bytes(r[3])) for r in rows]

    async def advance_schedule(self, name: str, fired_at: float, next_at: float) -> bool:
        """Move a schedule past the tick ``fired_at`` (compare-and-set: False if someone else did)."""
        return bool(await self._fetch(SQL["schedule_advance"], next_at, name, fired_at, what="schedule write"))

    async def delete_finished(self, ended_before: float, limit: int) -> int:
        """Retention: delete up to ``limit`` finished workflows that ended before a time (one statement)."""
        return len(await self._fetch(SQL["delete_finished"], ended_before, limit, what="retention"))


async def _fetch_once(pool: Any, sql: str, args: tuple[Any, ...]) -> list[Any]:
    """One read on a pooled connection; one that is gone is closed, so the pool replaces it (the retry reads again)."""
    async with pool.acquire() as conn:
        try:
            rows: list[Any] = await conn.fetch(sql, *args)
        except Exception as exc:
            if connection_gone(exc):
                conn.terminate()
            raise
    return rows


def _ignore(payload: str) -> None:
    """A LISTEN callback for a channel nobody asked to hear."""
