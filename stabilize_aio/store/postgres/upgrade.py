"""The PostgreSQL schema: applied only by :func:`upgrade` (``stabilize-aio db upgrade``), checked by every store.

Migrations are the numbered ``.sql`` files of ``store/sql/postgres/``, one
transaction each under ``pg_advisory_xact_lock``, so two processes upgrading
at once apply each migration once. ``?schema=NAME`` in the URL keeps the
tables in their own schema, created by the upgrade.
"""

from __future__ import annotations

import logging
from typing import Any

from ..._errors import ForeignDatabaseError, SchemaTooNewError, StoreError
from ..migrate import migrations as dialect_migrations
from ..queries import queries
from .errors import DRIVER_ERRORS, ServerError
from .target import Target

log = logging.getLogger("stabilize_aio.store")

SQL = queries("stabilize_aio.store.postgres")

APP_ID = "stabilize_aio"

TABLES = ("stabilize_meta", "workflows", "stages", "outbox", "events", "leases", "engines", "schedules", "quarantine")

#: The key of the transaction-level advisory lock every migration takes ("stabilz").
MIGRATION_LOCK = int.from_bytes(b"stabilz", "big")


def migrations() -> list[tuple[int, str]]:
    """The numbered PostgreSQL migrations shipped with the package, in order."""
    return dialect_migrations("postgres")


SCHEMA_VERSION = max(n for n, _ in migrations())


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
    where = Target.parse(url)
    applied: list[int] = []
    try:
        conn = await where.connect()
    except DRIVER_ERRORS as exc:
        raise StoreError(f"cannot connect to PostgreSQL at {where.display}: {exc!r}") from exc
    try:
        for number, sql in migrations():
            if target is not None and number > target:
                break
            async with conn.transaction():
                await conn.execute(SQL["migration_lock"], MIGRATION_LOCK)
                if where.schema is not None:  # a plain identifier (Target.parse checked it)
                    await conn.execute(SQL["create_schema"].format(schema=where.schema))
                if number <= await schema_version(conn, where.display):
                    continue
                await conn.execute(sql)
                await conn.executemany(SQL["meta_put"], [("app", APP_ID), ("schema_version", str(number))])
            applied.append(number)
            log.info("applied PostgreSQL migration %04d to %s", number, where.display)
    except DRIVER_ERRORS as exc:
        raise StoreError(f"migrating {where.display} failed: {exc!r}") from exc
    finally:
        await conn.close()
    return applied


async def schema_version(conn: Any, display: str) -> int:
    """The schema version found in the current schema (0: none of our tables).

    Raises:
        ForeignDatabaseError: tables of ours by name that we did not create.
        SchemaTooNewError: a newer stabilize_aio migrated this schema.
    """
    found = await conn.fetch(SQL["our_tables"], list(TABLES))
    names = sorted(str(r[0]) for r in found)
    if not names:
        return 0
    if "stabilize_meta" not in names:
        raise ForeignDatabaseError(
            f"{display} holds tables named {', '.join(names)} that stabilize_aio did not create; refusing to touch them"
        )
    try:
        meta = {str(k): str(v) for k, v in await conn.fetch(SQL["meta"])}
    except ServerError as exc:
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
