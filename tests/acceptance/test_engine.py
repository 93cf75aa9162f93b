"""End-to-end tests through Engine on a real SQLite file."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import anyio
import pytest

from stabilize_aio import (
    Engine,
    EngineStateError,
    RetryPolicy,
    StabilizeError,
    Stage,
    StageView,
    Task,
    TaskResult,
    TransientError,
    Workflow,
    WorkflowStatus,
    WorkflowView,
)
from stabilize_aio.model.events import KINDS
from stabilize_aio.testing import running_engine

S = WorkflowStatus
FAST_RETRY = RetryPolicy(max_attempts=3, initial=0.01, jitter=0.0)


def chain(n: int, task: str = "noop", name: str = "chain") -> Workflow:
    stages = [Stage("s0", task)]
    stages += [Stage(f"s{i}", task, requisites=[f"s{i - 1}"]) for i in range(1, n)]
    return Workflow(application="test", name=name, stages=stages)


def fan(width: int, task: str = "noop") -> Workflow:
    stages = [Stage("root", task)]
    stages += [Stage(f"b{i}", task, requisites=["root"]) for i in range(width)]
    stages.append(Stage("join", task, requisites=[f"b{i}" for i in range(width)]))
    return Workflow(application="test", name=f"fan{width}", stages=stages)


async def noop(stage: StageView) -> TaskResult:
    return TaskResult.success()


async def test_group_commit_and_no_polling_with_200_concurrent_workflows(db_url: str) -> None:
    """200 concurrent workflows commit in far fewer transactions than transitions, and never read the outbox."""
    engine = Engine(db_url)
    engine.register("noop", noop)
    results: list[WorkflowView] = []

    async def one(i: int) -> None:
        run = await engine.submit(fan(3) if i % 2 else chain(3))
        results.append(await run.wait(timeout=60))

    async with engine:
        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(one, i)
        await engine.wait_idle()
        stats = engine.statistics()
    assert [S.SUCCEEDED] * 200 == [r.status for r in results]
    assert 1 == stats.outbox_reads  # the start-up recovery read, and nothing after it
    committed_ops = stats.transitions + stats.store.workflows_inserted  # submit commits the start turn too
    assert committed_ops >= 200 * 4
    assert stats.commits * 3 < committed_ops
    assert 0 == stats.live_actors


async def test_bytes_per_transition_do_not_grow_with_the_workflow(db_path: Path) -> None:
    """In a 1,000-wide workflow, a stage step late in the run writes about what one early in the run writes."""
    samples: list[tuple[int, int]] = []
    engine = Engine(f"sqlite:///{db_path}")
    reader = sqlite3.connect(db_path)

    @engine.task("work", concurrency=1)
    async def work(stage: StageView) -> TaskResult:
        (done,) = reader.execute("SELECT COUNT(*) FROM stages WHERE status = 'SUCCEEDED'").fetchone()
        samples.append((done, engine.statistics().bytes_written))
        return TaskResult.success(outputs={f"out_{stage.ref_id}": "x" * 100})

    try:
        async with engine:
            result = await (await engine.submit(fan(1000, "work"))).wait(timeout=120)
    finally:
        reader.close()
    assert S.SUCCEEDED == result.status

    def per_step(lo: int, hi: int) -> float:
        """Bytes per committed stage step between the first and last commit seen in [lo, hi]."""
        window = sorted({s for s in samples if lo <= s[0] <= hi})
        (d0, b0), (d1, b1) = window[0], window[-1]
        assert d1 - d0 >= 100, window  # at least two commits, 100 steps apart, in the window
        return (b1 - b0) / (d1 - d0)

    early = per_step(1, 400)  # the first 40 % of the fan-out (after the root's big turn)
    late = per_step(600, 1000)  # the last 40 %
    assert late < 2 * early, (early, late)
    assert early < 2 * late, (early, late)


async def test_actors_leave_memory_when_workflows_finish(db_url: str) -> None:
    """After every workflow finished, no actor remains live."""
    async with running_engine(lambda e: e.register("noop", noop)) as engine:
        runs = [await engine.submit(chain(5)) for _ in range(50)]
        for r in runs:
            await r.wait(timeout=30)
        await engine.wait_idle()
        stats = engine.statistics()
    assert (0, 0) == (stats.live_actors, stats.mailboxes.live_actors if stats.mailboxes else -1)


async def test_task_kinds_sync_async_class_and_multi_task_stage(db_url: str) -> None:
    """Plain def, async def and class tasks run; a later task of a stage sees the earlier outputs."""

    class Double(Task):
        async def execute(self, stage: StageView) -> TaskResult:
            return TaskResult.success(outputs={"doubled": stage.context["value"] * 2})

    def add_one(stage: StageView) -> TaskResult:  # runs in a worker thread
        return TaskResult.success(outputs={"value": stage.context.get("doubled", stage.context["start"]) + 1})

    engine = Engine(db_url)
    engine.register("add_one", add_one)
    engine.register("double", Double())
    wf = Workflow(
        application="t",
        name="kinds",
        stages=[Stage("a", tasks=["add_one", "double", "add_one"], context={"start": 1})],
    )
    async with engine:
        view = await (await engine.submit(wf)).wait(timeout=10)
    assert (S.SUCCEEDED, {"value": 5, "doubled": 4}) == (view.status, dict(view.stage("a").outputs))


async def test_stage_view_fields(db_url: str) -> None:
    """A task sees its ref id, workflow id, attempt, a stable idempotency key and a read-only context."""
    seen: list[StageView] = []
    errors: list[str] = []
    engine = Engine(db_url)

    @engine.task("flaky", retry=FAST_RETRY)
    async def flaky(stage: StageView) -> TaskResult:
        seen.append(stage)
        try:
            stage.context["x"] = 1  # type: ignore[index]
        except TypeError as exc:
            errors.append(str(exc))
        if stage.attempt < 3:
            raise TransientError("again", context_update={"tries": stage.attempt})
        return TaskResult.success(outputs={"tries": stage.context["tries"]})

    async with engine:
        run = await engine.submit(Workflow(application="t", name="v", stages=[Stage("a", "flaky")]))
        view = await run.wait(timeout=10)
    assert [1, 2, 3] == [s.attempt for s in seen]
    assert 1 == len({s.idempotency_key for s in seen})
    assert {run.workflow_id} == {s.workflow_id for s in seen}
    assert (S.SUCCEEDED, 2, 3) == (view.status, view.stage("a").outputs["tries"], len(errors))


async def test_polling_task_keeps_its_attempt_and_context(db_url: str) -> None:
    """A task returning running is called again after its poll interval with its context kept."""
    calls: list[tuple[int, int]] = []
    engine = Engine(db_url)

    @engine.task("poll", poll_interval=0.01)
    async def poll(stage: StageView) -> TaskResult:
        n = stage.context.get("n", 0)
        calls.append((stage.attempt, n))
        if n < 3:
            return TaskResult.running(context={"n": n + 1})
        return TaskResult.success(outputs={"polled": n})

    async with engine:
        view = await (await engine.submit(Workflow(application="t", name="p", stages=[Stage("a", "poll")]))).wait(10)
    assert [(1, 0), (1, 1), (1, 2), (1, 3)] == calls
    assert 3 == view.stage("a").outputs["polled"]


async def test_exhausted_retries_end_terminal_with_the_error(db_url: str) -> None:
    """A task that always raises TransientError runs max_attempts times, then the stage is TERMINAL."""
    calls = 0
    engine = Engine(db_url)

    @engine.task("down", retry=FAST_RETRY)
    async def down(stage: StageView) -> TaskResult:
        nonlocal calls
        calls += 1
        raise TransientError("service down")

    async with engine:
        view = await (await engine.submit(Workflow(application="t", name="r", stages=[Stage("a", "down")]))).wait(10)
    error = view.stage("a").error
    assert error is not None
    assert (3, S.TERMINAL, "service down", True, 3) == (
        calls,
        view.status,
        error.message,
        error.transient,
        error.attempt,
    )


async def test_permanent_exception_fails_at_once_with_traceback(db_url: str) -> None:
    """Any other exception fails the task on the first call, type, message and traceback recorded."""
    engine = Engine(db_url)

    @engine.task("bad")
    async def bad(stage: StageView) -> TaskResult:
        raise KeyError("missing-key")

    async with engine:
        view = await (await engine.submit(Workflow(application="t", name="e", stages=[Stage("a", "bad")]))).wait(10)
    error = view.stage("a").error
    assert error is not None
    assert (S.TERMINAL, "KeyError", 1, False) == (view.status, error.type, error.attempt, error.transient)
    assert "missing-key" in error.traceback


async def test_cancel_cancels_running_coroutines_and_is_idempotent(db_url: str) -> None:
    """engine.cancel() cancels the running task for real, ends the run CANCELED, and can be repeated."""
    started = anyio.Event()
    cleaned: list[str] = []
    engine = Engine(db_url)

    @engine.task("forever")
    async def forever(stage: StageView) -> TaskResult:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            cleaned.append(stage.ref_id)
        raise AssertionError("unreachable")

    async with engine:
        wf = Workflow(
            application="t", name="c", stages=[Stage("a", "forever"), Stage("b", "forever", requisites=["a"])]
        )
        run = await engine.submit(wf)
        await started.wait()
        view = await engine.cancel(run.workflow_id, reason="no longer needed")
        again = await engine.cancel(run.workflow_id)
        await engine.wait_idle()
        pools = engine.statistics().pools
    assert (S.CANCELED, "no longer needed") == (view.status, view.cancel_reason)
    assert [S.CANCELED, S.CANCELED] == [s.status for s in view.stages]
    assert (["a"], view) == (cleaned, again)
    assert [0] == [p.active for p in pools]


async def test_task_timeout_cancels_the_call_and_retries(db_url: str) -> None:
    """A call past its timeout is cancelled for real and retried as a transient failure."""
    attempts: list[int] = []
    engine = Engine(db_url)

    @engine.task("slow", timeout=0.1, retry=FAST_RETRY)
    async def slow(stage: StageView) -> TaskResult:
        attempts.append(stage.attempt)
        if stage.attempt == 1:
            await anyio.sleep_forever()
        return TaskResult.success()

    async with engine:
        view = await (await engine.submit(Workflow(application="t", name="to", stages=[Stage("a", "slow")]))).wait(10)
        timed_out = engine.statistics().pools[0].timed_out
    assert ([1, 2], S.SUCCEEDED, 1) == (attempts, view.status, timed_out)


async def test_stage_timeout_ends_the_stage_mid_call(db_url: str) -> None:
    """A stage_timeout fails the stage TERMINAL while its task is still running, and cancels the call."""
    cleaned: list[bool] = []
    engine = Engine(db_url)

    @engine.task("hang")
    async def hang(stage: StageView) -> TaskResult:
        try:
            await anyio.sleep_forever()
        finally:
            cleaned.append(True)
        raise AssertionError("unreachable")

    async with engine:
        wf = Workflow(application="t", name="st", stages=[Stage("a", "hang", stage_timeout=0.2)])
        view = await (await engine.submit(wf)).wait(10)
        await engine.wait_idle()
    error = view.stage("a").error
    assert error is not None
    assert (S.TERMINAL, "StageTimeout", [True]) == (view.status, error.type, cleaned)


async def test_wait_timeout_raises_builtin_timeout_and_the_workflow_goes_on(db_url: str) -> None:
    """run.wait(timeout) raises TimeoutError; the workflow still finishes afterwards."""
    release = anyio.Event()
    engine = Engine(db_url)

    @engine.task("gate")
    async def gate(stage: StageView) -> TaskResult:
        await release.wait()
        return TaskResult.success()

    async with engine:
        run = await engine.submit(Workflow(application="t", name="w", stages=[Stage("a", "gate")]))
        with pytest.raises(TimeoutError):
            await run.wait(timeout=0.05)
        release.set()
        view = await run.wait(timeout=10)
    assert S.SUCCEEDED == view.status


async def test_stop_grace_lets_short_tasks_finish_and_reruns_cut_ones(db_path: Path) -> None:
    """stop(grace): a task finishing within the grace records its result; one cut off re-runs at next start."""
    url = f"sqlite:///{db_path}"
    started = {"quick": anyio.Event(), "long": anyio.Event()}
    runs_of: dict[str, int] = {"quick": 0, "long": 0}

    def setup(engine: Engine, *, long_blocks: bool) -> None:
        @engine.task("quick")
        async def quick(stage: StageView) -> TaskResult:
            runs_of["quick"] += 1
            started["quick"].set()
            await anyio.sleep(0.05)
            return TaskResult.success()

        @engine.task("long")
        async def long(stage: StageView) -> TaskResult:
            runs_of["long"] += 1
            started["long"].set()
            if long_blocks:
                await anyio.sleep_forever()
            return TaskResult.success()

    first = Engine(url)
    setup(first, long_blocks=True)
    await first.start()
    q = await first.submit(Workflow(application="t", name="q", stages=[Stage("a", "quick")]))
    lg = await first.submit(Workflow(application="t", name="l", stages=[Stage("a", "long")]))
    await started["quick"].wait()
    await started["long"].wait()
    await first.stop(grace=0.5)
    second = Engine(url)
    setup(second, long_blocks=False)
    async with second:
        quick_view = await second.get(q.workflow_id)
        long_view = await second.handle(lg.workflow_id).wait(timeout=10)
    assert (S.SUCCEEDED, S.SUCCEEDED) == (quick_view.status, long_view.status)
    assert {"quick": 1, "long": 2} == runs_of


async def test_unregistered_task_type_parks_until_an_engine_has_it(db_path: Path) -> None:
    """A recovered workflow whose task type is missing is parked with a clear error, then finished later."""
    url = f"sqlite:///{db_path}"
    first = Engine(url)

    @first.task("later")
    async def hang(stage: StageView) -> TaskResult:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    await first.start()
    wid = (await first.submit(Workflow(application="t", name="p", stages=[Stage("a", "later")]))).workflow_id
    await first.stop(grace=0)

    second = Engine(url)
    second.register("noop", noop)
    async with second:
        await second.wait_idle()
        parked = await second.get(wid)

    third = Engine(url)

    @third.task("later")
    async def later(stage: StageView) -> TaskResult:
        return TaskResult.success(outputs={"done": True})

    async with third:
        final = await third.handle(wid).wait(timeout=10)
    error = parked.stage("a").error
    assert error is not None
    assert (S.RUNNING, "UnknownTaskType") == (parked.status, error.type)
    assert "'later' is not registered" in error.message
    assert (S.SUCCEEDED, {"done": True}) == (final.status, dict(final.stage("a").outputs))


async def test_bulkhead_caps_concurrency_and_overflow_waits_in_the_store(db_url: str) -> None:
    """concurrency caps parallel calls; a fan-out wider than slots + backlog still completes."""
    active = peak = 0
    engine = Engine(db_url)

    @engine.task("capped", concurrency=4, backlog=10)
    async def capped(stage: StageView) -> TaskResult:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await anyio.sleep(0.001)
        active -= 1
        return TaskResult.success()

    async with engine:
        view = await (await engine.submit(fan(200, "capped"))).wait(timeout=60)
        pool = engine.statistics().pools[0]
    assert (S.SUCCEEDED, 4) == (view.status, peak)
    assert pool.rejected > 0  # the overflow path (rows left pending, refilled from the store) was taken
    assert 202 == pool.completed


async def test_history_records_each_step_once(db_url: str) -> None:
    """engine.history() lists workflow, stage and task lifecycle events, one completion per stage."""
    async with running_engine(lambda e: e.register("noop", noop)) as engine:
        run = await engine.submit(chain(3))
        await run.wait(timeout=10)
        events = await engine.history(run.workflow_id)
        commits = engine.statistics().commits
    kinds = [(e.kind, e.stage) for e in events]
    assert [
        ("workflow.started", None),
        ("stage.started", "s0"),
        ("task.started", "s0"),
        ("stage.completed", "s0"),
        ("stage.started", "s1"),
        ("task.started", "s1"),
        ("stage.completed", "s1"),
        ("stage.started", "s2"),
        ("task.started", "s2"),
        ("stage.completed", "s2"),
        ("workflow.completed", None),
    ] == kinds
    assert {e.kind for e in events} <= KINDS
    by_key = {e.key: e for e in events}
    for i in range(3):  # a call starts after its stage did, and ends before its stage does
        call = by_key[f"task.started:{i}:0:0:1:0"]
        assert by_key[f"stage.started:{i}:0"].at <= call.at <= by_key[f"stage.completed:{i}:0"].at
    assert 4 == commits  # the submit, then one per step: no event costs a commit of its own


async def test_history_records_failed_and_timed_out_calls_and_their_retries(db_url: str) -> None:
    """A failed call records task.failed, a call past its timeout task.timed_out, each retry retry.scheduled."""
    calls: dict[str, int] = {}

    async def flaky(stage: StageView) -> TaskResult:
        calls[stage.ref_id] = calls.get(stage.ref_id, 0) + 1
        if calls[stage.ref_id] == 1:
            if stage.ref_id == "slow":
                await anyio.sleep(10)
            raise TransientError("not yet")
        return TaskResult.success()

    def setup(engine: Engine) -> None:
        engine.register("flaky", flaky, timeout=0.2, retry=RetryPolicy(max_attempts=3, initial=0.0, jitter=0.0))

    workflow = Workflow(application="app", name="w", stages=[Stage("fails", "flaky"), Stage("slow", "flaky")])
    async with running_engine(setup) as engine:
        run = await engine.submit(workflow)
        view = await run.wait(timeout=10)
        events = await engine.history(run.workflow_id)
    keys = {e.key for e in events}
    assert S.SUCCEEDED == view.status
    assert {
        "task.started:0:0:0:1:0",
        "task.failed:0:0:0:1:0",
        "retry.scheduled:0:0:0:2:0",
        "task.started:0:0:0:2:0",
        "task.started:1:0:0:1:0",
        "task.timed_out:1:0:0:1:0",
        "retry.scheduled:1:0:0:2:0",
        "task.started:1:0:0:2:0",
    } <= keys
    assert {"task.failed:1:0:0:1:0", "task.timed_out:0:0:0:1:0"}.isdisjoint(keys)
    assert {e.kind for e in events} <= KINDS


async def test_list_filters_by_status_and_application(db_url: str) -> None:
    """engine.list() filters by status and application, newest first."""
    engine = Engine(db_url)
    engine.register("noop", noop)

    @engine.task("fail")
    async def fail(stage: StageView) -> TaskResult:
        return TaskResult.terminal("no")

    async with engine:
        ok_run = await engine.submit(chain(1))
        bad = await engine.submit(Workflow(application="other", name="f", stages=[Stage("a", "fail")]))
        await ok_run.wait(10)
        await bad.wait(10)
        terminal = await engine.list(status=S.TERMINAL)
        other = await engine.list(application="other")
        everything = await engine.list(limit=10)
    assert [bad.workflow_id] == [w.workflow_id for w in terminal]
    assert [bad.workflow_id] == [w.workflow_id for w in other]
    assert {bad.workflow_id, ok_run.workflow_id} == {w.workflow_id for w in everything}


async def test_logs_carry_workflow_stage_task_and_attempt(db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Task log records carry workflow_id, stage, task and attempt attributes."""
    caplog.set_level(logging.DEBUG, logger="stabilize_aio")
    engine = Engine(db_url)

    @engine.task("bad")
    async def bad(stage: StageView) -> TaskResult:
        raise ValueError("x")

    async with engine:
        run = await engine.submit(Workflow(application="t", name="l", stages=[Stage("a", "bad")]))
        await run.wait(10)
    records = [r for r in caplog.records if r.getMessage().startswith("task failed")]
    assert 1 == len(records)
    rec = records[0]
    assert (run.workflow_id, "a", "bad", 1) == (
        rec.__dict__["workflow_id"],
        rec.__dict__["stage"],
        rec.__dict__["task"],
        rec.__dict__["attempt"],
    )


async def test_an_internal_failure_surfaces_as_one_stabilize_error(db_path: Path) -> None:
    """When the store breaks under a running engine, the engine's exit raises one StabilizeError."""
    release = anyio.Event()
    engine = Engine(f"sqlite:///{db_path}")

    @engine.task("gate")
    async def gate(stage: StageView) -> TaskResult:
        await release.wait()
        return TaskResult.success()

    async def break_the_store_under_a_running_workflow() -> None:
        async with engine:
            run = await engine.submit(Workflow(application="t", name="x", stages=[Stage("a", "gate")]))
            with sqlite3.connect(db_path) as conn:
                conn.execute("DROP TABLE events")
            release.set()
            await run.wait(timeout=10)

    with pytest.raises(StabilizeError) as info:
        await break_the_store_under_a_running_workflow()
    assert not isinstance(info.value, BaseExceptionGroup)
    assert "events" in repr(info.value.__cause__) or "events" in str(info.value)


async def test_a_users_exception_inside_the_block_propagates_unchanged(db_url: str) -> None:
    """An exception raised by the user's code inside `async with engine` is not wrapped by the engine."""
    with pytest.raises(KeyError, match="mine"):
        async with running_engine(lambda e: e.register("noop", noop)):
            raise KeyError("mine")


async def test_a_wait_the_engine_stops_under_raises_instead_of_hanging(db_url: str) -> None:
    """run.wait() on a run still going when its engine stops raises EngineStateError at once (no loop, no hang)."""
    engine = Engine(db_url, stop_grace=0.1)
    started = anyio.Event()

    @engine.task("forever")
    async def forever(stage: StageView) -> TaskResult:
        started.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    outcome: list[BaseException] = []
    async with anyio.create_task_group() as tg, engine:
        run = await engine.submit(Workflow(application="t", name="w", stages=[Stage("a", "forever")]))

        async def waiter() -> None:
            try:
                await run.wait(timeout=30)
            except (EngineStateError, TimeoutError) as exc:
                outcome.append(exc)

        tg.start_soon(waiter)
        await started.wait()
    assert [EngineStateError] == [type(e) for e in outcome]
    assert "stopped before the run finished" in str(outcome[0])
