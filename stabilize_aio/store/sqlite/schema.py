"""An SQLite file's schema: checked before anything is written, then migrated in one transaction per migration."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiosqlite

from ..._errors import CorruptDatabaseError, ForeignDatabaseError, SchemaTooNewError
from ..migrate import migrations as dialect_migrations
from ..queries import queries
from .errors import rollback

APP_ID = "stabilize_aio"

SQL = queries("stabilize_aio.store.sqlite")


def migrations() -> list[tuple[int, str]]:
    """The numbered SQLite migrations shipped with the package, in order."""
    return dialect_migrations("sqlite")


SCHEMA_VERSION = max(n for n, _ in migrations())


async def check_file(path: Path) -> None:
    """Refuse corrupt, foreign and newer files without writing a byte to them.

    Raises:
        CorruptDatabaseError: not a usable SQLite database.
        ForeignDatabaseError: an SQLite database of something else.
        SchemaTooNewError: written by a newer stabilize_aio.
    """
    if _empty(path):
        return
    uri = f"file:{path}?mode=ro"
    try:
        async with aiosqlite.connect(uri, uri=True) as conn:
            tables = {str(r[0]) for r in await conn.execute_fetchall(SQL["tables"])}
            if not tables:
                return
            if "stabilize_meta" not in tables:
                raise ForeignDatabaseError(
                    f"{str(path)!r} is an SQLite database of something else "
                    f"(tables: {', '.join(sorted(tables)[:5])}); refusing to touch it"
                )
            meta: dict[str, str] = {str(r[0]): str(r[1]) for r in await conn.execute_fetchall(SQL["meta"])}
    except sqlite3.DatabaseError as exc:
        raise CorruptDatabaseError(f"{str(path)!r} is not a usable SQLite database: {exc}") from exc
    if meta.get("app") != APP_ID:
        raise ForeignDatabaseError(f"{str(path)!r} was not written by {APP_ID}")
    version = int(meta.get("schema_version", "0"))
    if version > SCHEMA_VERSION:
        raise SchemaTooNewError(
            f"{str(path)!r} has schema version {version}; this stabilize_aio knows up to "
            f"{SCHEMA_VERSION}: upgrade the package"
        )


async def migrate(conn: aiosqlite.Connection) -> list[int]:
    """Apply the migrations the file lacks, one transaction each; return their numbers."""
    current = 0
    if "stabilize_meta" in {str(r[0]) for r in await conn.execute_fetchall(SQL["tables"])}:
        found = list(await conn.execute_fetchall(SQL["schema_version"]))
        current = int(found[0][0]) if found else 0
    applied: list[int] = []
    for number, sql in migrations():
        if number <= current:
            continue
        await conn.execute(SQL["begin"])
        try:
            for statement in _statements(sql):
                await conn.execute(statement)
            await conn.executemany(SQL["meta_put"], [("app", APP_ID), ("schema_version", str(number))])
            await conn.execute(SQL["commit"])
        except BaseException as exc:
            await rollback(conn, exc)
            raise
        applied.append(number)
    return applied


def _empty(path: Path) -> bool:
    """Whether the file is missing or empty (a new database)."""
    return not path.exists() or path.stat().st_size == 0


def _statements(sql: str) -> list[str]:
    lines = [ln for ln in sql.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
