"""Unit tests of the pure handlers: no database, no event loop, a fake clock."""

from __future__ import annotations

import inspect
import re
import typing
from pathlib import Path
from typing import Any, TypeVar

import pytest
from runs import initial_state

from stabilize_aio import RetryPolicy, Stage, TaskResult, Workflow, WorkflowStatus
from stabilize_aio.handlers import apply, handle, kernel, start
from stabilize_aio.messages.durable import CancelWorkflow, Durable, RunTask, StageTimeout
from stabilize_aio.messages.memory import Message, ParkTask, TaskDone, TaskOutcome
from stabilize_aio.model.events import KINDS
from stabilize_aio.model.records import StageRun, WorkflowRecord
from stabilize_aio.model.values import ErrorInfo, Event
from stabilize_aio.state.commit import Commit, Effects
from stabilize_aio.state.turn import Turn
from stabilize_aio.state.workflow import WorkflowState

S = WorkflowStatus
NO_WAIT = RetryPolicy(max_attempts=3, initial=1.0, multiplier=2.0, jitter=0.0)


class Step:
    """One turn as the tests read it: what it commits and what follows the commit."""

    def __init__(self, commit: Commit, effects: Effects) -> None:
        self.commit = commit
        self.effects = effects

    # what the store sees
    @property
    def empty(self) -> bool:
        return self.commit.empty

    @property
    def consumed(self) -> list[str]:
        return self.commit.consumed

    @property
    def discarded(self) -> list[str]:
        return self.commit.discarded

    @property
    def stages(self) -> dict[int, StageRun]:
        return self.commit.stages

    @property
    def workflow(self) -> WorkflowRecord | None:
        return self.commit.workflow

    @property
    def emitted(self) -> list[Durable]:
        return self.commit.emitted

    @property
    def events(self) -> list[Event]:
        return self.commit.events

    # what happens after it
    @property
    def dispatch(self) -> list[RunTask]:
        return self.effects.dispatch

    @property
    def cancel_runs(self) -> list[str]:
        return self.effects.cancel_runs

    @property
    def finished(self) -> bool:
        return self.effects.finished


class Harness:
    """Feeds messages through the handlers and applies each commit, like an actor after commit."""

    def __init__(self, *stages: Stage, inputs: dict[str, Any] | None = None) -> None:
        wf = Workflow(application="app", name="wf", stages=list(stages))
        self.state: WorkflowState = initial_state(wf, "wf-1", inputs or {})
        self.now = 1000.0
        self.log: list[Step] = []

    def _applied(self, commit: Commit, effects: Effects) -> Step:
        self.state.apply(commit)
        step = Step(commit, effects)
        self.log.append(step)
        return step

    def start(self) -> Step:
        """The run's start turn, as submit commits it with the run's insert."""
        return self._applied(*start(self.state, self.now))

    def send(self, message: Message) -> Step:
        return self._applied(*handle(self.state, message, self.now))

    def status(self, ref: str) -> WorkflowStatus:
        return self.state.runs[self.state.stage_index(ref)].status

    def done(self, run: RunTask, result: TaskResult | None = None, **outcome: Any) -> Step:
        if result is not None:
            outcome["result"] = result
        outcome.setdefault("retry", NO_WAIT)
        return self.send(TaskDone(run=run, outcome=TaskOutcome(**outcome)))


def ok(**outputs: Any) -> TaskResult:
    return TaskResult.success(outputs=outputs)


T = TypeVar("T")


def only(items: list[T]) -> T:
    assert 1 == len(items)
    return items[0]


def test_start_dispatches_every_root_and_writes_no_start_row() -> None:
    """The start turn runs the workflow, starts the roots, and emits one RunTask per root; it consumes nothing."""
    h = Harness(Stage("a", "t"), Stage("b", "t"), Stage("c", "t", requisites=["a", "b"]))
    t = h.start()
    assert S.RUNNING == h.state.record.status
    assert ([], []) == (t.consumed, t.discarded)  # committed with the insert: there is no start row
    assert ["a", "b"] == [h.state.specs[r.stage].ref_id for r in t.dispatch]
    assert [S.RUNNING, S.RUNNING, S.NOT_STARTED] == [r.status for r in h.state.runs]
    assert {"workflow.started", "stage.started"} == {e.kind for e in t.events}


def test_and_join_waits_for_every_requisite() -> None:
    """A join stage starts only after its last requisite succeeds, and then exactly once."""
    h = Harness(Stage("a", "t"), Stage("b", "t"), Stage("j", "t", requisites=["a", "b"]))
    ra, rb = h.start().dispatch
    t1 = h.done(ra, ok())
    assert ([], S.NOT_STARTED) == (t1.dispatch, h.status("j"))
    t2 = h.done(rb, ok())
    assert ["j"] == [h.state.specs[r.stage].ref_id for r in t2.dispatch]
    assert 0 == h.state.outstanding[h.state.stage_index("j")]


def test_result_consumes_its_run_row_and_completes_the_workflow() -> None:
    """The last success consumes the RunTask row and ends the workflow SUCCEEDED in the same turn."""
    h = Harness(Stage("a", "t"))
    run = only(h.start().dispatch)
    t = h.done(run, ok(x=1))
    assert [run.id] == t.consumed
    assert (S.SUCCEEDED, S.SUCCEEDED, True) == (h.status("a"), h.state.record.status, t.finished)
    assert {"x": 1} == h.state.runs[0].outputs


def test_stale_or_duplicate_result_is_dropped() -> None:
    """A second result for the same run changes nothing and consumes nothing."""
    h = Harness(Stage("a", "t"), Stage("b", "t", requisites=["a"]))
    run = only(h.start().dispatch)
    h.done(run, ok())
    t = h.done(run, ok())
    assert t.empty


def test_context_layers_inputs_ancestors_own_then_updates() -> None:
    """A task's context: inputs < ancestors' outputs (declaration order) < own context < own updates."""
    h = Harness(
        Stage("a", "t"),
        Stage("b", "t"),
        Stage("c", "t", context={"k": "own", "own": 1}, requisites=["a", "b"]),
        inputs={"k": "input", "i": 1},
    )
    ra, rb = h.start().dispatch
    h.done(rb, ok(k="b", from_b=1))
    rc = only(h.done(ra, ok(k="a", from_a=1, shared="a")).dispatch)
    c = h.state.stage_index("c")
    assert {"k": "own", "i": 1, "from_a": 1, "from_b": 1, "shared": "a", "own": 1} == h.state.stage_context(c)
    h.done(rc, TaskResult.running(context={"k": "update"}))
    assert "update" == h.state.stage_context(c)["k"]


def test_running_polls_after_interval_and_keeps_attempt() -> None:
    """`running` emits a delayed RunTask after the poll interval, same attempt, context kept."""
    h = Harness(Stage("a", "t"))
    run = only(h.start().dispatch)
    t = h.done(run, TaskResult.running(context={"n": 1}), poll_interval=30.0)
    poll = only([m for m in t.emitted if isinstance(m, RunTask)])
    assert (h.now + 30.0, 1, []) == (poll.deliver_at, poll.attempt, t.dispatch)
    assert (S.RUNNING, {"n": 1}) == (h.status("a"), h.state.runs[0].context_update)
    t2 = h.send(poll)  # the timer fires: the handler dispatches the current run
    assert [poll] == t2.dispatch


def test_transient_error_retries_with_backoff_then_fails() -> None:
    """A transient error schedules attempt+1 after the policy's delay; past max_attempts the stage fails."""
    h = Harness(Stage("a", "t"))
    run = only(h.start().dispatch)
    delays = []
    for attempt in (1, 2):
        err = ErrorInfo.capped("TransientError", "later", attempt=attempt, transient=True)
        t = h.done(run, error=err, context_update={"checkpoint": attempt})
        run = only([m for m in t.emitted if isinstance(m, RunTask)])
        assert run.deliver_at is not None
        delays.append(run.deliver_at - h.now)
        assert attempt + 1 == run.attempt
    assert [1.0, 2.0] == delays
    assert {"checkpoint": 2} == h.state.runs[0].context_update
    err = ErrorInfo.capped("TransientError", "still", attempt=3, transient=True)
    h.done(run, error=err)
    assert (S.TERMINAL, S.TERMINAL) == (h.status("a"), h.state.record.status)
    assert 3 == h.state.runs[0].attempt


def test_retry_after_is_a_floor_for_the_delay() -> None:
    """TransientError.retry_after raises the delay above the policy's."""
    h = Harness(Stage("a", "t"))
    run = only(h.start().dispatch)
    err = ErrorInfo.capped("TransientError", "busy", attempt=1, transient=True)
    t = h.done(run, error=err, retry_after=42.0)
    retry = only([m for m in t.emitted if isinstance(m, RunTask)])
    assert h.now + 42.0 == retry.deliver_at


def test_permanent_error_fails_at_once() -> None:
    """A non-transient error fails the stage with the error recorded, no retry."""
    h = Harness(Stage("a", "t"))
    run = only(h.start().dispatch)
    t = h.done(run, error=ErrorInfo.capped("ValueError", "bad", attempt=1, transient=False))
    assert [] == [m for m in t.emitted if isinstance(m, RunTask)]
    error = h.state.runs[0].error
    assert error is not None
    assert ("ValueError", "bad", S.TERMINAL) == (error.type, error.message, h.status("a"))


@pytest.mark.parametrize(
    ("flags", "stage_status", "workflow_status", "downstream"),
    [
        ({}, S.TERMINAL, S.TERMINAL, S.NOT_STARTED),
        ({"continue_on_failure": True}, S.FAILED_CONTINUE, S.SUCCEEDED, S.SUCCEEDED),
        ({"fail_workflow": False}, S.STOPPED, S.SUCCEEDED, S.NOT_STARTED),
        ({"complete_other_branches_then_fail": True}, S.STOPPED, S.TERMINAL, S.NOT_STARTED),
    ],
)
def test_failure_flags(
    flags: dict[str, Any], stage_status: WorkflowStatus, workflow_status: WorkflowStatus, downstream: WorkflowStatus
) -> None:
    """A terminal task result gives the stage its failure status, and the workflow stabilize's final status."""
    h = Harness(Stage("a", "t", **flags), Stage("b", "t"), Stage("after_a", "t", requisites=["a"]))
    ra, rb = h.start().dispatch
    t = h.done(ra, TaskResult.terminal("boom"))
    for run in t.dispatch:
        t = h.done(run, ok())
    if h.state.record.status is S.RUNNING:
        h.done(rb, ok())
    assert (stage_status, workflow_status, downstream) == (
        h.status("a"),
        h.state.record.status,
        h.status("after_a"),
    )


def test_terminal_cancels_running_siblings_and_their_calls() -> None:
    """TERMINAL halts the workflow: running stages become CANCELED, their rows consumed, calls cancelled."""
    h = Harness(Stage("a", "t"), Stage("b", "t"), Stage("c", "t"))
    ra, rb, rc = h.start().dispatch
    t = h.done(ra, TaskResult.terminal("boom"))
    assert {ra.id, rb.id, rc.id} == set(t.consumed)
    assert {rb.id, rc.id} == set(t.cancel_runs)
    assert [S.TERMINAL, S.CANCELED, S.CANCELED] == [r.status for r in h.state.runs]
    assert S.TERMINAL == h.state.record.status
    assert h.done(rb, ok()).empty  # a late result of a cancelled call is dropped


def test_stopped_result_stops_only_its_branch() -> None:
    """TaskResult.stopped ends the stage STOPPED; the other branch finishes and the workflow SUCCEEDS."""
    h = Harness(Stage("a", "t"), Stage("b", "t"), Stage("a2", "t", requisites=["a"]))
    ra, rb = h.start().dispatch
    h.done(ra, TaskResult.stopped())
    assert S.RUNNING == h.state.record.status
    h.done(rb, ok())
    assert (S.STOPPED, S.NOT_STARTED, S.SUCCEEDED) == (h.status("a"), h.status("a2"), h.state.record.status)


def test_failed_continue_result_runs_the_next_task_and_marks_the_stage() -> None:
    """A task's failed_continue result moves to the stage's next task; the stage ends FAILED_CONTINUE."""
    h = Harness(Stage("a", tasks=["t1", "t2"]), Stage("b", "t", requisites=["a"]))
    r1 = only(h.start().dispatch)
    r2 = only(h.done(r1, TaskResult.failed_continue("meh", outputs={"x": 1})).dispatch)
    assert ("t2", 1) == (r2.task_type, r2.task)
    rb = only(h.done(r2, ok(y=2)).dispatch)
    assert (S.FAILED_CONTINUE, {"x": 1, "y": 2}) == (h.status("a"), h.state.runs[0].outputs)
    h.done(rb, ok())
    assert S.SUCCEEDED == h.state.record.status


def test_stage_timeout_timer_fails_the_stage_mid_call() -> None:
    """The stage timer, when it fires on a running stage, cancels the call and fails the stage."""
    h = Harness(Stage("a", "t", stage_timeout=5.0))
    t = h.start()
    timer = only([m for m in t.emitted if isinstance(m, StageTimeout)])
    run = only(t.dispatch)
    assert h.now + 5.0 == timer.deliver_at
    t2 = h.send(timer)
    assert {timer.id, run.id} == set(t2.consumed)
    assert [run.id] == t2.cancel_runs
    error = h.state.runs[0].error
    assert error is not None
    assert ("StageTimeout", S.TERMINAL) == (error.type, h.status("a"))


def test_stage_timer_is_consumed_when_the_stage_finishes_first() -> None:
    """A stage that finishes before its timeout consumes its timer row; the late timer is ignored."""
    h = Harness(Stage("a", "t", stage_timeout=5.0))
    t = h.start()
    timer = only([m for m in t.emitted if isinstance(m, StageTimeout)])
    t2 = h.done(only(t.dispatch), ok())
    assert timer.id in t2.consumed
    assert h.send(timer).empty


def test_cancel_cancels_running_and_pending_stages() -> None:
    """CancelWorkflow ends running and never-started stages CANCELED and the workflow CANCELED."""
    h = Harness(Stage("a", "t"), Stage("b", "t", requisites=["a"]))
    run = only(h.start().dispatch)
    t = h.send(CancelWorkflow(id="cancel", reason="user"))
    assert ({"cancel", run.id}, [run.id]) == (set(t.consumed), t.cancel_runs)
    assert ([S.CANCELED, S.CANCELED], S.CANCELED) == ([r.status for r in h.state.runs], h.state.record.status)
    assert "user" == h.state.record.cancel_reason
    again = h.send(CancelWorkflow(id="cancel"))
    assert ([], ["cancel"], None) == (again.consumed, again.discarded, again.workflow)


def test_cancel_of_a_task_waiting_out_a_backoff_consumes_its_delayed_row() -> None:
    """A RunTask waiting for its retry is a row too: cancel consumes it."""
    h = Harness(Stage("a", "t"))
    run = only(h.start().dispatch)
    t = h.done(run, error=ErrorInfo.capped("TransientError", "x", attempt=1, transient=True))
    retry = only([m for m in t.emitted if isinstance(m, RunTask)])
    t2 = h.send(CancelWorkflow(id="cancel"))
    assert retry.id in t2.consumed


def test_unknown_task_type_parks_without_failing() -> None:
    """ParkTask records a clear error on the stage and leaves it RUNNING with its row pending."""
    h = Harness(Stage("a", "missing"))
    run = only(h.start().dispatch)
    t = h.send(ParkTask(run=run))
    error = h.state.runs[0].error
    assert error is not None
    assert ([], S.RUNNING, True) == (t.consumed, h.status("a"), h.state.runs[0].parked)
    assert "'missing' is not registered" in error.message
    assert h.send(ParkTask(run=run)).empty  # parked once


def test_wide_fan_in_is_linear() -> None:
    """A 1,000-wide fan-out joins once; each arrival touches O(1) state."""
    width = 1000
    stages = [Stage("root", "t")]
    stages += [Stage(f"s{i}", "t", requisites=["root"]) for i in range(width)]
    stages.append(Stage("join", "t", requisites=[f"s{i}" for i in range(width)]))
    h = Harness(*stages)
    runs = h.done(only(h.start().dispatch), ok()).dispatch
    assert width == len(runs)
    started = []
    for run in runs:
        t = h.done(run, ok())
        assert len(t.stages) <= 2  # the finished stage, plus the join when it starts
        started += t.dispatch
    assert ["join"] == [h.state.specs[r.stage].ref_id for r in started]


def test_empty_stage_succeeds_at_once() -> None:
    """A stage without tasks is a pure join point: it succeeds as soon as it starts."""
    h = Harness(Stage("a", "t"), Stage("join", requisites=["a"]), Stage("b", "t", requisites=["join"]))
    run = only(h.start().dispatch)
    t = h.done(run, ok())
    assert (S.SUCCEEDED, ["b"]) == (h.status("join"), [h.state.specs[r.stage].ref_id for r in t.dispatch])


def test_handler_is_pure_until_applied() -> None:
    """start() and handle() leave the state untouched; only apply() changes it."""
    wf = Workflow(application="a", name="w", stages=[Stage("a", "t")])
    state = initial_state(wf, "w", {})
    before = (state.record, list(state.runs))
    t1 = start(state, 1.0)
    t2 = start(state, 1.0)
    assert before == (state.record, state.runs)
    assert t1 == t2
    run = t1[1].dispatch[0]
    state.apply(t1[0])
    after = (state.record, list(state.runs))
    d1 = handle(state, TaskDone(run=run, outcome=TaskOutcome(result=TaskResult.success())), 2.0)
    d2 = handle(state, TaskDone(run=run, outcome=TaskOutcome(result=TaskResult.success())), 2.0)
    assert after == (state.record, state.runs)
    assert d1 == d2


def test_task_events_record_the_call_its_failure_and_its_retry() -> None:
    """task.started (at the call's start), task.failed / task.timed_out and retry.scheduled, in the result's turn."""
    h = Harness(Stage("a", "t"))
    run = only(h.start().dispatch)
    err = ErrorInfo.capped("ValueError", "flaky", attempt=1, transient=True)
    t = h.done(run, error=err, started_at=h.now - 3.0)
    retry = only([m for m in t.emitted if isinstance(m, RunTask)])
    assert [
        ("task.started", "task.started:0:0:0:1:0", h.now - 3.0),
        ("task.failed", "task.failed:0:0:0:1:0", h.now),
        ("retry.scheduled", "retry.scheduled:0:0:0:2:0", h.now),
    ] == [(e.kind, e.key, e.at) for e in t.events]
    timeout = ErrorInfo.capped("TaskTimeout", "too slow", attempt=2, transient=True)
    t2 = h.done(retry, error=timeout, started_at=h.now - 1.0)
    assert ["task.started", "task.timed_out", "retry.scheduled"] == [e.kind for e in t2.events]
    refused = ErrorInfo.capped("CircuitOpen", "open", attempt=3, transient=True)
    t3 = h.done(only([m for m in t2.emitted if isinstance(m, RunTask)]), error=refused, free_retry=True)
    assert [("retry.scheduled", "retry.scheduled:0:0:0:3:1")] == [(e.kind, e.key) for e in t3.events]  # no call


def test_a_failing_result_records_task_failed() -> None:
    """A terminal result is a failed call: task.failed with its message, then the stage's completion."""
    h = Harness(Stage("a", "t"))
    t = h.done(only(h.start().dispatch), TaskResult.terminal("boom"))
    failed = only([e for e in t.events if e.kind == "task.failed"])
    assert ("task.failed:0:0:0:1:0", "boom", "TERMINAL") == (failed.key, failed.message, failed.status)


def test_a_stage_that_ends_skipped_records_stage_skipped() -> None:
    """A stage ending SKIPPED records stage.skipped (not stage.completed), and its downstream starts."""
    h = Harness(Stage("a", "t"), Stage("b", "t", requisites=["a"]))
    h.start()
    turn = Turn(h.state, h.now)
    kernel.complete_stage(turn, 0, S.SKIPPED)
    assert [("stage.skipped", "stage.skipped:0:0"), ("stage.started", "stage.started:1:0")] == [
        (e.kind, e.key) for e in turn.commit.events
    ]
    assert ["b"] == [h.state.specs[r.stage].ref_id for r in turn.effects.dispatch]


def test_every_message_kind_has_a_case() -> None:
    """apply() matches every message class; anything else is refused (assert_never), not silently ignored."""
    h = Harness(Stage("a", "t"))
    with pytest.raises(AssertionError):
        apply(Turn(h.state, h.now), object())  # type: ignore[arg-type]
    source = inspect.getsource(apply)
    for cls in typing.get_args(Message):
        assert f"case {cls.__name__}():" in source


def test_handlers_record_only_catalogue_kinds() -> None:
    """Every event kind the handlers record is in the catalogue (model/events.py), and the catalogue is complete."""
    recorded: set[str] = set()
    for path in Path(inspect.getfile(kernel)).parent.glob("*.py"):  # every module of the handlers
        recorded |= set(re.findall(r'record_event\(\s*"([a-z_.]+)"', path.read_text()))
    assert recorded <= KINDS
    assert {"workflow.buffered", "workflow.paused", "workflow.resumed", "workflow.restarted"} <= recorded
    assert {"task.started", "task.failed", "task.timed_out", "retry.scheduled", "stage.skipped"} <= recorded
    assert {
        *("workflow.started", "workflow.completed", "workflow.paused", "workflow.resumed", "workflow.restarted"),
        "workflow.buffered",
        *("stage.started", "stage.completed", "stage.skipped", "stage.jumped", "stage.signaled"),
        *("task.started", "task.failed", "task.timed_out", "retry.scheduled"),
        *("compensation.started", "compensation.completed", "compensation.failed"),
        *("stage.suspended", "signal.dropped", "workflow.error", "workflow.quarantined"),
    } == KINDS
