"""Containment (architecture rule 10): a fault local to one workflow ends that workflow, never the engine.

Every test runs on both backends where the fault is backend-independent: a
fresh SQLite file, or a fresh PostgreSQL schema.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import msgspec
import pytest
from runs import initial_state

from stabilize_aio import (
    DefinitionError,
    Engine,
    EngineStateError,
    InvalidIdError,
    RetryPolicy,
    StabilizeError,
    Stage,
    StageView,
    TaskResult,
    Workflow,
    WorkflowStatus,
    WorkflowView,
)
from stabilize_aio._ids import MAX_ID_BYTES, derive
from stabilize_aio.store import NewWorkflow
from stabilize_aio.testing import crash_points

S = WorkflowStatus
WAIT = 30.0


@pytest.fixture
def url(backend_url: str) -> str:
    """A fresh database of the parametrized backend."""
    return backend_url


@pytest.fixture(autouse=True)
def _disarmed() -> Any:
    """No fault point stays armed after a test."""
    yield
    crash_points.disarm()


async def noop(stage: StageView) -> TaskResult:
    return TaskResult.success(outputs={f"done_{stage.ref_id}": True})


async def approve(stage: StageView) -> TaskResult:
    if "_signal_name" not in stage.context:
        return TaskResult.suspend()
    return TaskResult.success(outputs={"signal": stage.context["_signal_name"]})


def make(url: str, **options: Any) -> Engine:
    engine = Engine(url, **options)
    engine.register("noop", noop)
    engine.register("approve", approve)
    return engine


def three(name: str = "three") -> Workflow:
    return Workflow(
        application="contain",
        name=name,
        stages=[Stage("a", "noop"), Stage("b", "noop", requisites=["a"]), Stage("c", "noop", requisites=["b"])],
    )


def error_type(view: WorkflowView, ref_id: str) -> str | None:
    error = view.stage(ref_id).error
    return error.type if error is not None else None


async def outbox_rows(engine: Engine, workflow_id: str) -> int:
    return len(await engine.store.pending_for(workflow_id))


# the rule ----------------------------------------------------------------------
async def test_a_failing_turn_ends_one_of_100_workflows_and_the_engine_goes_on(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """One injected handler fault in 100 running workflows: that one ends TERMINAL with its error, 99 succeed."""
    crash_points.arm("actor.before_commit", "raise", after=120)
    async with make(url) as engine:
        runs = [await engine.submit(three()) for _ in range(100)]
        views = [await r.wait(WAIT) for r in runs]
        later = await (await engine.submit(three())).wait(WAIT)  # the engine keeps running
        failed = [v for v in views if v.status is not S.SUCCEEDED]
        history = [e.kind for e in await engine.history(failed[0].workflow_id)] if failed else []
        left = await outbox_rows(engine, failed[0].workflow_id) if failed else -1
    assert Counter({S.SUCCEEDED: 99, S.TERMINAL: 1}) == Counter(v.status for v in views)
    assert S.SUCCEEDED == later.status
    bad = failed[0]
    assert bad.error is not None
    assert ("engine", "InjectedFault") == (bad.error.kind, bad.error.type)
    assert bad.workflow_id in bad.error.message
    assert {"workflow.error", "workflow.completed"} <= set(history)
    assert 0 == left
    assert any(r.levelno == logging.ERROR and bad.workflow_id in r.getMessage() for r in caplog.records)
    assert all(s.status is not S.RUNNING for s in bad.stages)
    async with make(url) as again:  # a restart on the same database is clean
        assert S.TERMINAL == (await again.get(bad.workflow_id)).status
        assert S.SUCCEEDED == (await (await again.submit(three())).wait(WAIT)).status
        assert 0 == again.statistics().mailboxes.failed  # type: ignore[union-attr]


@pytest.mark.parametrize("point", ["actor.after_commit", "actor.after_effects"])
async def test_a_fault_after_a_commit_fails_only_its_workflow(url: str, point: str) -> None:
    """A fault while acting on a committed turn reloads that workflow and fails it; the others finish."""
    async with make(url) as engine:
        first = await engine.submit(three())
        crash_points.arm(point, "raise", workflow=first.workflow_id)
        others = [await engine.submit(three()) for _ in range(5)]
        bad = await first.wait(WAIT)
        good = [await r.wait(WAIT) for r in others]
    assert (S.TERMINAL, "engine") == (bad.status, bad.error.kind if bad.error else None)
    assert [S.SUCCEEDED] * 5 == [v.status for v in good]


async def test_a_writer_fault_stops_the_engine_with_its_real_cause_and_the_restart_is_clean(url: str) -> None:
    """A database-wide failure is not contained: the engine stops and says what failed; nothing half-written."""
    wf = Workflow(application="c", name="w", stages=[Stage("a", "approve")])
    workflow_ids: list[str] = []

    async def fail_while_signalling() -> None:
        async with make(url) as engine:
            run = await engine.submit(wf)
            workflow_ids.append(run.workflow_id)
            await engine.wait_idle()
            crash_points.arm("writer.commit", "raise")
            await engine.signal(run.workflow_id, "a", "go")  # its group fails: the engine stops

    with pytest.raises(StabilizeError, match=r"fault injected at writer\.commit"):
        await fail_while_signalling()
    (wid,) = workflow_ids
    async with make(url) as again:
        left = await outbox_rows(again, wid)  # the failed group wrote nothing
        await again.signal(wid, "a", "go")
        view = await again.handle(wid).wait(WAIT)
    assert 0 == left
    assert S.SUCCEEDED == view.status


def test_fault_points_are_named_and_checked() -> None:
    """names() lists the points; arming an unknown point or action is refused."""
    assert {"actor.before_commit", "actor.after_commit", "actor.after_effects"} <= set(crash_points.names())
    assert {"writer.begin", "writer.commit"} <= set(crash_points.names())
    with pytest.raises(ValueError, match="unknown fault point"):
        crash_points.arm("nowhere")
    with pytest.raises(ValueError, match="action"):
        crash_points.arm("writer.begin", "explode")  # type: ignore[arg-type]


# bug 1: a stage_timeout on a stage waiting for a signal ------------------------------------
async def test_stage_timeout_on_a_suspended_stage_fails_the_stage_and_keeps_the_engine(url: str) -> None:
    """A deadline on a signal wait ends the stage as a timeout (via RUNNING); the engine and a restart go on."""
    wf = Workflow(
        application="contain",
        name="deadline",
        stages=[Stage("a", "approve", stage_timeout=0.3), Stage("b", "noop", requisites=["a"])],
    )
    soft = Workflow(
        application="contain", name="soft", stages=[Stage("a", "approve", stage_timeout=0.3, fail_workflow=False)]
    )
    async with make(url) as engine:
        hard = await (await engine.submit(wf)).wait(WAIT)
        stopped = await (await engine.submit(soft)).wait(WAIT)
        after = await (await engine.submit(three())).wait(WAIT)
        events = [(e.kind, e.status) for e in await engine.history(hard.workflow_id)]
    assert (S.TERMINAL, S.TERMINAL, S.NOT_STARTED) == (hard.status, hard.stage("a").status, hard.stage("b").status)
    assert "StageTimeout" == error_type(hard, "a")
    assert (S.SUCCEEDED, S.STOPPED) == (stopped.status, stopped.stage("a").status)
    assert ("stage.completed", "TERMINAL") in events
    assert S.SUCCEEDED == after.status
    async with make(url) as again:  # the timeout row does not come back
        assert S.SUCCEEDED == (await (await again.submit(three())).wait(WAIT)).status


# bug 3: an undecodable outbox row ------------------------------------------------------------
async def corrupt(url: str, sql_sqlite: str, sql_pg: str, *params: Any) -> None:
    """Change rows behind the engine's back, with the backend's own driver."""
    if url.startswith("sqlite"):
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            conn.execute(sql_sqlite, params)
            conn.commit()
        return
    base, schema = url.split("?schema=")
    conn = await asyncpg.connect(base, server_settings={"search_path": schema})
    try:
        await conn.execute(sql_pg, *params)
    finally:
        await conn.close()


async def test_an_undecodable_outbox_row_is_quarantined_and_fails_only_its_workflow(url: str) -> None:
    """A start with a garbage outbox row works: the row moves to quarantine, its workflow fails, others run."""
    async with make(url) as engine:
        waiting = await engine.submit(Workflow(application="c", name="w", stages=[Stage("a", "approve")]))
        healthy = await engine.submit(Workflow(application="c", name="w", stages=[Stage("a", "approve")]))
        await engine.wait_idle()
        sid = "signal:bad"
        insert = "INSERT INTO outbox (workflow_id, id, deliver_at, kind, task_type, body) VALUES"
        await corrupt(
            url,
            f"{insert} (?, ?, NULL, 'x', NULL, ?)",
            f"{insert} ($1, $2, NULL, 'x', NULL, $3)",
            waiting.workflow_id,
            sid,
            b"\xc1 not msgpack",
        )
    async with make(url) as engine:  # starts although the row cannot be decoded
        bad = await engine.handle(waiting.workflow_id).wait(WAIT)
        await engine.signal(healthy.workflow_id, "a", "go")
        good = await engine.handle(healthy.workflow_id).wait(WAIT)
        rows = await engine.store.quarantined(waiting.workflow_id)
        left = await outbox_rows(engine, waiting.workflow_id)
    assert (S.TERMINAL, "engine", "UndecodableRow") == (
        bad.status,
        bad.error.kind if bad.error else None,
        bad.error.type if bad.error else None,
    )
    assert sid in (bad.error.message if bad.error else "")
    assert S.SUCCEEDED == good.status
    assert [("outbox", sid, b"\xc1 not msgpack")] == [(r.source, r.key, r.body) for r in rows]
    assert 0 == left
    async with make(url) as again:  # and the next start is clean
        assert S.SUCCEEDED == (await (await again.submit(three())).wait(WAIT)).status


async def test_undecodable_rows_of_a_turn_that_faults_still_reach_the_quarantine(url: str) -> None:
    """A fault in the very turn that carried an undecodable row: the workflow fails and the row's bytes are kept."""
    async with make(url) as engine:
        run = await engine.submit(Workflow(application="c", name="w", stages=[Stage("a", "approve")]))
        await engine.wait_idle()
    insert = "INSERT INTO outbox (workflow_id, id, deliver_at, kind, task_type, body) VALUES"
    await corrupt(
        url,
        f"{insert} (?, 'signal:bad', NULL, 'x', NULL, ?)",
        f"{insert} ($1, 'signal:bad', NULL, 'x', NULL, $2)",
        run.workflow_id,
        b"\xc1",
    )
    crash_points.arm("actor.before_commit", "raise", workflow=run.workflow_id)
    async with make(url) as engine:
        view = await engine.handle(run.workflow_id).wait(WAIT)
        rows = await engine.store.quarantined(run.workflow_id)
        left = await outbox_rows(engine, run.workflow_id)
    assert (S.TERMINAL, "InjectedFault") == (view.status, view.error.type if view.error else None)
    assert [("outbox", "signal:bad", b"\xc1")] == [(r.source, r.key, r.body) for r in rows]
    assert 0 == left


async def test_an_undecodable_stage_row_is_quarantined_and_its_workflow_fails_readably(url: str) -> None:
    """A damaged stage row of a live workflow: it ends TERMINAL, get() and list() still work, rows are repaired."""
    async with make(url) as engine:
        run = await engine.submit(Workflow(application="c", name="w", stages=[Stage("a", "approve")]))
        await engine.wait_idle()
    await corrupt(
        url,
        "UPDATE stages SET run = ? WHERE workflow_id = ?",
        "UPDATE stages SET run = $1 WHERE workflow_id = $2",
        b"\xc1",
        run.workflow_id,
    )
    async with make(url) as engine:
        await engine.signal(run.workflow_id, "a", "go")  # reading the damaged workflow works
        view = await engine.handle(run.workflow_id).wait(WAIT)
        listed = await engine.list(application="c")
        rows = await engine.store.quarantined(run.workflow_id)
    assert (S.TERMINAL, "engine") == (view.status, view.error.kind if view.error else None)
    assert [S.TERMINAL] == [s.status for s in listed]
    assert [("stages.run", "0")] == [(r.source, r.key) for r in rows]
    async with make(url) as again:  # repaired: it loads without damage now
        assert S.TERMINAL == (await again.get(run.workflow_id)).status
        assert 1 == len(await again.store.quarantined())


# bug 4: ids ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad",
    [42, b"bytes", "", "x" * (MAX_ID_BYTES + 1), "é" * 128, "a\x00b", "tab\there", "new\nline", "\x7f"],
)
async def test_a_bad_workflow_id_is_refused_at_submit_and_nothing_is_written(url: str, bad: Any) -> None:
    """A workflow id that is not 1-255 UTF-8 bytes of printable text raises InvalidIdError; nothing is stored."""
    async with make(url) as engine:
        with pytest.raises(InvalidIdError):
            await engine.submit(three(), workflow_id=bad)
        with pytest.raises(ValueError, match="workflow id"):  # it is a ValueError too
            await engine.get(bad)
        listed = await engine.list()
        ok = await (await engine.submit(three(), workflow_id="é" * 127)).wait(WAIT)  # 254 bytes
    assert [] == [s for s in listed if s.workflow_id != ok.workflow_id]
    assert S.SUCCEEDED == ok.status


@pytest.mark.postgres
async def test_a_huge_id_from_a_process_that_does_not_own_it_gets_invalid_id_not_a_store_error(
    postgres_schema_url: str,
) -> None:
    """On PostgreSQL an 8,000-byte id is refused at the door by an owner and by a pure client alike."""
    async with make(postgres_schema_url) as owner, Engine(postgres_schema_url, client=True) as client:
        for engine in (owner, client):
            with pytest.raises(InvalidIdError, match="UTF-8 bytes"):
                await engine.submit(three(), workflow_id="w" * 8000)
        assert S.SUCCEEDED == (await (await owner.submit(three())).wait(WAIT)).status


def test_derived_ids_fit_and_stay_stable() -> None:
    """A derived id within the limit reads as its parts; a longer one is its head plus a hash, always the same."""
    assert "schedule:nightly:1700000000" == derive("schedule", "nightly", "1700000000")
    long = derive("schedule", "n" * 300, "1700000000")
    assert len(long.encode()) <= MAX_ID_BYTES
    assert long == derive("schedule", "n" * 300, "1700000000")
    assert long != derive("schedule", "n" * 300, "1700000060")


async def test_a_non_string_id_left_by_an_old_release_does_not_break_list_or_get(tmp_path: Path) -> None:
    """A row whose body carries an int id (as an old release let in) is read from its columns, not a crash."""
    db = tmp_path / "old.db"
    url = f"sqlite:///{db}"
    async with make(url) as engine:
        run = await engine.submit(three(), workflow_id="42")
        await run.wait(WAIT)
    body = msgspec.msgpack.encode({"id": 42, "application": "contain", "name": "three", "status": "SUCCEEDED"})
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("UPDATE workflows SET body = ? WHERE id = '42'", (body,))
        conn.commit()
    async with make(url) as engine:
        listed = await engine.list()
        view = await engine.get("42")
    assert [("42", S.SUCCEEDED)] == [(s.workflow_id, s.status) for s in listed]
    assert ("42", S.SUCCEEDED) == (view.workflow_id, view.status)


# bug 8: a def task's timeout ------------------------------------------------------------------
async def test_a_def_task_past_its_timeout_times_out_without_waiting_for_its_thread(url: str) -> None:
    """A plain def task that outlives its timeout fails as a timeout while its thread still runs."""
    release = threading.Event()
    calls: list[int] = []

    def slow(stage: StageView) -> TaskResult:
        calls.append(stage.attempt)
        release.wait(10)
        return TaskResult.success()

    engine = make(url)
    engine.register("slow", slow, timeout=0.3, retry=RetryPolicy(max_attempts=2, initial=0.01, jitter=0.0))
    try:
        async with engine:
            view = await (await engine.submit(Workflow(application="c", name="t", stages=[Stage("a", "slow")]))).wait(
                WAIT
            )
            still_blocked = not release.is_set()
    finally:
        release.set()
    assert (S.TERMINAL, "TaskTimeout") == (view.status, error_type(view, "a"))
    assert [1, 2] == calls  # the timeout was retried like any
    assert still_blocked


async def test_stop_does_not_wait_for_a_thread_past_its_grace(tmp_path: Path) -> None:
    """stop(grace) returns after its grace although a def task's thread is still blocked."""
    release = threading.Event()
    started = threading.Event()

    def stuck(stage: StageView) -> TaskResult:
        started.set()
        release.wait(10)
        return TaskResult.success()

    engine = make(f"sqlite:///{tmp_path / 'g.db'}")
    engine.register("stuck", stuck)
    try:
        async with engine:
            await engine.submit(Workflow(application="c", name="t", stages=[Stage("a", "stuck")]))
            await anyio.to_thread.run_sync(started.wait, 10)
            await engine.stop(grace=0.1)
            returned_blocked = not release.is_set()
            (pool,) = [p for p in engine.statistics().pools if p.task_type == "stuck"]
    finally:
        release.set()
    assert returned_blocked
    assert (0, 1) == (pool.active, pool.cancelled)  # abandoned at the end of its grace, not waited for


# bug 11: smaller stumbles ---------------------------------------------------------------------
async def test_stop_from_another_task_is_an_engine_state_error_not_a_hang(tmp_path: Path) -> None:
    """stop() from a task other than start()'s raises EngineStateError; the engine runs on and stops normally."""
    engine = make(f"sqlite:///{tmp_path / 's.db'}")
    errors: list[BaseException] = []
    await engine.start()
    try:

        async def other() -> None:
            try:
                await engine.stop()
            except EngineStateError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(other)
        view = await (await engine.submit(three())).wait(WAIT)
    finally:
        await engine.stop()
    assert 1 == len(errors)
    assert "task that called start()" in str(errors[0])
    assert S.SUCCEEDED == view.status


async def test_list_takes_a_status_in_any_case(url: str) -> None:
    """list(status=...) accepts the enum, its name in any case, and names the valid ones for a typo."""
    async with make(url) as engine:
        await (await engine.submit(three())).wait(WAIT)
        found = [len(await engine.list(status=s)) for s in ("succeeded", "Succeeded", S.SUCCEEDED, "running")]
        with pytest.raises(ValueError, match="SUCCEEDED"):
            await engine.list(status="done")
    assert [1, 1, 1, 0] == found


async def test_views_are_plain_json_ready_data_the_same_from_every_path(url: str) -> None:
    """outputs are plain dicts and lists (json.dumps works), the same from wait() and from another engine's get()."""

    async def shaped(stage: StageView) -> TaskResult:
        return TaskResult.success(outputs={"pair": (1, 2), "nested": {"t": ("a",)}})

    engine = make(url)
    engine.register("shaped", shaped)
    async with engine:
        waited = await (await engine.submit(Workflow(application="c", name="p", stages=[Stage("a", "shaped")]))).wait(
            WAIT
        )
    async with make(url) as other:
        read = await other.get(waited.workflow_id)
    expected = {"pair": [1, 2], "nested": {"t": ["a"]}}
    assert expected == waited.outputs == read.outputs
    assert (dict, dict) == (type(waited.outputs), type(read.stage("a").outputs))
    assert json.loads(json.dumps(waited.outputs)) == expected
    assert json.loads(msgspec.json.encode(read)) is not None


async def test_a_wait_timeout_says_which_workflow_and_its_status(url: str) -> None:
    """TimeoutError from wait() names the workflow and says it goes on."""
    async with make(url) as engine:
        run = await engine.submit(Workflow(application="c", name="w", stages=[Stage("a", "approve")]))
        with pytest.raises(TimeoutError, match=run.workflow_id) as info:
            await run.wait(timeout=0.2)
    assert "goes on" in str(info.value)


async def test_a_stage_without_a_task_is_a_join_point_that_succeeds_when_ready(url: str) -> None:
    """A stage with no task completes SUCCEEDED once its requisites can continue, and downstream runs."""
    wf = Workflow(
        application="c",
        name="join",
        stages=[
            Stage("x", "noop"),
            Stage("y", "noop"),
            Stage("gate", requisites=["x", "y"]),
            Stage("after", "noop", requisites=["gate"]),
        ],
    )
    async with make(url) as engine:
        view = await (await engine.submit(wf)).wait(WAIT)
    assert [S.SUCCEEDED] * 4 == [s.status for s in view.stages]
    assert {} == view.stage("gate").outputs


# bug 6: a signal from another process, woken twice --------------------------------------------
@pytest.mark.postgres
async def test_repeated_wake_ups_apply_a_signal_once_and_drop_nothing_else(postgres_schema_url: str) -> None:
    """Many wake-ups for signals sent from another process: each signal resumes its stage once, no turn is refused."""
    url = postgres_schema_url
    calls: Counter[str] = Counter()

    async def gate(stage: StageView) -> TaskResult:
        calls[f"{stage.ref_id}:{stage.context.get('_signal_name')}"] += 1
        if "_signal_name" not in stage.context:
            return TaskResult.suspend()
        return TaskResult.success()

    wf = Workflow(application="c", name="two", stages=[Stage("a", "gate"), Stage("b", "gate")])
    owner = Engine(url, poll_interval=3600.0)
    owner.register("gate", gate)
    base, schema = url.split("?schema=")
    raw = await asyncpg.connect(base, server_settings={"search_path": schema})
    try:
        async with owner, Engine(url, client=True) as client:
            runs = [await owner.submit(wf) for _ in range(5)]
            await owner.wait_idle()
            channel = owner.store.wake_channel  # type: ignore[attr-defined]
            for run in runs:
                await client.signal(run.workflow_id, "a", "go")
                await client.signal(run.workflow_id, "b", "go")
                for _ in range(10):  # more wake-ups, each its own transaction (so none is merged)
                    await raw.execute("SELECT pg_notify($1, $2)", channel, run.workflow_id)
            views = [await owner.handle(r.workflow_id).wait(WAIT) for r in runs]
            stats = owner.statistics().mailboxes
    finally:
        await raw.close()
    assert [S.SUCCEEDED] * 5 == [v.status for v in views]
    assert {"a:None": 5, "b:None": 5, "a:go": 5, "b:go": 5} == dict(calls)
    assert stats is not None
    assert 0 == stats.reloads  # no duplicate reached the fence


def test_ref_ids_and_names_that_a_backend_cannot_carry_fail_at_the_door() -> None:
    """A stage ref id or a workflow name with a NUL, a control character or over 255 bytes is a DefinitionError."""
    for bad in ("a\x00b", "line\nbreak", "r" * 256):
        with pytest.raises(DefinitionError, match="stage ref id"):
            Stage(bad, "noop")
    with pytest.raises(DefinitionError, match="workflow application"):
        Workflow(application="x" * 300, name="n", stages=[Stage("a", "noop")])
    with pytest.raises(DefinitionError, match="workflow name"):
        Workflow(application="app", name="tab\there", stages=[Stage("a", "noop")])


async def test_a_start_row_of_an_older_version_is_quarantined_and_its_run_fails_readably(url: str) -> None:
    """A `start` outbox row (submit wrote one before a run's start turn was part of its insert) is no message now.

    It reaches its workflow as an undecodable row: its bytes move to the quarantine
    table and the run, never started, ends TERMINAL with an UndecodableRow error.
    """
    state = initial_state(Workflow(application="c", name="w", stages=[Stage("a", "noop")]), "old-run", {})
    async with make(url) as engine:
        await engine.store.write(NewWorkflow(record=state.record, specs=state.specs, runs=list(state.runs)))
    body = msgspec.msgpack.encode({"type": "start", "id": "start", "deliver_at": None})
    insert = "INSERT INTO outbox (workflow_id, id, deliver_at, kind, task_type, body) VALUES"
    await corrupt(
        url,
        f"{insert} (?, 'start', NULL, 'StartWorkflow', NULL, ?)",
        f"{insert} ($1, 'start', NULL, 'StartWorkflow', NULL, $2)",
        "old-run",
        body,
    )
    async with make(url) as engine:
        view = await engine.handle("old-run").wait(WAIT)
        rows = await engine.store.quarantined("old-run")
        left = await outbox_rows(engine, "old-run")
        fine = await (await engine.submit(three())).wait(WAIT)
    assert (S.TERMINAL, "UndecodableRow") == (view.status, view.error.type if view.error else None)
    assert [S.NOT_STARTED] == [s.status for s in view.stages]
    assert [("outbox", "start", body)] == [(r.source, r.key, r.body) for r in rows]
    assert (0, S.SUCCEEDED) == (left, fine.status)
