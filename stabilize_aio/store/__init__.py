"""Stores: the persistence contract and its backends, found by URL scheme."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

from ._base import LoadedWorkflow as LoadedWorkflow
from ._base import NewWorkflow as NewWorkflow
from ._base import Store as Store
from ._base import StoreStatistics as StoreStatistics

__all__ = ("LoadedWorkflow", "NewWorkflow", "Store", "StoreStatistics", "store_from_url")


def store_from_url(url: str) -> Store:
    """Build the store a URL names: ``sqlite:///path.db`` (relative) or ``sqlite:////abs/path.db``.

    Query options for SQLite: ``?synchronous=NORMAL``.
    """
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        path = parsed.path[1:] if parsed.path.startswith("/") else parsed.path
        if not path or path == ":memory:":
            raise ValueError(f"{url!r}: SQLite needs a file path (':memory:' has no WAL)")
        options = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        from ._sqlite import SqliteStore  # noqa: PLC0415 - a driver is imported only when its URL is used

        return SqliteStore(path, synchronous=options.get("synchronous", "FULL"))
    if parsed.scheme in ("postgresql", "postgres"):
        raise ValueError("the PostgreSQL store is not available yet (issue 4)")
    raise ValueError(f"unknown store URL scheme {parsed.scheme!r} in {url!r}")
