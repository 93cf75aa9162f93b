"""Schema migrations per dialect: every upgrade path ends at the same schema, and upgrading is explicit and safe.

The catalog of a database migrated one release at a time is compared with one
migrated in one go, structurally (tables, columns, types, nullability,
defaults, indexes, constraints, meta), so a future ``0002_*.sql`` is covered by
the same tests without changing them. PostgreSQL is only ever migrated by
``upgrade()`` / ``stabilize-aio db upgrade``; an SQLite file also by the engine.
"""

from __future__ import annotations

import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest

from stabilize_aio import ForeignDatabaseError, SchemaTooNewError, StoreError
from stabilize_aio.store import store_from_url, upgrade
from stabilize_aio.store.postgres import upgrade as pg
from stabilize_aio.store.sqlite import schema as lite

Catalog = dict[str, list[tuple[Any, ...]]]
OUR_TABLES = {
    *("stabilize_meta", "workflows", "stages", "outbox", "events"),
    *("leases", "engines", "schedules", "quarantine", "claims"),
}


# helpers ---------------------------------------------------------------------
@pytest.fixture
async def new_schema(postgres_url: str) -> AsyncIterator[Callable[[], str]]:
    """A factory of URLs of fresh, empty (not even created) schemas; all are dropped afterwards."""
    names: list[str] = []

    def make() -> str:
        names.append(f"t_{uuid.uuid4().hex[:16]}")
        return f"{postgres_url}?schema={names[-1]}"

    yield make
    conn = await asyncpg.connect(postgres_url)
    try:
        for name in names:
            await conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
    finally:
        await conn.close()


def schema_of(url: str) -> str:
    """The ``?schema=`` of a test URL."""
    return url.rsplit("schema=", 1)[1]


async def pg_catalog(postgres_url: str, schema: str) -> Catalog:
    """What a schema holds, read from the system catalogs, with the schema's name taken out."""
    conn = await asyncpg.connect(postgres_url)
    try:
        queries = {
            "relations": "SELECT relname, relkind FROM pg_class WHERE relnamespace = $1::text::regnamespace",
            "columns": "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,"
            " pg_get_expr(d.adbin, d.adrelid), coll.collname"
            " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
            " LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
            " LEFT JOIN pg_collation coll ON coll.oid = a.attcollation"
            " WHERE c.relnamespace = $1::text::regnamespace AND c.relkind = 'r' AND a.attnum > 0"
            " AND NOT a.attisdropped",
            "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1",
            "constraints": "SELECT conrelid::regclass::text, conname, contype::text, pg_get_constraintdef(oid)"
            " FROM pg_constraint WHERE connamespace = $1::text::regnamespace",
            "sequences": "SELECT sequencename, data_type::text, start_value, increment_by FROM pg_sequences"
            " WHERE schemaname = $1",
        }
        out: Catalog = {}
        for name, sql in queries.items():
            rows = await conn.fetch(sql, schema)
            out[name] = sorted(tuple(_unqualified(v, schema) for v in r) for r in rows)
        meta = await conn.fetch(f"SELECT key, value FROM {schema}.stabilize_meta")
        out["meta"] = sorted((str(r[0]), str(r[1])) for r in meta)
        return out
    finally:
        await conn.close()


def _unqualified(value: Any, schema: str) -> Any:
    return value.replace(f"{schema}.", "") if isinstance(value, str) else value


def sqlite_catalog(path: Path) -> Catalog:
    """What an SQLite file holds, from ``sqlite_master`` and the table pragmas."""
    with closing(sqlite3.connect(path)) as conn:
        objects = conn.execute("SELECT type, name, tbl_name FROM sqlite_master").fetchall()
        out: Catalog = {"objects": sorted(objects), "columns": [], "indexes": []}
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            for cid, name, type_, notnull, default, pk, hidden in conn.execute(f"PRAGMA table_xinfo({table})"):
                out["columns"].append((table, name, type_, notnull, default, pk, hidden, cid))
            for _, index, unique, origin, partial in conn.execute(f"PRAGMA index_list({table})"):
                columns = tuple(r[2] for r in conn.execute(f"PRAGMA index_info({index})"))
                out["indexes"].append((table, index, unique, origin, partial, columns))
        out["columns"].sort()
        out["indexes"].sort()
        out["meta"] = sorted(conn.execute("SELECT key, value FROM stabilize_meta").fetchall())
    return out


def sqlite_at_version(path: Path, version: int) -> None:
    """An SQLite file as an older release left it: the migrations up to ``version``, one transaction each."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        for number, sql in lite.migrations():
            if number > version:
                break
            conn.execute("BEGIN")
            for statement in sql.split(";"):
                if statement.strip() and not all(ln.strip().startswith("--") for ln in statement.strip().splitlines()):
                    conn.execute(statement)
            conn.executemany(
                "INSERT OR REPLACE INTO stabilize_meta (key, value) VALUES (?, ?)",
                [("app", "stabilize_aio"), ("schema_version", str(number))],
            )
            conn.execute("COMMIT")


def applied_line(url: str, numbers: list[int]) -> str:
    """What ``db upgrade`` prints when it applied ``numbers``."""
    return f"{url}: applied migration{'s' if len(numbers) > 1 else ''} {', '.join(map(str, numbers))}\n"


async def cli(*args: str) -> tuple[int, str, str]:
    """Run ``python -m stabilize_aio`` in a child process: (exit code, stdout, stderr)."""
    done = await anyio.run_process([sys.executable, "-m", "stabilize_aio", *args], check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


# PostgreSQL ------------------------------------------------------------------
@pytest.mark.postgres
async def test_postgres_migrated_step_by_step_equals_migrated_at_once(
    postgres_url: str, new_schema: Callable[[], str]
) -> None:
    """A schema upgraded one migration per run has the same catalog as one upgraded in one run."""
    numbers = [n for n, _ in pg.migrations()]
    stepwise, at_once = new_schema(), new_schema()
    steps = [await pg.upgrade(stepwise, target=n) for n in numbers]  # one run per release
    applied = await upgrade(at_once)
    assert [[n] for n in numbers] == steps
    assert numbers == applied
    expected = await pg_catalog(postgres_url, schema_of(at_once))
    assert expected == await pg_catalog(postgres_url, schema_of(stepwise))
    assert [("app", "stabilize_aio"), ("schema_version", str(pg.SCHEMA_VERSION))] == expected["meta"]


@pytest.mark.postgres
async def test_postgres_upgrades_from_every_older_version_to_the_same_schema(
    postgres_url: str, new_schema: Callable[[], str]
) -> None:
    """A schema left at any older version (none included) is upgraded to exactly the fresh schema."""
    numbers = [n for n, _ in pg.migrations()]
    fresh = new_schema()
    await upgrade(fresh)
    expected = await pg_catalog(postgres_url, schema_of(fresh))
    for start in [0, *numbers[:-1]]:
        url = new_schema()
        if start:
            await pg.upgrade(url, target=start)
        assert [n for n in numbers if n > start] == await upgrade(url)
        assert expected == await pg_catalog(postgres_url, schema_of(url))


@pytest.mark.postgres
async def test_postgres_upgrade_is_idempotent(new_schema: Callable[[], str]) -> None:
    """A second upgrade applies nothing, through the API and through the CLI in a child process."""
    api, cmd = new_schema(), new_schema()
    first, second = await upgrade(api), await upgrade(api)
    first_run, second_run = await cli("db", "upgrade", "--url", cmd), await cli("db", "upgrade", "--url", cmd)
    numbers = [n for n, _ in pg.migrations()]
    assert (numbers, []) == (first, second)
    assert (0, applied_line(cmd, numbers), "") == first_run
    assert (0, f"{cmd}: up to date, nothing to apply\n", "") == second_run


@pytest.mark.postgres
async def test_concurrent_upgrades_apply_each_migration_once(new_schema: Callable[[], str]) -> None:
    """Four processes' worth of upgrades at once: the advisory lock lets exactly one apply each migration."""
    url = new_schema()
    results: list[list[int]] = []

    async def one() -> None:
        results.append(await upgrade(url))

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(one)
    assert sorted([[], [], [], [n for n, _ in pg.migrations()]]) == sorted(results)


@pytest.mark.postgres
async def test_the_schema_option_keeps_tables_out_of_public(postgres_url: str, new_schema: Callable[[], str]) -> None:
    """With ?schema=NAME the tables are created in NAME, which upgrade creates, and public is left as it was."""
    url = new_schema()
    conn = await asyncpg.connect(postgres_url)
    try:
        query = "SELECT tablename FROM pg_tables WHERE schemaname = $1"
        public_before = {r[0] for r in await conn.fetch(query, "public")}
        await upgrade(url)
        store = store_from_url(url)
        await store.open()
        await store.close()
        public_after = {r[0] for r in await conn.fetch(query, "public")}
        ours = {r[0] for r in await conn.fetch(query, schema_of(url))}
    finally:
        await conn.close()
    assert public_before == public_after
    assert OUR_TABLES == ours


@pytest.mark.postgres
async def test_opening_an_unmigrated_database_says_to_run_db_upgrade(new_schema: Callable[[], str]) -> None:
    """The store never migrates PostgreSQL itself: open() on a missing schema names the command to run."""
    url = new_schema()
    store = store_from_url(url)
    with pytest.raises(StoreError, match="has no stabilize_aio schema") as caught:
        await store.open()
    assert f"run `stabilize-aio db upgrade --url {url}`" in str(caught.value)
    assert StoreError is type(caught.value)


@pytest.mark.postgres
async def test_a_newer_schema_is_refused_by_open_and_upgrade(postgres_url: str, new_schema: Callable[[], str]) -> None:
    """A schema written by a newer release raises SchemaTooNewError and is not changed."""
    url = new_schema()
    await upgrade(url)
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(f"UPDATE {schema_of(url)}.stabilize_meta SET value = '999' WHERE key = 'schema_version'")
    finally:
        await conn.close()
    before = await pg_catalog(postgres_url, schema_of(url))
    with pytest.raises(SchemaTooNewError):
        await store_from_url(url).open()
    with pytest.raises(SchemaTooNewError):
        await upgrade(url)
    assert before == await pg_catalog(postgres_url, schema_of(url))


@pytest.mark.postgres
async def test_foreign_tables_with_our_names_are_refused(postgres_url: str, new_schema: Callable[[], str]) -> None:
    """A schema with a ``workflows`` table but no stabilize_meta is someone else's: refused, untouched."""
    url = new_schema()
    schema = schema_of(url)
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}; CREATE TABLE {schema}.workflows (id int)")
        with pytest.raises(ForeignDatabaseError):
            await store_from_url(url).open()
        with pytest.raises(ForeignDatabaseError):
            await upgrade(url)
        tables = {r[0] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1", schema)}
    finally:
        await conn.close()
    assert {"workflows"} == tables


def test_a_schema_name_must_be_a_plain_identifier() -> None:
    """A ``?schema=`` that is not a lowercase identifier is refused before anything connects."""
    with pytest.raises(ValueError, match="not a plain identifier"):
        store_from_url("postgresql://u@localhost/db?schema=x;drop")


# SQLite ----------------------------------------------------------------------
async def test_sqlite_upgraded_from_every_older_version_equals_a_fresh_file(tmp_path: Path) -> None:
    """A file left by any older release (none included) is migrated to exactly the schema of a fresh file."""
    numbers = [n for n, _ in lite.migrations()]
    fresh = tmp_path / "fresh.db"
    assert numbers == await upgrade(f"sqlite:///{fresh}")
    expected = sqlite_catalog(fresh)
    for start in [0, *numbers[:-1]]:
        path = tmp_path / f"from-{start}.db"
        sqlite_at_version(path, start)
        assert [n for n in numbers if n > start] == await upgrade(f"sqlite:///{path}")
        assert expected == sqlite_catalog(path)
    assert [("app", "stabilize_aio"), ("schema_version", str(lite.SCHEMA_VERSION))] == expected["meta"]


async def test_sqlite_migrated_by_hand_step_by_step_equals_the_store_migrating_it(tmp_path: Path) -> None:
    """Applying each SQLite migration in its own transaction gives the file the store builds at start."""
    by_hand, by_store = tmp_path / "hand.db", tmp_path / "store.db"
    sqlite_at_version(by_hand, lite.SCHEMA_VERSION)
    store = store_from_url(f"sqlite:///{by_store}")
    await store.open()
    await store.close()
    assert sqlite_catalog(by_store) == sqlite_catalog(by_hand)


async def test_sqlite_db_upgrade_is_idempotent(tmp_path: Path) -> None:
    """`db upgrade` on an SQLite URL creates and migrates the file once; the second run applies nothing."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    first, second = await cli("db", "upgrade", "--url", url), await cli("db", "upgrade", "--url", url)
    assert (0, applied_line(url, [n for n, _ in lite.migrations()]), "") == first
    assert (0, f"{url}: up to date, nothing to apply\n", "") == second


# both ------------------------------------------------------------------------
_FAMILY = {
    "TEXT": "text",
    "text": "text",
    "REAL": "float",
    "double precision": "float",
    "BLOB": "bytes",
    "bytea": "bytes",
    "INTEGER": "int",
    "integer": "int",
    "bigint": "int",
}


@pytest.mark.postgres
async def test_both_dialects_define_the_same_tables(
    tmp_path: Path, postgres_url: str, new_schema: Callable[[], str]
) -> None:
    """SQLite and PostgreSQL fresh schemas have the same columns (type family, nullability), keys and indexes."""
    path, url = tmp_path / "parity.db", new_schema()
    await upgrade(f"sqlite:///{path}")
    await upgrade(url)
    lite_cat, pg_cat = sqlite_catalog(path), await pg_catalog(postgres_url, schema_of(url))
    lite_columns = sorted(
        (table, name, _FAMILY[type_], not (notnull or pk))
        for table, name, type_, notnull, _, pk, *_ in lite_cat["columns"]
        if not table.startswith("sqlite_")  # sqlite_sequence: AUTOINCREMENT's counter, bigserial's sequence in PG
    )
    pg_columns = sorted(
        (table, name, _FAMILY[type_], not notnull) for table, name, type_, notnull, *_ in pg_cat["columns"]
    )
    lite_indexes = sorted(index for _, index, _, origin, *_ in lite_cat["indexes"] if origin == "c")
    constraint_indexes = {name for _, name, kind, _ in pg_cat["constraints"] if kind in ("p", "u")}
    pg_indexes = sorted(name for name, _ in pg_cat["indexes"] if name not in constraint_indexes)
    assert lite_columns == pg_columns
    assert lite_indexes == pg_indexes
    assert sqlite_keys(lite_cat) == sorted(
        (table, sql) for table, _, kind, sql in pg_cat["constraints"] if kind in "pu"
    )
    assert lite_cat["meta"] == pg_cat["meta"]


def sqlite_keys(catalog: Catalog) -> list[tuple[str, str]]:
    """Primary keys and unique constraints of an SQLite catalog, written as PostgreSQL prints them."""
    keys: dict[str, list[tuple[int, str]]] = {}
    for table, name, *_, pk, _, _ in catalog["columns"]:
        if pk and not table.startswith("sqlite_"):
            keys.setdefault(table, []).append((pk, name))
    out = [(table, f"PRIMARY KEY ({', '.join(n for _, n in sorted(cols))})") for table, cols in keys.items()]
    out += [(t, f"UNIQUE ({', '.join(cols)})") for t, _, _, origin, _, cols in catalog["indexes"] if origin == "u"]
    return sorted(out)
