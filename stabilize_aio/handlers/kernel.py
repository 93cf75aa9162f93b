"""The kernel every message family builds on: start a run, start and complete stages, finish.

Two plug-in points, where the next issues add kinds without touching the rest:

* **joins**: readiness is asked of the stage's join policy (``dag/joins.py``,
  ``join_of(spec)``) at each arrival, from counts the state keeps in O(1): a
  stage starts when its policy says so (today AND: no requisite outstanding);
* **stage kinds**: every stage starts the same way (RUNNING, its stage timer,
  ``stage.started``), then its kind (``kind_of(spec)``) begins its work. Today
  the one kind runs its tasks one after another (``TaskStage``); multi-instance
  and sub-workflow stages are further kinds.
"""

from __future__ import annotations

import functools
from typing import Any, Protocol

from ..dag.joins import join_of
from ..messages.durable import RunTask, StageTimeout
from ..model.conditions import Condition, ConditionError, parse
from ..model.records import LIVE, StageRun, StageSpec
from ..model.reducers import ReducerError, reduce_outputs
from ..model.status import WorkflowStatus
from ..model.values import ErrorInfo
from ..state.turn import Turn

S = WorkflowStatus


def begin(turn: Turn) -> None:
    """Start a just-submitted run: RUNNING, every root stage started (committed with the insert)."""
    turn.set_workflow(S.RUNNING, started_at=turn.now)
    turn.record_event("workflow.started", "workflow.started", status=S.RUNNING)
    for i, spec in enumerate(turn.state.specs):
        if not spec.requisites:
            start_stage(turn, i)
    maybe_complete(turn)


def start_stage(turn: Turn, i: int) -> None:
    """Start stage ``i``: its stage timer, its first task (or, without tasks, its success).

    A stage with ``enabled`` is first asked its condition over its context: false
    skips it (SKIPPED, which lets its downstream go on); a condition that cannot
    be evaluated fails it with the condition's error.
    """
    if turn.record.status is not S.RUNNING:
        return  # an earlier stage of this turn ended the run (a condition or reducer that failed it)
    spec = turn.spec(i)
    if spec.output_reducers and not _reduced(turn, i, spec):
        return
    if spec.enabled is not None and not _enabled(turn, i, spec.enabled):
        return
    run = turn.run(i)
    timer_id = None
    if spec.stage_timeout is not None:
        timer_id = f"t{i}.{run.generation}"
        turn.emit(
            StageTimeout(id=timer_id, stage=i, generation=run.generation, deliver_at=turn.now + spec.stage_timeout)
        )
    turn.set_stage(i, S.RUNNING, started_at=turn.now, task_index=0, attempt=1, polls=0, timer_id=timer_id)
    turn.record_event("stage.started", f"stage.started:{i}:{run.generation}", stage=i, status=S.RUNNING)
    kind_of(spec).begin(turn, i)


class StageKind(Protocol):
    """What a stage of one kind does once it has started (its work; its end goes through :func:`complete_stage`)."""

    @property
    def name(self) -> str: ...

    def begin(self, turn: Turn, i: int) -> None:
        """Begin stage ``i``'s work in this turn (it is RUNNING already)."""
        ...


class TaskStage:
    """A stage that runs its tasks one after another; one without tasks succeeds at once (a join point)."""

    __slots__ = ()

    name = "tasks"

    def begin(self, turn: Turn, i: int) -> None:
        if turn.spec(i).tasks:
            emit_run(turn, i, deliver_at=None)
        else:
            complete_stage(turn, i, S.SUCCEEDED)


#: The one task-stage kind (kinds hold no state: one instance serves every stage).
TASKS = TaskStage()


def kind_of(spec: StageSpec) -> StageKind:
    """The kind of a stage (the plug-in point for the stage kinds a stage declares)."""
    return TASKS


def _reduced(turn: Turn, i: int, spec: StageSpec) -> bool:
    """Reduce the requisites' outputs into the stage's context (what its tasks see); False: a reducer failed it."""
    upstream = [turn.run(r).outputs for r in spec.reduce_from]
    try:
        reduced = reduce_outputs(spec.ref_id, spec.output_reducers, upstream, turn.reducers)
    except ReducerError as exc:
        _fail_unstarted(turn, i, "ReducerError", str(exc))
        return False
    if reduced:
        turn.update_stage(i, context_update={**turn.run(i).context_update, **reduced})
    return True


def _fail_unstarted(turn: Turn, i: int, kind: str, message: str) -> None:
    """Fail a stage that could not start (its condition or reducer raised): RUNNING, then its failure status."""
    turn.set_stage(i, S.RUNNING, started_at=turn.now)
    turn.record_event("stage.started", f"stage.started:{i}:{turn.run(i).generation}", stage=i, status=S.RUNNING)
    error = ErrorInfo.capped(kind, message, attempt=1, transient=False)
    complete_stage(turn, i, turn.spec(i).failure_status(), error)


def _enabled(turn: Turn, i: int, source: str) -> bool:
    """Whether stage ``i`` runs; if not, it is ended here (SKIPPED, or failed by a condition that raised)."""
    spec = turn.spec(i)
    try:
        if condition(source, spec.ref_id).evaluate(turn.stage_context(i)):
            return True
    except ConditionError as exc:
        _fail_unstarted(turn, i, "ConditionError", str(exc))
        return False
    complete_stage(turn, i, S.SKIPPED)
    return False


@functools.lru_cache(maxsize=4096)
def condition(source: str, stage: str) -> Condition:
    """A parsed condition (parsed once per expression and stage: parsing is the costly part)."""
    return parse(source, stage=stage)


def emit_run(turn: Turn, i: int, *, deliver_at: float | None) -> None:
    """Emit the RunTask of stage ``i``'s current task, attempt and poll (dispatched now or at ``deliver_at``)."""
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


def call_key(i: int, run: StageRun) -> str:
    """The key suffix of one task call's events: stage, generation, task, attempt, poll (its RunTask's id)."""
    return f"{i}:{run.generation}:{run.task_index}:{run.attempt}:{run.polls}"


def current(turn: Turn, run_msg: RunTask) -> StageRun | None:
    """The stage run a RunTask belongs to, or None if the message is stale."""
    if turn.record.status is not S.RUNNING:
        return None
    run = turn.run(run_msg.stage)
    if run.status is not S.RUNNING or run.run_id != run_msg.id:
        return None
    return run


def complete_stage(turn: Turn, i: int, status: WorkflowStatus, error: ErrorInfo | None = None) -> None:
    """End stage ``i`` with ``status``; start what its end makes ready; halt or complete the run."""
    run = turn.run(i)
    if run.status is S.SUSPENDED:  # a deadline on a signal wait: the stage resumes to end (the table's way)
        run = turn.set_stage(i, S.RUNNING)
    if run.timer_id is not None:
        turn.consume(run.timer_id)
    changes: dict[str, Any] = {"ended_at": turn.now, "run_id": None, "timer_id": None, "parked": False}
    if error is not None:
        changes["error"] = error
    turn.set_stage(i, status, **changes)
    if status is S.SKIPPED:
        turn.record_event("stage.skipped", f"stage.skipped:{i}:{run.generation}", stage=i, status=status)
    else:
        turn.record_event("stage.completed", f"stage.completed:{i}:{run.generation}", stage=i, status=status)
    if status is S.TERMINAL:
        cancel_stages(turn, include_not_started=False)
        finish(turn, S.TERMINAL)
        return
    if status.can_continue:
        state = turn.state
        for c in state.children[i]:
            if turn.run(c).status is S.NOT_STARTED and join_of(state.specs[c]).ready(
                requisites=len(state.specs[c].requisites), outstanding=turn.outstanding(c)
            ):
                start_stage(turn, c)
    maybe_complete(turn)


def maybe_complete(turn: Turn) -> None:
    """Complete the workflow once no stage runs and none is about to start.

    A stage ready but not started yet (a root the start turn has not reached, a
    child later in the loop that starts its siblings) will start in this same
    turn: a stage that ended at once (no task, a false condition) must not
    complete the run before it.
    """
    if turn.active or turn.record.status is not S.RUNNING:
        return
    state = turn.state
    for i, run in turn.runs():
        if run.status is S.NOT_STARTED:
            spec = state.specs[i]
            if join_of(spec).ready(requisites=len(spec.requisites), outstanding=turn.outstanding(i)):
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
    finish(turn, final)


def finish(turn: Turn, status: WorkflowStatus, **changes: Any) -> None:
    """End the run with ``status`` in this turn (its waiters are woken after the commit)."""
    turn.set_workflow(status, ended_at=turn.now, **changes)
    turn.record_event("workflow.completed", "workflow.completed", status=status)
    turn.finish()


def cancel_stages(turn: Turn, *, include_not_started: bool) -> None:
    """Cancel every live stage (their rows and calls too) and, if asked, the ones not started."""
    for i, run in list(turn.runs()):
        if run.status in LIVE:
            drop_pending(turn, i, run)
            turn.set_stage(i, S.CANCELED, ended_at=turn.now, run_id=None, timer_id=None)
            turn.record_event("stage.completed", f"stage.completed:{i}:{run.generation}", stage=i, status=S.CANCELED)
        elif include_not_started and run.status is S.NOT_STARTED:
            turn.set_stage(i, S.CANCELED, ended_at=turn.now)


def drop_pending(turn: Turn, i: int, run: StageRun) -> None:
    """Consume a stage's pending rows (its RunTask, its stage timer) and cancel its call."""
    if run.run_id is not None:
        turn.consume(run.run_id)
        turn.cancel_call(run.run_id)
    if run.timer_id is not None:
        turn.consume(run.timer_id)
