"""Pure handlers: ``(state, message, now) -> Transition``. No I/O, no clock, no globals.

An actor folds every message of its turn through :func:`apply` on one
:class:`~stabilize_aio._state.Turn`; messages a workflow sends to itself (start
the next stage, the next task, complete the stage or the workflow) are plain
calls here and never become rows.

The rules are stabilize's (see docs/architecture.md, "Semantics"):

* a stage starts once every requisite can continue (AND join; O(1) counts);
* ``running`` polls the task again after its poll interval, keeping attempt;
* a transient error or timeout is retried with backoff until the policy gives
  up, then the stage takes its failure status; other errors fail at once;
* TERMINAL halts the workflow and cancels what still runs;
* the workflow completes as soon as no stage runs any more.
"""

from __future__ import annotations

from typing import Any

from ..messages.durable import CancelWorkflow, RunTask, SignalStage, StageTimeout, StartWorkflow
from ..messages.memory import FailWorkflow, Message, ParkTask, TaskDone, Undecodable
from ..model.records import LIVE, StageRun
from ..model.status import WorkflowStatus
from ..model.values import ErrorInfo, Signal
from ..state.commit import Transition
from ..state.turn import Turn
from ..state.workflow import WorkflowState

S = WorkflowStatus


def handle(state: WorkflowState, message: Message, now: float) -> Transition:
    """Apply one message to ``state`` (unchanged) and return the transition."""
    turn = Turn(state, now)
    apply(turn, message)
    return turn.t


def apply(turn: Turn, message: Message) -> None:
    """Fold one message into a turn."""
    match message:
        case StartWorkflow():
            _start_workflow(turn, message)
        case TaskDone():
            _task_done(turn, message)
        case RunTask():
            _redelivered_run(turn, message)
        case StageTimeout():
            _stage_timeout(turn, message)
        case CancelWorkflow():
            _cancel_workflow(turn, message)
        case ParkTask():
            _park(turn, message)
        case SignalStage():
            _signal(turn, message)
        case FailWorkflow():
            fail(turn, message)
        case Undecodable():
            _undecodable(turn, message)
        case _:
            raise TypeError(f"no handler for message {type(message).__name__}")


def begin(state: WorkflowState, now: float) -> Transition:
    """The transition that starts a just-submitted workflow.

    Submit commits it in the same transaction as the workflow's rows, so no
    start row is needed: the run is durably started or not there at all.
    """
    turn = Turn(state, now)
    _begin(turn)
    return turn.t


def _start_workflow(turn: Turn, msg: StartWorkflow) -> None:
    if turn.record.status is not S.NOT_STARTED:
        turn.discard(msg.id)  # a redelivery: the first start consumed the row
        return
    turn.consume(msg.id)
    _begin(turn)


def _begin(turn: Turn) -> None:
    turn.set_workflow(S.RUNNING, started_at=turn.now)
    turn.record_event("workflow.started", "workflow.started", status=S.RUNNING)
    for i, spec in enumerate(turn.state.specs):
        if not spec.requisites:
            _start_stage(turn, i)
    _maybe_complete(turn)


def _cancel_workflow(turn: Turn, msg: CancelWorkflow) -> None:
    if turn.record.status.is_complete:
        turn.discard(msg.id)  # too late, or a repeat: drop the row if it is still there
        return
    turn.consume(msg.id)
    _cancel_stages(turn, include_not_started=True)
    _finish(turn, S.CANCELED, cancel_reason=msg.reason or "canceled")


def _cancel_stages(turn: Turn, *, include_not_started: bool) -> None:
    for i, run in list(turn.runs()):
        if run.status in LIVE:
            _drop_pending(turn, i, run)
            turn.set_stage(i, S.CANCELED, ended_at=turn.now, run_id=None, timer_id=None)
            turn.record_event("stage.completed", f"stage.completed:{i}:{run.generation}", stage=i, status=S.CANCELED)
        elif include_not_started and run.status is S.NOT_STARTED:
            turn.set_stage(i, S.CANCELED, ended_at=turn.now)


def _drop_pending(turn: Turn, i: int, run: StageRun) -> None:
    """Consume a stage's pending rows (its RunTask, its stage timer) and cancel its call."""
    if run.run_id is not None:
        turn.consume(run.run_id)
        turn.t.cancel_runs.append(run.run_id)
    if run.timer_id is not None:
        turn.consume(run.timer_id)


def _finish(turn: Turn, status: WorkflowStatus, **changes: Any) -> None:
    turn.set_workflow(status, ended_at=turn.now, **changes)
    turn.record_event("workflow.completed", "workflow.completed", status=status)
    turn.t.finished = True


def fail(turn: Turn, msg: FailWorkflow) -> None:
    """End the workflow TERMINAL for a fault local to it (containment): nothing of it runs or comes back.

    Live stages are cancelled (their calls too), every outbox row of the
    workflow is deleted, undecodable rows move to the quarantine table, and
    placeholder rows are written back decodable. A finished workflow keeps its
    status; only its rows are cleaned up.
    """
    turn.t.purge = True
    turn.t.emitted.clear()  # what earlier messages of this turn emitted never runs
    turn.t.dispatch.clear()
    turn.t.quarantine.extend(msg.quarantine)
    for i in msg.repair:
        turn.t.respecs[i] = turn.spec(i)
        turn.update_stage(i)  # rewrites the run row as loaded (a placeholder if it was undecodable)
    error = msg.error
    if turn.record.status.is_complete:
        turn.set_workflow(turn.record.status)  # rewrite the record (a placeholder if it was undecodable)
        turn.record_event("workflow.quarantined", f"workflow.quarantined:{turn.record.version}", message=error.message)
        return
    for i, run in list(turn.runs()):
        if run.status in LIVE:
            if run.run_id is not None:
                turn.t.cancel_runs.append(run.run_id)
            turn.set_stage(i, S.CANCELED, ended_at=turn.now, run_id=None, timer_id=None)
    turn.set_workflow(S.TERMINAL, fail=True, ended_at=turn.now, error=error)
    turn.record_event("workflow.error", "workflow.error", status=S.TERMINAL, message=error.message)
    turn.record_event("workflow.completed", "workflow.completed", status=S.TERMINAL)
    turn.t.finished = True


def _undecodable(turn: Turn, msg: Undecodable) -> None:
    """An outbox row that cannot be decoded: it moves to the quarantine table and its workflow fails."""
    turn.discard(msg.id)
    error = ErrorInfo.engine(
        "UndecodableRow",
        f"workflow {turn.record.id!r}: outbox row {msg.id!r} could not be decoded ({msg.row.error}); "
        "its bytes were moved to the quarantine table",
    )
    fail(turn, FailWorkflow(error=error, quarantine=(msg.row,)))


def _maybe_complete(turn: Turn) -> None:
    """Complete the workflow once no stage runs (nothing else can start then)."""
    if turn.active or turn.record.status is not S.RUNNING:
        return
    statuses = [run.status for _, run in turn.runs()]
    if S.TERMINAL in statuses:
        final = S.TERMINAL
    elif S.STOPPED in statuses:
        fail = any(run.status is S.STOPPED and turn.spec(i).complete_other_branches_then_fail for i, run in turn.runs())
        final = S.TERMINAL if fail else S.SUCCEEDED
    elif S.CANCELED in statuses:
        final = S.CANCELED
    else:
        final = S.SUCCEEDED
    _finish(turn, final)


def _start_stage(turn: Turn, i: int) -> None:
    spec = turn.spec(i)
    run = turn.run(i)
    timer_id = None
    if spec.stage_timeout is not None:
        timer_id = f"t{i}.{run.generation}"
        turn.emit(
            StageTimeout(id=timer_id, stage=i, generation=run.generation, deliver_at=turn.now + spec.stage_timeout)
        )
    turn.set_stage(i, S.RUNNING, started_at=turn.now, task_index=0, attempt=1, polls=0, timer_id=timer_id)
    turn.record_event("stage.started", f"stage.started:{i}:{run.generation}", stage=i, status=S.RUNNING)
    if not spec.tasks:
        _complete_stage(turn, i, S.SUCCEEDED)
    else:
        _emit_run(turn, i, deliver_at=None)


def _emit_run(turn: Turn, i: int, *, deliver_at: float | None) -> None:
    run = turn.run(i)
    spec = turn.spec(i)
    rid = f"r{i}.{run.generation}.{run.task_index}.{run.attempt}.{run.polls}"
    turn.emit(
        RunTask(
            id=rid,
            stage=i,
            task=run.task_index,
            task_type=spec.tasks[run.task_index],
            generation=run.generation,
            attempt=run.attempt,
            deliver_at=deliver_at,
        )
    )
    turn.update_stage(i, run_id=rid)


def _complete_stage(turn: Turn, i: int, status: WorkflowStatus, error: ErrorInfo | None = None) -> None:
    run = turn.run(i)
    if run.status is S.SUSPENDED:  # a deadline on a signal wait: the stage resumes to end (the table's way)
        run = turn.set_stage(i, S.RUNNING)
    if run.timer_id is not None:
        turn.consume(run.timer_id)
    changes: dict[str, Any] = {"ended_at": turn.now, "run_id": None, "timer_id": None, "parked": False}
    if error is not None:
        changes["error"] = error
    turn.set_stage(i, status, **changes)
    turn.record_event("stage.completed", f"stage.completed:{i}:{run.generation}", stage=i, status=status)
    if status is S.TERMINAL:
        _cancel_stages(turn, include_not_started=False)
        _finish(turn, S.TERMINAL)
        return
    if status.can_continue:
        for c in turn.state.children[i]:
            if turn.outstanding(c) == 0 and turn.run(c).status is S.NOT_STARTED:
                _start_stage(turn, c)
    _maybe_complete(turn)


def _stage_timeout(turn: Turn, msg: StageTimeout) -> None:
    run = turn.run(msg.stage)
    if run.status not in LIVE or run.timer_id != msg.id:
        return  # stale: the stage finished or restarted; its row is gone already
    _drop_pending(turn, msg.stage, run)  # its timer row (this message) and its RunTask, call cancelled
    turn.update_stage(msg.stage, timer_id=None, run_id=None)
    spec = turn.spec(msg.stage)
    error = ErrorInfo.capped(
        "StageTimeout",
        f"stage {spec.ref_id!r} exceeded its stage_timeout of {spec.stage_timeout}s",
        attempt=run.attempt,
        transient=False,
    )
    _complete_stage(turn, msg.stage, spec.failure_status(), error)


def _current(turn: Turn, run_msg: RunTask) -> StageRun | None:
    """The stage run a RunTask belongs to, or None if the message is stale."""
    if turn.record.status is not S.RUNNING:
        return None
    run = turn.run(run_msg.stage)
    if run.status is not S.RUNNING or run.run_id != run_msg.id:
        return None
    return run


def _redelivered_run(turn: Turn, msg: RunTask) -> None:
    """A RunTask delivered to the actor (recovery, a due timer): dispatch it if current."""
    if _current(turn, msg) is not None:
        turn.t.dispatch.append(msg)


def _park(turn: Turn, msg: ParkTask) -> None:
    run = _current(turn, msg.run)
    if run is None or run.parked:
        return
    error = ErrorInfo.capped(
        "UnknownTaskType",
        f"stage {turn.spec(msg.run.stage).ref_id!r}: task type {msg.run.task_type!r} is not "
        "registered in this engine; the workflow is parked until an engine that has it runs it",
        attempt=msg.run.attempt,
        transient=True,
    )
    turn.update_stage(msg.run.stage, parked=True, error=error)


def _task_done(turn: Turn, msg: TaskDone) -> None:
    run = _current(turn, msg.run)
    if run is None:
        return  # a duplicate or a late result for a canceled run: its row is gone
    i = msg.run.stage
    spec = turn.spec(i)
    turn.consume(msg.run.id)
    out = msg.outcome
    if out.error is not None:
        _task_error(turn, i, run, msg)
        return
    result = out.result
    assert result is not None
    outputs = {**run.outputs, **result.outputs} if result.outputs else run.outputs
    ctx = {**run.context_update, **result.context} if result.context else run.context_update
    turn.update_stage(i, outputs=outputs, context_update=ctx, run_id=None, parked=False)
    status = result.status
    if status is S.SUSPENDED:
        if run.signals:  # a signal came first: consume it at once
            _resume(turn, i, run.signals[0], rest=run.signals[1:])
        else:
            turn.set_stage(i, S.SUSPENDED)
            turn.record_event("stage.suspended", f"stage.suspended:{i}:{run.generation}:{run.polls}", stage=i)
        return
    if status is S.RUNNING:
        turn.update_stage(i, polls=run.polls + 1)
        _emit_run(turn, i, deliver_at=turn.now + out.poll_interval)
        return
    if status in (S.SUCCEEDED, S.FAILED_CONTINUE, S.SKIPPED):
        if status is S.FAILED_CONTINUE:
            error = ErrorInfo.capped(
                "FailedContinue", result.error or "task failed (continue)", attempt=run.attempt, transient=False
            )
            turn.update_stage(i, failed_continue=True, error=error)
        _next_task(turn, i)
        return
    error = ErrorInfo.capped(
        f"Task{status.value.title().replace('_', '')}",
        result.error or f"task returned {status.value}",
        attempt=run.attempt,
        transient=False,
    )
    final = S.STOPPED if status is S.STOPPED else spec.failure_status()
    _complete_stage(turn, i, final, error)


def _signal(turn: Turn, msg: SignalStage) -> None:
    """A signal for a stage: resume it if suspended, keep it if the stage is still to suspend."""
    turn.consume(msg.id)
    run = turn.run(msg.stage)
    if turn.record.status.is_complete or run.status.is_complete:
        turn.record_event("signal.dropped", f"signal.dropped:{msg.id}", stage=msg.stage)
        return
    if run.status is S.SUSPENDED:
        _resume(turn, msg.stage, msg.signal, rest=run.signals)
    else:
        turn.update_stage(msg.stage, signals=(*run.signals, msg.signal))


def _resume(turn: Turn, i: int, signal: Signal, *, rest: tuple[Signal, ...]) -> None:
    """Call the stage's task again with the signal in its context."""
    run = turn.run(i)
    ctx = {**run.context_update, "_signal_name": signal.name, "_signal_data": signal.data}
    if run.status is S.SUSPENDED:
        turn.set_stage(i, S.RUNNING, context_update=ctx, signals=rest, polls=run.polls + 1)
    else:
        turn.update_stage(i, context_update=ctx, signals=rest, polls=run.polls + 1)
    turn.record_event("stage.signaled", f"stage.signaled:{i}:{run.generation}:{run.polls}", stage=i)
    _emit_run(turn, i, deliver_at=None)


def _next_task(turn: Turn, i: int) -> None:
    run = turn.run(i)
    if run.task_index + 1 < len(turn.spec(i).tasks):
        turn.update_stage(i, task_index=run.task_index + 1, attempt=1, polls=0)
        _emit_run(turn, i, deliver_at=None)
        return
    _complete_stage(turn, i, S.FAILED_CONTINUE if run.failed_continue else S.SUCCEEDED)


def _task_error(turn: Turn, i: int, run: StageRun, msg: TaskDone) -> None:
    out = msg.outcome
    error = out.error
    assert error is not None
    if out.context_update:
        turn.update_stage(i, context_update={**run.context_update, **out.context_update})
    if out.free_retry:  # the call was never made (open circuit): same attempt, later
        turn.update_stage(i, polls=run.polls + 1, error=error, run_id=None)
        _emit_run(turn, i, deliver_at=turn.now + (out.retry_after or 0.0))
        return
    if error.transient and not out.retry.gives_up_after(run.attempt):
        delay = out.retry.delay(run.attempt, seed=msg.run.id, retry_after=out.retry_after)
        turn.update_stage(i, attempt=run.attempt + 1, polls=0, error=error, run_id=None)
        _emit_run(turn, i, deliver_at=turn.now + delay)
        return
    _complete_stage(turn, i, turn.spec(i).failure_status(), error)
