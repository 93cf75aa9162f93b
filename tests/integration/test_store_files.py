"""The database file: refused when it is not ours, locked to one engine, and WAL on a known schema.

A corrupt, foreign or newer file raises a named :class:`~stabilize_aio.StoreError`
at start and is left byte-identical; a second engine on a file is refused while
the first one lives, in this process or another one.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from stabilize_aio import (
    CorruptDatabaseError,
    DatabaseLockedError,
    Engine,
    EngineStateError,
    ForeignDatabaseError,
    SchemaTooNewError,
    Stage,
    StageView,
    StoreError,
    TaskResult,
    Workflow,
    WorkflowStatus,
)
from stabilize_aio.store.sqlite.schema import SCHEMA_VERSION
from stabilize_aio.store.sqlite.store import SqliteStore

WAIT = 30.0  # seconds a trivial run, or a child engine's start, may take before the test fails
TABLES = {
    *("stabilize_meta", "workflows", "stages", "outbox", "events"),
    *("leases", "engines", "schedules", "quarantine", "claims"),
}


# helpers ---------------------------------------------------------------------
async def ok_task(stage: StageView) -> TaskResult:
    """A task that succeeds with some output."""
    return TaskResult.success(outputs={"pad": "x" * 2_000, "stage": stage.ref_id})


def engine_on(path: Path) -> Engine:
    """An engine on ``path`` with the task type ``ok`` registered."""
    engine = Engine(f"sqlite:///{path}")
    engine.register("ok", ok_task)
    return engine


def small_workflow() -> Workflow:
    """Two ``ok`` stages in a row."""
    return Workflow(application="app", name="small", stages=[Stage("a", "ok"), Stage("b", "ok", requisites=["a"])])


async def run_one(engine: Engine) -> str:
    """Submit a small workflow, check it succeeds, return its id."""
    run = await engine.submit(small_workflow())
    assert WorkflowStatus.SUCCEEDED == (await run.wait(WAIT)).status
    return run.workflow_id


async def write_engine_db(path: Path, runs: int = 10) -> list[str]:
    """Make ``path`` a real engine database holding ``runs`` finished workflows."""
    async with engine_on(path) as engine:
        return [await run_one(engine) for _ in range(runs)]


def query(path: Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` read from ``path`` with the stdlib driver (the connection is closed after)."""
    with closing(sqlite3.connect(path)) as conn:
        return list(conn.execute(sql, params).fetchall())


def execute(path: Path, *statements: str) -> None:
    """Run ``statements`` on ``path`` in one committed transaction with the stdlib driver."""
    with closing(sqlite3.connect(path)) as conn, conn:
        for statement in statements:
            conn.execute(statement)


def sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def side_files(path: Path) -> set[str]:
    """The SQLite journal side files (-wal, -shm, -journal) that exist next to ``path``."""
    return {s for s in ("-wal", "-shm", "-journal") if path.with_name(path.name + s).exists()}


def schema_of(path: Path) -> list[tuple[Any, ...]]:
    """Every schema object of the database file, sorted."""
    return query(path, "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name")


def meta_of(path: Path) -> dict[str, str]:
    """The stabilize_meta table of the database file."""
    return {str(k): str(v) for k, v in query(path, "SELECT key, value FROM stabilize_meta")}


async def refused(path: Path, error: type[StoreError]) -> StoreError:
    """Start an engine on ``path``, which must raise exactly ``error``; return it."""
    engine = engine_on(path)
    with pytest.raises(error) as info:
        async with engine:
            raise AssertionError("the engine started on a file it must refuse")
    assert error is type(info.value)
    assert "stopped" == engine.statistics().state
    return info.value


# files that are not ours ------------------------------------------------------
def random_bytes(path: Path) -> None:
    """Fill the file with 16 KiB of (seeded) random bytes."""
    path.write_bytes(random.Random(7).randbytes(16_384))


def zeroed_magic(path: Path) -> None:
    """Zero the 16-byte ``SQLite format 3`` magic of a real database."""
    data = path.read_bytes()
    path.write_bytes(bytes(16) + data[16:])


def truncated_to_header(path: Path) -> None:
    """Keep only the 100-byte database header of a real database."""
    path.write_bytes(path.read_bytes()[:100])


def truncated_to_half(path: Path) -> None:
    """Cut a real database in half."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def garbled_page_of(name: str) -> Callable[[Path], None]:
    """A damage that overwrites the root page of the schema object ``name`` with (seeded) random bytes."""

    def garble(path: Path) -> None:
        page_size = int(query(path, "PRAGMA page_size")[0][0])
        root = int(query(path, "SELECT rootpage FROM sqlite_master WHERE name = ?", name)[0][0])
        data = bytearray(path.read_bytes())
        start = (root - 1) * page_size
        data[start : start + page_size] = random.Random(root).randbytes(page_size)
        path.write_bytes(bytes(data))

    return garble


@pytest.mark.parametrize(
    ("damage", "from_engine_db"),
    [
        pytest.param(random_bytes, False, id="random-bytes"),
        pytest.param(zeroed_magic, True, id="engine-db-zeroed-magic"),
        pytest.param(truncated_to_header, True, id="engine-db-truncated-to-header"),
        pytest.param(truncated_to_half, True, id="engine-db-truncated-to-half"),
        pytest.param(garbled_page_of("stabilize_meta"), True, id="engine-db-garbled-meta-table"),
        pytest.param(garbled_page_of("sqlite_autoindex_stabilize_meta_1"), True, id="engine-db-garbled-meta-index"),
    ],
)
async def test_corrupt_file_is_refused_and_left_untouched(
    tmp_path: Path, damage: Callable[[Path], None], from_engine_db: bool
) -> None:
    """A corrupt file makes start raise CorruptDatabaseError naming the file, and stays byte-identical."""
    path = tmp_path / "damaged.db"
    if from_engine_db:
        await write_engine_db(path)
    damage(path)
    digest = sha256(path)

    exc = await refused(path, CorruptDatabaseError)
    assert str(path) in str(exc)
    assert isinstance(exc.__cause__, sqlite3.DatabaseError)
    assert digest == sha256(path)

    again = await refused(path, CorruptDatabaseError)  # the refusal released the file lock
    assert str(path) in str(again)
    assert digest == sha256(path)


@pytest.mark.parametrize("damage", [random_bytes, zeroed_magic], ids=["random-bytes", "engine-db-zeroed-magic"])
async def test_non_sqlite_file_gets_no_journal_side_files(tmp_path: Path, damage: Callable[[Path], None]) -> None:
    """Refusing a file that is not SQLite at all creates no -wal, -shm or -journal file next to it."""
    path = tmp_path / "junk.db"
    await write_engine_db(path, runs=1)
    damage(path)
    assert set() == side_files(path)
    await refused(path, CorruptDatabaseError)
    assert set() == side_files(path)


async def test_foreign_sqlite_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    """Someone else's SQLite database raises ForeignDatabaseError naming the file and its tables; no byte changes."""
    path = tmp_path / "accounts.db"
    execute(
        path,
        "CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT NOT NULL, balance INTEGER NOT NULL)",
        "INSERT INTO accounts (owner, balance) VALUES ('ada', 100), ('bob', 250)",
    )
    digest = sha256(path)
    assert set() == side_files(path)

    exc = await refused(path, ForeignDatabaseError)
    assert str(path) in str(exc)
    assert "accounts" in str(exc)
    assert digest == sha256(path)
    assert set() == side_files(path)
    assert [("ada", 100), ("bob", 250)] == query(path, "SELECT owner, balance FROM accounts ORDER BY id")


async def test_foreign_wal_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    """A foreign database in WAL mode is refused with ForeignDatabaseError and its bytes are unchanged."""
    path = tmp_path / "other-wal.db"
    execute(path, "PRAGMA journal_mode = WAL", "CREATE TABLE jobs (id INTEGER PRIMARY KEY)")
    digest = sha256(path)
    exc = await refused(path, ForeignDatabaseError)
    assert str(path) in str(exc)
    assert digest == sha256(path)


async def test_database_with_someone_elses_meta_table_is_foreign(tmp_path: Path) -> None:
    """A stabilize_meta table written by another app raises ForeignDatabaseError; no byte changes."""
    path = tmp_path / "lookalike.db"
    execute(
        path,
        "CREATE TABLE stabilize_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "INSERT INTO stabilize_meta VALUES ('app', 'someone_else'), ('schema_version', '1')",
    )
    digest = sha256(path)
    exc = await refused(path, ForeignDatabaseError)
    assert str(path) in str(exc)
    assert "not written by stabilize_aio" in str(exc)
    assert digest == sha256(path)


async def test_newer_schema_is_refused_and_left_untouched(tmp_path: Path) -> None:
    """An engine db at schema_version 999 raises SchemaTooNewError naming file and versions; no byte changes."""
    path = tmp_path / "future.db"
    await write_engine_db(path)
    execute(path, "UPDATE stabilize_meta SET value = '999' WHERE key = 'schema_version'")
    assert set() == side_files(path)
    digest = sha256(path)

    exc = await refused(path, SchemaTooNewError)
    message = str(exc)
    assert str(path) in message
    assert "999" in message
    assert f"up to {SCHEMA_VERSION}" in message
    assert digest == sha256(path)
    assert "999" == meta_of(path)["schema_version"]


async def test_zero_byte_file_is_taken_as_a_new_database(db_path: Path) -> None:
    """An existing empty file is not refused: the engine creates its schema in it."""
    await anyio.Path(db_path).touch()
    async with engine_on(db_path) as engine:
        await run_one(engine)
    assert str(SCHEMA_VERSION) == meta_of(db_path)["schema_version"]


# one engine per file ---------------------------------------------------------
async def test_second_engine_in_this_process_is_refused(db_path: Path) -> None:
    """While one engine runs on a file, another's start raises DatabaseLockedError naming file and pid."""
    async with engine_on(db_path) as first:
        await run_one(first)
        second = engine_on(db_path)
        with pytest.raises(DatabaseLockedError) as info:
            await second.start()
        assert str(db_path) in str(info.value)
        assert f"pid {os.getpid()}" in str(info.value)
        with pytest.raises(EngineStateError):
            await second.start()  # a refused engine is spent

        # the refused attempt did not release the first engine's lock, nor disturb it
        with pytest.raises(DatabaseLockedError):
            await engine_on(db_path).start()
        await run_one(first)

    async with engine_on(db_path) as third:
        await run_one(third)
        assert 3 == len(await third.list())


CHILD = """
import sys

import anyio

from stabilize_aio import Engine


async def main() -> None:
    async with Engine(sys.argv[1]):
        print("ready", flush=True)
        await anyio.sleep_forever()


anyio.run(main)
"""


@pytest.mark.slow
async def test_engine_in_another_process_holds_the_file_until_it_dies(db_path: Path) -> None:
    """A child process's engine refuses ours; once the child is SIGKILLed and reaped, ours starts at once."""
    url = f"sqlite:///{db_path}"
    async with await anyio.open_process(
        [sys.executable, "-c", CHILD, url], stdin=subprocess.DEVNULL, stderr=None
    ) as child:
        try:
            assert child.stdout is not None
            with anyio.fail_after(WAIT):
                line = await BufferedByteReceiveStream(child.stdout).receive_until(b"\n", 1_000)
            assert b"ready" == line

            with pytest.raises(DatabaseLockedError) as info:
                async with engine_on(db_path):
                    raise AssertionError("started while the child holds the file")
            assert str(db_path) in str(info.value)
            assert f"pid {child.pid}" in str(info.value)
        finally:
            if child.returncode is None:
                child.kill()
            returncode = await child.wait()
    assert -signal.SIGKILL == returncode

    async with engine_on(db_path) as engine:
        await run_one(engine)


# schema and journal ----------------------------------------------------------
async def test_fresh_database_has_the_schema_and_wal(db_path: Path) -> None:
    """A new file gets our tables, app and schema_version == SCHEMA_VERSION, in WAL mode."""
    async with engine_on(db_path) as engine:
        assert [("wal",)] == query(db_path, "PRAGMA journal_mode")
        store = engine.store
        assert isinstance(store, SqliteStore)
        assert {"workflows": 0, "stages": 0, "outbox": 0, "events": 0} == await store.table_counts()
    tables = {str(r[0]) for r in query(db_path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert TABLES == {t for t in tables if not t.startswith("sqlite_")}
    assert {"app": "stabilize_aio", "schema_version": str(SCHEMA_VERSION)} == meta_of(db_path)
    assert [("wal",)] == query(db_path, "PRAGMA journal_mode")


async def test_reopening_a_database_is_idempotent(db_path: Path) -> None:
    """Opening an existing database again raises nothing, changes no schema and keeps every run."""
    ids = await write_engine_db(db_path, runs=3)
    schema, meta = schema_of(db_path), meta_of(db_path)
    counts = query(db_path, "SELECT (SELECT COUNT(*) FROM workflows), (SELECT COUNT(*) FROM stages)")
    for _ in range(2):
        async with engine_on(db_path) as engine:
            assert sorted(ids) == sorted(s.workflow_id for s in await engine.list())
            for workflow_id in ids:
                assert WorkflowStatus.SUCCEEDED == (await engine.get(workflow_id)).status
        assert schema == schema_of(db_path)
        assert meta == meta_of(db_path)
        assert counts == query(db_path, "SELECT (SELECT COUNT(*) FROM workflows), (SELECT COUNT(*) FROM stages)")


# URLs ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        pytest.param("sqlite:///:memory:", ":memory:", id="memory"),
        pytest.param("sqlite://", "needs a file path", id="sqlite-without-path"),
        pytest.param("mysql://localhost/db", "unknown store URL scheme 'mysql'", id="unknown-scheme"),
        pytest.param("stabilize.db", "unknown store URL scheme ''", id="bare-path"),
        pytest.param("sqlite:///x.db?synchronous=sometimes", "synchronous must be", id="bad-synchronous"),
    ],
)
def test_unusable_url_raises_value_error(url: str, fragment: str) -> None:
    """An Engine on an unusable URL raises ValueError saying what is wrong."""
    with pytest.raises(ValueError, match=re.escape(fragment)):
        Engine(url)
