"""The embedded store: SQLite through aiosqlite, WAL mode, one writer connection.

* An OS lock (``flock`` on the database file itself) refuses a second running
  engine on the same file under any of its names (symlinks, hard links); the
  kernel frees it the instant the holding process dies. Within one process a
  registry of the open files refuses before touching the file (see
  :func:`_lock_file`).
* Before anything is written the file is checked: a corrupt file, a foreign
  SQLite database and one from a newer schema each raise a named error and are
  left byte-identical.
* Writes are group commits: per group ``BEGIN``, one ``executemany`` per
  statement, fence checks on the row counts, ``COMMIT``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiosqlite
import anyio

from ... import _faults
from ..._errors import (
    ConcurrencyError,
    CorruptDatabaseError,
    DatabaseLockedError,
    DataError,
    ForeignDatabaseError,
    SchemaTooNewError,
    StoreError,
)
from ...model.records import WorkflowRecord
from ...model.status import WorkflowStatus
from ...model.values import Event
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

APP_ID = "stabilize_aio"

_SQL = {
    "wf_insert": "INSERT INTO workflows (id, application, name, status, version, created_at, ended_at, body)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    "stage_insert": "INSERT INTO stages (workflow_id, idx, ref_id, status, version, spec, run)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)",
    "wf_update": "UPDATE workflows SET status = ?, version = ?, ended_at = ?, body = ? WHERE id = ? AND version = ?",
    "stage_update": "UPDATE stages SET status = ?, version = ?, run = ?"
    " WHERE workflow_id = ? AND idx = ? AND version = ?",
    "outbox_delete": "DELETE FROM outbox WHERE workflow_id = ? AND id = ?",
    "outbox_discard": "DELETE FROM outbox WHERE workflow_id = ? AND id = ?",
    "outbox_purge": "DELETE FROM outbox WHERE workflow_id = ?",
    "outbox_insert": "INSERT INTO outbox (workflow_id, id, deliver_at, kind, task_type, body)"
    " VALUES (?, ?, ?, ?, ?, ?)",
    "event_insert": "INSERT INTO events (workflow_id, key, kind, stage, at, body) VALUES (?, ?, ?, ?, ?, ?)",
    "stage_respec": "UPDATE stages SET spec = ? WHERE workflow_id = ? AND idx = ?",
    "quarantine_insert": "INSERT INTO quarantine (workflow_id, source, key, body, error, at) VALUES (?, ?, ?, ?, ?, ?)",
}

_FENCED = ("wf_update", "stage_update", "outbox_delete")


def migrations() -> list[tuple[int, str]]:
    """The numbered SQLite migrations shipped with the package, in order."""
    return dialect_migrations("sqlite")


SCHEMA_VERSION = max(n for n, _ in migrations())


class SqliteStore(Store):
    """A store on one SQLite file.

    Args:
        path: the database file (created if missing).
        synchronous: SQLite's ``synchronous`` pragma: ``"FULL"`` (an fsync per
            group commit: survives power loss) or ``"NORMAL"`` (survives a
            process crash; faster).
    """

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "FULL") -> None:
        super().__init__()
        self.path = Path(path)
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError(f"synchronous must be FULL, NORMAL or EXTRA, not {synchronous!r}")
        self.synchronous = synchronous.upper()
        self._held: _HeldFile | None = None  # the one-engine lock on the file, while open
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None

    def __repr__(self) -> str:
        return f"<SqliteStore {str(self.path)!r} open={self._writer is not None}>"

    # lifecycle ---------------------------------------------------------------
    async def open(self) -> None:
        self._acquire_lock()
        try:
            await self._check_file()
            self._writer = await self._connect()
            try:
                await self._migrate(self._writer)
            except sqlite3.DatabaseError as exc:
                raise CorruptDatabaseError(f"{str(self.path)!r} is damaged: {exc}") from exc
            self._reader = await self._connect()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        for conn in (self._reader, self._writer):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
        self._reader = self._writer = None
        if self._held is not None:
            _unlock_file(self._held)  # after the connections: closing a descriptor of the file drops their locks
            self._held = None

    def _acquire_lock(self) -> None:
        self._held = _lock_file(self.path)

    async def _check_file(self) -> None:
        """Refuse corrupt, foreign and newer files without writing a byte to them."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        uri = f"file:{self.path}?mode=ro"
        try:
            async with aiosqlite.connect(uri, uri=True) as conn:
                found = await conn.execute_fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")
                tables = {str(r[0]) for r in found}
                if not tables:
                    return
                if "stabilize_meta" not in tables:
                    raise ForeignDatabaseError(
                        f"{str(self.path)!r} is an SQLite database of something else "
                        f"(tables: {', '.join(sorted(tables)[:5])}); refusing to touch it"
                    )
                meta_rows = await conn.execute_fetchall("SELECT key, value FROM stabilize_meta")
                meta: dict[str, str] = {str(r[0]): str(r[1]) for r in meta_rows}
        except sqlite3.DatabaseError as exc:
            raise CorruptDatabaseError(f"{str(self.path)!r} is not a usable SQLite database: {exc}") from exc
        if meta.get("app") != APP_ID:
            raise ForeignDatabaseError(f"{str(self.path)!r} was not written by {APP_ID}")
        version = int(meta.get("schema_version", "0"))
        if version > SCHEMA_VERSION:
            raise SchemaTooNewError(
                f"{str(self.path)!r} has schema version {version}; this stabilize_aio knows up to "
                f"{SCHEMA_VERSION}: upgrade the package"
            )

    async def _connect(self) -> aiosqlite.Connection:
        try:
            conn = await aiosqlite.connect(self.path, isolation_level=None)
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            await conn.execute("PRAGMA busy_timeout = 10000")
        except sqlite3.DatabaseError as exc:
            raise CorruptDatabaseError(f"cannot open {str(self.path)!r}: {exc}") from exc
        return conn

    async def _migrate(self, conn: aiosqlite.Connection) -> None:
        rows = await conn.execute_fetchall(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'stabilize_meta'"
        )
        current = 0
        if rows:
            got = await conn.execute_fetchall("SELECT value FROM stabilize_meta WHERE key = 'schema_version'")
            current = int(next(iter(got))[0]) if got else 0
        for number, sql in migrations():
            if number <= current:
                continue
            await conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _statements(sql):
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO stabilize_meta (key, value) VALUES ('app', ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (APP_ID,),
                )
                await conn.execute(
                    "INSERT INTO stabilize_meta (key, value) VALUES ('schema_version', ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (str(number),),
                )
                await conn.execute("COMMIT")
            except BaseException as exc:
                await _rollback(conn, exc)
                raise
            self.migrations_applied.append(number)

    # writes ------------------------------------------------------------------
    async def _write_ops(self, ops: Sequence[Op]) -> None:
        conn = self._conn(self._writer)
        rows = rows_for(ops, _enc)
        try:
            await conn.execute("BEGIN IMMEDIATE")
            try:
                if _faults.armed:
                    _faults.hit("writer.begin")
                for key, sql in _SQL.items():  # the order of _SQL is the order of execution
                    batch = rows.batches[key]
                    if not batch:
                        continue
                    cur = await conn.executemany(sql, batch)
                    if key in _FENCED and cur.rowcount != len(batch):
                        raise ConcurrencyError(f"fence failed on {key}: {cur.rowcount} of {len(batch)} rows matched")
                if _faults.armed:
                    _faults.hit("writer.commit")
                await conn.execute("COMMIT")
            except BaseException as exc:
                await _rollback(conn, exc)
                raise
        except (sqlite3.Error, UnicodeEncodeError, OverflowError, MemoryError) as exc:
            raise _write_error(self.path, exc) from exc
        self.commits += 1
        self.bytes_written += rows.nbytes

    # reads -------------------------------------------------------------------
    def _conn(self, conn: aiosqlite.Connection | None) -> aiosqlite.Connection:
        if conn is None:
            raise StoreError("the store is not open")
        return conn

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return list(await self._conn(self._reader).execute_fetchall(sql, params))
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"SQLite read failed on {str(self.path)!r}: {exc}") from exc

    async def load(self, workflow_id: str) -> LoadedWorkflow | None:
        rows = await self._fetch(f"SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE id = ?", (workflow_id,))
        if not rows:
            return None
        stage_rows = await self._fetch(
            f"SELECT {STAGE_COLUMNS} FROM stages WHERE workflow_id = ? ORDER BY idx", (workflow_id,)
        )
        return decode_loaded(workflow_id, rows[0], stage_rows)

    async def pending_messages(self) -> list[tuple[str, Pending]]:
        self.outbox_reads += 1
        rows = await self._fetch("SELECT workflow_id, id, body FROM outbox ORDER BY deliver_at")
        return decode_pending_rows(rows)

    async def pending_for(self, workflow_id: str) -> list[Pending]:
        self.outbox_reads += 1
        rows = await self._fetch("SELECT id, body FROM outbox WHERE workflow_id = ? ORDER BY id", (workflow_id,))
        return [decode_pending(workflow_id, r[0], r[1]) for r in rows]

    async def pending_runs(
        self, task_type: str, limit: int, now: float, after: tuple[str, str] | None = None
    ) -> list[tuple[str, Pending]]:
        self.outbox_reads += 1
        start = after if after is not None else ("", "")
        rows = await self._fetch(
            "SELECT workflow_id, id, body FROM outbox WHERE task_type = ? AND (deliver_at IS NULL OR deliver_at <= ?)"
            " AND (workflow_id, id) > (?, ?) ORDER BY workflow_id, id LIMIT ?",
            (task_type, now, start[0], start[1], limit),
        )
        return decode_pending_rows(rows)

    async def events(self, workflow_id: str) -> list[Event]:
        rows = await self._fetch(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE workflow_id = ? ORDER BY seq", (workflow_id,)
        )
        return [decode_event_row(r) for r in rows]

    async def quarantined(self, workflow_id: str | None = None) -> list[QuarantinedRow]:
        where, params = ("WHERE workflow_id = ?", (workflow_id,)) if workflow_id is not None else ("", ())
        rows = await self._fetch(
            f"SELECT workflow_id, source, key, body, error, at FROM quarantine {where} ORDER BY seq", params
        )
        return [
            QuarantinedRow(workflow_id=r[0], source=r[1], key=r[2], body=bytes(r[3]), error=r[4], at=r[5]) for r in rows
        ]

    async def statuses(self, workflow_ids: Sequence[str]) -> dict[str, WorkflowStatus]:
        out: dict[str, WorkflowStatus] = {}
        for start in range(0, len(workflow_ids), 500):  # SQLite's bound-parameter limit
            chunk = list(workflow_ids[start : start + 500])
            marks = ", ".join("?" * len(chunk))
            rows = await self._fetch(f"SELECT id, status FROM workflows WHERE id IN ({marks})", chunk)
            out.update({str(r[0]): WorkflowStatus(r[1]) for r in rows})
        return out

    async def put_schedule(self, row: ScheduleRow) -> None:
        await self._fetch(
            "INSERT INTO schedules (name, cron, next_at, body) VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE"
            " SET cron = excluded.cron, next_at = excluded.next_at, body = excluded.body",
            (row.name, row.cron, row.next_at, row.body),
        )

    async def delete_schedule(self, name: str) -> bool:
        return bool(await self._fetch("DELETE FROM schedules WHERE name = ? RETURNING name", (name,)))

    async def list_schedules(self, *, due_before: float | None = None) -> list[ScheduleRow]:
        where, params = ("WHERE next_at <= ?", (due_before,)) if due_before is not None else ("", ())
        rows = await self._fetch(f"SELECT name, cron, next_at, body FROM schedules {where} ORDER BY name", params)
        return [ScheduleRow(name=r[0], cron=r[1], next_at=r[2], body=bytes(r[3])) for r in rows]

    async def advance_schedule(self, name: str, fired_at: float, next_at: float) -> bool:
        rows = await self._fetch(
            "UPDATE schedules SET next_at = ? WHERE name = ? AND next_at = ? RETURNING name", (next_at, name, fired_at)
        )
        return bool(rows)

    async def delete_finished(self, ended_before: float, limit: int) -> int:
        ids = [
            r[0]
            for r in await self._fetch(
                "SELECT id FROM workflows WHERE ended_at IS NOT NULL AND ended_at < ? LIMIT ?", (ended_before, limit)
            )
        ]
        if not ids:
            return 0
        marks = ", ".join("?" * len(ids))
        for table, column in (("events", "workflow_id"), ("stages", "workflow_id"), ("workflows", "id")):
            await self._fetch(f"DELETE FROM {table} WHERE {column} IN ({marks})", ids)
        return len(ids)

    async def list_workflows(self, *, status: str | None, application: str | None, limit: int) -> list[WorkflowRecord]:
        where, params = [], []
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if application is not None:
            where.append("application = ?")
            params.append(application)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self._fetch(
            f"SELECT id, {WORKFLOW_COLUMNS} FROM workflows {clause} ORDER BY created_at DESC LIMIT ?",
            [*params, limit],
        )
        return [decode_workflow_row(str(r[0]), r[1:])[0] for r in rows]

    async def table_counts(self) -> dict[str, int]:
        """Row counts per table (for tests and the CLI)."""
        out = {}
        for table in ("workflows", "stages", "outbox", "events"):
            rows = await self._fetch(f"SELECT COUNT(*) FROM {table}")
            out[table] = int(rows[0][0])
        return out


async def _rollback(conn: aiosqlite.Connection, error: BaseException) -> None:
    """Roll back the transaction ``error`` broke, unless SQLite already has; never raise instead of ``error``.

    On SQLITE_FULL, IOERR, NOMEM and some BUSY errors SQLite rolls the whole
    transaction back itself, and a ROLLBACK would only fail with "no
    transaction is active". A rollback that fails is noted on ``error``.
    """
    with anyio.CancelScope(shield=True):  # the connection must leave the transaction even when cancelled
        if not conn.in_transaction:
            return
        try:
            await conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            error.add_note(f"and the rollback failed: {exc}")


#: Base result codes of errors about the data of a write (a value too big for a limit, a type, a range).
_DATA_CODES = frozenset({sqlite3.SQLITE_TOOBIG, sqlite3.SQLITE_MISMATCH, sqlite3.SQLITE_RANGE})

#: Constraint violations that mean "this row is already there": a replayed or concurrent write.
_DUPLICATE_NAMES = frozenset({"SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY", "SQLITE_CONSTRAINT_ROWID"})


def _write_error(path: Path, exc: BaseException) -> StoreError:
    """The StoreError a failed write raises: ConcurrencyError for a duplicate row, DataError when the
    database refused the data of the write, a plain StoreError with SQLite's message otherwise (a full
    disk, I/O, corruption, a read-only file, out of memory, busy, locked...)."""
    where = str(path)
    if isinstance(exc, UnicodeEncodeError | OverflowError):  # raised while binding a value: a bad str, a huge int
        return DataError(f"SQLite refused a value on {where!r}: {exc}")
    if isinstance(exc, MemoryError):  # how the driver raises SQLITE_NOMEM
        return StoreError(f"SQLite write failed on {where!r}: out of memory")
    code = getattr(exc, "sqlite_errorcode", None)
    name = getattr(exc, "sqlite_errorname", None)
    if isinstance(exc, sqlite3.IntegrityError) and (name is None or name in _DUPLICATE_NAMES):
        return ConcurrencyError(f"duplicate row: {exc}")
    if isinstance(exc, sqlite3.IntegrityError) or (code is not None and (code & 0xFF) in _DATA_CODES):
        return DataError(f"SQLite refused the data of a write on {where!r}: {exc} ({name})")
    return StoreError(f"SQLite write failed on {where!r}: {exc}")


# the one-engine lock -----------------------------------------------------------
class _HeldFile:
    """A database file a store of this process holds: its identity, the descriptor holding the flock."""

    __slots__ = ("fd", "key", "path", "strays")

    def __init__(self, key: tuple[int, int], fd: int, path: Path) -> None:
        self.key = key  # (st_dev, st_ino): the file, whatever its name
        self.fd = fd
        self.path = path  # the name it was opened by
        self.strays: list[int] = []  # descriptors of it another open() made in a race: closed with fd


#: The database files stores of this process hold, by (st_dev, st_ino). A second store on any name of
#: one is refused before it opens the file: closing a descriptor of a file drops every POSIX lock this
#: process holds on it, and the open store's SQLite connections hold theirs on it all along.
_HELD: dict[tuple[int, int], _HeldFile] = {}

_HELD_LOCK = threading.Lock()  # stores may open in several threads' event loops


def _lock_file(path: Path) -> _HeldFile:
    """Take the one-engine lock on the database file ``path`` names, creating the file if missing.

    The lock is ``flock(2)`` on the file itself, so every name of the file (a
    symlink, a hard link in any directory) leads to the same lock, in any
    process. It is separate from SQLite's own locks (``fcntl`` byte ranges):
    never use ``fcntl``/``lockf`` here, whose release would drop them. And as
    closing *any* descriptor of the file drops this process's ``fcntl`` locks
    on it, a file a store of this process holds is refused by the registry
    ``_HELD`` before a descriptor of it is opened.

    Raises:
        DatabaseLockedError: a store of this process or another process holds the file.
        StoreError: the file cannot be opened or locked.
    """
    with _HELD_LOCK:
        try:
            st = os.stat(path)
        except OSError:
            pass  # missing (created below), or unreachable (the open below says why)
        else:
            _refuse_if_held((st.st_dev, st.st_ino), path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)  # (a FIFO: no hang)
        except OSError as exc:
            raise StoreError(f"cannot open {str(path)!r}: {exc.strerror}") from exc
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        held = _HELD.get(key)
        if held is not None:  # the name was moved onto a held file between stat and open
            held.strays.append(fd)  # closing it now would drop the holder's SQLite locks
            raise _locked(path, os.getpid(), held.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)  # no store of this process holds the file: none of our connections has locks on it
            if isinstance(exc, BlockingIOError):
                raise _locked(path, _flock_holder(key), None) from None
            raise StoreError(f"cannot lock {str(path)!r}: {exc.strerror}") from exc
        held = _HeldFile(key, fd, path)
        _HELD[key] = held
        return held


def _unlock_file(held: _HeldFile) -> None:
    """Release the lock (call after the store's connections are closed)."""
    with _HELD_LOCK:
        if _HELD.get(held.key) is held:
            del _HELD[held.key]
    for fd in (*held.strays, held.fd):
        os.close(fd)  # the last descriptor of the flock's open file drops the flock


def _refuse_if_held(key: tuple[int, int], path: Path) -> None:
    held = _HELD.get(key)
    if held is not None:
        raise _locked(path, os.getpid(), held.path)


def _locked(path: Path, pid: int | None, held_as: Path | None) -> DatabaseLockedError:
    holder = f"pid {pid}" if pid is not None else "pid unknown"
    if held_as is not None and held_as != path:
        holder += f", opened as {str(held_as)!r}"
    return DatabaseLockedError(
        f"another engine is running on {str(path)!r} ({holder}); one SQLite file takes one running engine"
    )


def _flock_holder(key: tuple[int, int]) -> int | None:
    """The pid holding a flock on the file ``key`` identifies, read from /proc/locks (Linux); None if unknown."""
    dev, ino = key
    wanted = f"{os.major(dev):02x}:{os.minor(dev):02x}:{ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        # "12: FLOCK  ADVISORY  WRITE 4242 fe:00:1474578 0 EOF"; a blocked waiter's line has "->" after "12:"
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted and fields[4].isdigit():
            return int(fields[4]) or None
    return None


def _statements(sql: str) -> list[str]:
    lines = [ln for ln in sql.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
