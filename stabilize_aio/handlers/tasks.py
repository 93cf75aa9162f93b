"""Task calls: a result (or error) coming back, a redelivered RunTask, a task type this engine lacks.

* ``running`` polls the task again after its poll interval, keeping attempt;
* a transient error or timeout is retried with backoff until the policy gives
  up, then the stage takes its failure status; other errors fail at once;
* a call refused by an open circuit is retried later without using up an attempt.
* ``jump_to`` (a REDIRECT with a target) jumps (``jumps.py``).

The turn that commits a call's result records ``task.started`` (at the call's
real start, carried with the result) and, for a failure, ``task.failed`` or
``task.timed_out``; a retry row records ``retry.scheduled``.
"""

from __future__ import annotations

from ..messages.durable import RunTask
from ..messages.memory import ParkTask, TaskDone
from ..model.records import StageRun
from ..model.status import WorkflowStatus
from ..model.values import ErrorInfo
from ..state.turn import Turn
from .jumps import jump
from .kernel import call_key, complete_stage, current, emit_run, tasks_done
from .signals import resume, suspend

S = WorkflowStatus

#: The error type the pool reports for a call that ran past its timeout.
CALL_TIMEOUT = "TaskTimeout"


def redelivered_run(turn: Turn, msg: RunTask) -> None:
    """A RunTask delivered to the actor (recovery, a due timer): dispatch it if current (and not PAUSED)."""
    if current(turn, msg) is not None and turn.record.status is S.RUNNING:
        turn.dispatch(msg)


def park(turn: Turn, msg: ParkTask) -> None:
    """A task type this engine does not have: say so on the stage, keep its row for an engine that has it."""
    run = current(turn, msg.run)
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


def task_done(turn: Turn, msg: TaskDone) -> None:
    """A call's outcome: record it, then poll, suspend, go to the next task, retry or end the stage."""
    run = current(turn, msg.run)
    if run is None:
        return  # a duplicate or a late result for a canceled run: its row is gone
    i = msg.run.stage
    turn.consume(msg.run.id)
    out = msg.outcome
    key = call_key(i, run)
    if out.started_at is not None:
        turn.record_event("task.started", f"task.started:{key}", stage=i, at=out.started_at)
    if out.error is not None:
        if not out.free_retry:  # a call that was made and failed
            if out.error.type == CALL_TIMEOUT:
                turn.record_event("task.timed_out", f"task.timed_out:{key}", stage=i, message=out.error.message)
            else:
                turn.record_event("task.failed", f"task.failed:{key}", stage=i, message=out.error.message)
        task_error(turn, i, run, msg)
        return
    result = out.result
    assert result is not None
    status = result.status
    if turn.state.coordinated and status is not S.RUNNING and status is not S.SUSPENDED:
        coord = turn.spec(i).coord
        if coord is not None and coord.choice is not None:
            from .coordination import choose  # noqa: PLC0415 (built on the kernel, as this module)

            choose(turn, i, coord.choice)  # the first of its group to commit to a result wins
    if status is S.REDIRECT and result.target is not None:
        turn.update_stage(i, run_id=None, parked=False)
        jump(turn, i, result.target, context=result.context, outputs=result.outputs)
        return
    outputs = {**run.outputs, **result.outputs} if result.outputs else run.outputs
    ctx = {**run.context_update, **result.context} if result.context else run.context_update
    turn.update_stage(i, outputs=outputs, context_update=ctx, run_id=None, parked=False)
    if status is S.SUSPENDED:
        if run.signals:  # a signal came first: consume it at once
            resume(turn, i, run.signals[0], rest=run.signals[1:])
        else:
            suspend(turn, i, result.timeout, result.on_timeout)
        return
    if status is S.RUNNING:
        turn.update_stage(i, polls=run.polls + 1)
        emit_run(turn, i, deliver_at=turn.now + out.poll_interval)
        return
    if status in (S.SUCCEEDED, S.FAILED_CONTINUE, S.SKIPPED):
        if status is S.FAILED_CONTINUE:
            error = ErrorInfo.capped(
                "FailedContinue", result.error or "task failed (continue)", attempt=run.attempt, transient=False
            )
            turn.record_event("task.failed", f"task.failed:{key}", stage=i, status=status, message=error.message)
            turn.update_stage(i, failed_continue=True, error=error)
        next_task(turn, i)
        return
    error = ErrorInfo.capped(
        f"Task{status.value.title().replace('_', '')}",
        result.error or f"task returned {status.value}",
        attempt=run.attempt,
        transient=False,
    )
    turn.record_event("task.failed", f"task.failed:{key}", stage=i, status=status, message=error.message)
    final = S.STOPPED if status is S.STOPPED else turn.spec(i).failure_status()
    complete_stage(turn, i, final, error)


def next_task(turn: Turn, i: int) -> None:
    """Go on to the stage's next task, or end the stage when it was the last."""
    run = turn.run(i)
    if run.task_index + 1 < len(turn.spec(i).tasks):
        turn.update_stage(i, task_index=run.task_index + 1, attempt=1, polls=0)
        emit_run(turn, i, deliver_at=None)
        return
    tasks_done(turn, i)


def task_error(turn: Turn, i: int, run: StageRun, msg: TaskDone) -> None:
    """A call that raised (or timed out, or was refused by its circuit): retry it or end the stage."""
    out = msg.outcome
    error = out.error
    assert error is not None
    if out.context_update:
        turn.update_stage(i, context_update={**run.context_update, **out.context_update})
    if out.free_retry:  # the call was never made (open circuit): same attempt, later
        turn.update_stage(i, polls=run.polls + 1, error=error, run_id=None)
        _retry(turn, i, deliver_at=turn.now + (out.retry_after or 0.0))
        return
    if error.transient and not out.retry.gives_up_after(run.attempt):
        delay = out.retry.delay(run.attempt, seed=msg.run.id, retry_after=out.retry_after)
        turn.update_stage(i, attempt=run.attempt + 1, polls=0, error=error, run_id=None)
        _retry(turn, i, deliver_at=turn.now + delay)
        return
    complete_stage(turn, i, turn.spec(i).failure_status(), error)


def _retry(turn: Turn, i: int, *, deliver_at: float) -> None:
    emit_run(turn, i, deliver_at=deliver_at)
    turn.record_event("retry.scheduled", f"retry.scheduled:{call_key(i, turn.run(i))}", stage=i)
