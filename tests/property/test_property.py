"""Random DAGs end in the statuses an independent reference model of stabilize's rules predicts.

The reference model below is written from the rules (stabilize 0.33.1, section 2.4 of the
reference), not from the engine's code:

* a stage runs its 1-3 tasks in order once every requisite ended in a status that can continue;
  a stage downstream of a halted one never starts;
* a failed task gives the stage its failure status (``continue_on_failure`` -> FAILED_CONTINUE,
  else ``complete_other_branches_then_fail`` or ``fail_workflow=False`` -> STOPPED, else
  TERMINAL); a ``stopped`` result gives STOPPED; a transient error is retried until the retry
  policy's ``max_attempts``; ``running`` polls do not count as attempts;
* TERMINAL halts the workflow at once and cancels the stages still running;
* otherwise the workflow completes when nothing runs: TERMINAL if a STOPPED stage has
  ``complete_other_branches_then_fail``, else SUCCEEDED;
* a stage with a condition (``enabled``) is asked it when it becomes ready: false ends it
  SKIPPED at once (no call; SKIPPED can continue), one that cannot be evaluated fails it at
  once with its failure status; both happen in the turn that made it ready.

Two layers check the engine against it: the pure handlers, driven by a deterministic
single-threaded executor (every task call takes one tick of a fake clock, calls ending in the
same tick report in stage order, so the model can predict even which sibling a TERMINAL cancels),
and the real Engine on SQLite, where parallel timing is real and TERMINAL runs are compared only
on what does not depend on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import anyio
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from runs import initial_state

from stabilize_aio import (
    Engine,
    ErrorInfo,
    Event,
    RetryPolicy,
    Stage,
    StageView,
    TaskResult,
    TransientError,
    Workflow,
    WorkflowStatus,
)
from stabilize_aio.handlers import handle, start
from stabilize_aio.messages.durable import Durable, RunTask
from stabilize_aio.messages.memory import Message, TaskDone, TaskOutcome
from stabilize_aio.model.events import KINDS as EVENT_KINDS
from stabilize_aio.state.commit import Commit, Effects
from stabilize_aio.state.workflow import WorkflowState
from stabilize_aio.testing import running_engine

S = WorkflowStatus

#: Statuses after which downstream stages may start (the ones the scripts can produce).
CAN_CONTINUE = frozenset({S.SUCCEEDED, S.FAILED_CONTINUE, S.SKIPPED})

#: Outcome kinds of one task; "success" is listed several times so that graphs get deep.
KINDS = (
    "success",
    "success",
    "success",
    "success",
    "running",
    "running",
    "transient",
    "transient",
    "failed_continue",
    "terminal",
    "canceled",
    "stopped",
    "raise",
)

MAX_ATTEMPTS = (1, 2, 3)


# scripts -------------------------------------------------------------------


@dataclass(frozen=True)
class TaskScript:
    """What one task of a stage does.

    ``n`` is the number of ``running`` results before success (kind "running") or of
    TransientErrors before success (kind "transient"); ``max_attempts`` is its retry policy's.
    """

    kind: str
    n: int
    max_attempts: int

    @property
    def task_type(self) -> str:
        """The registered task type that runs this script (one per retry policy)."""
        return f"scripted-m{self.max_attempts}"


@dataclass(frozen=True)
class StageScript:
    """One stage of a random DAG: requisites (earlier stages only), tasks and failure flags."""

    requisites: tuple[int, ...]
    tasks: tuple[TaskScript, ...]
    continue_on_failure: bool
    fail_workflow: bool
    complete_other_branches_then_fail: bool
    gate: str = "none"  # its condition: none, yes (true), no (false), broken (cannot be evaluated)


Script = tuple[StageScript, ...]
GATES = ("none", "none", "none", "yes", "no", "broken")
CONDITION = {"none": None, "yes": "go == true", "no": "go == true", "broken": "missing.name == 1"}


@st.composite
def task_scripts(draw: st.DrawFn) -> TaskScript:
    """A random task behaviour."""
    kind = draw(st.sampled_from(KINDS))
    n = draw(st.integers(0, 3)) if kind in ("running", "transient") else 0
    return TaskScript(kind=kind, n=n, max_attempts=draw(st.sampled_from(MAX_ATTEMPTS)))


@st.composite
def scripts(draw: st.DrawFn, max_stages: int = 8) -> Script:
    """A random DAG of 1..max_stages stages whose requisites point to earlier stages."""
    size = draw(st.integers(1, max_stages))
    stages: list[StageScript] = []
    for i in range(size):
        requisites = draw(st.sets(st.integers(0, i - 1), max_size=3)) if i else set()
        stages.append(
            StageScript(
                requisites=tuple(sorted(requisites)),
                tasks=tuple(draw(st.lists(task_scripts(), min_size=1, max_size=3))),
                continue_on_failure=draw(st.booleans()),
                fail_workflow=draw(st.booleans()),
                complete_other_branches_then_fail=draw(st.booleans()),
                gate=draw(st.sampled_from(GATES)),
            )
        )
    return tuple(stages)


def ref(i: int) -> str:
    """The ref id of stage ``i``."""
    return f"s{i}"


def build(script: Script) -> Workflow:
    """The workflow definition of a script; each stage carries its script in its context."""
    return Workflow(
        application="property",
        name="random-dag",
        stages=[
            Stage(
                ref(i),
                tasks=[t.task_type for t in stage.tasks],
                context={"script": [[t.kind, t.n] for t in stage.tasks], "go": stage.gate == "yes"},
                enabled=CONDITION[stage.gate],
                requisites=[ref(r) for r in stage.requisites],
                continue_on_failure=stage.continue_on_failure,
                fail_workflow=stage.fail_workflow,
                complete_other_branches_then_fail=stage.complete_other_branches_then_fail,
            )
            for i, stage in enumerate(script)
        ],
    )


# the reference model ---------------------------------------------------------


def failure_status(stage: StageScript) -> WorkflowStatus:
    """The status a failed task gives its stage."""
    if stage.continue_on_failure:
        return S.FAILED_CONTINUE
    if stage.complete_other_branches_then_fail or not stage.fail_workflow:
        return S.STOPPED
    return S.TERMINAL


def run_alone(stage: StageScript) -> tuple[WorkflowStatus, int]:
    """The status a started stage ends in if nothing halts it, and how many task calls it makes."""
    if stage.gate == "no":
        return S.SKIPPED, 0
    if stage.gate == "broken":
        return failure_status(stage), 0
    calls = 0
    failed_continue = False
    for task in stage.tasks:
        if task.kind in ("success", "failed_continue"):
            calls += 1
            failed_continue = failed_continue or task.kind == "failed_continue"
        elif task.kind == "running":
            calls += task.n + 1
        elif task.kind == "transient":
            if task.n >= task.max_attempts:
                return failure_status(stage), calls + task.max_attempts
            calls += task.n + 1
        elif task.kind == "stopped":
            return S.STOPPED, calls + 1
        else:  # terminal, canceled, raise
            return failure_status(stage), calls + 1
    return (S.FAILED_CONTINUE if failed_continue else S.SUCCEEDED), calls


#: When something happens in the deterministic executor, ordered as tuples: a result turn is
#: (tick, stage index) (ticks first, then stages in index order; (0, -1) is the start turn).
#: Within a turn, a stage started (and, without a call, ended) by it adds its index: the
#: kernel starts children in index order, depth first, so ``(t, r, c)`` and ``(t, r, c, d)``
#: order what one turn does exactly as the engine does it.
Key = tuple[int, ...]


@dataclass(frozen=True)
class Prediction:
    """What the model predicts for a script.

    ``alone[i]`` is the status stage i reaches if no TERMINAL halts the workflow (None: it
    can never start); ``halted_by`` is the stage whose TERMINAL halts it first under the
    deterministic executor; ``stages`` and ``workflow`` are the exact final statuses there.
    """

    alone: tuple[WorkflowStatus | None, ...]
    halted_by: int | None
    stages: tuple[WorkflowStatus, ...]
    workflow: WorkflowStatus


def label(prediction: Prediction) -> None:
    """Tell hypothesis' statistics what kind of run this example is."""
    kind = "halted by TERMINAL" if prediction.halted_by is not None else f"ends {prediction.workflow}"
    event(kind)
    for status in sorted(set(prediction.stages)):
        event(f"has a {status} stage")


def predict(script: Script) -> Prediction:
    """Final statuses under the rules, every task call taking one tick (see the module doc)."""
    alone: list[WorkflowStatus | None] = []
    started: list[Key | None] = []
    ended: list[Key | None] = []
    for i, stage in enumerate(script):
        reqs = stage.requisites
        if any(alone[r] not in CAN_CONTINUE for r in reqs):
            alone.append(None)
            started.append(None)
            ended.append(None)
            continue
        start = (*max((k for r in reqs if (k := ended[r]) is not None), default=(0, -1)), i)
        status, calls = run_alone(stage)
        alone.append(status)
        started.append(start)
        ended.append(start if calls == 0 else (start[0] + calls, i))
    halt = min((k for i, k in enumerate(ended) if k is not None and alone[i] is S.TERMINAL), default=None)
    stages = [settle(alone[i], started[i], ended[i], halt) for i in range(len(script))]
    stopped_fails = any(s is S.STOPPED and script[i].complete_other_branches_then_fail for i, s in enumerate(stages))
    workflow = S.TERMINAL if halt is not None or stopped_fails else S.SUCCEEDED
    return Prediction(
        alone=tuple(alone),
        halted_by=halt[1] if halt is not None else None,  # the key's stage
        stages=tuple(stages),
        workflow=workflow,
    )


def settle(alone: WorkflowStatus | None, start: Key | None, end: Key | None, halt: Key | None) -> WorkflowStatus:
    """A stage's final status, given when it starts and ends and when the first TERMINAL halts the run."""
    if alone is None or start is None or end is None:
        return S.NOT_STARTED  # a requisite never gets to a status that can continue
    if halt is not None and start > halt:
        return S.NOT_STARTED  # its last requisite completes after the halt
    if halt is not None and end > halt:
        return S.CANCELED  # still running when the halt comes
    return alone


def ancestors(script: Script, i: int) -> set[int]:
    """The transitive requisites of stage ``i``."""
    found: set[int] = set()
    stack = list(script[i].requisites)
    while stack:
        r = stack.pop()
        if r not in found:
            found.add(r)
            stack.extend(script[r].requisites)
    return found


# checks shared by both layers -------------------------------------------------


def check_history(script: Script, statuses: tuple[WorkflowStatus, ...], events: list[Event]) -> None:
    """Each stage started once, after all its requisites completed in a continuable status."""
    index = {ref(i): i for i in range(len(script))}
    started: list[int] = []
    skipped: list[int] = []
    completed: dict[int, WorkflowStatus] = {}
    for entry in events:
        if entry.kind == "stage.skipped":  # its condition was false when it became ready: it never started
            assert entry.stage is not None
            i = index[entry.stage]
            assert i not in started, f"stage {i} skipped after it started"
            waiting = [r for r in script[i].requisites if completed.get(r) not in CAN_CONTINUE]
            assert [] == waiting, f"stage {i} skipped before its requisites {waiting} completed"
            assert "no" == script[i].gate, f"stage {i} skipped without a false condition"
            skipped.append(i)
            completed[i] = S.SKIPPED
        elif entry.kind == "stage.started":
            assert entry.stage is not None
            i = index[entry.stage]
            assert i not in started, f"stage {i} started twice"
            waiting = [r for r in script[i].requisites if completed.get(r) not in CAN_CONTINUE]
            assert [] == waiting, f"stage {i} started before its requisites {waiting} completed"
            started.append(i)
        elif entry.kind == "stage.completed":
            assert entry.stage is not None
            i = index[entry.stage]
            assert i not in completed, f"stage {i} completed twice"
            assert entry.status is not None
            completed[i] = S(entry.status)
    assert {i for i, s in enumerate(statuses) if s is not S.NOT_STARTED} == set(started) | set(skipped)
    assert {i: statuses[i] for i in completed} == completed
    assert ["workflow.completed"] == [e.kind for e in events if e.kind == "workflow.completed"]
    assert "workflow.completed" == events[-1].kind
    assert {e.kind for e in events} <= EVENT_KINDS, "only kinds of the event catalogue are recorded"
    assert len(events) == len({e.key for e in events}), "event keys are unique per workflow"


def check_started_iff_requisites_continue(script: Script, statuses: tuple[WorkflowStatus, ...]) -> None:
    """A stage started exactly when every requisite ended in a status that can continue.

    The one exception: a condition that cannot be evaluated fails its stage TERMINAL in the
    turn that made it ready, and the stages that turn would have started after it never start.
    """
    ready = [all(statuses[r] in CAN_CONTINUE for r in stage.requisites) for stage in script]
    began = [s is not S.NOT_STARTED for s in statuses]
    for i, (r, b) in enumerate(zip(ready, began, strict=True)):
        assert b <= r, f"stage {i} started though a requisite cannot continue"
        if r and not b:
            halting = [j for j, s in enumerate(statuses) if s is S.TERMINAL and script[j].gate == "broken"]
            assert halting, f"stage {i} was ready but never started, and no failed condition halted the run"


def check_halted_run(
    script: Script, prediction: Prediction, statuses: tuple[WorkflowStatus, ...], workflow: WorkflowStatus
) -> None:
    """A TERMINAL-halted run, compared only on what does not depend on the timing of branches."""
    assert S.TERMINAL == workflow
    terminal = [i for i, s in enumerate(statuses) if s is S.TERMINAL]
    assert 1 == len(terminal), f"exactly one stage halts the run, got {terminal}"
    assert S.TERMINAL == prediction.alone[terminal[0]]
    for a in ancestors(script, terminal[0]):
        assert prediction.alone[a] == statuses[a], f"ancestor {a} of the halting stage"
    for i, status in enumerate(statuses):
        alone = prediction.alone[i]
        allowed = {S.NOT_STARTED} if alone is None else {alone, S.CANCELED, S.NOT_STARTED}
        assert status in allowed, f"stage {i}: {status} not in {allowed}"
    check_started_iff_requisites_continue(script, statuses)


# layer 1: the pure handlers ---------------------------------------------------


class PureRun:
    """Drive the pure handlers as the engine would, with a deterministic scripted executor.

    Every task call takes one tick of the fake clock; the calls ending in a tick report in
    stage order; delayed RunTasks (polls, retries: all due at once here) are redelivered at
    the end of the tick they were emitted in. The outbox is tracked as a store would hold it.
    """

    MAX_TICKS = 500

    def __init__(self, script: Script) -> None:
        self.script = script
        self.state: WorkflowState = initial_state(build(script), "wf-1", {})
        self.now = 0.0
        self.outbox: dict[str, Durable] = {}  # submit writes no start row: the start turn is part of its insert
        self.events: list[Event] = []
        self.inflight: list[RunTask] = []
        self.delayed: list[RunTask] = []
        self.cancelled: set[str] = set()
        self.calls: dict[tuple[int, int], int] = {}

    def commit(self, message: Message) -> Commit:
        """Handle one message, commit its turn and take its follow-ups."""
        return self.take(*handle(self.state, message, self.now))

    def take(self, t: Commit, effects: Effects) -> Commit:
        """Commit a turn as the store would, and act on it as the actor would."""
        self.state.apply(t)
        for mid in t.consumed:
            assert mid in self.outbox, f"consumed a row that is not pending: {mid}"
            del self.outbox[mid]
        for m in t.emitted:
            assert m.id not in self.outbox, f"emitted a row twice: {m.id}"
            self.outbox[m.id] = m
        self.events.extend(t.events)
        self.cancelled.update(effects.cancel_runs)
        self.inflight = [r for r in self.inflight if r.id not in self.cancelled] + list(effects.dispatch)
        self.delayed.extend(m for m in t.emitted if isinstance(m, RunTask) and m.deliver_at is not None)
        return t

    def execute(self, run: RunTask) -> TaskOutcome:
        """Run one task call by its script."""
        task = self.script[run.stage].tasks[run.task]
        assert task.task_type == run.task_type
        call = self.calls[run.stage, run.task] = self.calls.get((run.stage, run.task), 0) + 1
        expected_attempt = call if task.kind == "transient" else 1
        assert expected_attempt == run.attempt, "attempts count retries, not polls"
        retry = RetryPolicy(max_attempts=task.max_attempts, initial=0.0, jitter=0.0)
        result: TaskResult | None = None
        error: ErrorInfo | None = None
        match task.kind:
            case "success":
                result = TaskResult.success()
            case "failed_continue":
                result = TaskResult.failed_continue("scripted")
            case "terminal":
                result = TaskResult.terminal("scripted")
            case "canceled":
                result = TaskResult.canceled("scripted")
            case "stopped":
                result = TaskResult.stopped("scripted")
            case "running":
                result = TaskResult.running() if call <= task.n else TaskResult.success()
            case "transient":
                if call <= task.n:
                    error = ErrorInfo.capped("TransientError", "flaky", attempt=run.attempt, transient=True)
                else:
                    result = TaskResult.success()
            case _:
                error = ErrorInfo.capped("RuntimeError", "scripted failure", attempt=run.attempt, transient=False)
        return TaskOutcome(result=result, error=error, retry=retry, poll_interval=0.0, started_at=self.now - 1.0)

    def run(self) -> None:
        """Start the workflow and execute until it completes."""
        self.take(*start(self.state, self.now))  # the start turn, committed with the run's insert
        ticks = 0
        while self.state.record.status is S.RUNNING:
            assert self.inflight or self.delayed, "the workflow runs but nothing is pending"
            ticks += 1
            assert ticks <= self.MAX_TICKS, "the workflow did not complete"
            self.now += 1.0
            batch = sorted(self.inflight, key=lambda r: r.stage)
            self.inflight = []
            for run in batch:
                if run.id not in self.cancelled:
                    self.commit(TaskDone(run=run, outcome=self.execute(run)))
            due = [m for m in self.delayed if m.deliver_at is not None and m.deliver_at <= self.now]
            self.delayed = [m for m in self.delayed if m not in due]
            for m in due:
                self.commit(m)

    @property
    def statuses(self) -> tuple[WorkflowStatus, ...]:
        """The final status of every stage."""
        return tuple(run.status for run in self.state.runs)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(scripts())
def test_pure_handlers_end_where_the_model_predicts(script: Script) -> None:
    """Driven by a deterministic executor, the handlers end every stage and the run as the model says."""
    run = PureRun(script)
    run.run()
    prediction = predict(script)
    label(prediction)
    assert (prediction.stages, prediction.workflow) == (run.statuses, run.state.record.status)
    check_history(script, run.statuses, run.events)
    check_started_iff_requisites_continue(script, run.statuses)
    assert {} == run.outbox, "no row stays pending after the run completed"
    started = [e for e in run.events if e.kind == "task.started"]
    assert sum(run.calls.values()) == len(started), "every call whose result committed records task.started"
    assert all(e.at < run.now for e in started), "task.started is at the call's start, not at its result"
    assert [] == run.inflight, "no task call is left to run"
    for stale in run.delayed:  # a poll or retry of a stage the TERMINAL cancelled
        t, effects = handle(run.state, stale, run.now + 1.0)
        assert (True, []) == (t.empty, effects.dispatch), "a stale redelivery after completion changes nothing"


@settings(max_examples=150, deadline=None, derandomize=True)
@given(scripts())
def test_model_halted_prediction_satisfies_the_order_independent_rules(script: Script) -> None:
    """The model's exact prediction for a halted run passes the order-independent check the Engine gets."""
    prediction = predict(script)
    if prediction.halted_by is not None:
        check_halted_run(script, prediction, prediction.stages, prediction.workflow)
    else:
        check_started_iff_requisites_continue(script, prediction.stages)


# layer 2: the real Engine on SQLite -------------------------------------------


async def scripted_task(stage: StageView) -> TaskResult:
    """Follow the stage's script: position and poll count live in the stage's context updates."""
    pos = int(stage.context.get("pos", 0))
    kind, n = stage.context["script"][pos]
    polls_key = f"polls{pos}"
    advance = {"pos": pos + 1}
    match kind:
        case "success":
            return TaskResult.success(context=advance)
        case "failed_continue":
            return TaskResult.failed_continue("scripted", context=advance)
        case "terminal":
            return TaskResult.terminal("scripted")
        case "canceled":
            return TaskResult.canceled("scripted")
        case "stopped":
            return TaskResult.stopped("scripted")
        case "running":
            polls = int(stage.context.get(polls_key, 0))
            if stage.attempt != 1:
                raise AssertionError(f"a poll counted as an attempt: {stage.attempt}")
            if polls < n:
                return TaskResult.running(context={polls_key: polls + 1})
            return TaskResult.success(context=advance)
        case "transient":
            if stage.attempt <= n:
                raise TransientError("flaky")
            return TaskResult.success(context=advance)
        case _:
            raise RuntimeError("scripted failure")


def register_scripted_tasks(engine: Engine) -> None:
    """One task type per retry policy, all running ``scripted_task`` with no waiting."""
    for m in MAX_ATTEMPTS:
        engine.register(
            f"scripted-m{m}",
            scripted_task,
            retry=RetryPolicy(max_attempts=m, initial=0.0, jitter=0.0),
            poll_interval=0.0,
        )


@dataclass(frozen=True)
class EngineRun:
    """What the engine reports for one run."""

    statuses: tuple[WorkflowStatus, ...]
    workflow: WorkflowStatus
    events: list[Event]
    pending: int


async def run_on_engine(script: Script) -> EngineRun:
    """Submit the script's workflow to a fresh engine on SQLite and wait for it."""
    async with running_engine(register_scripted_tasks) as engine:
        run = await engine.submit(build(script))
        view = await run.wait(timeout=10)
        events = await engine.history(run.workflow_id)
        pending = await engine.store.pending_messages()
    return EngineRun(
        statuses=tuple(s.status for s in view.stages),
        workflow=view.status,
        events=events,
        pending=len(pending),
    )


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(scripts())
def test_engine_on_sqlite_ends_where_the_model_predicts(script: Script) -> None:
    """End to end on SQLite, every run ends as the model says (TERMINAL runs: the timing-free part)."""
    actual = anyio.run(run_on_engine, script)
    prediction = predict(script)
    label(prediction)
    if prediction.halted_by is None:
        assert (prediction.stages, prediction.workflow) == (actual.statuses, actual.workflow)
    else:
        check_halted_run(script, prediction, actual.statuses, actual.workflow)
    check_history(script, actual.statuses, actual.events)
    check_started_iff_requisites_continue(script, actual.statuses)
    assert 0 == actual.pending, "no row stays pending after the run completed"
