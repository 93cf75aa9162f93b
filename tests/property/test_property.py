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

A second reference model (``RoutingModel``, "layer 1, routed" below) covers the routing
patterns: AND/OR, DISCRIMINATOR, N_OF_M (with and without ``cancel_remaining``) and
MULTI_MERGE joins, OR splits with true, false and broken conditions, and pruning. It is an
interpreter of the rules run in step with the pure handlers over random orders of task
completion (any pending call may complete next), and compares every stage's final status,
pruned flag and number of starts and the run's final status. The six kernel bugs it found
(all fixed) are kept as regression cases (``REGRESSIONS``), each the smallest example of its
pattern.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from runs import initial_state

from stabilize_aio import (
    Engine,
    ErrorInfo,
    Event,
    JoinType,
    RetryPolicy,
    SplitType,
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
    join: str = "AND"  # its JoinType's name
    threshold: int | None = None  # an N_OF_M join's join_threshold
    cancel_remaining: bool = False  # a DISCRIMINATOR or N_OF_M join's
    splits: tuple[tuple[int, str], ...] = ()  # an OR split: (child, yes/no/broken) per child with a condition

    def __repr__(self) -> str:
        """Only what differs from a plain stage (examples read shorter)."""
        default = StageScript(
            (), (), continue_on_failure=False, fail_workflow=True, complete_other_branches_then_fail=False
        )
        fields = [f"{k}={v!r}" for k, v in vars(self).items() if k in ("requisites", "tasks") or v != vars(default)[k]]
        return f"StageScript({', '.join(fields)})"


Script = tuple[StageScript, ...]
GATES = ("none", "none", "none", "yes", "no", "broken")
CONDITION = {"none": None, "yes": "go == true", "no": "go == true", "broken": "missing.name == 1"}
SPLIT_CONDITION = {"yes": "1 == 1", "no": "1 == 2", "broken": "missing.name == 1"}


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
                join_type=JoinType(stage.join),
                join_threshold=stage.threshold,
                cancel_remaining=stage.cancel_remaining,
                split_type=SplitType.OR if stage.splits else SplitType.AND,
                split_conditions={ref(c): SPLIT_CONDITION[g] for c, g in stage.splits} or None,
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
        self.calls: dict[tuple[int, int, int], int] = {}  # (stage, generation, task) -> calls

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
        key = (run.stage, run.generation, run.task)
        call = self.calls[key] = self.calls.get(key, 0) + 1
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


# layer 1, routed: joins, splits and pruning under random orders of completion ------------
#
# The second reference model is written from the routing rules (docs of dag/joins.py,
# handlers/kernel.py and model/routing.py), not from the kernel's code. It is an interpreter:
# the executor picks which pending call completes next (any order, drawn by hypothesis), and
# the model is told the same pick. What a turn does at once (a false or broken condition, a
# stage without tasks, pruning, a join deciding) happens depth first in child index order,
# as the kernel starts stages. Its rules:
#
# * an edge r -> c is *pending* while r has not ended (a MULTI_MERGE between runs has not),
#   *halted* when r ended STOPPED, TERMINAL or CANCELED, *dead* when r ended SKIPPED pruned or
#   dropped the edge (an OR split not taking c), else *live* (an arrival);
# * AND / OR: start when no edge is pending or halted and one is live; every edge dead: pruned
#   (SKIPPED, pruned set), so pruning spreads; a halted edge leaves the stage NOT_STARTED;
# * DISCRIMINATOR (threshold 1) / N_OF_M (join_threshold k): start at the k-th live arrival;
#   once live + pending < k: pruned if no edge is halted, else the join fails (a stage.started,
#   then its failure status; SKIPPED pruned with fail_workflow=False). Later arrivals do
#   nothing. cancel_remaining: when the join starts (its condition passed), its requisites
#   that have not ended are pruned, the last requisite first, and after each pruned stage its
#   unfinished requisites every child of which is pruned (a running call is cancelled);
# * MULTI_MERGE: one run per live arrival, one after another (between runs it is
#   NOT_STARTED); after a run that can continue, the next one starts if an arrival waits, it
#   waits while an edge is pending, else the stage ends as that run did and its downstream
#   goes on; once nothing more can arrive while it waits, it ends as its last run did. Never a
#   live arrival: pruned if every edge is dead, else NOT_STARTED. A run that halts ends it;
# * an OR split asks its conditions when it ends SUCCEEDED (not FAILED_CONTINUE or SKIPPED):
#   a false one drops that child's edge, one that cannot be evaluated fails the split stage
#   (its failure status; its edges stay live if that can continue);
# * conditions (``enabled``) and task scripts as in the first model; TERMINAL halts the run at
#   once: running stages end CANCELED and nothing else happens; otherwise the run completes
#   when nothing runs (TERMINAL if a STOPPED stage has complete_other_branches_then_fail).

JOINS = ("AND", "AND", "OR", "DISCRIMINATOR", "N_OF_M", "N_OF_M", "MULTI_MERGE")
ROUTED_KINDS = ("success",) * 5 + ("running",) * 3 + ("transient", "failed_continue", "stopped", "stopped", "raise")
ROUTED_GATES = ("none",) * 8 + ("yes", "no", "no", "broken")
SPLIT_GATES = ("none", "yes", "yes", "no", "no", "no", "broken")
PARTIAL = frozenset({"DISCRIMINATOR", "N_OF_M"})
HALTS = frozenset({S.STOPPED, S.TERMINAL, S.CANCELED})
ENDED = CAN_CONTINUE | HALTS

MERGE_RUN_AT_ONCE = "a multi-merge run ends in the turn it starts (no task, or a condition)"
# Notes of the model that mark a pattern the kernel once got wrong (see FIXED).
MERGE_UNTOLD = "a multi-merge decides while a requisite that ended has not told it yet (depth first)"
MERGE_CLOSES = "a multi-merge ends waiting, when nothing more can arrive"
MERGE_WAITS = "a multi-merge waits between runs as the run completes"
JOIN_ENDED_WHILE_STARTING = "a join's cancel_remaining ends the join itself (halted, or pruned by another join)"
DECIDES_AFTER_HALT = "a join has something to decide in the turn after a TERMINAL halted the run"
ROOT_PRUNED = "a root is pruned by cancel_remaining before the start turn starts it"


@st.composite
def routed_tasks(draw: st.DrawFn) -> TaskScript:
    """A random task behaviour, biased to success (short polls and retries)."""
    kind = draw(st.sampled_from(ROUTED_KINDS))
    n = draw(st.integers(0, 2)) if kind in ("running", "transient") else 0
    return TaskScript(kind=kind, n=n, max_attempts=draw(st.sampled_from(MAX_ATTEMPTS)))


@st.composite
def routed_scripts(draw: st.DrawFn, max_stages: int = 8) -> Script:
    """A random DAG with random joins, OR splits (conditions true, false or broken) and conditions."""
    size = draw(st.integers(2, max_stages))
    stages: list[StageScript] = []
    for i in range(size):
        join = draw(st.sampled_from(JOINS)) if i else "AND"
        fan_in = 2 if join != "AND" else 0  # a join other than AND mostly has several requisites
        requisites = (
            tuple(sorted(draw(st.sets(st.integers(0, i - 1), min_size=min(fan_in, i), max_size=3)))) if i else ()
        )
        stages.append(
            StageScript(
                requisites=requisites,
                tasks=tuple(draw(routed_tasks()) for _ in range(draw(st.sampled_from((0, 1, 1, 1, 2, 2))))),
                continue_on_failure=draw(st.sampled_from((False, False, True))),
                fail_workflow=draw(st.booleans()),
                complete_other_branches_then_fail=draw(st.sampled_from((False, False, False, True))),
                gate=draw(st.sampled_from(ROUTED_GATES)),
                join=join,
                threshold=draw(st.integers(1, len(requisites))) if join == "N_OF_M" else None,
                cancel_remaining=join in PARTIAL and draw(st.sampled_from((False, True, True))),
            )
        )
    for i in range(size):
        children = [c for c in range(size) if i in stages[c].requisites]
        if children and draw(st.integers(0, 2)) == 0:
            gates = [(c, draw(st.sampled_from(SPLIT_GATES))) for c in children]
            stages[i] = replace(stages[i], splits=tuple((c, g) for c, g in gates if g != "none"))
    return tuple(stages)


@dataclass
class ModelStage:
    """The model's view of one stage."""

    status: WorkflowStatus = S.NOT_STARTED
    pruned: bool = False
    dropped: frozenset[int] = frozenset()
    starts: int = 0  # stage.started: every run begun, and a condition or join that failed it
    runs: int = 0  # a MULTI_MERGE: runs begun
    last: WorkflowStatus | None = None  # a MULTI_MERGE: how its last run ended
    merging: bool = False  # a MULTI_MERGE between runs: ended as its last run, its downstream still waiting
    task: int = 0  # the current run's task
    call: int = 0  # calls of that task so far (polls and attempts)
    failed_continue: bool = False


class RoutingModel:
    """The routing rules (see the section's comment), fed the executor's picks one by one."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.stages = [ModelStage() for _ in script]
        self.children = [[c for c, s in enumerate(script) if i in s.requisites] for i in range(len(script))]
        self.workflow = S.RUNNING
        self.notes: set[str] = set()  # what happened, for hypothesis' statistics
        self.unvisited: dict[int, list[int]] = {}  # a stage ending: the children it has not told yet

    @property
    def halted(self) -> bool:
        return self.workflow is not S.RUNNING

    def running(self) -> list[int]:
        """The stages with a call pending, in index order."""
        return [i for i, s in enumerate(self.stages) if s.status is S.RUNNING]

    def begin(self) -> None:
        """The start turn: every root starts, in index order."""
        for i, stage in enumerate(self.script):
            if not stage.requisites:
                if self.stages[i].status is S.NOT_STARTED:
                    self.start(i)
                else:  # an earlier root's join pruned it (cancel_remaining)
                    self.notes.add(ROOT_PRUNED)
        self.settle()

    def settle(self) -> None:
        """The run completes when nothing runs."""
        if self.halted or self.running():
            return
        fails = any(
            s.status is S.STOPPED and self.script[i].complete_other_branches_then_fail
            for i, s in enumerate(self.stages)
        )
        self.workflow = S.TERMINAL if fails else S.SUCCEEDED
        if any(s.merging for s in self.stages):
            self.notes.add(MERGE_WAITS)

    def step(self, i: int) -> None:
        """Stage ``i``'s pending call completes, by its script."""
        s, stage = self.stages[i], self.script[i]
        assert s.status is S.RUNNING, f"model: stage {i} has no call pending"
        task = stage.tasks[s.task]
        s.call += 1
        if task.kind == "running" and s.call <= task.n:
            pass  # polled again
        elif task.kind == "transient" and s.call <= task.n:
            if s.call >= task.max_attempts:
                self.end(i, failure_status(stage))
        elif task.kind in ("success", "running", "transient", "failed_continue"):
            s.failed_continue = s.failed_continue or task.kind == "failed_continue"
            s.task, s.call = s.task + 1, 0
            if s.task == len(stage.tasks):
                self.end(i, S.FAILED_CONTINUE if s.failed_continue else S.SUCCEEDED)
        elif task.kind == "stopped":
            self.end(i, S.STOPPED)
        else:
            self.end(i, failure_status(stage))
        self.settle()

    def edges(self, c: int) -> list[str]:
        """What each edge into ``c`` is now: pending, halted, dead or live."""
        kinds = []
        for r in self.script[c].requisites:
            s = self.stages[r]
            if s.merging:  # a multi-merge between runs has not ended for its downstream
                kinds.append("pending")
            elif s.status in HALTS:
                kinds.append("halted")
            elif s.status not in CAN_CONTINUE:
                kinds.append("pending")
            elif s.pruned or c in s.dropped:
                kinds.append("dead")
            else:
                kinds.append("live")
        return kinds

    def decide(self, c: int) -> str:
        """What ``c``'s join says now: wait, start, prune, close (a multi-merge between runs) or unreachable."""
        s, stage = self.stages[c], self.script[c]
        edges = self.edges(c)
        live, pending, halted = edges.count("live"), edges.count("pending"), edges.count("halted")
        all_dead = edges.count("dead") == len(edges)
        if stage.join in ("AND", "OR"):
            if pending or halted:
                return "wait"
            return "prune" if all_dead else "start"
        if stage.join == "MULTI_MERGE":
            if live > s.runs:
                return "start"
            if pending:
                return "wait"
            if s.runs:
                return "close"
            return "prune" if all_dead else "wait"
        need = stage.threshold or 1
        if live >= need:
            return "start"
        if live + pending >= need:
            return "wait"
        return "unreachable" if halted else "prune"

    def note_merge(self, c: int) -> None:
        """Note a multi-merge deciding while a requisite has ended but not yet told it so."""
        if self.script[c].join == "MULTI_MERGE" and any(
            c in self.unvisited.get(r, ()) for r in self.script[c].requisites
        ):
            self.notes.add(MERGE_UNTOLD)

    def arrive(self, c: int) -> None:
        """A requisite of ``c`` ended: its join decides."""
        s, stage = self.stages[c], self.script[c]
        if s.status is not S.NOT_STARTED and not s.merging:
            return
        decision = self.decide(c)
        self.note_merge(c)
        if self.halted:
            if decision != "wait":
                self.notes.add(DECIDES_AFTER_HALT)
            return
        if decision == "start":
            self.start(c)
        elif decision == "prune":
            self.notes.add(f"a {stage.join} join is pruned (every edge dead, or too few can arrive)")
            self.prune(c)
        elif decision == "close":
            self.notes.add(MERGE_CLOSES)
            s.merging = False  # it ends for its downstream as its last run did
            self.tell(c)
        elif decision == "unreachable" and not stage.fail_workflow:
            self.notes.add("an unreachable join is skipped")
            self.end(c, S.SKIPPED, pruned=True)
        elif decision == "unreachable":
            self.notes.add("an unreachable join fails")
            s.starts += 1
            self.end(c, failure_status(stage))

    def start(self, c: int) -> None:
        """Stage ``c`` becomes ready: its condition, then its tasks (and a partial join's cancel_remaining)."""
        s, stage = self.stages[c], self.script[c]
        if self.halted:
            return
        if stage.join == "MULTI_MERGE":
            s.merging = False
            s.runs += 1
            if s.runs > 1:
                self.notes.add("a multi-merge runs again")
            if stage.gate != "yes" and (stage.gate != "none" or not stage.tasks):
                self.notes.add(MERGE_RUN_AT_ONCE)
        if stage.gate == "no":
            self.end(c, S.SKIPPED)
            return
        s.starts += 1
        if stage.gate == "broken":
            self.end(c, failure_status(stage))
            return
        s.status, s.task, s.call, s.failed_continue = S.RUNNING, 0, 0, False
        if stage.join in PARTIAL and "pending" in self.edges(c):
            self.notes.add("a partial join starts before every requisite ended")
        if stage.cancel_remaining:
            self.cancel_remaining(c)
            if s.status is not S.RUNNING:  # what it pruned halted the run, or started a join that pruned it
                self.notes.add(JOIN_ENDED_WHILE_STARTING)
        if s.status is S.RUNNING and not stage.tasks:
            self.end(c, S.SUCCEEDED)

    def cancel_remaining(self, j: int) -> None:
        """Prune the join's requisites that have not ended, and upward what only they fed."""
        stack = [r for r in self.script[j].requisites if self.stages[r].status not in ENDED]
        if stack:
            self.notes.add("cancel_remaining prunes")
        while stack:
            if self.halted:
                if any(self.stages[r].status not in ENDED for r in stack):
                    self.notes.add(DECIDES_AFTER_HALT)
                return
            r = stack.pop()
            if self.stages[r].status in ENDED:
                continue
            self.prune(r)
            for q in self.script[r].requisites:
                if self.stages[q].status not in ENDED and all(self.stages[k].pruned for k in self.children[q]):
                    self.notes.add("cancel_remaining prunes upward")
                    stack.append(q)

    def prune(self, i: int) -> None:
        """End ``i`` SKIPPED pruned (a running call is cancelled); its downstream follows."""
        if self.halted or self.stages[i].status in ENDED:
            return
        self.end(i, S.SKIPPED, pruned=True)

    def end(self, i: int, status: WorkflowStatus, *, pruned: bool = False) -> None:
        """Stage ``i`` (or its run) ends with ``status``: its split, a multi-merge's next run, its children."""
        s, stage = self.stages[i], self.script[i]
        dropped: frozenset[int] = frozenset()
        if status is S.SUCCEEDED and stage.splits:
            if any(g == "broken" for _, g in stage.splits):
                self.notes.add("a split condition fails its stage")
                self.end(i, failure_status(stage))
                return
            dropped = frozenset(c for c, g in stage.splits if g == "no")
            if dropped:
                self.notes.add("an OR split drops a child")
        if stage.join == "MULTI_MERGE" and status in CAN_CONTINUE and not pruned:
            s.last = status
            self.note_merge(i)
            edges = self.edges(i)
            if edges.count("live") > s.runs:  # the next run, at once
                s.status, s.merging = status, True
                self.start(i)
                return
            if "pending" in edges:  # ended for now; its downstream waits for the last run
                s.status, s.merging = status, True
                return
        s.status, s.pruned, s.dropped = status, pruned, dropped
        if pruned:
            self.notes.add("a stage is pruned")
        if status is S.TERMINAL:
            for t in self.stages:
                if t.status is S.RUNNING:
                    t.status = S.CANCELED
            self.workflow = S.TERMINAL
            return
        self.tell(i)

    def tell(self, i: int) -> None:
        """Stage ``i`` ended for its downstream: each child decides, in index order."""
        self.unvisited[i] = list(self.children[i])
        while self.unvisited[i]:
            self.arrive(self.unvisited[i].pop(0))
        del self.unvisited[i]


Order = tuple[int, ...]


class RoutedRun(PureRun):
    """The pure handlers with a random order of completion: each step, one pending call completes.

    ``order`` picks it: step k completes pending call ``order[k % len(order)] % len(pending)``
    (stage order; the first one when ``order`` is empty). Polls and retries (no delay here)
    are redelivered at once, each in a turn of its own. The model takes each step first; the
    calls pending must be the model's running stages before every step, and the run must
    complete when the model's does.
    """

    MAX_STEPS = 1000

    def __init__(self, script: Script, order: Order) -> None:
        super().__init__(script)
        self.order = order
        self.picks: list[int] = []

    def take(self, t: Commit, effects: Effects) -> Commit:
        super().take(t, effects)
        self.delayed = [m for m in self.delayed if m.id in self.outbox]  # a pruned stage's poll row is gone
        return t

    def flush(self) -> None:
        """Deliver the polls and retries just emitted (all due at once)."""
        while self.delayed:
            self.commit(self.delayed.pop(0))

    def run_with(self, model: RoutingModel) -> None:
        """Start the workflow and complete calls in ``order`` until it completes, the model in step."""
        model.begin()
        self.take(*start(self.state, self.now))
        self.flush()
        while True:
            pending = sorted((r for r in self.inflight if r.id not in self.cancelled), key=lambda r: r.stage)
            assert model.running() == [r.stage for r in pending], f"the calls pending after picks {self.picks}"
            assert model.halted is (self.state.record.status is not S.RUNNING), f"completion after {self.picks}"
            if model.halted:
                return
            assert len(self.picks) < self.MAX_STEPS, "the workflow did not complete"
            choice = self.order[len(self.picks) % len(self.order)] if self.order else 0
            run = pending[choice % len(pending)]
            self.picks.append(run.stage)
            model.step(run.stage)
            self.inflight.remove(run)
            self.now += 1.0
            self.commit(TaskDone(run=run, outcome=self.execute(run)))
            self.flush()

    @property
    def starts(self) -> tuple[int, ...]:
        """How many times each stage started (its stage.started events)."""
        refs = [e.stage for e in self.events if e.kind == "stage.started"]
        return tuple(refs.count(ref(i)) for i in range(len(self.script)))


@dataclass(frozen=True)
class Outcome:
    """What the property compares: per stage status, pruned flag and starts, and the run's status."""

    statuses: tuple[WorkflowStatus, ...]
    pruned: tuple[bool, ...]
    starts: tuple[int, ...]
    workflow: WorkflowStatus


def check_routed(script: Script, order: Order) -> tuple[RoutedRun, RoutingModel]:
    """The handlers end where the routing model says, and the run's rows and history are clean."""
    run = RoutedRun(script, order)
    model = RoutingModel(script)
    run.run_with(model)
    expected = Outcome(
        statuses=tuple(s.status for s in model.stages),
        pruned=tuple(s.pruned for s in model.stages),
        starts=tuple(s.starts for s in model.stages),
        workflow=model.workflow,
    )
    actual = Outcome(
        statuses=run.statuses,
        pruned=tuple(r.pruned for r in run.state.runs),
        starts=run.starts,
        workflow=run.state.record.status,
    )
    assert expected == actual, f"picks {run.picks}"
    assert {} == run.outbox, "no row stays pending after the run completed"
    kinds = [e.kind for e in run.events]
    assert ["workflow.completed"] == [k for k in kinds if k == "workflow.completed"]
    assert "workflow.completed" == kinds[-1]
    assert len(run.events) == len({e.key for e in run.events}), "event keys are unique per workflow"
    started = [e for e in run.events if e.kind == "task.started"]
    assert sum(run.calls.values()) == len(started), "every call whose result committed records task.started"
    return run, model


#: Kernel bugs the property found (kernel of fb72e1c), all fixed since; each pattern (a note of
#: RoutingModel) has its smallest example in REGRESSIONS below.
FIXED: dict[str, str] = {
    MERGE_UNTOLD: (
        "a MULTI_MERGE notes an arrival only when the ended requisite's loop over its children reaches it, "
        "while its pending count (the edge counters) already has that requisite ended: a run that ends in the "
        "same turn (no task, a false condition) before the arrival is noted is its last, and a sibling that "
        "ends at once (a broken condition) closes it; either way that arrival's run is lost"
    ),
    MERGE_CLOSES: (
        "a MULTI_MERGE that ends waiting (nothing more can arrive: _merge_close) records a stage.started for "
        "a run that never happens, and ends SUCCEEDED/FAILED_CONTINUE from the failed_continue flag, not as "
        "its last run did (SKIPPED by its condition)"
    ),
    MERGE_WAITS: (
        "a MULTI_MERGE run that ends while a requisite can never end (behind a STOPPED stage) resets the "
        "stage and returns before maybe_complete: with nothing else running the workflow stays RUNNING forever"
    ),
    ROOT_PRUNED: (
        "cancel_remaining of a join started by an earlier root prunes a root the start turn has not reached; "
        "begin then starts it: InvalidTransitionError SKIPPED -> RUNNING, the run cannot start"
    ),
    DECIDES_AFTER_HALT: (
        "after a TERMINAL halts the run, the same turn goes on deciding joins: later children are pruned "
        "(stage.skipped after workflow.completed) and an unreachable join fails a second time (a second "
        "workflow.completed, a duplicate event key)"
    ),
    JOIN_ENDED_WHILE_STARTING: (
        "a partial join whose cancel_remaining ends the join itself (what it pruned started another "
        "cancel_remaining join that pruned it, or halted the run) still begins its work: a RunTask for a "
        "SKIPPED or CANCELED stage is dispatched and its row stays pending (no task: InvalidTransitionError)"
    ),
}


def task(kind: str = "success") -> TaskScript:
    """A task of a hand-written case."""
    return TaskScript(kind=kind, n=0, max_attempts=1)


def stage(
    requisites: tuple[int, ...] = (), *tasks: TaskScript, fail_workflow: bool = True, **routing: Any
) -> StageScript:
    """A stage of a hand-written case (``routing``: gate, join, threshold, cancel_remaining, splits)."""
    return StageScript(
        requisites=requisites,
        tasks=tasks,
        continue_on_failure=False,
        fail_workflow=fail_workflow,
        complete_other_branches_then_fail=False,
        **routing,
    )


STOPS = task("stopped")
#: The smallest examples of the FIXED bugs: (id, mark, script, order); every order here is (): the
#: lowest pending stage completes first.
REGRESSIONS: list[tuple[str, str, Script, Order]] = [
    # s0 and s1 (after s0) have no task: both arrive at s2 in the start turn, s2 runs once, not twice
    ("merge-untold", MERGE_UNTOLD, (stage(), stage((0,)), stage((0, 1), join="MULTI_MERGE")), ()),
    # s2 runs on s0 in the start turn, then s1 stops: s2 ends with two stage.started for its one run
    (
        "merge-close-start",
        MERGE_CLOSES,
        (stage(), stage((), STOPS, fail_workflow=False), stage((0, 1), join="MULTI_MERGE")),
        (),
    ),
    # the same with s2's run SKIPPED by its condition: s2 ends SUCCEEDED (and a stage.started)
    (
        "merge-close-skipped",
        MERGE_CLOSES,
        (stage(), stage((), STOPS, fail_workflow=False), stage((0, 1), task(), join="MULTI_MERGE", gate="no")),
        (),
    ),
    # s0 stops (s1 never starts), s2 succeeds, s3 runs on s2 and ends waiting for s1: the run never completes
    (
        "merge-waits-forever",
        MERGE_WAITS,
        (
            stage((), STOPS, fail_workflow=False),
            stage((0,), task()),
            stage((), task()),
            stage((1, 2), task(), join="MULTI_MERGE"),
        ),
        (),
    ),
    # s0 (no task) starts s2 in the start turn; s2 prunes s1 before the start turn starts it
    (
        "root-pruned",
        ROOT_PRUNED,
        (stage(), stage((), task()), stage((0, 1), task(), join="DISCRIMINATOR", cancel_remaining=True)),
        (),
    ),
    # s0 drops s2; s1's broken condition halts the run; s2 is then pruned
    ("prune-after-halt", DECIDES_AFTER_HALT, (stage(splits=((2, "no"),)), stage((0,), gate="broken"), stage((0,))), ()),
    # s0 stops, s1 drops s3 and halts the run through s2; s3's join (s0 halted, s1 dead) then fails it again
    (
        "fail-after-halt",
        DECIDES_AFTER_HALT,
        (
            stage((), STOPS, fail_workflow=False),
            stage((), task(), splits=((3, "no"),)),
            stage((1,), gate="broken"),
            stage((0, 1), join="DISCRIMINATOR"),
        ),
        (),
    ),
    # s1 starts s2, whose cancel_remaining prunes s0, which starts s3, whose cancel_remaining prunes s2
    (
        "join-pruned-while-starting",
        JOIN_ENDED_WHILE_STARTING,
        (
            stage((), task()),
            stage(),
            stage((0, 1), task(), join="DISCRIMINATOR", cancel_remaining=True),
            stage((0, 1, 2), join="DISCRIMINATOR", cancel_remaining=True),
        ),
        (),
    ),
    # s1 starts s2, whose cancel_remaining prunes s0, which starts s3, whose broken condition halts the run
    (
        "join-canceled-while-starting",
        JOIN_ENDED_WHILE_STARTING,
        (
            stage((), task()),
            stage(),
            stage((0, 1), task(), join="DISCRIMINATOR", cancel_remaining=True),
            stage((0, 1), gate="broken"),
        ),
        (),
    ),
]


@pytest.mark.parametrize(
    ("script", "order"), [pytest.param(script, order, id=name) for name, _, script, order in REGRESSIONS]
)
def test_routing_regressions(script: Script, order: Order) -> None:
    """The smallest examples of the bugs the property found: the handlers end them where the model says."""
    check_routed(script, order)


@pytest.mark.parametrize(
    ("mark", "script", "order"),
    [pytest.param(mark, script, order, id=name) for name, mark, script, order in REGRESSIONS],
)
def test_regressions_exercise_their_pattern(mark: str, script: Script, order: Order) -> None:
    """Each regression case still takes the path its bug was on (the model notes the pattern)."""
    assert mark in FIXED
    assert mark in model_notes(script, order)


@settings(max_examples=1000, deadline=None, derandomize=True)
@given(routed_scripts(), st.lists(st.integers(0, 7), max_size=12).map(tuple))
def test_pure_handlers_route_where_the_model_says_in_any_order(script: Script, order: Order) -> None:
    """Joins, OR splits and pruning end every stage and the run as the routing model says."""
    _, model = check_routed(script, order)
    for note in sorted(model.notes):
        event(note)
    event(f"ends {model.workflow}")


def model_notes(script: Script, order: Order) -> set[str]:
    """The notes of the model's run alone (for an example the handlers failed on), from its own pending calls."""
    model = RoutingModel(script)
    model.begin()
    step = 0
    while not model.halted and step < RoutedRun.MAX_STEPS:
        pending = model.running()
        model.step(pending[(order[step % len(order)] if order else 0) % len(pending)])
        step += 1
    return model.notes


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
