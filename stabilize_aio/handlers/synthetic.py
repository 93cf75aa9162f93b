"""Synthetic stages: a stage's ``before``, ``after`` and ``on_failure`` stages, run by their stage.

A stage with synthetic stages stays RUNNING while they run: its before stages
one after another, then its tasks, then its after stages; it succeeds after the
last. A synthetic stage that does not end in a status that can continue fails
its stage (the stage's failure status, the synthetic stage named in the error).
When the stage fails, its on_failure stages run one after another (each whatever
the last one's end) and the stage then ends with the failure it had; a failure
that halts the run (TERMINAL) cancels the other stages at once and keeps the run
RUNNING but *halting* (nothing else starts) until they have run.

A before stage's outputs reach the stage's tasks (its context); an after or
on_failure stage's outputs become the stage's outputs.
"""

from __future__ import annotations

from ..model.status import WorkflowStatus
from ..model.values import ErrorInfo
from ..state.turn import Turn
from .gates import failure
from .kernel import complete_stage, run_tasks, start_stage
from .undo import cancel_live, cancel_stages, stop_waiting

S = WorkflowStatus


def ended(turn: Turn, s: int, status: WorkflowStatus) -> None:
    """Synthetic stage ``s`` ended with ``status``: its stage goes on, fails, or ends as its failure said."""
    spec = turn.spec(s)
    if spec.role == "instance":
        from . import instances  # noqa: PLC0415 (instances imports the kernel, which imports this)

        instances.ended(turn, s, status)
        return
    if spec.role == "compensate":
        from . import compensation  # noqa: PLC0415 (compensation imports the kernel, which imports this)

        compensation.ended(turn, s, status)
        return
    p = spec.parent
    assert p is not None
    assert spec.role is not None
    run = turn.run(s)
    parent = turn.spec(p)
    if run.outputs:
        if spec.role == "before":
            turn.update_stage(p, context_update={**turn.run(p).context_update, **run.outputs})
        else:
            turn.update_stage(p, outputs={**turn.run(p).outputs, **run.outputs})
    if turn.run(p).status is not S.RUNNING:
        return  # its stage ended meanwhile (a deadline, a prune, a halt): nothing follows
    siblings = {"before": parent.before, "after": parent.after, "on_failure": parent.on_failure}[spec.role]
    later = siblings[siblings.index(s) + 1 :]
    if spec.role == "on_failure":
        if later:
            start_stage(turn, later[0])
        else:
            held = turn.run(p).held
            assert held is not None
            complete_stage(turn, p, held, turn.run(p).error)
        return
    if not status.can_continue:
        cause = run.error
        message = f"stage {parent.ref_id!r}: its {spec.role} stage {spec.ref_id!r} ended {status.value}"
        error = failure("SyntheticStageFailed", f"{message}: {cause.message}" if cause else message)
        complete_stage(turn, p, parent.failure_status(), error)
    elif later:
        start_stage(turn, later[0])
    elif spec.role == "before":
        run_tasks(turn, p)
    else:
        complete_stage(turn, p, S.FAILED_CONTINUE if turn.run(p).failed_continue else S.SUCCEEDED)


def fail_over(turn: Turn, i: int, status: WorkflowStatus, error: ErrorInfo | None) -> None:
    """Stage ``i`` fails with ``status``: its on_failure stages run first (it stays RUNNING until they have)."""
    cancel_children(turn, i)  # a before or after stage still running (a deadline, say)
    run = turn.run(i)
    if run.timer_id is not None:  # its deadline is spent: its on_failure stages run in any case
        turn.consume(run.timer_id)
    turn.update_stage(i, held=status, error=error or run.error, timer_id=None, run_id=None)
    if status is S.TERMINAL:  # the run halts: the other stages stop now, the run ends after these
        cancel_stages(turn, include_not_started=False, keep=i)
        stop_waiting(turn)
        turn.update_workflow(halting=True)
    start_stage(turn, turn.spec(i).on_failure[0])


def cancel_children(turn: Turn, i: int) -> None:
    """Cancel stage ``i``'s synthetic stages still running (their calls and rows too)."""
    spec = turn.spec(i)
    for c in (*spec.before, *spec.after, *spec.on_failure):
        cancel_live(turn, c)
