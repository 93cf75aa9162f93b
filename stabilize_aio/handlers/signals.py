"""Signals: a signal resumes a suspended stage, or waits on the stage until it suspends.

A wait with a timeout (``TaskResult.suspend(timeout=..., on_timeout=...)``) has
a :class:`~stabilize_aio.messages.durable.SignalTimeout` row; when it fires on a
stage still suspended, ``"fail"`` ends the stage with its failure status,
``"skip"`` SKIPPED, ``"continue"`` calls the task again without a signal, with
``_signal_timed_out=True`` in its context (each through RUNNING, as the status
table wants).
"""

from __future__ import annotations

from ..messages.durable import SignalStage, SignalTimeout
from ..model.status import WorkflowStatus
from ..model.values import ErrorInfo, Signal
from ..state.turn import Turn
from .kernel import complete_stage, emit_run

S = WorkflowStatus


def signal(turn: Turn, msg: SignalStage) -> None:
    """A signal for a stage: resume it if suspended, keep it if the stage is still to suspend."""
    turn.consume(msg.id)
    run = turn.run(msg.stage)
    if turn.record.status.is_complete or run.status.is_complete:
        turn.record_event("signal.dropped", f"signal.dropped:{msg.id}", stage=msg.stage)
        return
    coord = turn.spec(msg.stage).coord
    if coord is not None and coord.choice is not None and run.status is not S.NOT_STARTED:
        from .coordination import choose  # noqa: PLC0415 (built on the kernel, as this module)

        choose(turn, msg.stage, coord.choice)  # a signal commits a deferred choice
    if run.status is S.SUSPENDED:
        resume(turn, msg.stage, msg.signal, rest=run.signals)
    else:
        turn.update_stage(msg.stage, signals=(*run.signals, msg.signal))


def resume(turn: Turn, i: int, signal: Signal, *, rest: tuple[Signal, ...]) -> None:
    """Call the stage's task again with the signal in its context."""
    run = turn.run(i)
    coord = turn.spec(i).coord
    if coord is not None and coord.choice is not None:
        from .coordination import choose  # noqa: PLC0415 (built on the kernel, as this module)

        choose(turn, i, coord.choice)  # (a signal kept before the stage suspended commits the choice now)
    ctx = {**run.context_update, "_signal_name": signal.name, "_signal_data": signal.data}
    if run.wait_id is not None:  # its wait's timeout row goes
        turn.consume(run.wait_id)
    if run.status is S.SUSPENDED:
        turn.set_stage(i, S.RUNNING, context_update=ctx, signals=rest, polls=run.polls + 1, wait_id=None)
    else:
        turn.update_stage(i, context_update=ctx, signals=rest, polls=run.polls + 1, wait_id=None)
    turn.record_event("stage.signaled", f"stage.signaled:{i}:{run.generation}:{run.polls}", stage=i)
    emit_run(turn, i, deliver_at=None)


def suspend(turn: Turn, i: int, timeout: float | None, on_timeout: str) -> None:
    """Stage ``i`` waits for a signal (SUSPENDED); with ``timeout``, its wait ends by itself then."""
    run = turn.set_stage(i, S.SUSPENDED)
    turn.record_event("stage.suspended", f"stage.suspended:{i}:{run.generation}:{run.polls}", stage=i)
    if timeout is not None:
        wid = f"w{i}.{run.generation}.{run.polls}"
        turn.emit(SignalTimeout(id=wid, stage=i, on_timeout=on_timeout, deliver_at=turn.now + timeout))
        turn.update_stage(i, wait_id=wid)


def signal_timeout(turn: Turn, msg: SignalTimeout) -> None:
    """A signal wait ran out: the stage fails, is skipped, or its task is called again (``on_timeout``)."""
    i = msg.stage
    run = turn.run(i) if 0 <= i < turn.size else None
    if run is None or run.status is not S.SUSPENDED or run.wait_id != msg.id or turn.record.status.is_complete:
        turn.discard(msg.id)  # stale: a signal came first, or the stage ended
        return
    turn.consume(msg.id)
    turn.update_stage(i, wait_id=None)
    spec = turn.spec(i)
    if msg.on_timeout == "continue":
        ctx = {**run.context_update, "_signal_timed_out": True}
        turn.set_stage(i, S.RUNNING, context_update=ctx, polls=run.polls + 1)
        turn.record_event("stage.signaled", f"stage.signaled:{i}:{run.generation}:{run.polls}", stage=i,
                          message="no signal in time: called again")  # fmt: skip
        emit_run(turn, i, deliver_at=None)
    elif msg.on_timeout == "skip":
        complete_stage(turn, i, S.SKIPPED, note=f"stage {spec.ref_id!r}: no signal came in time")
    else:
        error = ErrorInfo.capped(
            "SignalTimeout", f"stage {spec.ref_id!r}: no signal came in time", attempt=run.attempt, transient=False
        )
        complete_stage(turn, i, spec.failure_status(), error)
