"""Stores: the persistence contract, its capabilities and its backends, found by URL scheme."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

from .._errors import ConfigurationError
from .protocol import LeaseStore as LeaseStore
from .protocol import LoadedWorkflow as LoadedWorkflow
from .protocol import NewWorkflow as NewWorkflow
from .protocol import NotifyStore as NotifyStore
from .protocol import Store as Store
from .protocol import StoreStatistics as StoreStatistics

__all__ = (
    "LeaseStore",
    "LoadedWorkflow",
    "NewWorkflow",
    "NotifyStore",
    "Store",
    "StoreStatistics",
    "store_from_url",
    "upgrade",
)

_POSTGRES = ("postgresql", "postgres")


def store_from_url(url: str) -> Store:
    """Build the store a URL names.

    ``sqlite:///path.db`` (relative), ``sqlite:////abs/path.db``, or
    ``postgresql://user@host:5432/database`` (also ``postgres://``). Query
    options for SQLite: ``?synchronous=NORMAL``; for PostgreSQL:
    ``?schema=NAME`` (the tables' schema), others go to asyncpg.
    """
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        if parsed.netloc:  # sqlite://x.db: the part after '//' is a host, and SQLite has none
            meant = parsed.netloc + parsed.path
            raise ConfigurationError(
                f"{url!r}: an SQLite URL has no host, and {parsed.netloc!r} is read as one; put three slashes"
                f" before a relative path (sqlite:///{meant}) and four before an absolute one (sqlite:////abs/x.db)"
            )
        path = parsed.path[1:] if parsed.path.startswith("/") else parsed.path
        if not path or path == ":memory:":
            raise ConfigurationError(
                f"{url!r}: SQLite needs a file path: sqlite:///relative.db or sqlite:////abs/path.db"
                " (':memory:' has no WAL)"
            )
        options = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        from .sqlite.store import SqliteStore  # noqa: PLC0415 - a driver is imported only when its URL is used

        return SqliteStore(path, synchronous=options.get("synchronous", "FULL"))
    if parsed.scheme in _POSTGRES:
        from .postgres.store import PostgresStore  # noqa: PLC0415 - a driver is imported only when its URL is used

        return PostgresStore(url)
    raise ConfigurationError(f"unknown store URL scheme {parsed.scheme!r} in {url!r}")


async def upgrade(url: str) -> list[int]:
    """Bring the database a URL names to this package's schema; returns the numbers of the migrations applied.

    PostgreSQL is only ever migrated by this call (``stabilize-aio db upgrade``);
    an SQLite file is also migrated by the engine when it starts.
    """
    if urlparse(url).scheme in _POSTGRES:
        from .postgres.upgrade import upgrade as upgrade_postgres  # noqa: PLC0415 - imported only when its URL is used

        return await upgrade_postgres(url)
    from .sqlite.store import SqliteStore  # noqa: PLC0415 - a driver is imported only when its URL is used

    store = store_from_url(url)
    assert isinstance(store, SqliteStore)  # every other scheme is PostgreSQL or refused
    await store.open()  # an SQLite store migrates its file, under its lock, when it opens
    try:
        return list(store.migrations_applied)
    finally:
        await store.close()
