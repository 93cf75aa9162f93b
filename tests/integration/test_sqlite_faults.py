"""SQLite faults that must never stop more than they concern (issue 8).

* One engine per database file, whatever name it is opened by: a symlink or a
  hard link of a held file is refused like its plain path, in this process and
  from another one, and the refusal leaves the holder's SQLite locks alone.
* A full database reports "database or disk is full" (the real cause), not the
  ROLLBACK that SQLite already did, and keeps nothing half-written.
* A write whose data the database refuses fails as DataError; a duplicate row
  stays a ConcurrencyError.
* A misspelled SQLite URL says how to write it.

Real files, real SQLite limits, real child processes.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import aiosqlite
import anyio
import msgspec
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream
from runs import initial_state
from storekit import running_store

from stabilize_aio import (
    ConcurrencyError,
    DatabaseLockedError,
    DataError,
    Engine,
    StabilizeError,
    Stage,
    StageView,
    StoreError,
    TaskResult,
    Workflow,
    WorkflowStatus,
)
from stabilize_aio.handlers import start
from stabilize_aio.store import NewWorkflow, store_from_url
from stabilize_aio.store.sqlite.store import SqliteStore

WAIT = 30.0  # seconds a trivial run, or a child engine's start, may take before the test fails
FULL = "database or disk is full"
NAMES = ("plain", "symlink", "hardlink-same-dir", "hardlink-other-dir")


# helpers ---------------------------------------------------------------------
async def ok_task(stage: StageView) -> TaskResult:
    """A task that succeeds with a small output."""
    return TaskResult.success(outputs={"stage": stage.ref_id})


def engine_on(path: Path) -> Engine:
    """An engine on ``path`` with the task type ``ok`` registered."""
    engine = Engine(f"sqlite:///{path}")
    engine.register("ok", ok_task)
    return engine


async def run_one(engine: Engine) -> str:
    """Submit a two-stage workflow, check it succeeds, return its id."""
    workflow = Workflow(application="app", name="small", stages=[Stage("a", "ok"), Stage("b", "ok", requisites=["a"])])
    run = await engine.submit(workflow)
    assert WorkflowStatus.SUCCEEDED == (await run.wait(WAIT)).status
    return run.workflow_id


def query(path: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` read from ``path`` with the stdlib driver (the connection is closed after)."""
    with closing(sqlite3.connect(path)) as conn:
        return list(conn.execute(sql).fetchall())


def name_of(db: Path, kind: str) -> Path:
    """Another name of the file ``db`` (made here): itself, a symlink, or a hard link in its or another directory."""
    if kind == "plain":
        return db
    if kind == "symlink":
        name = db.with_name("alias.db")
        name.symlink_to(db)
    elif kind == "hardlink-same-dir":
        name = db.with_name("twin.db")
        name.hardlink_to(db)
    else:
        name = db.parent.parent / "elsewhere" / "twin.db"
        name.parent.mkdir()
        name.hardlink_to(db)
    return name


async def engine_db(tmp_path: Path) -> Path:
    """A real engine database in a directory of its own (``tmp_path/a/engine.db``), closed cleanly."""
    db = tmp_path / "a" / "engine.db"
    db.parent.mkdir()
    async with engine_on(db) as engine:
        await run_one(engine)
    return db


def refusal(exc: BaseException) -> tuple[type[BaseException], int | None]:
    """(error type, the pid its message names) of a refused start."""
    found = re.search(r"\(pid (\d+)", str(exc))
    return type(exc), int(found[1]) if found else None


def sqlite_locks(path: Path) -> list[str]:
    """This process's POSIX (fcntl) locks on the file, from /proc/locks: the locks SQLite itself holds."""
    st = path.stat()
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    found = []
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()  # "3: POSIX  ADVISORY  READ 4242 fe:00:1474578 1073741826 1073742335"
        if fields[1] == "POSIX" and fields[4] == str(os.getpid()) and fields[5] == wanted:
            found.append(" ".join([fields[3], *fields[6:]]))
    return sorted(found)


def writer_of(store: SqliteStore) -> aiosqlite.Connection:
    """The connection the store's group writer commits on."""
    conn = store._writer
    assert conn is not None
    return conn


async def fill_up(conn: aiosqlite.Connection) -> None:
    """Cap the database at the pages it has now: SQLite fails any write that needs one more (SQLITE_FULL)."""
    (pages,) = next(iter(await conn.execute_fetchall("PRAGMA page_count")))
    await conn.execute(f"PRAGMA max_page_count = {pages}")


async def set_length_limit(conn: aiosqlite.Connection, limit: int) -> None:
    """Lower SQLITE_LIMIT_LENGTH (the longest string, blob or row) on ``conn``.

    sqlite3's ``setlimit`` must run in the connection's own thread: aiosqlite's
    ``_execute`` queues it there, as it does every call of the connection.
    """
    await conn._execute(conn._conn.setlimit, sqlite3.SQLITE_LIMIT_LENGTH, limit)  # type: ignore[no-untyped-call]


def new_workflow(wid: str, pad: int = 10) -> NewWorkflow:
    """A one-stage workflow op whose input carries ``pad`` bytes."""
    workflow = Workflow(application="app", name="wf", stages=[Stage("a", "t")])
    state = initial_state(workflow, wid, {"pad": "x" * pad})
    begin, _ = start(state, 1.0)  # the start turn, committed with the insert as submit does
    return NewWorkflow(record=state.record, specs=state.specs, runs=list(state.runs), begin=begin)


needs_proc_locks = pytest.mark.skipif(not Path("/proc/locks").exists(), reason="reads /proc/locks (Linux)")


# one engine per file, under any name ---------------------------------------------
@needs_proc_locks
@pytest.mark.parametrize("kind", NAMES)
async def test_a_second_engine_on_any_name_of_the_file_is_refused_in_this_process(tmp_path: Path, kind: str) -> None:
    """Another name of a held file is refused naming it and this pid; the holder's SQLite locks stay and it works on."""
    db = await engine_db(tmp_path)
    name = name_of(db, kind)
    async with engine_on(db) as first:
        await run_one(first)
        locks = sqlite_locks(db)
        assert [] != locks  # the open store's connections hold SQLite's locks on the file all along

        second = engine_on(name)
        with pytest.raises(StoreError) as info:
            async with second:
                raise AssertionError(f"a second engine started on {name}")
        assert (DatabaseLockedError, os.getpid()) == refusal(info.value)
        assert str(name) in str(info.value)
        assert locks == sqlite_locks(db)  # the refused attempt closed no descriptor of the file
        await run_one(first)
        assert 3 == len(await first.list())  # engine_db's run and two of this engine's

    async with engine_on(name) as third:  # released at once when the first stopped
        await run_one(third)
        assert 4 == len(await third.list())


CHILD_HOLDS = """
import sys

import anyio

from stabilize_aio import Engine


async def main() -> None:
    async with Engine(sys.argv[1]):
        print("ready", flush=True)
        await anyio.sleep_forever()


anyio.run(main)
"""

CHILD_TRIES = """
import sys

import anyio

from stabilize_aio import DatabaseLockedError, Engine


async def main() -> int:
    try:
        async with Engine(sys.argv[1]):
            print("started", flush=True)
            return 1
    except DatabaseLockedError as exc:
        print(f"refused: {exc}", flush=True)
        return 0


sys.exit(anyio.run(main))
"""


def child_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a child process, with a TMPDIR of its own (a lock must not depend on it)."""
    tmp = tmp_path / "child-tmp"
    tmp.mkdir(exist_ok=True)
    return {**os.environ, "TMPDIR": str(tmp)}


async def wait_ready(child: Process) -> None:
    """Wait for the child's ``ready`` line."""
    assert child.stdout is not None
    with anyio.fail_after(WAIT):
        line = await BufferedByteReceiveStream(child.stdout).receive_until(b"\n", 1_000)
    assert b"ready" == line


async def start_outcome(name: Path) -> tuple[type[BaseException] | None, int | None, bool]:
    """Try an engine on ``name``: (None, None, True) if it starts, else (error type, pid named, the name named)."""
    try:
        async with engine_on(name):
            return None, None, True
    except StoreError as exc:
        return (*refusal(exc), str(name) in str(exc))


@pytest.mark.slow
async def test_an_engine_in_another_process_refuses_every_name_of_its_file_until_it_is_killed(tmp_path: Path) -> None:
    """A child's engine makes ours refuse the plain path, a symlink and hard links; once SIGKILLed, ours opens."""
    db = await engine_db(tmp_path)
    names = {kind: name_of(db, kind) for kind in NAMES}
    async with await anyio.open_process(
        [sys.executable, "-c", CHILD_HOLDS, f"sqlite:///{db}"],
        stdin=subprocess.DEVNULL,
        stderr=None,
        env=child_env(tmp_path),
    ) as child:
        try:
            await wait_ready(child)
            outcomes = {kind: await start_outcome(name) for kind, name in names.items()}
        finally:
            if child.returncode is None:
                child.kill()
            returncode = await child.wait()
    assert dict.fromkeys(NAMES, (DatabaseLockedError, child.pid, True)) == outcomes
    assert -signal.SIGKILL == returncode

    async with engine_on(db) as engine:  # the kernel dropped the dead child's lock: no wait, no retry
        await run_one(engine)
        assert 2 == len(await engine.list())


async def test_every_name_of_a_held_file_is_refused_to_another_process(tmp_path: Path) -> None:
    """A child process (its own TMPDIR) is refused every name of the file our engine holds, naming our pid."""
    db = await engine_db(tmp_path)
    names = {kind: name_of(db, kind) for kind in NAMES}
    async with engine_on(db) as engine:
        outcomes = {}
        for kind, name in names.items():
            done = await anyio.run_process(
                [sys.executable, "-c", CHILD_TRIES, f"sqlite:///{name}"], check=False, env=child_env(tmp_path)
            )
            said = done.stdout.decode()
            outcomes[kind] = (done.returncode, f"(pid {os.getpid()}" in said, str(name) in said)
        await run_one(engine)
    assert dict.fromkeys(NAMES, (0, True, True)) == outcomes


async def test_a_missing_file_is_created_and_locked(tmp_path: Path) -> None:
    """An engine on a path that does not exist creates the file and holds it: a hard link of it is refused."""
    db = tmp_path / "a" / "new.db"
    db.parent.mkdir()
    async with engine_on(db) as engine:
        assert db.is_file()
        twin = name_of(db, "hardlink-same-dir")
        assert (DatabaseLockedError, os.getpid(), True) == await start_outcome(twin)
        await run_one(engine)


# a full database ----------------------------------------------------------------
async def test_a_full_database_fails_the_group_with_the_real_cause_and_writes_none_of_it(tmp_path: Path) -> None:
    """At the page limit a group fails with StoreError "database or disk is full" (chained); none of it is written."""
    store = SqliteStore(tmp_path / "full.db")
    async with running_store(store):
        await store.write(new_workflow("wf-before"))
        before = await store.table_counts()
        await fill_up(writer_of(store))

        errors: dict[str, BaseException | None] = {}

        async def write(wid: str) -> None:
            try:
                await store.write(new_workflow(wid, pad=20_000))
                errors[wid] = None
            except StoreError as exc:
                errors[wid] = exc

        ids = [f"wf-{i}" for i in range(5)]
        async with anyio.create_task_group() as tg:
            for wid in ids:
                tg.start_soon(write, wid)
        after = await store.table_counts()

        await writer_of(store).execute("PRAGMA max_page_count = 1073741823")  # room again
        await store.write(new_workflow("wf-after", pad=20_000))  # the writer connection is in no stale transaction
        final = await store.table_counts()

    kinds = {wid: (type(e).__name__, FULL in str(e), "rollback" in str(e)) for wid, e in errors.items() if e}
    assert dict.fromkeys(ids, ("StoreError", True, False)) == kinds
    causes = {type(e.__cause__).__name__ for e in errors.values() if e is not None}
    assert {"OperationalError"} == causes
    assert before == after
    assert {**before, "workflows": 2, "stages": 2, "outbox": 2, "events": 4} == final


async def test_an_engine_whose_writer_fills_the_database_stops_with_the_real_cause(tmp_path: Path) -> None:
    """A turn that hits a full database stops the engine with "database or disk is full"; nothing of it is written."""
    db = tmp_path / "full.db"
    started, release = anyio.Event(), anyio.Event()

    async def big_output(stage: StageView) -> TaskResult:
        started.set()
        await release.wait()
        return TaskResult.success(outputs={"pad": "x" * 100_000})

    before: dict[str, int] = {}

    async def run_into_the_limit() -> None:
        engine = Engine(f"sqlite:///{db}")
        engine.register("big", big_output)
        async with engine:
            run = await engine.submit(Workflow(application="app", name="big", stages=[Stage("a", "big")]))
            with anyio.fail_after(WAIT):
                await started.wait()
            store = engine.store
            assert isinstance(store, SqliteStore)
            before.update(await store.table_counts())
            await fill_up(writer_of(store))
            release.set()
            await run.wait(WAIT)  # the engine fails first: this wait is cancelled

    with pytest.raises(StabilizeError) as info:
        await run_into_the_limit()
    message = str(info.value)
    assert (StabilizeError, True, False) == (type(info.value), FULL in message, "rollback" in message)
    counts = {t: query(db, f"SELECT COUNT(*) FROM {t}")[0][0] for t in ("workflows", "stages", "outbox", "events")}
    assert before == counts
    assert [("RUNNING",)] == query(db, "SELECT status FROM stages")


class PageCapped(SqliteStore):
    """A store whose connections hold the database at ``pages`` pages (SQLite's max_page_count)."""

    pages = 1

    async def _connect(self) -> aiosqlite.Connection:
        conn = await super()._connect()
        await conn.execute(f"PRAGMA max_page_count = {self.pages}")
        return conn


async def test_a_migration_that_fills_the_database_reports_the_real_cause_and_leaves_no_table(tmp_path: Path) -> None:
    """A full database during the first migration raises a StoreError saying "database or disk is full"; no table."""
    path = tmp_path / "capped.db"
    with pytest.raises(StoreError) as info:
        await PageCapped(path).open()
    assert (True, False) == (FULL in str(info.value), "rollback" in str(info.value))
    assert [] == query(path, "SELECT name FROM sqlite_master")
    async with running_store(SqliteStore(path)) as store:  # the refusal released the file
        await store.write(new_workflow("wf-1"))
        assert 1 == (await store.table_counts())["workflows"]


# data the database refuses ----------------------------------------------------------
def too_long(wid: str) -> NewWorkflow:
    """An op whose 200 kB input is over the 100 kB length limit the test sets."""
    return new_workflow(wid, pad=200_000)


def with_record(op: NewWorkflow, **changes: Any) -> NewWorkflow:
    """``op`` with its record changed, as inserted and as its start turn leaves it."""
    assert op.begin is not None
    assert op.begin.workflow is not None
    begin = msgspec.structs.replace(op.begin, workflow=msgspec.structs.replace(op.begin.workflow, **changes))
    return msgspec.structs.replace(op, record=msgspec.structs.replace(op.record, **changes), begin=begin)


def null_application(wid: str) -> NewWorkflow:
    """An op without an application (a NOT NULL column)."""
    return with_record(new_workflow(wid), application=None)


def version_over_64_bits(wid: str) -> NewWorkflow:
    """An op whose version no SQLite INTEGER holds."""
    return with_record(new_workflow(wid), version=2**63)


@pytest.mark.parametrize("bad_op", [too_long, null_application, version_over_64_bits], ids=lambda f: f.__name__)
async def test_data_the_database_refuses_fails_its_op_with_data_error_and_the_next_op_commits(
    tmp_path: Path, bad_op: Callable[[str], NewWorkflow]
) -> None:
    """An op whose data SQLite refuses fails with DataError (chained), writes nothing, and a healthy op commits."""
    store = SqliteStore(tmp_path / "data.db")
    async with running_store(store):
        await set_length_limit(writer_of(store), 100_000)
        with pytest.raises(StoreError) as info:
            await store.write(bad_op("wf-bad"))
        await store.write(new_workflow("wf-good", pad=50_000))
        loaded = {wid: await store.load(wid) is not None for wid in ("wf-bad", "wf-good")}
    assert DataError is type(info.value)
    assert str(store.path) in str(info.value)
    assert isinstance(info.value.__cause__, sqlite3.Error | OverflowError)
    assert {"wf-bad": False, "wf-good": True} == loaded


async def test_a_value_over_the_length_limit_is_named_too_big(tmp_path: Path) -> None:
    """A value over SQLITE_LIMIT_LENGTH fails as DataError "string or blob too big" (SQLITE_TOOBIG)."""
    store = SqliteStore(tmp_path / "data.db")
    async with running_store(store):
        await set_length_limit(writer_of(store), 100_000)
        with pytest.raises(DataError) as info:
            await store.write(new_workflow("wf-big", pad=200_000))
    cause = info.value.__cause__
    assert isinstance(cause, sqlite3.Error)
    assert ("SQLITE_TOOBIG", True) == (cause.sqlite_errorname, "string or blob too big" in str(info.value))


async def test_a_duplicate_row_stays_a_concurrency_error(tmp_path: Path) -> None:
    """Inserting a workflow id that exists fails with ConcurrencyError (not DataError); the first row stays."""
    store = SqliteStore(tmp_path / "dup.db")
    async with running_store(store):
        await store.write(new_workflow("wf-1"))
        with pytest.raises(StoreError) as info:
            await store.write(new_workflow("wf-1"))
        counts = await store.table_counts()
    assert ConcurrencyError is type(info.value)
    assert 1 == counts["workflows"]


# URLs ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "relative"),
    [("sqlite://x.db", "sqlite:///x.db"), ("sqlite://data/x.db", "sqlite:///data/x.db")],
    ids=["file-as-host", "directory-as-host"],
)
def test_an_sqlite_url_with_two_slashes_says_how_to_write_it(url: str, relative: str) -> None:
    """``sqlite://x.db`` is refused saying the file was read as a host, with the relative and absolute forms."""
    with pytest.raises(ValueError, match="no host") as info:
        store_from_url(url)
    message = str(info.value)
    assert (True, True) == (relative in message, "sqlite:////abs/x.db" in message)


def test_a_well_formed_sqlite_url_names_its_file() -> None:
    """Three slashes give a relative path, four an absolute one."""
    stores = [store_from_url(u) for u in ("sqlite:///x.db", "sqlite:////abs/x.db")]
    assert [Path("x.db"), Path("/abs/x.db")] == [s.path for s in stores if isinstance(s, SqliteStore)]
