"""Control: a cancel command, a stage's deadline, and containment (fail a workflow, an undecodable row)."""

from __future__ import annotations

from typing import Any

from ..messages.durable import CancelWorkflow, StageTimeout, StartDeadline, WorkflowTimeout
from ..messages.memory import FailWorkflow, Undecodable
from ..model.records import LIVE
from ..model.status import WorkflowStatus
from ..model.values import ErrorInfo
from ..state.turn import Turn
from .kernel import complete_stage, halt, run_key
from .subflows import tell_parent
from .undo import drop_pending, release_all

S = WorkflowStatus


def cancel_workflow(turn: Turn, msg: CancelWorkflow) -> None:
    """Cancel the run: live and not-started stages end CANCELED (their calls too), the run CANCELED."""
    if turn.record.status.is_complete:
        turn.discard(msg.id)  # too late, or a repeat: drop the row if it is still there
        return
    turn.consume(msg.id)
    if turn.record.halting:  # on_failure stages or compensations are running: a cancel does not stop them
        if turn.record.cancel_reason is None:  # (but it is recorded)
            turn.update_workflow(cancel_reason=msg.reason or "canceled")
        return
    halt(turn, S.CANCELED, include_not_started=True, cancel_reason=msg.reason or "canceled")


def workflow_timeout(turn: Turn, msg: WorkflowTimeout) -> None:
    """The run's deadline passed: it ends CANCELED for real (its calls cancelled, its compensations run)."""
    record = turn.record
    if record.status.is_complete or record.halting:
        turn.discard(msg.id)  # ended (or winding down) already
        return
    turn.consume(msg.id)
    reason = f"timeout: the run passed its timeout of {record.timeout:g}s"
    halt(turn, S.CANCELED, include_not_started=True, cancel_reason=reason)


def start_deadline(turn: Turn, msg: StartDeadline) -> None:
    """A run still waiting to start (BUFFERED) passed its start_deadline: it ends CANCELED."""
    record = turn.record
    if record.status is not S.BUFFERED or msg.id != f"start_deadline:{record.epoch}":
        turn.discard(msg.id)  # it started (or ended) in time
        return
    turn.consume(msg.id)
    reason = f"start_deadline: the run did not start within {record.start_deadline:g}s"
    halt(turn, S.CANCELED, include_not_started=True, cancel_reason=reason)


def stage_timeout(turn: Turn, msg: StageTimeout) -> None:
    """A stage's deadline: its call is cancelled and it takes its failure status."""
    run = turn.run(msg.stage)
    if run.status not in LIVE or run.timer_id != msg.id:
        return  # stale: the stage finished or restarted; its row is gone already
    drop_pending(turn, msg.stage, run)  # its timer row (this message) and its RunTask, call cancelled
    turn.update_stage(msg.stage, timer_id=None, run_id=None)
    spec = turn.spec(msg.stage)
    error = ErrorInfo.capped(
        "StageTimeout",
        f"stage {spec.ref_id!r} exceeded its stage_timeout of {spec.stage_timeout}s",
        attempt=run.attempt,
        transient=False,
    )
    complete_stage(turn, msg.stage, spec.failure_status(), error)


def fail(turn: Turn, msg: FailWorkflow) -> None:
    """End the workflow TERMINAL for a fault local to it (containment): nothing of it runs or comes back.

    Live stages are cancelled (their calls too), every outbox row of the
    workflow is deleted, undecodable rows move to the quarantine table, and
    placeholder rows are written back decodable. A finished workflow keeps its
    status; only its rows are cleaned up.
    """
    turn.purge(msg.quarantine)
    turn.drop_emitted()  # what earlier messages of this turn emitted never runs
    for i in msg.repair:
        turn.respec(i)  # rewrites the run row as loaded (a placeholder if it was undecodable)
    error = msg.error
    if turn.record.status.is_complete:
        turn.set_workflow(turn.record.status)  # rewrite the record (a placeholder if it was undecodable)
        turn.record_event("workflow.quarantined", f"workflow.quarantined:{turn.record.version}", message=error.message)
        return
    for i, run in list(turn.runs()):
        if run.status in LIVE:
            if run.run_id is not None:
                turn.cancel_call(run.run_id)
            turn.set_stage(i, S.CANCELED, ended_at=turn.now, run_id=None, timer_id=None)
    winding: dict[str, Any] = {"halting": False} if turn.record.halting else {}
    if turn.record.claimed:
        release_all(turn)
        winding["claimed"] = ()
    if turn.record.status is S.PAUSED or turn.record.deferred or turn.record.waits:
        winding.update(pause_reason=None, deferred=(), waits=())
    if turn.record.compensation == "running":  # what was running is cancelled, the rest will never run
        winding["compensation"] = "failed"
    turn.set_workflow(S.TERMINAL, fail=True, ended_at=turn.now, error=error, **winding)
    tell_parent(turn, S.TERMINAL)  # (after the purge: this row stays)
    turn.record_event("workflow.error", run_key(turn, "workflow.error"), status=S.TERMINAL, message=error.message)
    turn.record_event("workflow.completed", run_key(turn, "workflow.completed"), status=S.TERMINAL)
    turn.finish()


def undecodable(turn: Turn, msg: Undecodable) -> None:
    """An outbox row that cannot be decoded: it moves to the quarantine table and its workflow fails."""
    turn.discard(msg.id)
    error = ErrorInfo.engine(
        "UndecodableRow",
        f"workflow {turn.record.id!r}: outbox row {msg.id!r} could not be decoded ({msg.row.error}); "
        "its bytes were moved to the quarantine table",
    )
    fail(turn, FailWorkflow(error=error, quarantine=(msg.row,)))
