"""The embedded store: SQLite through aiosqlite, WAL mode, one writer connection owned by the writer task.

* An OS lock (``flock`` on the database file itself) refuses a second running
  engine on the same file under any of its names (symlinks, hard links); the
  kernel frees it the instant the holding process dies. Within one process a
  registry of the open files refuses before touching the file (see
  :func:`~stabilize_aio.store.sqlite.lock.lock_file`).
* Before anything is written the file is checked: a corrupt file, a foreign
  SQLite database and one from a newer schema each raise a named error and are
  left byte-identical (:mod:`~stabilize_aio.store.sqlite.schema`).
* Writes are group commits: per group ``BEGIN``, one ``executemany`` per
  statement, fence checks on the row counts, ``COMMIT``. Every write runs in
  the writer task on the writer connection: groups of ops, and, queued between
  them, the schedule statements and retention (one transaction).
* The statements are the named queries of ``sqlite/queries.sql``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from ... import _faults
from ..._errors import ConcurrencyError, ConfigurationError, CorruptDatabaseError, StoreError
from ...messages.durable import Durable
from ...model.records import WorkflowRecord
from ...model.status import WorkflowStatus
from ...model.values import Event
from .. import claims
from ..decode import decode_event_row, decode_loaded, decode_pending, decode_pending_rows, decode_workflow_row
from ..decode import encode_row as _enc
from ..protocol import LoadedWorkflow, Op, Pending, QuarantinedRow, ScheduleRow
from ..queries import listing, queries
from ..rows import FENCED, QUERY_OF, outbox_row, rows_for
from ..writer import GroupWriter, WritesThroughGroupWriter
from .errors import rollback, write_error
from .lock import HeldFile, lock_file, unlock_file
from .schema import check_file, migrate

SQL = queries("stabilize_aio.store.sqlite")

#: The errors of a write, sorted by :func:`~stabilize_aio.store.sqlite.errors.write_error`.
_WRITE_ERRORS = (sqlite3.Error, UnicodeEncodeError, OverflowError, MemoryError)


class SqliteStore(WritesThroughGroupWriter):
    """A store on one SQLite file.

    Args:
        path: the database file (created if missing).
        synchronous: SQLite's ``synchronous`` pragma: ``"FULL"`` (an fsync per
            group commit: survives power loss) or ``"NORMAL"`` (survives a
            process crash; faster).
    """

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "FULL") -> None:
        self.path = Path(path)
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ConfigurationError(f"synchronous must be FULL, NORMAL or EXTRA, not {synchronous!r}")
        self.synchronous = synchronous.upper()
        self.writer = GroupWriter(self)
        self.outbox_reads = 0
        self.migrations_applied: list[int] = []  # numbers of the migrations open() applied
        self._held: HeldFile | None = None  # the one-engine lock on the file, while open
        self._writer: aiosqlite.Connection | None = None  # used by the writer task only, once open
        self._reader: aiosqlite.Connection | None = None

    def __repr__(self) -> str:
        return f"<SqliteStore {str(self.path)!r} open={self._writer is not None}>"

    # lifecycle ---------------------------------------------------------------
    async def open(self) -> None:
        """Take the file lock, check the file and migrate it; raise a StoreError subclass if unusable."""
        self._held = lock_file(self.path)
        try:
            await check_file(self.path)
            self._writer = await self._connect()
            try:
                self.migrations_applied += await migrate(self._writer)
            except sqlite3.DatabaseError as exc:
                raise CorruptDatabaseError(f"{str(self.path)!r} is damaged: {exc}") from exc
            self._reader = await self._connect()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the connections, then release the file lock (idempotent)."""
        for conn in (self._reader, self._writer):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
        self._reader = self._writer = None
        if self._held is not None:
            unlock_file(self._held)  # after the connections: closing a descriptor of the file drops their locks
            self._held = None

    async def _connect(self) -> aiosqlite.Connection:
        try:
            conn = await aiosqlite.connect(self.path, isolation_level=None)
            await conn.execute(SQL["journal_wal"])
            await conn.execute(SQL["synchronous"].format(level=self.synchronous))
            await conn.execute(SQL["busy_timeout"])
        except sqlite3.DatabaseError as exc:
            raise CorruptDatabaseError(f"cannot open {str(self.path)!r}: {exc}") from exc
        return conn

    # writes (in the writer task) ---------------------------------------------------
    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One transaction on the writer connection: BEGIN, the block, COMMIT.

        Any error rolls it back (a failing rollback never hides it) and SQLite's
        errors come out mapped (``write_error``); the block's own errors, a
        ConcurrencyError of a fence included, pass unchanged.
        """
        conn = self._conn(self._writer)
        try:
            await conn.execute(SQL["begin"])
            try:
                yield conn
                await conn.execute(SQL["commit"])
            except BaseException as exc:
                await rollback(conn, exc)
                raise
        except _WRITE_ERRORS as exc:
            raise write_error(self.path, exc) from exc

    async def commit_group(self, ops: Sequence[Op]) -> int:
        """Write ``ops`` in one transaction; a fence that fails rolls it back (ConcurrencyError)."""
        rows = rows_for(ops, _enc)
        async with self._transaction() as conn:
            if _faults.armed:
                _faults.hit("writer.begin")
            for key, batch in rows.batches.items():  # in the order of rows.BATCHES
                if not batch:
                    continue
                cur = await conn.executemany(SQL[QUERY_OF[key]], batch)
                if key in FENCED and cur.rowcount != len(batch):
                    raise ConcurrencyError(f"fence failed on {key}: {cur.rowcount} of {len(batch)} rows matched")
            if _faults.armed:
                _faults.hit("writer.commit")
        return rows.nbytes

    async def _written(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[list[Any]]:
        """Run statements in one transaction in the writer task; the rows each returned."""

        async def work() -> list[list[Any]]:
            async with self._transaction() as conn:
                return [list(await conn.execute_fetchall(SQL[name], params)) for name, params in statements]

        return await self.writer.call(work)

    async def grant(self, keys: Sequence[str] | None, *, freed: bool = False) -> list[tuple[str, Durable]]:
        """Grant claims on shared keys (``store/claims.py``), writing their rows, in one transaction."""

        async def work() -> list[tuple[str, Durable]]:
            async with self._transaction() as conn:

                async def fetch(name: str, params: tuple[Any, ...]) -> list[Any]:
                    return list(await conn.execute_fetchall(SQL[name], params))

                async def many(name: str, params: list[tuple[Any, ...]]) -> None:
                    if params:
                        await conn.executemany(SQL[name], params)

                rows = await claims.grant(fetch, many, keys, freed=freed)
                if rows:
                    await conn.executemany(SQL["outbox_insert_new"], [outbox_row(w, m, _enc) for w, m in rows])
                return rows

        return await self.writer.call(work)

    async def put_schedule(self, row: ScheduleRow) -> None:
        """Create or replace a schedule."""
        await self._written([("schedule_put", (row.name, row.cron, row.next_at, row.body))])

    async def delete_schedule(self, name: str) -> bool:
        """Remove a schedule; False if there was none."""
        (deleted,) = await self._written([("schedule_delete", (name,))])
        return bool(deleted)

    async def advance_schedule(self, name: str, fired_at: float, next_at: float) -> bool:
        """Move a schedule past the tick ``fired_at`` (compare-and-set: False if someone else did)."""
        (advanced,) = await self._written([("schedule_advance", (next_at, name, fired_at))])
        return bool(advanced)

    async def delete_finished(self, ended_before: float, limit: int) -> int:
        """Retention: delete up to ``limit`` finished workflows ended before a time, in one transaction."""

        async def work() -> int:
            async with self._transaction() as conn:
                ids = [str(r[0]) for r in await conn.execute_fetchall(SQL["finished_before"], (ended_before, limit))]
                if ids:
                    listed = (json.dumps(ids),)
                    for name in ("delete_events_of", "delete_outbox_of", "delete_stages_of", "delete_workflows_of"):
                        await conn.execute(SQL[name], listed)
            return len(ids)

        return await self.writer.call(work)

    # reads -------------------------------------------------------------------
    def _conn(self, conn: aiosqlite.Connection | None) -> aiosqlite.Connection:
        if conn is None:
            raise StoreError("the store is not open")
        return conn

    async def _fetch(self, name: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return list(await self._conn(self._reader).execute_fetchall(SQL[name], params))
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"SQLite read failed on {str(self.path)!r}: {exc}") from exc

    async def load(self, workflow_id: str) -> LoadedWorkflow | None:
        """Read one workflow with its stages, or None."""
        rows = await self._fetch("workflow", (workflow_id,))
        if not rows:
            return None
        return decode_loaded(workflow_id, rows[0], await self._fetch("stages", (workflow_id,)))

    async def pending_messages(self) -> list[tuple[str, Pending]]:
        """Every outbox row (recovery at start): (workflow id, message)."""
        self.outbox_reads += 1
        return decode_pending_rows(await self._fetch("pending_all"))

    async def pending_for(self, workflow_id: str) -> list[Pending]:
        """The outbox rows of one workflow."""
        self.outbox_reads += 1
        rows = await self._fetch("pending_for", (workflow_id,))
        return [decode_pending(workflow_id, r[0], r[1]) for r in rows]

    async def pending_runs(
        self, task_type: str, limit: int, now: float, after: tuple[str, str] | None = None
    ) -> list[tuple[str, Pending]]:
        """Due RunTask rows of one task type in key order, after the key ``after``."""
        self.outbox_reads += 1
        start = after if after is not None else ("", "")
        return decode_pending_rows(await self._fetch("pending_runs", (task_type, now, start[0], start[1], limit)))

    async def events(self, workflow_id: str) -> list[Event]:
        """A workflow's history, in commit order."""
        return [decode_event_row(r) for r in await self._fetch("events", (workflow_id,))]

    async def quarantined(self, workflow_id: str | None = None) -> list[QuarantinedRow]:
        """The rows moved to the quarantine table (of one workflow), oldest first."""
        rows = await (
            self._fetch("quarantine_all") if workflow_id is None else self._fetch("quarantine_of", (workflow_id,))
        )
        return [
            QuarantinedRow(workflow_id=r[0], source=r[1], key=r[2], body=bytes(r[3]), error=r[4], at=r[5]) for r in rows
        ]

    async def statuses(self, workflow_ids: Sequence[str]) -> dict[str, WorkflowStatus]:
        """The status of each of these workflows that exists."""
        if not workflow_ids:
            return {}
        rows = await self._fetch("statuses", (json.dumps(list(workflow_ids)),))
        return {str(r[0]): WorkflowStatus(r[1]) for r in rows}

    async def list_schedules(self, *, due_before: float | None = None) -> list[ScheduleRow]:
        """Schedules by name, or only those whose next tick is at or before ``due_before``."""
        rows = await (
            self._fetch("schedules_all") if due_before is None else self._fetch("schedules_due", (due_before,))
        )
        return [ScheduleRow(name=r[0], cron=r[1], next_at=r[2], body=bytes(r[3])) for r in rows]

    async def list_workflows(self, *, status: str | None, application: str | None, limit: int) -> list[WorkflowRecord]:
        """Workflow records, newest first, filtered."""
        name = listing(status, application)
        params = [value for value in (status, application) if value is not None]
        rows = await self._fetch(name, [*params, limit])
        return [decode_workflow_row(str(r[0]), r[1:])[0] for r in rows]

    async def table_counts(self) -> dict[str, int]:
        """Row counts per table (a quick look for operators; tests check with it that nothing half-written stayed)."""
        (counts,) = await self._fetch("table_counts")
        return dict(zip(("workflows", "stages", "outbox", "events"), (int(n) for n in counts), strict=True))
