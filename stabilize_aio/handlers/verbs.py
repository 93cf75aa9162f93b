"""An operator's verbs on a run: pause, resume, restart in place, skip a stage.

Each arrives as a durable command row (``runtime/commands.py`` checks it at the
door; the handler decides again, so a late or repeated one changes nothing).

* **Pause**: the workflow goes PAUSED; its stages keep their status. Results of
  calls still running are recorded, but nothing is dispatched (``Turn.emit``
  keeps the rows) and nothing starts: a stage that becomes ready is noted in
  ``deferred``. ``cancel`` also cancels the running calls; their rows stay, so
  they run again at resume with the same attempt and idempotency key.
* **Resume**: RUNNING again; the run's pending rows are read back and
  delivered (``Turn.redeliver``), the deferred stages start, and the run may
  complete.
* **Restart**: a finished run re-opens under its id in a new epoch: the
  stages to redo and everything downstream are reset (new generations, so new
  idempotency keys), the rest keeps its state and outputs.
* **Skip**: one unfinished stage ends SKIPPED (its call cancelled for real);
  its downstream goes on.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..messages.durable import PauseWorkflow, RestartWorkflow, ResumeWorkflow, SkipStage
from ..model.records import LIVE
from ..model.routing import JoinType
from ..model.status import WorkflowStatus
from ..state.turn import Turn
from .coordination import buffer, unwait
from .kernel import GOING, arm_deadline, arrive, complete_stage, maybe_complete, run_key, start_stage
from .undo import drop_pending, reset

S = WorkflowStatus
#: The stage ends ``restart(stage=None)`` redoes (FAILED_CONTINUE only when named).
REDO = frozenset({S.TERMINAL, S.CANCELED, S.STOPPED})


def pause(turn: Turn, msg: PauseWorkflow) -> None:
    """PAUSED: nothing is dispatched or started until resume (``cancel``: running calls are cancelled too)."""
    turn.consume(msg.id)
    record = turn.record
    if record.status is S.RUNNING:
        turn.set_workflow(S.PAUSED, pause_reason=msg.reason or None)
        turn.record_event(
            "workflow.paused", f"{run_key(turn, 'workflow.paused')}:{record.version}", message=msg.reason or None
        )
    elif record.status is not S.PAUSED:
        return  # finished (or not started): too late
    turn.drop_dispatches()  # calls this turn would start (earlier messages of it): their rows wait for resume
    if msg.cancel:  # their rows stay: at resume they run again, same attempt, same idempotency key
        for _, run in turn.runs():
            if run.status is S.RUNNING and run.run_id is not None:
                turn.cancel_call(run.run_id)


def resume(turn: Turn, msg: ResumeWorkflow) -> None:
    """RUNNING again: pending rows are delivered again after the commit, deferred stages start."""
    turn.consume(msg.id)
    record = turn.record
    if record.status is not S.PAUSED:
        return  # running already (or finished): nothing to do
    turn.set_workflow(S.RUNNING, pause_reason=None, deferred=())
    turn.record_event("workflow.resumed", f"{run_key(turn, 'workflow.resumed')}:{record.version}")
    turn.redeliver()
    turn.holds += 1
    for i in record.deferred:
        start_stage(turn, i)
    turn.holds -= 1
    maybe_complete(turn)


def skip(turn: Turn, msg: SkipStage) -> None:
    """End one unfinished stage SKIPPED by an operator (its call cancelled for real); its downstream goes on."""
    turn.consume(msg.id)
    run = turn.run(msg.stage)
    if turn.record.status not in GOING or run.status.is_complete:
        return  # finished, or not started (BUFFERED: refused at the door)
    unwait(turn, msg.stage)
    if run.status in LIVE:
        drop_pending(turn, msg.stage, run)
    complete_stage(turn, msg.stage, S.SKIPPED, note="skipped by an operator")
    maybe_complete(turn)


def to_redo(turn: Turn, stage: int) -> list[int]:
    """The stages a restart resets: the failed ones (or ``stage``), what the saga undid, and their downstream."""
    state = turn.state
    own = [i for i in range(turn.size) if turn.spec(i).parent is None and turn.spec(i).role is None]
    roots = {stage} if stage >= 0 else {i for i in own if turn.run(i).status in REDO}
    if turn.record.compensation is not None:  # what its compensations undid is done again
        for i in own:
            c = turn.spec(i).compensation
            if c is not None and turn.run(c).status.is_complete:
                roots.add(i)
    picked = set(roots)
    todo = list(roots)
    while todo:
        for c in state.children[todo.pop()]:
            if c not in picked:
                picked.add(c)
                todo.append(c)
    return sorted(picked)


def restart(turn: Turn, msg: RestartWorkflow) -> None:
    """Re-open a finished run in place, in a new epoch: the stages to redo and their downstream start again."""
    record = turn.record
    if not record.status.is_complete or msg.epoch != record.epoch:
        turn.discard(msg.id)  # running again already (a repeat), or a restart of an epoch that is over
        return
    turn.consume(msg.id)
    redo = to_redo(turn, msg.stage)
    for k in redo:
        if turn.run(k).status is not S.NOT_STARTED:
            reset(turn, k)
    for i in range(turn.size):  # its compensations may run again (if the run fails again)
        if turn.spec(i).role == "compensate" and turn.run(i).status is not S.NOT_STARTED:
            reset(turn, i)
    epoch = record.epoch + 1
    turn.set_workflow(
        S.NOT_STARTED, reset=True, epoch=epoch, ended_at=None, cancel_reason=None, error=None, halting=False,
        compensation=None, queue=(), ending=None, jumps=0, pause_reason=None, deferred=(), waits=(), claimed=(),
        chosen={g: w for g, w in record.chosen.items() if w not in redo},
    )  # fmt: skip
    what = f"from {turn.spec(msg.stage).ref_id!r}" if msg.stage >= 0 else "its failed stages"
    turn.record_event(
        "workflow.restarted", run_key(turn, "workflow.restarted"),
        message=f"epoch {epoch}: {len(redo)} stage(s) reset, {what}",
    )  # fmt: skip
    if record.admission is not None:  # it waits for a slot again, then starts what was reset
        buffer(turn)
        turn.update_workflow(deferred=tuple(redo))
        return
    start_reset(turn, redo)


def start_reset(turn: Turn, redo: Iterable[int]) -> None:
    """The re-opened run starts (RUNNING): its deadline armed, the reset stages whose requisites allow it started.

    So do the stages that never started (they waited for a mutex or a milestone, or
    became ready while the run was paused when it ended): they decide again.
    """
    turn.set_workflow(S.RUNNING, started_at=turn.now, deferred=())
    arm_deadline(turn)
    waiting = [
        i for i in range(turn.size)
        if turn.run(i).status is S.NOT_STARTED and turn.spec(i).parent is None and turn.spec(i).role is None
    ]  # fmt: skip
    turn.holds += 1
    for k in sorted({*redo, *waiting}):
        spec = turn.spec(k)
        if turn.run(k).status is not S.NOT_STARTED:
            continue
        if not spec.requisites:
            start_stage(turn, k)
        elif spec.join_type is JoinType.MULTI_MERGE:
            counts = turn.counts(k)
            if counts.pending == 0 and counts.arrived:
                start_stage(turn, k)  # one run for what has arrived (its runs' arrivals were reset)
        else:
            arrive(turn, k)
    turn.holds -= 1
    maybe_complete(turn)
