"""Taking back what a stage set going: cancel a live stage, cancel them all, reset one to run again.

The kernel and the patterns built on it use these; they change a stage through
the turn only (its rows consumed, its call or child run cancelled after the
commit), never its downstream: what follows is the caller's business.
"""

from __future__ import annotations

from ..model.records import LIVE, StageRun
from ..model.status import WorkflowStatus
from ..state.turn import Turn

S = WorkflowStatus


#: A stage's claim on a shared key: waiting, or holding it.
CLAIMED, HOLDS = 1, 2


def release_claim(turn: Turn, i: int, run: StageRun) -> None:
    """Stage ``i`` ends or goes back: its claim on its global mutex goes (the next claim is granted after)."""
    coord = turn.spec(i).coord
    assert coord is not None
    assert coord.mutex_key is not None
    turn.release(i, f"mutex:{coord.mutex_key}")
    turn.update_stage(i, claim=0)


def reset(turn: Turn, k: int, *, merge_run: bool = False) -> None:
    """Put stage ``k`` back to NOT_STARTED as a new generation (new idempotency keys); a running call is cancelled.

    ``merge_run``: the next run of a MULTI_MERGE join between runs, which keeps
    its last run's outputs (until this run begins) and the arrivals it noted.
    """
    run = turn.run(k)
    if run.status in LIVE:
        drop_pending(turn, k, run)
    if run.claim:
        release_claim(turn, k, run)
    spec = turn.spec(k)
    for c in (*spec.before, *spec.after, *spec.on_failure):  # its synthetic stages start again with it
        if turn.run(c).status is not S.NOT_STARTED:
            reset(turn, c)
    if run.fanned is not None and not run.fanned.closed:  # its instances go (it makes new ones when it starts)
        from .instances import stop  # noqa: PLC0415 (built on this kernel: it imports the kernel)

        stop(turn, k)
    if merge_run:
        kept = {
            "outputs": run.outputs,
            "context_update": run.context_update,
            "fired": run.fired,
            "arrivals": run.arrivals,
        }
    else:
        kept = {"outputs": {}, "context_update": {}, "fired": 0, "arrivals": ()}
    turn.set_stage(
        k,
        S.NOT_STARTED,
        reset=True,
        generation=run.generation + 1,
        task_index=0,
        attempt=1,
        polls=0,
        failed_continue=False,
        error=None,
        started_at=None,
        ended_at=None,
        run_id=None,
        timer_id=None,
        parked=False,
        pruned=False,
        dropped=(),
        merging=False,
        held=None,
        fanned=None,
        child=None,
        wait_id=None,
        **kept,
    )


def cancel_stages(turn: Turn, *, include_not_started: bool, keep: int | None = None) -> None:
    """Cancel every live stage (their rows and calls too) and, if asked, the ones not started.

    ``keep``: a stage (and its synthetic stages) left running (a failed stage whose on_failure stages run).
    """
    for i, run in list(turn.runs()):
        if keep is not None and (i == keep or turn.spec(i).parent == keep):
            continue
        if run.status is S.NOT_STARTED and turn.spec(i).role == "compensate":
            continue  # compensations run after the cancel
        if run.status in LIVE:
            cancel_live(turn, i)
        elif include_not_started and run.status is S.NOT_STARTED:
            if run.claim:  # a stage waiting for a global mutex: its claim goes now, not at the run's end
                release_claim(turn, i, run)
            turn.set_stage(i, S.CANCELED, ended_at=turn.now)


def cancel_live(turn: Turn, i: int) -> None:
    """Cancel stage ``i`` if it is live: its rows, its call (or child run), CANCELED, ``stage.completed``."""
    run = turn.run(i)
    if run.status in LIVE:
        drop_pending(turn, i, run)
        if run.claim:
            release_claim(turn, i, run)
        turn.set_stage(i, S.CANCELED, ended_at=turn.now, run_id=None, timer_id=None)
        turn.record_event("stage.completed", f"stage.completed:{i}:{run.generation}", stage=i, status=S.CANCELED)


def drop_pending(turn: Turn, i: int, run: StageRun) -> None:
    """Consume a stage's pending rows (its RunTask, its stage timer) and cancel its call (or its child run)."""
    if run.child is not None and run.status in LIVE:
        from .subflows import cancel_child  # noqa: PLC0415 (built on this kernel: it imports the kernel)

        cancel_child(turn, i)
    if run.run_id is not None:
        turn.consume(run.run_id)
        turn.cancel_call(run.run_id)
    if run.timer_id is not None:
        turn.consume(run.timer_id)
    if run.wait_id is not None:  # a signal wait's timeout row
        turn.consume(run.wait_id)
        turn.update_stage(i, wait_id=None)


def release_all(turn: Turn) -> None:
    """The run ends: every claim it has on a shared key goes (each key is granted again after the commit)."""
    turn.release_all(turn.record.claimed)
    for i, run in list(turn.runs()):
        if run.claim:
            turn.update_stage(i, claim=0)


def stop_waiting(turn: Turn) -> None:
    """The run halts: nothing starts any more, so what waits (a mutex, a milestone) stops waiting; claims go now."""
    if turn.record.waits:
        for k in turn.record.waits:
            run = turn.run(k)
            if run.claim:
                release_claim(turn, k, run)
        turn.update_workflow(waits=())
