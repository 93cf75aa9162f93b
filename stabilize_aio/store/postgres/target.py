"""Where a ``postgresql://`` URL points: the DSN asyncpg gets, the schema, a printable name."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import msgspec

from ..url import redact_url

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class Target(msgspec.Struct, frozen=True, kw_only=True):
    """Where a URL points: the DSN asyncpg gets, the schema, and a printable name."""

    dsn: str
    schema: str | None
    display: str

    @classmethod
    def parse(cls, url: str) -> Target:
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

    async def pool(self, size: int) -> Any:
        """A pool of reader connections (an ``asyncpg.Pool``) that hands connections back as they are."""
        return await asyncpg.create_pool(
            self.dsn,
            min_size=1,
            max_size=size,
            timeout=10,
            server_settings=self.server_settings(),
            reset=_keep_session,
        )


async def _keep_session(conn: Any) -> None:
    """Hand a reader back to the pool as it is: readers never change session state.

    (asyncpg's default reset costs a round trip per read: unlock, ``CLOSE ALL``,
    ``UNLISTEN``, ``RESET ALL``.)
    """
