"""SQLite's errors sorted at the boundary, and a rollback that never hides the error that caused it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiosqlite
import anyio

from ..._errors import ConcurrencyError, DataError, StoreError
from ..queries import queries

SQL = queries("stabilize_aio.store.sqlite")


async def rollback(conn: aiosqlite.Connection, error: BaseException) -> None:
    """Roll back the transaction ``error`` broke, unless SQLite already has; never raise instead of ``error``.

    On SQLITE_FULL, IOERR, NOMEM and some BUSY errors SQLite rolls the whole
    transaction back itself, and a ROLLBACK would only fail with "no
    transaction is active". A rollback that fails is noted on ``error``.
    """
    with anyio.CancelScope(shield=True):  # the connection must leave the transaction even when cancelled
        if not conn.in_transaction:
            return
        try:
            await conn.execute(SQL["rollback"])
        except sqlite3.Error as exc:
            error.add_note(f"and the rollback failed: {exc}")


#: Base result codes of errors about the data of a write (a value too big for a limit, a type, a range).
_DATA_CODES = frozenset({sqlite3.SQLITE_TOOBIG, sqlite3.SQLITE_MISMATCH, sqlite3.SQLITE_RANGE})

#: Constraint violations that mean "this row is already there": a replayed or concurrent write.
_DUPLICATE_NAMES = frozenset({"SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY", "SQLITE_CONSTRAINT_ROWID"})


def write_error(path: Path, exc: BaseException) -> StoreError:
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
