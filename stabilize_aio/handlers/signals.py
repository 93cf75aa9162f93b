"""Signals: a signal resumes a suspended stage, or waits on the stage until it suspends."""

from __future__ import annotations

from ..messages.durable import SignalStage
from ..model.status import WorkflowStatus
from ..model.values import Signal
from ..state.turn import Turn
from .kernel import emit_run

S = WorkflowStatus


def signal(turn: Turn, msg: SignalStage) -> None:
    """A signal for a stage: resume it if suspended, keep it if the stage is still to suspend."""
    turn.consume(msg.id)
    run = turn.run(msg.stage)
    if turn.record.status.is_complete or run.status.is_complete:
        turn.record_event("signal.dropped", f"signal.dropped:{msg.id}", stage=msg.stage)
        return
    if run.status is S.SUSPENDED:
        resume(turn, msg.stage, msg.signal, rest=run.signals)
    else:
        turn.update_stage(msg.stage, signals=(*run.signals, msg.signal))


def resume(turn: Turn, i: int, signal: Signal, *, rest: tuple[Signal, ...]) -> None:
    """Call the stage's task again with the signal in its context."""
    run = turn.run(i)
    ctx = {**run.context_update, "_signal_name": signal.name, "_signal_data": signal.data}
    if run.status is S.SUSPENDED:
        turn.set_stage(i, S.RUNNING, context_update=ctx, signals=rest, polls=run.polls + 1)
    else:
        turn.update_stage(i, context_update=ctx, signals=rest, polls=run.polls + 1)
    turn.record_event("stage.signaled", f"stage.signaled:{i}:{run.generation}:{run.polls}", stage=i)
    emit_run(turn, i, deliver_at=None)
