"""A group's transaction on PostgreSQL: one writer connection, set-based statements, fences, safe retries.

Per group ``BEGIN``, the lease fence (if any), one statement per table over
``unnest($1::text[], ...)`` arrays, fence checks on the command tags' row
counts (``UPDATE n``, ``DELETE n``), the group's ``pg_notify`` statements,
``COMMIT``. Serialization failures, deadlocks and lost connections are retried
in place; a connection that is gone is dropped and the retry opens a new one.
A group whose COMMIT's answer was lost is run again only when its fences would
refuse a second copy; otherwise the server is asked whether that transaction
committed (see :meth:`WriterConnection.commit`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import anyio

from ... import _faults
from ..._errors import ConcurrencyError, DataError, StoreError
from ...state.commit import Commit
from ..decode import encode_row as _enc
from ..protocol import Op
from ..queries import queries
from ..rows import FENCED, QUERY_OF, rows_for
from .errors import DRIVER_ERRORS, ServerError, UniqueViolation, connection_gone, refused_data, retrying
from .leases import Leases
from .notify import notifications
from .target import Target

log = logging.getLogger("stabilize_aio.store")

SQL = queries("stabilize_aio.store.postgres")


class _Commit:
    """What the attempts at one group know about their COMMIT."""

    __slots__ = ("lost", "track")

    def __init__(self, *, track: bool) -> None:
        #: Whether the group has an op a blind retry could write twice: a lost COMMIT is resolved by its id.
        self.track = track
        #: (transaction id, server pid) of an attempt whose COMMIT's answer was lost, until resolved.
        self.lost: tuple[int, int] | None = None


def _guarded(op: Op) -> bool:
    """Whether writing ``op`` a second time is refused by a fence or a unique key (so a blind retry is safe).

    A new workflow collides on its id; a turn that changes state, consumes rows
    or records events fails its version fence, its DELETE or its event keys. An
    outside command (rows for the owner, nothing else) has only the outbox key,
    and the owner may have consumed that row in between: written twice, it would
    be delivered twice.
    """
    if not isinstance(op, Commit):
        return True  # a NewWorkflow
    return op.workflow is not None or bool(op.stages) or bool(op.consumed) or bool(op.events)


class WriterConnection:
    """The group writer's connection to PostgreSQL, and the one transaction per group it commits.

    Args:
        target: where to connect.
        leases: the fence each group checks first.
        channels: ``(wake, done)``: the NOTIFY channels of a group's wake-ups and completions.
        attempts: how many times a transient failure is tried.
    """

    def __init__(self, target: Target, leases: Leases, channels: tuple[str, str], *, attempts: int) -> None:
        self._target = target
        self._leases = leases
        self._channels = channels
        self.attempts = attempts
        self.conn: Any = None  # asyncpg.Connection, used by the writer task only
        self.reconnects = 0

    def attach(self, conn: Any) -> Any:
        """Use ``conn`` (opened by the store) as the writer's connection; returns it."""
        self.conn = conn
        return conn

    def detach(self) -> Any:
        """Stop using the connection and hand it back (None if there was none) for the store to close."""
        conn, self.conn = self.conn, None
        return conn

    @property
    def pid(self) -> int | None:
        """The server process id of the connection (see ``pg_stat_activity``), if connected."""
        if self.conn is None or self.conn.is_closed():
            return None
        return int(self.conn.get_server_pid())

    async def commit(self, ops: Sequence[Op]) -> int:
        """Write ``ops`` in one transaction (retried in place when safe); return the bytes written.

        Raises:
            LeaseLostError: a turn's shard is not held at its epoch (a ConcurrencyError).
            ConcurrencyError: a fence failed or a row is already there.
            DataError: the database refused one op's data.
            StoreError: the database failed.
        """
        fence = self._leases.fence_of(ops)
        rows = rows_for(ops, _enc)
        statements: list[tuple[str, str, list[Any]]] = [
            (key, SQL[QUERY_OF[key]], list(zip(*batch, strict=True))) for key, batch in rows.batches.items() if batch
        ]
        wake, done = notifications(ops)
        for key, name, ids in (("wake", self._channels[0], wake), ("done", self._channels[1], done)):
            if ids:
                statements.append((key, SQL["notify"], [name, ids]))
        commit = _Commit(track=not all(_guarded(op) for op in ops))
        try:
            await retrying(self.attempts)(self._write_once, fence, statements, commit)
        except UniqueViolation as exc:
            raise ConcurrencyError(f"duplicate row: {exc}") from exc
        except DRIVER_ERRORS as exc:
            if refused_data(exc):
                raise DataError(f"PostgreSQL refused the data of a write on {self._target.display}: {exc!r}") from exc
            raise StoreError(f"PostgreSQL write failed on {self._target.display}: {exc!r}") from exc
        return rows.nbytes

    async def _write_once(
        self, fence: dict[int, int] | None, statements: list[tuple[str, str, list[Any]]], commit: _Commit
    ) -> None:
        """One attempt: the fence check and the whole group in one transaction, or nothing.

        A connection that is gone (cut by the server, broken in the driver) is
        dropped before the error goes on to the retry, which opens a new one; the
        server rolls back what the dead connection had begun. A retry is safe when
        the transaction cannot have committed: the error came before COMMIT was
        sent, or the server answered COMMIT with an error. When the COMMIT's answer
        was lost, the commit may have happened: a group of guarded ops (see
        ``_guarded``) is simply run again and fails its fences (ConcurrencyError,
        as for any turn that lost a race); a group with an op that a second write
        would duplicate carries its transaction id, and the next attempt asks the
        server what became of it before writing anything.
        """
        conn = await self._connection()
        if commit.lost is not None:
            try:
                committed = await self._committed(conn, *commit.lost)
            except BaseException as exc:
                await self._abandon(conn, exc)
                raise
            if committed:
                return
            commit.lost = None  # it was rolled back: write the group again
        xid, pid = 0, conn.get_server_pid()
        try:
            await conn.execute(SQL["begin"])
            if _faults.armed:
                _faults.hit("writer.begin")
            if commit.track:
                xid = int(await conn.fetchval(SQL["txid_current"]))
            if fence is not None:
                await self._leases.check(conn, fence)
            for key, sql, columns in statements:
                tag = await conn.execute(sql, *columns)
                if key in FENCED:
                    matched, expected = int(tag.rsplit(" ", 1)[1]), len(columns[0])
                    if matched != expected:
                        raise ConcurrencyError(f"fence failed on {key}: {matched} of {expected} rows matched")
            if _faults.armed:
                _faults.hit("writer.commit")
        except BaseException as exc:
            await self._abandon(conn, exc)
            raise
        try:
            await conn.execute(SQL["commit"])
        except BaseException as exc:
            if isinstance(exc, ServerError) and not connection_gone(exc):
                raise  # the server answered COMMIT with an error: the transaction was rolled back
            self._drop(conn)
            if commit.track:
                commit.lost = (xid, pid)
            raise

    async def _connection(self) -> Any:
        """The writer connection, a new one if there is none or it closed."""
        conn = self.conn
        if conn is None or conn.is_closed():
            conn = self.conn = await self._target.connect()
            self.reconnects += 1
        return conn

    def _drop(self, conn: Any) -> None:
        """Close a writer connection that is gone at once (the server rolls back its transaction)."""
        conn.terminate()
        if self.conn is conn:
            self.conn = None

    async def _abandon(self, conn: Any, exc: BaseException) -> None:
        """End a failed attempt: drop a connection that is gone, else roll back (a failed rollback drops it)."""
        if connection_gone(exc) or conn.is_closed():
            self._drop(conn)
        else:
            await _rollback(conn)

    async def _committed(self, conn: Any, xid: int, pid: int) -> bool:
        """Whether transaction ``xid``, whose COMMIT's answer was lost, committed.

        If it is still in progress (its backend, ``pid``, has not noticed the cut
        yet), that backend is terminated first, so the transaction cannot commit
        after this answer.

        Raises:
            StoreError: the server cannot tell (the outcome stays unknown).
        """
        status = await conn.fetchval(SQL["txid_status"], xid)
        if status == "in progress":
            await conn.execute(SQL["terminate_backend"], pid, xid)
            with anyio.move_on_after(10):
                while status == "in progress":
                    await anyio.sleep(0.01)  # the backend is ending: its transaction aborts with it
                    status = await conn.fetchval(SQL["txid_status"], xid)
        if status in ("committed", "aborted"):
            log.warning("the answer to a COMMIT on %s was lost; the transaction had %s", self._target.display, status)
            return bool(status == "committed")
        raise StoreError(
            f"the answer to a COMMIT on {self._target.display} was lost and its outcome is unknown ({status!r})"
        )


async def _rollback(conn: Any) -> None:
    """Roll back the writer's transaction; a connection that cannot is dropped (the next write reconnects).

    Whatever the rollback raises is swallowed: the error that made the attempt
    fail goes on, never hidden by the rollback's own.
    """
    if conn.is_closed():
        return  # the server rolled it back when the connection ended
    try:
        with anyio.CancelScope(shield=True), anyio.fail_after(10):
            await conn.execute(SQL["rollback"])
    except Exception:
        conn.terminate()
