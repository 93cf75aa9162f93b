"""The server store: PostgreSQL through asyncpg, one writer connection and a pool of readers.

* The schema is never created or changed on start: :func:`upgrade` (the CLI's
  ``stabilize-aio db upgrade``) applies the numbered migrations of
  ``store/sql/postgres/``, one transaction each under an advisory lock, so two
  processes upgrading at once are safe. :meth:`PostgresStore.open` only checks
  the version and refuses a missing, older, newer or foreign schema.
* ``?schema=NAME`` in the URL keeps the tables in their own schema (the
  connections' ``search_path``); ``db upgrade`` creates it.
* Writes are group commits on the writer connection: per group ``BEGIN``, one
  set-based statement per table over ``unnest($1::text[], ...)`` arrays,
  fence checks on the command tags' row counts (``UPDATE n``, ``DELETE n``),
  ``COMMIT``.
* Serialization failures, deadlocks and lost connections are retried in place
  (a few times, with backoff), then raise StoreError. A connection is "lost"
  whatever state the driver reports it in (one the server cut while the event
  loop was blocked fails with ``InternalClientError`` before it reports closed):
  the writer drops it and reconnects, a reader is discarded from the pool. A
  group whose COMMIT's answer was lost is run again only when its fences would
  refuse a second copy (ConcurrencyError if it had committed); otherwise the
  server is asked whether that transaction committed. Data the database
  refuses (SQLSTATE classes 22 and 54, and 23 but a unique violation) is a
  DataError: one op's fault, not the database's.
* Many engine processes share a schema through shard leases (table
  ``leases``, times on the database clock): ``claim``/``renew``/``release``
  are single statements, and when :attr:`~Store.fence` is set every group
  first locks its shards' lease rows ``FOR SHARE`` and checks owner and epoch,
  so a process that lost a lease writes nothing (:class:`LeaseLostError`).
* Commits wake other processes with ``pg_notify`` in the same transaction
  (delivered at commit, never after a rollback); :meth:`PostgresStore.listen`
  receives them on a dedicated connection (``_pg_notify.Listener``), kept up
  by a loop beside the writer. A join heartbeat, a release and a leave notify
  the members channel in their own statement, so the other engines rebalance
  at once.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import asyncpg
import msgspec
import tenacity

from ... import _faults
from ..._errors import ConcurrencyError, DataError, ForeignDatabaseError, LeaseLostError, SchemaTooNewError, StoreError
from ...model.records import WorkflowRecord
from ...model.status import WorkflowStatus
from ...model.values import Event
from ...state.commit import Transition
from ..decode import (
    EVENT_COLUMNS,
    STAGE_COLUMNS,
    WORKFLOW_COLUMNS,
    decode_event_row,
    decode_loaded,
    decode_pending,
    decode_pending_rows,
    decode_workflow_row,
)
from ..decode import encode_row as _enc
from ..migrate import migrations as dialect_migrations
from ..protocol import LoadedWorkflow, Op, Pending, QuarantinedRow, ScheduleRow, Store
from ..rows import rows_for
from ..shards import shard_of
from ..url import redact_url
from .notify import NOTIFY, Listener, channel, notifications

log = logging.getLogger("stabilize_aio.store")

APP_ID = "stabilize_aio"

TABLES = ("stabilize_meta", "workflows", "stages", "outbox", "events", "leases", "engines", "schedules", "quarantine")

#: The key of the transaction-level advisory lock every migration takes ("stabilz").
MIGRATION_LOCK = int.from_bytes(b"stabilz", "big")

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

# One set-based statement per table: parameter $n is the array of column n of
# the batch that rows_for() built for the key. The order is the order of execution.
_SQL = {
    "wf_insert": "INSERT INTO workflows (id, application, name, status, version, created_at, ended_at, body)"
    " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::float8[],"
    " $7::float8[], $8::bytea[])",
    "stage_insert": "INSERT INTO stages (workflow_id, idx, ref_id, status, version, spec, run)"
    " SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::bigint[], $6::bytea[], $7::bytea[])",
    "wf_update": "UPDATE workflows AS w SET status = u.status, version = u.version, ended_at = u.ended_at,"
    " body = u.body FROM unnest($1::text[], $2::bigint[], $3::float8[], $4::bytea[], $5::text[], $6::bigint[])"
    " AS u (status, version, ended_at, body, id, base) WHERE w.id = u.id AND w.version = u.base",
    "stage_update": "UPDATE stages AS s SET status = u.status, version = u.version, run = u.run"
    " FROM unnest($1::text[], $2::bigint[], $3::bytea[], $4::text[], $5::int[], $6::bigint[])"
    " AS u (status, version, run, workflow_id, idx, base)"
    " WHERE s.workflow_id = u.workflow_id AND s.idx = u.idx AND s.version = u.base",
    "outbox_delete": "DELETE FROM outbox AS o USING unnest($1::text[], $2::text[]) AS d (workflow_id, id)"
    " WHERE o.workflow_id = d.workflow_id AND o.id = d.id",
    "outbox_discard": "DELETE FROM outbox AS o USING unnest($1::text[], $2::text[]) AS d (workflow_id, id)"
    " WHERE o.workflow_id = d.workflow_id AND o.id = d.id",
    "outbox_purge": "DELETE FROM outbox WHERE workflow_id = ANY($1::text[])",
    "outbox_insert": "INSERT INTO outbox (workflow_id, id, deliver_at, kind, task_type, body)"
    " SELECT * FROM unnest($1::text[], $2::text[], $3::float8[], $4::text[], $5::text[], $6::bytea[])",
    "event_insert": "INSERT INTO events (workflow_id, key, kind, stage, at, body)"
    " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::bytea[])",
    "stage_respec": "UPDATE stages AS s SET spec = u.spec FROM unnest($1::bytea[], $2::text[], $3::int[])"
    " AS u (spec, workflow_id, idx) WHERE s.workflow_id = u.workflow_id AND s.idx = u.idx",
    "quarantine_insert": "INSERT INTO quarantine (workflow_id, source, key, body, error, at)"
    " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::text[], $6::float8[])",
}

# A row that is not there (or at another version) fails the whole group; a
# discard is a late or repeated command and may find nothing.
_FENCED = ("wf_update", "stage_update", "outbox_delete")

# Errors after which the same work may succeed: the transaction lost a
# serialization race or a deadlock, or the connection went away.
_TRANSIENT: tuple[type[BaseException], ...] = (
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    ConnectionError,
    TimeoutError,
)

_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)

# SQLSTATE classes of errors about one op's data, not the database: 22 data exception
# (a NUL byte, a bad encoding, a value out of range), 54 program limit exceeded (an
# index row too big), 23 integrity violation (but a unique violation is a fence).
_DATA_CLASSES = ("22", "54", "23")

_UNIQUE_VIOLATION = "23505"


def _connection_gone(exc: BaseException) -> bool:
    """Whether ``exc`` says the connection is unusable, whatever state the driver reports it in.

    A connection the server cut while the event loop was blocked may still look
    open: it read the server's FATAL before the EOF, and the next statement fails
    with ``InternalClientError`` ("cannot switch to state ...") or an
    ``InterfaceError`` ("another operation is in progress", "connection is
    closed"). Such a connection is dropped and the work runs on a new one. Client
    configuration errors (``ValueError``s, unsupported features) are not.
    """
    if isinstance(exc, ValueError | asyncpg.UnsupportedClientFeatureError | asyncpg.UnsupportedServerFeatureError):
        return False
    return isinstance(
        exc,
        asyncpg.PostgresConnectionError
        | asyncpg.AdminShutdownError
        | asyncpg.CrashShutdownError
        | asyncpg.CannotConnectNowError
        | asyncpg.InternalClientError
        | asyncpg.InterfaceError
        | OSError,
    )


def _retryable(exc: BaseException) -> bool:
    """Errors after which the same work may succeed (on a new connection if this one is gone)."""
    return isinstance(exc, _TRANSIENT) or _connection_gone(exc)


def _refused_data(exc: BaseException) -> bool:
    """Whether the database refused the data of a statement (a DataError), not failed as a database."""
    state = getattr(exc, "sqlstate", None)
    return isinstance(state, str) and state[:2] in _DATA_CLASSES and state != _UNIQUE_VIOLATION


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
    if not isinstance(op, Transition):
        return True  # a NewWorkflow
    return op.workflow is not None or bool(op.stages) or bool(op.consumed) or bool(op.events)


# Leases. Every time is the database clock's (``_NOW``), so machines' clocks never
# matter; lease rows are locked in shard order, so two statements never deadlock.
_NOW = "extract(epoch FROM clock_timestamp())::float8"

# Count the engines seen within a lease (this one included), forget those silent for three.
# An engine that joins (it was not counted: no row, or a row older than a lease) tells
# the others on the members channel ($3), in the same statement: they rebalance at once.
# (Every part of the statement sees the table as it was before the INSERT.)
_HEARTBEAT = f"""
WITH now AS (SELECT {_NOW} AS t),
seen AS (
    INSERT INTO engines (owner, seen_at) SELECT $1::text, t FROM now
    ON CONFLICT (owner) DO UPDATE SET seen_at = excluded.seen_at
),
gone AS (DELETE FROM engines AS e USING now WHERE e.owner <> $1::text AND e.seen_at < now.t - 3 * $2::float8),
joined AS (
    SELECT pg_notify($3::text, $1::text) FROM now WHERE NOT EXISTS (
        SELECT 1 FROM engines AS e WHERE e.owner = $1::text AND e.seen_at >= now.t - $2::float8
    )
)
SELECT 1 + (SELECT count(*) FROM engines AS e, now WHERE e.owner <> $1::text AND e.seen_at >= now.t - $2::float8),
    (SELECT count(*) FROM joined)
"""

# Take up to $2 free or expired shards, lowest first; rows another claimer (or a
# committing writer's fence) has locked are skipped, never waited for.
_CLAIM = f"""
WITH free AS (
    SELECT shard FROM leases WHERE owner IS NULL OR expires_at < {_NOW}
    ORDER BY shard LIMIT $2::int FOR UPDATE SKIP LOCKED
)
UPDATE leases AS l SET owner = $1::text, epoch = l.epoch + 1, expires_at = {_NOW} + $3::float8
FROM free WHERE l.shard = free.shard
RETURNING l.shard, l.epoch
"""

# Extend the leases still held at the epochs claimed; the shards not returned are lost.
_RENEW = f"""
WITH held AS (
    SELECT l.shard FROM leases AS l JOIN unnest($2::int[], $3::bigint[]) AS h (shard, epoch)
    ON l.shard = h.shard AND l.epoch = h.epoch AND l.owner = $1::text
    ORDER BY l.shard FOR NO KEY UPDATE OF l
)
UPDATE leases AS l SET expires_at = {_NOW} + $4::float8 FROM held WHERE l.shard = held.shard
RETURNING l.shard
"""

# Hand leases back; if any was freed, tell the members channel ($3) so a claimer takes them at once.
_RELEASE = """
WITH mine AS (
    SELECT shard FROM leases WHERE owner = $1::text AND shard = ANY($2::int[])
    ORDER BY shard FOR NO KEY UPDATE
),
freed AS (UPDATE leases AS l SET owner = NULL, expires_at = 0 FROM mine WHERE l.shard = mine.shard RETURNING l.shard)
SELECT pg_notify($3::text, $1::text) WHERE EXISTS (SELECT 1 FROM freed)
"""

# A graceful stop: every lease of the owner handed back and its engine row gone, one
# statement and one notification ($2), so the others count one engine fewer and claim
# the freed shards in the same step.
_LEAVE = """
WITH mine AS (SELECT shard FROM leases WHERE owner = $1::text ORDER BY shard FOR NO KEY UPDATE),
freed AS (UPDATE leases AS l SET owner = NULL, expires_at = 0 FROM mine WHERE l.shard = mine.shard),
gone AS (DELETE FROM engines WHERE owner = $1::text)
SELECT pg_notify($2::text, $1::text)
"""

# The fence, first in a group's transaction: the shards still held at their epochs,
# locked FOR SHARE until the commit, so a claim (an UPDATE) cannot slip in between.
# An expired lease nobody took is still ours: the epoch is the fence, not the time.
_FENCE = """
SELECT l.shard FROM leases AS l JOIN unnest($1::int[], $2::bigint[]) AS f (shard, epoch) ON l.shard = f.shard
WHERE l.owner = $3::text AND l.epoch = f.epoch
ORDER BY l.shard FOR SHARE OF l
"""


def migrations() -> list[tuple[int, str]]:
    """The numbered PostgreSQL migrations shipped with the package, in order."""
    return dialect_migrations("postgres")


SCHEMA_VERSION = max(n for n, _ in migrations())


class _Target(msgspec.Struct, frozen=True, kw_only=True):
    """Where a URL points: the DSN asyncpg gets, the schema, and a printable name."""

    dsn: str
    schema: str | None
    display: str

    @classmethod
    def parse(cls, url: str) -> _Target:
        """Split ``?schema=NAME`` off a ``postgresql://`` URL (asyncpg takes the rest)."""
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        schemas = [v for k, v in query if k == "schema"]
        schema = schemas[-1] if schemas else None
        if schema is not None and not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(
                f"schema {schema!r} in the store URL is not a plain identifier (lowercase letters, digits, _)"
            )
        rest = urlencode([(k, v) for k, v in query if k != "schema"])
        dsn = urlunsplit((parts.scheme, parts.netloc, parts.path, rest, parts.fragment))
        display = redact_url(urlunsplit((parts.scheme, parts.netloc, parts.path, parts.query, "")))
        return cls(dsn=dsn, schema=schema, display=display)

    def server_settings(self) -> dict[str, str]:
        """Session settings of every connection (the schema goes first in ``search_path``)."""
        return {} if self.schema is None else {"search_path": self.schema}

    async def connect(self) -> Any:
        """One new connection (an ``asyncpg.Connection``)."""
        return await asyncpg.connect(self.dsn, timeout=10, server_settings=self.server_settings())


class PostgresStore(Store):
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

    supports_leases = True

    def __init__(self, url: str, *, readers: int = 4, attempts: int = 4, listen_check: float = 30.0) -> None:
        super().__init__()
        self._target = _Target.parse(url)
        self.readers = readers
        self.attempts = attempts
        self.listen_check = listen_check
        self.reconnects = 0
        #: The NOTIFY channels: work for a workflow's owner, and a workflow finished.
        self.wake_channel = channel("wake", self._target.schema)
        self.done_channel = channel("done", self._target.schema)
        #: Engines joined, left or released shards (payload: the owner): a membership step is due.
        self.members_channel = channel("members", self._target.schema)
        self._writer: Any = None  # asyncpg.Connection, owned by the group writer
        self._pool: Any = None  # asyncpg.Pool of readers
        self._listener: Listener | None = None  # after listen()
        self._listening = anyio.Event()  # set by listen(): the keeper loop starts

    def __repr__(self) -> str:
        return f"<PostgresStore {self._target.display!r} open={self._pool is not None}>"

    @property
    def writer_pid(self) -> int | None:
        """The server process id of the writer connection (see ``pg_stat_activity``), if connected."""
        if self._writer is None or self._writer.is_closed():
            return None
        return int(self._writer.get_server_pid())

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
            self._writer = await self._retrying()(self._target.connect)
            version = await _schema_version(self._writer, self._target.display)
            if version < SCHEMA_VERSION:
                found = "has no stabilize_aio schema" if version == 0 else f"is at schema version {version}"
                raise StoreError(
                    f"{self._target.display} {found}; this stabilize_aio needs version {SCHEMA_VERSION}: "
                    f"run `stabilize-aio db upgrade --url {self._target.display}`"
                )
            self._pool = await asyncpg.create_pool(
                self._target.dsn,
                min_size=1,
                max_size=self.readers,
                timeout=10,
                server_settings=self._target.server_settings(),
                reset=_keep_session,
            )
        except _DRIVER_ERRORS as exc:
            await self.close()
            raise StoreError(f"cannot open PostgreSQL at {self._target.display}: {exc!r}") from exc
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the LISTEN connection, the reader pool and the writer connection (idempotent)."""
        pool, writer, listener = self._pool, self._writer, self._listener
        self._pool = self._writer = self._listener = None
        self._listening = anyio.Event()
        if listener is not None:
            await listener.close()
        if pool is not None:
            try:
                with anyio.fail_after(10):
                    await pool.close()
            except (TimeoutError, *_DRIVER_ERRORS):
                pool.terminate()
        if writer is not None and not writer.is_closed():
            try:
                with anyio.fail_after(10):
                    await writer.close()
            except (TimeoutError, *_DRIVER_ERRORS):
                writer.terminate()

    async def run_writer(self) -> None:
        """The group writer loop and, beside it, the loop that keeps the LISTEN connection up."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._keep_listening, name="store listener")
            await super().run_writer()

    async def _keep_listening(self) -> None:
        await self._listening.wait()
        if self._listener is not None:
            await self._listener.keep()

    def _retrying(self, attempts: int | None = None) -> tenacity.AsyncRetrying:
        return tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception(_retryable),
            stop=tenacity.stop_after_attempt(attempts or self.attempts),
            wait=tenacity.wait_exponential(multiplier=0.05, max=1.0),
            sleep=anyio.sleep,
            before_sleep=_log_retry,
            reraise=True,
        )

    # writes ------------------------------------------------------------------
    async def _write_ops(self, ops: Sequence[Op]) -> None:
        if self._pool is None:
            raise StoreError("the store is not open")
        fence = self._fence_of(ops)
        rows = rows_for(ops, _enc)
        statements: list[tuple[str, str, list[Any]]] = [
            (key, _SQL[key], list(zip(*batch, strict=True))) for key, batch in rows.batches.items() if batch
        ]
        wake, done = notifications(ops)
        for key, name, ids in (("wake", self.wake_channel, wake), ("done", self.done_channel, done)):
            if ids:
                statements.append((key, NOTIFY, [name, ids]))
        commit = _Commit(track=not all(_guarded(op) for op in ops))
        try:
            await self._retrying()(self._write_once, fence, statements, commit)
        except asyncpg.UniqueViolationError as exc:
            raise ConcurrencyError(f"duplicate row: {exc}") from exc
        except _DRIVER_ERRORS as exc:
            if _refused_data(exc):
                raise DataError(f"PostgreSQL refused the data of a write on {self._target.display}: {exc!r}") from exc
            raise StoreError(f"PostgreSQL write failed on {self._target.display}: {exc!r}") from exc
        self.commits += 1
        self.bytes_written += rows.nbytes

    def _fence_of(self, ops: Sequence[Op]) -> dict[int, int] | None:
        """{shard: epoch} the group's turns need, or None when nothing is fenced.

        Only turns that change a workflow or its stages, or consume rows, are
        fenced: a new workflow and an outside command (a row for the owner, with
        ``notify``) may be written by any process.

        Raises:
            LeaseLostError: a turn's shard is not leased by this process at all.
        """
        fence = self.fence
        if fence is None:
            return None
        shards = {shard_of(op.workflow_id) for op in ops if isinstance(op, Transition) and _changes_state(op)}
        if not shards:
            return None
        missing = shards - fence.keys()
        if missing:
            raise LeaseLostError(
                f"{self.owner!r} holds no lease on shards {sorted(missing)}", shards=frozenset(missing)
            )
        return {shard: fence[shard] for shard in shards}

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
        conn = await self._writer_connection()
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
            await conn.execute("BEGIN")
            if _faults.armed:
                _faults.hit("writer.begin")
            if commit.track:
                xid = int(await conn.fetchval("SELECT txid_current()"))
            if fence is not None:
                held = {int(r[0]) for r in await conn.fetch(_FENCE, list(fence), list(fence.values()), self.owner)}
                lost = fence.keys() - held
                if lost:
                    raise LeaseLostError(
                        f"{self.owner!r} lost the leases of shards {sorted(lost)}", shards=frozenset(lost)
                    )
            for key, sql, columns in statements:
                tag = await conn.execute(sql, *columns)
                if key in _FENCED:
                    matched, expected = int(tag.rsplit(" ", 1)[1]), len(columns[0])
                    if matched != expected:
                        raise ConcurrencyError(f"fence failed on {key}: {matched} of {expected} rows matched")
            if _faults.armed:
                _faults.hit("writer.commit")
        except BaseException as exc:
            await self._abandon(conn, exc)
            raise
        try:
            await conn.execute("COMMIT")
        except BaseException as exc:
            if isinstance(exc, asyncpg.PostgresError) and not _connection_gone(exc):
                raise  # the server answered COMMIT with an error: the transaction was rolled back
            self._drop_writer(conn)
            if commit.track:
                commit.lost = (xid, pid)
            raise

    async def _writer_connection(self) -> Any:
        """The writer connection, a new one if there is none or it closed."""
        conn = self._writer
        if conn is None or conn.is_closed():
            conn = self._writer = await self._target.connect()
            self.reconnects += 1
        return conn

    def _drop_writer(self, conn: Any) -> None:
        """Close a writer connection that is gone at once (the server rolls back its transaction)."""
        conn.terminate()
        if self._writer is conn:
            self._writer = None

    async def _abandon(self, conn: Any, exc: BaseException) -> None:
        """End a failed attempt: drop a connection that is gone, else roll back (a failed rollback drops it)."""
        if _connection_gone(exc) or conn.is_closed():
            self._drop_writer(conn)
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
        status = await conn.fetchval("SELECT txid_status($1)", xid)
        if status == "in progress":
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE pid = $1 AND backend_xid::text = ($2::bigint % 4294967296)::text",
                pid,
                xid,
            )
            with anyio.move_on_after(10):
                while status == "in progress":
                    await anyio.sleep(0.01)  # the backend is ending: its transaction aborts with it
                    status = await conn.fetchval("SELECT txid_status($1)", xid)
        if status in ("committed", "aborted"):
            log.warning("the answer to a COMMIT on %s was lost; the transaction had %s", self._target.display, status)
            return bool(status == "committed")
        raise StoreError(
            f"the answer to a COMMIT on {self._target.display} was lost and its outcome is unknown ({status!r})"
        )

    # leases ------------------------------------------------------------------
    async def heartbeat(self, owner: str, lease: float) -> int:
        """Record ``owner`` as alive now; forget engines silent for 3 leases; count those seen within one.

        An owner that was not counted (new, or silent for a lease) notifies the
        members channel in the same statement: the others rebalance at once.
        """
        rows = await self._fetch(_HEARTBEAT, owner, lease, self.members_channel, what="heartbeat")
        return int(rows[0][0])

    async def claim(self, owner: str, count: int, lease: float) -> dict[int, int]:
        """Lease up to ``count`` free or expired shards, lowest first: {shard: new epoch}.

        Tried once: a claim whose answer was lost may have taken shards, and
        those expire unrenewed, where a retry would take more.
        """
        if count <= 0:
            return {}
        rows = await self._fetch(_CLAIM, owner, count, lease, what="claim", attempts=1)
        return {int(r[0]): int(r[1]) for r in rows}

    async def renew(self, owner: str, held: dict[int, int], lease: float) -> set[int]:
        """Extend the leases ``owner`` still holds at the given epochs; return the shards it lost."""
        if not held:
            return set()
        rows = await self._fetch(_RENEW, owner, list(held), list(held.values()), lease, what="renew")
        return set(held) - {int(r[0]) for r in rows}

    async def release(self, owner: str, shards: Sequence[int]) -> None:
        """Hand ``owner``'s leases of ``shards`` back: free for the next claim at once (the members hear it)."""
        if shards:
            await self._fetch(_RELEASE, owner, list(shards), self.members_channel, what="release")

    async def leave(self, owner: str) -> None:
        """A graceful stop: hand back every lease of ``owner`` and delete its engine row, then notify the members."""
        await self._fetch(_LEAVE, owner, self.members_channel, what="leave")

    # notifications -----------------------------------------------------------
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
            self._listener.callbacks = callbacks
            return
        listener = Listener(
            self._target.connect,
            callbacks,
            check=self.listen_check,
            display=self._target.display,
            own=lambda: self.writer_pid,
        )
        try:
            await self._retrying()(listener.open)
        except _DRIVER_ERRORS as exc:
            raise StoreError(f"cannot LISTEN on {self._target.display}: {exc!r}") from exc
        self._listener = listener
        self._listening.set()

    # reads -------------------------------------------------------------------
    async def _fetch(self, sql: str, *args: Any, what: str = "read", attempts: int | None = None) -> list[Any]:
        pool = self._pool
        if pool is None:
            raise StoreError("the store is not open")
        try:
            rows: list[Any] = await self._retrying(attempts)(_fetch_once, pool, sql, args)
        except _DRIVER_ERRORS as exc:
            raise StoreError(f"PostgreSQL {what} failed on {self._target.display}: {exc!r}") from exc
        return list(rows)

    async def put_schedule(self, row: ScheduleRow) -> None:
        await self._fetch(
            "INSERT INTO schedules (name, cron, next_at, body) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE"
            " SET cron = excluded.cron, next_at = excluded.next_at, body = excluded.body",
            row.name,
            row.cron,
            row.next_at,
            row.body,
            what="schedule write",
        )

    async def delete_schedule(self, name: str) -> bool:
        return bool(await self._fetch("DELETE FROM schedules WHERE name = $1 RETURNING name", name, what="write"))

    async def list_schedules(self, *, due_before: float | None = None) -> list[ScheduleRow]:
        if due_before is None:
            rows = await self._fetch("SELECT name, cron, next_at, body FROM schedules ORDER BY name")
        else:
            rows = await self._fetch(
                "SELECT name, cron, next_at, body FROM schedules WHERE next_at <= $1 ORDER BY name", due_before
            )
        return [ScheduleRow(name=r[0], cron=r[1], next_at=r[2], body=bytes(r[3])) for r in rows]

    async def advance_schedule(self, name: str, fired_at: float, next_at: float) -> bool:
        rows = await self._fetch(
            "UPDATE schedules SET next_at = $1 WHERE name = $2 AND next_at = $3 RETURNING name",
            next_at,
            name,
            fired_at,
            what="schedule write",
        )
        return bool(rows)

    async def delete_finished(self, ended_before: float, limit: int) -> int:
        rows = await self._fetch(
            "WITH old AS (SELECT id FROM workflows WHERE ended_at IS NOT NULL AND ended_at < $1 LIMIT $2),"
            " e AS (DELETE FROM events WHERE workflow_id IN (SELECT id FROM old)),"
            " s AS (DELETE FROM stages WHERE workflow_id IN (SELECT id FROM old))"
            " DELETE FROM workflows WHERE id IN (SELECT id FROM old) RETURNING id",
            ended_before,
            limit,
            what="retention",
        )
        return len(rows)

    async def statuses(self, workflow_ids: Sequence[str]) -> dict[str, WorkflowStatus]:
        rows = await self._fetch("SELECT id, status FROM workflows WHERE id = ANY($1::text[])", list(workflow_ids))
        return {str(r[0]): WorkflowStatus(r[1]) for r in rows}

    async def pending_for(self, workflow_id: str) -> list[Pending]:
        """The outbox rows of one workflow (another process woke us for it)."""
        self.outbox_reads += 1
        rows = await self._fetch(
            "SELECT id, body FROM outbox WHERE workflow_id = $1 ORDER BY deliver_at NULLS FIRST, id", workflow_id
        )
        return [decode_pending(workflow_id, str(r[0]), r[1]) for r in rows]

    async def load(self, workflow_id: str) -> LoadedWorkflow | None:
        rows = await self._fetch(f"SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE id = $1", workflow_id)
        if not rows:
            return None
        stage_rows = await self._fetch(
            f"SELECT {STAGE_COLUMNS} FROM stages WHERE workflow_id = $1 ORDER BY idx", workflow_id
        )
        return decode_loaded(workflow_id, rows[0], stage_rows)

    async def pending_messages(self) -> list[tuple[str, Pending]]:
        self.outbox_reads += 1
        rows = await self._fetch(
            "SELECT workflow_id, id, body FROM outbox ORDER BY deliver_at NULLS FIRST, workflow_id, id"
        )
        return decode_pending_rows(rows)

    async def pending_runs(
        self, task_type: str, limit: int, now: float, after: tuple[str, str] | None = None
    ) -> list[tuple[str, Pending]]:
        self.outbox_reads += 1
        start = after if after is not None else ("", "")
        rows = await self._fetch(
            "SELECT workflow_id, id, body FROM outbox WHERE task_type = $1 AND (deliver_at IS NULL OR deliver_at <= $2)"
            " AND (workflow_id, id) > ($3, $4) ORDER BY workflow_id, id LIMIT $5",
            task_type,
            now,
            start[0],
            start[1],
            limit,
        )
        return decode_pending_rows(rows)

    async def events(self, workflow_id: str) -> list[Event]:
        rows = await self._fetch(f"SELECT {EVENT_COLUMNS} FROM events WHERE workflow_id = $1 ORDER BY seq", workflow_id)
        return [decode_event_row(r) for r in rows]

    async def quarantined(self, workflow_id: str | None = None) -> list[QuarantinedRow]:
        sql = "SELECT workflow_id, source, key, body, error, at FROM quarantine"
        rows = await (
            self._fetch(sql + " ORDER BY seq")
            if workflow_id is None
            else self._fetch(sql + " WHERE workflow_id = $1 ORDER BY seq", workflow_id)
        )
        return [
            QuarantinedRow(workflow_id=str(r[0]), source=r[1], key=r[2], body=bytes(r[3]), error=r[4], at=r[5])
            for r in rows
        ]

    async def list_workflows(self, *, status: str | None, application: str | None, limit: int) -> list[WorkflowRecord]:
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("status", status), ("application", application)):
            if value is not None:
                params.append(value)
                where.append(f"{column} = ${len(params)}")
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        params.append(limit)
        rows = await self._fetch(
            f"SELECT id, {WORKFLOW_COLUMNS} FROM workflows {clause} ORDER BY created_at DESC LIMIT ${len(params)}",
            *params,
        )
        return [decode_workflow_row(str(r[0]), tuple(r)[1:])[0] for r in rows]

    async def table_counts(self) -> dict[str, int]:
        """Row counts per table (for tests and the CLI)."""
        out = {}
        for table in ("workflows", "stages", "outbox", "events"):
            rows = await self._fetch(f"SELECT count(*) FROM {table}")
            out[table] = int(rows[0][0])
        return out


async def upgrade(url: str, *, target: int | None = None) -> list[int]:
    """Apply the migrations the database (or the URL's schema) lacks; returns their numbers.

    Each migration runs in its own transaction under ``pg_advisory_xact_lock``,
    after reading the version again, so concurrent upgrades apply each one once.
    ``?schema=NAME`` is created if missing. ``target`` stops after that
    migration (tests use it to migrate step by step).

    Raises:
        ForeignDatabaseError: our table names exist without our meta table.
        SchemaTooNewError: a newer stabilize_aio migrated this database.
        StoreError: the server is unreachable or a migration failed.
    """
    where = _Target.parse(url)
    applied: list[int] = []
    try:
        conn = await where.connect()
    except _DRIVER_ERRORS as exc:
        raise StoreError(f"cannot connect to PostgreSQL at {where.display}: {exc!r}") from exc
    try:
        for number, sql in migrations():
            if target is not None and number > target:
                break
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
                if where.schema is not None:
                    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {where.schema}")
                if number <= await _schema_version(conn, where.display):
                    continue
                await conn.execute(sql)
                await conn.executemany(
                    "INSERT INTO stabilize_meta (key, value) VALUES ($1, $2)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    [("app", APP_ID), ("schema_version", str(number))],
                )
            applied.append(number)
            log.info("applied PostgreSQL migration %04d to %s", number, where.display)
    except _DRIVER_ERRORS as exc:
        raise StoreError(f"migrating {where.display} failed: {exc!r}") from exc
    finally:
        await conn.close()
    return applied


async def _schema_version(conn: Any, display: str) -> int:
    """The schema version found in the current schema (0: none of our tables)."""
    found = await conn.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename = ANY($1::text[])",
        list(TABLES),
    )
    names = sorted(str(r[0]) for r in found)
    if not names:
        return 0
    if "stabilize_meta" not in names:
        raise ForeignDatabaseError(
            f"{display} holds tables named {', '.join(names)} that stabilize_aio did not create; refusing to touch them"
        )
    try:
        meta = {str(k): str(v) for k, v in await conn.fetch("SELECT key, value FROM stabilize_meta")}
    except asyncpg.PostgresError as exc:
        raise ForeignDatabaseError(f"{display} has a stabilize_meta table that is not ours: {exc}") from exc
    if meta.get("app") != APP_ID or not meta.get("schema_version", "").isdigit():
        raise ForeignDatabaseError(f"{display} was not written by {APP_ID}")
    version = int(meta["schema_version"])
    if version > SCHEMA_VERSION:
        raise SchemaTooNewError(
            f"{display} has schema version {version}; this stabilize_aio knows up to {SCHEMA_VERSION}: "
            "upgrade the package"
        )
    return version


def _changes_state(op: Transition) -> bool:
    """Whether a turn needs its shard's lease: it changes the workflow or stages, or consumes rows."""
    return op.workflow is not None or bool(op.stages) or bool(op.consumed)


async def _rollback(conn: Any) -> None:
    """Roll back the writer's transaction; a connection that cannot is dropped (the next write reconnects).

    Whatever the rollback raises is swallowed: the error that made the attempt
    fail goes on, never hidden by the rollback's own.
    """
    if conn.is_closed():
        return  # the server rolled it back when the connection ended
    try:
        with anyio.CancelScope(shield=True), anyio.fail_after(10):
            await conn.execute("ROLLBACK")
    except Exception:
        conn.terminate()


async def _fetch_once(pool: Any, sql: str, args: tuple[Any, ...]) -> list[Any]:
    """One read on a pooled connection; one that is gone is closed, so the pool replaces it (the retry reads again)."""
    async with pool.acquire() as conn:
        try:
            rows: list[Any] = await conn.fetch(sql, *args)
        except Exception as exc:
            if _connection_gone(exc):
                conn.terminate()
            raise
    return rows


def _ignore(payload: str) -> None:
    """A LISTEN callback for a channel nobody asked to hear."""


async def _keep_session(conn: Any) -> None:
    """Hand a reader back to the pool as it is: readers never change session state.

    (asyncpg's default reset costs a round trip per read: unlock, ``CLOSE ALL``,
    ``UNLISTEN``, ``RESET ALL``.)
    """


def _log_retry(state: tenacity.RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome is not None else None
    log.warning("PostgreSQL call failed (%r); attempt %d, retrying", exc, state.attempt_number)
