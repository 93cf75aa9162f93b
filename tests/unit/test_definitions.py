"""Bad input fails at the door: definitions, submits, registrations and lifecycle misuse.

Every invalid definition raises a named :class:`~stabilize_aio.DefinitionError`
subclass whose message names the stage and the problem; an invalid submit writes
nothing and leaves the engine working.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import pytest

import stabilize_aio
from stabilize_aio import (
    CycleError,
    DefinitionError,
    DuplicateStageError,
    EmptyWorkflowError,
    EncodingError,
    Engine,
    EngineStateError,
    RegistrationError,
    StabilizeError,
    Stage,
    StageView,
    TaskResult,
    UnknownRequisiteError,
    UnknownTaskError,
    Workflow,
    WorkflowNotFound,
    WorkflowStatus,
)
from stabilize_aio.store.sqlite.store import SqliteStore

S = WorkflowStatus
WAIT = 30.0  # seconds a run of a trivial workflow may take before the test fails

EXPECTED_ALL = (
    # engine
    "Engine",
    "EngineStatistics",
    "ScheduleInfo",
    "WorkflowRun",
    # definitions
    "Workflow",
    "Stage",
    "Task",
    "TaskOptions",
    "TaskResult",
    "StagePlan",
    "MultiInstance",
    "JoinType",
    "SplitType",
    "RetryPolicy",
    "CircuitBreakerPolicy",
    "CircuitState",
    "WorkflowStatus",
    # views
    "StageView",
    "StageInfo",
    "InstanceInfo",
    "WorkflowView",
    "WorkflowSummary",
    "ErrorInfo",
    "Event",
    # errors
    "StabilizeError",
    "DefinitionError",
    "EmptyWorkflowError",
    "DuplicateStageError",
    "UnknownRequisiteError",
    "CycleError",
    "UnknownTaskError",
    "EncodingError",
    "CronError",
    "InvalidTransitionError",
    "ConfigurationError",
    "InvalidIdError",
    "RegistrationError",
    "EngineStateError",
    "WorkflowNotFound",
    "WorkflowExists",
    "RunStateError",
    "StoreError",
    "DataError",
    "DatabaseLockedError",
    "CorruptDatabaseError",
    "ForeignDatabaseError",
    "SchemaTooNewError",
    "ConcurrencyError",
    "LeaseLostError",
    "TransientError",
)


# helpers ---------------------------------------------------------------------
async def ok_task(stage: StageView) -> TaskResult:
    """A task that succeeds at once."""
    return TaskResult.success(outputs={"done": stage.ref_id})


def register_ok(engine: Engine) -> None:
    """Register the task type ``ok``."""
    engine.register("ok", ok_task)


def valid_workflow(name: str = "valid") -> Workflow:
    """A two-stage workflow of ``ok`` tasks."""
    return Workflow(
        application="app",
        name=name,
        stages=[Stage("first", "ok"), Stage("second", "ok", requisites=["first"])],
    )


async def table_counts(engine: Engine) -> dict[str, int]:
    """Row counts of every table of the engine's SQLite store."""
    store = engine.store
    assert isinstance(store, SqliteStore)
    return await store.table_counts()


def raised(fn: Callable[[], object], error: type[BaseException]) -> BaseException:
    """Call ``fn`` and return the exception it raised, which must be of exactly type ``error``."""
    with pytest.raises(error) as info:
        fn()
    assert error is type(info.value)
    return info.value


# definitions rejected at construction ------------------------------------------
def stage(ref_id: str, *requisites: str, **options: Any) -> Stage:
    """A stage running ``ok`` after ``requisites``."""
    return Stage(ref_id, "ok", requisites=requisites, **options)


def workflow(*stages: Stage, name: str = "wf") -> Workflow:
    """A workflow of ``stages``."""
    return Workflow(application="app", name=name, stages=stages)


# (build, error type, the stages the error may name, fragments of the message)
DEFINITION_CASES = [
    pytest.param(
        lambda: workflow(name="nothing"), EmptyWorkflowError, {None}, ("'nothing'", "no stages"), id="empty-workflow"
    ),
    pytest.param(
        lambda: workflow(stage("a"), stage("b", "a"), stage("a")),
        DuplicateStageError,
        {"a"},
        ("'a'", "duplicate ref id"),
        id="duplicate-ref-id",
    ),
    pytest.param(
        lambda: workflow(stage("a"), stage("b", "a", "ghost")),
        UnknownRequisiteError,
        {"b"},
        ("'b'", "unknown requisite 'ghost'"),
        id="unknown-requisite",
    ),
    pytest.param(
        lambda: workflow(stage("root"), stage("loop", "root", "loop")),
        UnknownRequisiteError,
        {"loop"},
        ("'loop'", "depends on itself"),
        id="self-dependency",
    ),
    pytest.param(
        lambda: workflow(stage("a", "b"), stage("b", "a")),
        CycleError,
        {"a", "b"},
        ("cycle",),
        id="two-cycle-without-root",
    ),
    pytest.param(
        lambda: workflow(stage("root"), stage("x", "root", "z"), stage("y", "x"), stage("z", "y")),
        CycleError,
        {"x", "y", "z"},
        ("cycle",),
        id="three-cycle-entered-from-root",
    ),
    pytest.param(
        lambda: workflow(stage("root"), stage("tail", "root"), stage("b", "c"), stage("c", "b")),
        CycleError,
        {"b", "c"},
        ("cycle",),
        id="cycle-unreachable-from-root",
    ),
    pytest.param(
        lambda: workflow(stage("root"), stage("after", "b"), stage("b", "root", "c"), stage("c", "b")),
        CycleError,
        {"b", "c"},
        ("cycle",),
        id="cycle-with-downstream-stage-declared-first",
    ),
    pytest.param(
        lambda: workflow(stage("root"), Stage("both", "ok", tasks=["ok"])),
        DefinitionError,
        {"both"},
        ("'both'", "task=", "tasks="),
        id="task-and-tasks",
    ),
    pytest.param(
        lambda: workflow(stage("slow", timeout=0)),
        DefinitionError,
        {"slow"},
        ("'slow'", "timeout must be > 0"),
        id="timeout-zero",
    ),
    pytest.param(
        lambda: workflow(stage("slow", timeout=-1.5)),
        DefinitionError,
        {"slow"},
        ("'slow'", "timeout must be > 0"),
        id="timeout-negative",
    ),
    pytest.param(
        lambda: workflow(stage("slow", timeout=float("nan"))),
        DefinitionError,
        {"slow"},
        ("'slow'", "timeout must be > 0"),
        id="timeout-nan",
    ),
    pytest.param(
        lambda: workflow(stage("slow", stage_timeout=0)),
        DefinitionError,
        {"slow"},
        ("'slow'", "stage_timeout must be > 0"),
        id="stage-timeout-zero",
    ),
    pytest.param(
        lambda: workflow(stage("slow", stage_timeout=-3)),
        DefinitionError,
        {"slow"},
        ("'slow'", "stage_timeout must be > 0"),
        id="stage-timeout-negative",
    ),
    pytest.param(
        lambda: workflow(stage("ctx", context={"client": object()})),
        EncodingError,
        {"ctx"},
        ("'ctx'", "context cannot be encoded", "object"),
        id="context-object",
    ),
    pytest.param(
        lambda: workflow(stage("ctx", context={"clients": {object(), object()}})),
        EncodingError,
        {"ctx"},
        ("'ctx'", "context cannot be encoded", "object"),
        id="context-set-of-objects",
    ),
    pytest.param(
        lambda: workflow(stage("ctx", context={"big": 2**70})),
        EncodingError,
        {"ctx"},
        ("'ctx'", "context cannot be encoded"),
        id="context-int-too-large",
    ),
    pytest.param(lambda: workflow(Stage("", "ok")), DefinitionError, {None}, ("ref id", "''"), id="empty-ref-id"),
    pytest.param(
        lambda: workflow(Stage("anon", "")),
        DefinitionError,
        {"anon"},
        ("'anon'", "bad task type"),
        id="empty-task-type",
    ),
    pytest.param(
        lambda: workflow(stage("a"), "b"),  # type: ignore[arg-type]  # the point: not a Stage
        DefinitionError,
        {None},
        ("item 1", "not a Stage"),
        id="not-a-stage",
    ),
]


@pytest.mark.parametrize(("build", "error", "stages", "fragments"), DEFINITION_CASES)
def test_invalid_definition_raises_a_named_error(
    build: Callable[[], object],
    error: type[DefinitionError],
    stages: set[str | None],
    fragments: tuple[str, ...],
) -> None:
    """An invalid definition raises its own DefinitionError subclass naming the stage and the problem."""
    exc = raised(build, error)
    assert isinstance(exc, DefinitionError)
    assert isinstance(exc, StabilizeError)
    assert exc.stage in stages, f"{exc.stage!r} not in {stages!r}: {exc}"
    message = str(exc)
    if exc.stage is not None:
        assert f"stage {exc.stage!r}" in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_valid_definition_keeps_a_topological_order() -> None:
    """A valid diamond builds, and its order puts every stage after its requisites."""
    wf = workflow(stage("join", "left", "right"), stage("left", "root"), stage("right", "root"), stage("root"))
    position = {wf.stages[i].ref_id: n for n, i in enumerate(wf.order)}
    assert 4 == len(wf.order)
    for s in wf.stages:
        for req in s.requisites:
            assert position[req] < position[s.ref_id]


# submits rejected, nothing written ----------------------------------------------
class SubmitCase(NamedTuple):
    """An invalid submit: the workflow, its inputs, and the error it must raise."""

    workflow: Workflow
    inputs: dict[str, Any]
    error: type[DefinitionError]
    stage: str | None
    fragments: tuple[str, ...]


SUBMIT_CASES = [
    pytest.param(
        SubmitCase(
            workflow(Stage("deploy", "nope")),
            {},
            UnknownTaskError,
            "deploy",
            ("'deploy'", "task type 'nope' is not registered", "registered: ok"),
        ),
        id="unknown-task",
    ),
    pytest.param(
        SubmitCase(
            workflow(stage("build"), Stage("ship", tasks=["ok", "missing"], requisites=["build"])),
            {},
            UnknownTaskError,
            "ship",
            ("'ship'", "'missing'", "not registered"),
        ),
        id="unknown-second-task-of-a-later-stage",
    ),
    pytest.param(
        SubmitCase(
            valid_workflow(), {"conn": object()}, EncodingError, None, ("inputs", "cannot be encoded", "object")
        ),
        id="inputs-object",
    ),
    pytest.param(
        SubmitCase(
            valid_workflow(),
            {"conns": {object(), object()}},
            EncodingError,
            None,
            ("inputs", "cannot be encoded", "object"),
        ),
        id="inputs-set-of-objects",
    ),
    pytest.param(
        SubmitCase(
            valid_workflow(),
            {"nested": {"deeper": [1, 2, {"x": object()}]}},
            EncodingError,
            None,
            ("inputs", "cannot be encoded"),
        ),
        id="inputs-nested-object",
    ),
    pytest.param(
        SubmitCase(valid_workflow(), {"big": -(2**70)}, EncodingError, None, ("inputs", "cannot be encoded")),
        id="inputs-int-too-large",
    ),
]


@pytest.mark.parametrize("case", SUBMIT_CASES)
async def test_invalid_submit_writes_nothing_and_engine_keeps_working(db_url: str, case: SubmitCase) -> None:
    """An invalid submit raises its named error, leaves every table's row count as it was, and a valid run follows."""
    engine = Engine(db_url)
    register_ok(engine)
    async with engine:
        first = await (await engine.submit(valid_workflow("before"))).wait(WAIT)
        assert S.SUCCEEDED == first.status
        before = await table_counts(engine)
        assert 0 < before["workflows"]

        with pytest.raises(case.error) as info:
            await engine.submit(case.workflow, context=case.inputs, workflow_id="rejected")
        assert case.error is type(info.value)
        assert case.stage == info.value.stage
        for fragment in case.fragments:
            assert fragment in str(info.value), f"{fragment!r} not in {info.value}"

        assert before == await table_counts(engine)
        with pytest.raises(WorkflowNotFound):
            await engine.get("rejected")

        after = await (await engine.submit(valid_workflow("after"))).wait(WAIT)
        assert S.SUCCEEDED == after.status
        assert before["workflows"] + 1 == (await table_counts(engine))["workflows"]


async def test_submit_of_something_else_than_a_workflow_writes_nothing(db_url: str) -> None:
    """Submitting a non-Workflow raises TypeError and writes no row."""
    engine = Engine(db_url)
    register_ok(engine)
    async with engine:
        before = await table_counts(engine)
        with pytest.raises(TypeError, match="takes a Workflow, not list"):
            await engine.submit([Stage("a", "ok")])  # type: ignore[arg-type]  # the point: wrong type
        assert before == await table_counts(engine)
        assert S.SUCCEEDED == (await (await engine.submit(valid_workflow())).wait(WAIT)).status


# task results the engine cannot keep ------------------------------------------------
async def returns_int(stage: StageView) -> TaskResult:
    """Returns an int instead of a TaskResult."""
    return 42  # type: ignore[return-value]  # the point: a wrong return value


def returns_none_sync(stage: StageView) -> TaskResult:
    """A plain ``def`` task that forgets to return."""
    return None  # type: ignore[return-value]  # the point: a wrong return value


async def returns_dict(stage: StageView) -> TaskResult:
    """Returns a dict that looks like a result."""
    return {"status": "SUCCEEDED"}  # type: ignore[return-value]  # the point: a wrong return value


async def outputs_object(stage: StageView) -> TaskResult:
    """Outputs an object msgspec cannot encode."""
    return TaskResult.success(outputs={"client": object()})


async def outputs_set_of_objects(stage: StageView) -> TaskResult:
    """Outputs a set of objects msgspec cannot encode."""
    return TaskResult.success(outputs={"clients": {object(), object()}})


async def context_update_object(stage: StageView) -> TaskResult:
    """Returns a context update msgspec cannot encode."""
    return TaskResult.running(context={"cursor": object()})


@pytest.mark.parametrize(
    ("task", "fragments"),
    [
        pytest.param(returns_int, ("'broken'", "returned int, not TaskResult"), id="async-returns-int"),
        pytest.param(returns_none_sync, ("'broken'", "returned NoneType, not TaskResult"), id="sync-returns-none"),
        pytest.param(returns_dict, ("'broken'", "returned dict, not TaskResult"), id="async-returns-dict"),
        pytest.param(outputs_object, ("'broken'", "outputs cannot be encoded"), id="outputs-object"),
        pytest.param(outputs_set_of_objects, ("'broken'", "outputs cannot be encoded"), id="outputs-set-of-objects"),
        pytest.param(context_update_object, ("'broken'", "context update cannot be encoded"), id="context-update"),
    ],
)
async def test_unusable_task_result_fails_the_stage_not_the_engine(
    db_url: str, task: Callable[[StageView], Any], fragments: tuple[str, ...]
) -> None:
    """A task returning a non-TaskResult or unencodable data ends its workflow TERMINAL; other runs go on."""
    engine = Engine(db_url)
    register_ok(engine)
    engine.register("bad", task)
    async with engine:
        bad_wf = workflow(stage("before"), Stage("broken", "bad", requisites=["before"]), stage("after", "broken"))
        bad_run = await engine.submit(bad_wf)
        good_run = await engine.submit(valid_workflow("alongside"))
        bad = await bad_run.wait(WAIT)
        assert S.TERMINAL == bad.status
        assert S.SUCCEEDED == bad.stage("before").status
        assert S.TERMINAL == bad.stage("broken").status
        assert S.NOT_STARTED == bad.stage("after").status
        error = bad.stage("broken").error
        assert error is not None
        assert error.transient is False
        for fragment in fragments:
            assert fragment in error.message, f"{fragment!r} not in {error.message!r}"

        assert S.SUCCEEDED == (await good_run.wait(WAIT)).status
        assert S.SUCCEEDED == (await (await engine.submit(valid_workflow("later"))).wait(WAIT)).status


# registration and lifecycle -------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        pytest.param({"concurrency": 0}, "concurrency must be >= 1", id="concurrency-zero"),
        pytest.param({"concurrency": -1}, "concurrency must be >= 1", id="concurrency-negative"),
        pytest.param({"timeout": 0}, "timeout > 0", id="timeout-zero"),
        pytest.param({"timeout": -2.0}, "timeout > 0", id="timeout-negative"),
        pytest.param({"backlog": -1}, "backlog >= 0", id="backlog-negative"),
        pytest.param({"poll_interval": -0.1}, "poll_interval >= 0", id="poll-interval-negative"),
    ],
)
def test_bad_task_options_raise_registration_error(db_path: Path, options: dict[str, Any], fragment: str) -> None:
    """A registration with out-of-range options raises RegistrationError naming the task and registers nothing."""
    engine = Engine(f"sqlite:///{db_path}")
    exc = raised(lambda: engine.register("charge", ok_task, **options), RegistrationError)
    assert "'charge'" in str(exc)
    assert fragment in str(exc)
    assert "sqlite" in repr(engine)
    assert "tasks=[]" in repr(engine)


def test_bad_registration_target_or_name_raises(db_path: Path) -> None:
    """Registering a non-callable, or under an empty name, raises RegistrationError."""
    engine = Engine(f"sqlite:///{db_path}")
    assert "neither a callable nor a Task" in str(raised(lambda: engine.register("n", 42), RegistrationError))
    assert "non-empty name" in str(raised(lambda: engine.register("", ok_task), RegistrationError))


def test_duplicate_registration_raises_and_keeps_the_first(db_path: Path) -> None:
    """Registering a name twice raises RegistrationError; the decorator form too."""
    engine = Engine(f"sqlite:///{db_path}")
    engine.register("ok", ok_task)
    exc = raised(lambda: engine.register("ok", returns_int), RegistrationError)
    assert "'ok' is already registered" in str(exc)
    with pytest.raises(RegistrationError, match="already registered"):
        engine.task("ok")(ok_task)
    assert "tasks=['ok']" in repr(engine)


async def test_registration_after_start_or_stop_raises(db_url: str) -> None:
    """register() on a running or stopped engine raises RegistrationError."""
    engine = Engine(db_url)
    async with engine:
        exc = raised(lambda: engine.register("late", ok_task), RegistrationError)
        assert "'late'" in str(exc)
        assert "before the engine starts" in str(exc)
    with pytest.raises(RegistrationError, match="before the engine starts"):
        engine.register("later", ok_task)


async def test_engine_cannot_start_twice(db_url: str) -> None:
    """start() on a running engine raises EngineStateError and leaves it running."""
    engine = Engine(db_url)
    register_ok(engine)
    async with engine:
        with pytest.raises(EngineStateError, match="starts once"):
            await engine.start()
        assert "running" == engine.statistics().state
        assert S.SUCCEEDED == (await (await engine.submit(valid_workflow())).wait(WAIT)).status


async def test_engine_cannot_restart_after_stop(db_url: str) -> None:
    """A stopped engine refuses start(), `async with` and submit() with EngineStateError."""
    engine = Engine(db_url)
    register_ok(engine)
    async with engine:
        pass
    assert "stopped" == engine.statistics().state
    with pytest.raises(EngineStateError, match="starts once"):
        await engine.start()
    with pytest.raises(EngineStateError, match="starts once"):
        async with engine:
            pass
    with pytest.raises(EngineStateError, match="stopped"):
        await engine.submit(valid_workflow())
    with pytest.raises(EngineStateError, match="stopped"):
        await engine.cancel("anything")
    await engine.stop()  # stopping a stopped engine is a no-op


async def test_submit_on_unstarted_engine_raises(db_url: str) -> None:
    """submit() and cancel() before start() raise EngineStateError naming the state."""
    engine = Engine(db_url)
    register_ok(engine)
    with pytest.raises(EngineStateError, match="created"):
        await engine.submit(valid_workflow())
    with pytest.raises(EngineStateError, match="created"):
        await engine.cancel("anything")
    with pytest.raises(EngineStateError, match="created"):
        await engine.stop()


# lookups and idempotency ------------------------------------------------------------
async def test_unknown_workflow_id_raises_workflow_not_found(db_url: str) -> None:
    """get(), history() and a handle's wait() on an unknown id raise WorkflowNotFound naming the id."""
    async with Engine(db_url) as engine:
        with pytest.raises(WorkflowNotFound) as info:
            await engine.get("nope")
        assert "nope" == info.value.workflow_id
        assert "'nope'" in str(info.value)
        with pytest.raises(WorkflowNotFound, match="'nope'"):
            await engine.history("nope")
        with pytest.raises(WorkflowNotFound, match="'nope'"):
            await engine.handle("nope").wait(WAIT)


async def test_caller_supplied_workflow_id_makes_submit_idempotent(db_url: str) -> None:
    """Submitting twice with one workflow_id, during and after the run, gives one run and one row."""
    release = anyio.Event()
    calls: list[str] = []

    async def gated(stage: StageView) -> TaskResult:
        calls.append(stage.workflow_id)
        await release.wait()
        return TaskResult.success()

    engine = Engine(db_url)
    engine.register("gated", gated)
    wf = workflow(Stage("only", "gated"))
    async with engine:
        first = await engine.submit(wf, workflow_id="order-42")
        again = await engine.submit(wf, workflow_id="order-42")
        assert "order-42" == first.workflow_id
        assert "order-42" == again.workflow_id
        release.set()
        assert S.SUCCEEDED == (await again.wait(WAIT)).status
        late = await engine.submit(wf, workflow_id="order-42")
        assert "order-42" == late.workflow_id
        assert S.SUCCEEDED == (await late.wait(WAIT)).status
        assert 1 == (await table_counts(engine))["workflows"]
        assert ["order-42"] == calls


async def test_concurrent_submits_with_one_id_make_one_run(db_url: str) -> None:
    """Two submits racing with the same workflow_id both return that id and write one workflow."""
    engine = Engine(db_url)
    register_ok(engine)
    ids: list[str] = []

    async def submit() -> None:
        ids.append((await engine.submit(valid_workflow(), workflow_id="race")).workflow_id)

    async with engine:
        async with anyio.create_task_group() as tg:
            tg.start_soon(submit)
            tg.start_soon(submit)
        assert ["race", "race"] == ids
        assert S.SUCCEEDED == (await engine.handle("race").wait(WAIT)).status
        counts = await table_counts(engine)
        assert 1 == counts["workflows"]
        assert 2 == counts["stages"]


async def test_handle_waits_for_a_run_submitted_by_an_earlier_engine(db_path: Path, db_url: str) -> None:
    """A run interrupted with one Engine is finished, and awaited by handle().wait(), by the next one."""
    started = anyio.Event()

    async def hang(stage: StageView) -> TaskResult:
        started.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    first = Engine(db_url, stop_grace=0.0)
    first.register("step", hang)
    async with first:
        run = await first.submit(workflow(Stage("step", "step")))
        await started.wait()
    assert [("RUNNING",)] == _query(db_path, "SELECT status FROM workflows WHERE id = ?", run.workflow_id)

    second = Engine(db_url)
    second.register("step", ok_task)
    async with second:
        view = await second.handle(run.workflow_id).wait(WAIT)
        assert S.SUCCEEDED == view.status
        assert {"done": "step"} == dict(view.outputs)
        assert run.workflow_id == view.workflow_id


async def test_handle_returns_a_finished_run_of_an_earlier_engine(db_url: str) -> None:
    """handle().wait() on a run an earlier Engine finished returns its final view at once."""
    first = Engine(db_url)
    register_ok(first)
    async with first:
        run = await first.submit(valid_workflow())
        assert S.SUCCEEDED == (await run.wait(WAIT)).status
    second = Engine(db_url)
    register_ok(second)
    async with second:
        view = await second.handle(run.workflow_id).wait(WAIT)
    assert S.SUCCEEDED == view.status
    assert {"done": "second"} == dict(view.outputs)


def _query(path: Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` read from the database file with the stdlib driver."""
    with closing(sqlite3.connect(path)) as conn:
        return list(conn.execute(sql, params).fetchall())


# the public API ----------------------------------------------------------------
def test_public_api_is_pinned() -> None:
    """stabilize_aio.__all__ is exactly the pinned tuple, and every name in it is importable."""
    assert EXPECTED_ALL == stabilize_aio.__all__
    namespace: dict[str, Any] = {}
    exec("from stabilize_aio import *", namespace)
    assert set(EXPECTED_ALL) == {k for k in namespace if k != "__builtins__"}
    for name in EXPECTED_ALL:
        assert getattr(stabilize_aio, name) is namespace[name]


def test_every_public_error_is_a_stabilize_error() -> None:
    """Every exception in the public API derives from StabilizeError, with the documented parents."""
    errors = {
        name: obj
        for name in EXPECTED_ALL
        if isinstance(obj := getattr(stabilize_aio, name), type) and issubclass(obj, BaseException)
    }
    assert all(issubclass(cls, StabilizeError) for cls in errors.values())
    definition = {"EmptyWorkflowError", "DuplicateStageError", "UnknownRequisiteError", "CycleError"}
    definition |= {"UnknownTaskError", "EncodingError", "CronError"}
    store = {"DatabaseLockedError", "CorruptDatabaseError", "ForeignDatabaseError", "SchemaTooNewError"}
    store |= {"ConcurrencyError", "DataError"}
    assert definition == {n for n, c in errors.items() if c.__base__ is DefinitionError}
    assert store == {n for n, c in errors.items() if c.__base__ is stabilize_aio.StoreError}
    assert re.fullmatch(r"\d+\.\d+\.\d+", stabilize_aio.__version__)
