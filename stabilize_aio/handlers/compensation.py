"""Compensation: a saga that survives crashes.

When a run fails (TERMINAL) or is cancelled, every stage that SUCCEEDED and
declares ``compensate`` has that task run, one after another in reverse order of
completion (``StageRun.done_seq``, the order their successes were folded); a
stage whose call was in flight (its outcome unknown) is compensated first, and
only if its task type says ``compensate_unknown``. Each compensation is a real
stage, ``<ref>/compensate``, run by the kernel like any other (its rows make it
durable: a crash resumes it). While they run, the run is halted but RUNNING
(``WorkflowRecord.halting``: nothing else starts, a cancel does not stop it);
then it ends TERMINAL or CANCELED and ``compensation`` says ``"done"`` or
``"failed"`` (a compensation that failed for good is recorded, the next ones
still run).
"""

from __future__ import annotations

from typing import Any

from ..model.records import LIVE
from ..model.status import WorkflowStatus
from ..state.turn import Turn
from .kernel import finish, run_key, start_stage

S = WorkflowStatus


def owed(turn: Turn) -> list[int]:
    """The compensation stages a run ending now owes, in the order they run (ask before cancelling its stages)."""
    done: list[tuple[int, int]] = []
    unknown: list[int] = []
    for i, run in turn.runs():
        spec = turn.spec(i)
        if spec.compensation is None:
            continue
        if run.status is S.SUCCEEDED:
            done.append((run.done_seq, i))
        elif run.status in LIVE and run.run_id is not None and run.task_index in spec.unknown_ok:
            unknown.append(i)
    ordered = unknown[::-1] + [i for _, i in sorted(done, reverse=True)]
    return [c for i in ordered if (c := turn.spec(i).compensation) is not None]


def begin(turn: Turn, order: list[int], status: WorkflowStatus, **changes: Any) -> None:
    """The run halts with ``status``: its compensations run first, one after another, from ``order[0]``."""
    turn.update_workflow(halting=True, compensation="running", queue=tuple(order[1:]), ending=status, **changes)
    turn.record_event(
        "compensation.started", run_key(turn, "compensation.started"), message=f"{len(order)} to compensate"
    )
    start_stage(turn, order[0])


def ended(turn: Turn, s: int, status: WorkflowStatus) -> None:
    """Compensation stage ``s`` ended: the next one runs, or the run ends as it was going to."""
    if status is not S.SUCCEEDED:
        run = turn.run(s)
        why = run.error.message if run.error is not None else status.value
        turn.record_event(
            "compensation.failed", f"compensation.failed:{s}:{run.generation}", stage=s, status=status, message=why
        )
    record = turn.record
    if record.queue:
        turn.update_workflow(queue=record.queue[1:])
        start_stage(turn, record.queue[0])
        return
    failed = any(
        turn.spec(i).role == "compensate" and run.status.is_complete and run.status is not S.SUCCEEDED
        for i, run in turn.runs()
    )
    outcome = "failed" if failed else "done"
    turn.record_event("compensation.completed", run_key(turn, "compensation.completed"), message=outcome)
    assert record.ending is not None
    finish(turn, record.ending, compensation=outcome, halting=False)
