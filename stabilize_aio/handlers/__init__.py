"""Pure handlers: fold messages into a :class:`~stabilize_aio.state.turn.Turn`. No I/O, no clock, no globals.

An actor folds every message of its turn through :func:`apply` on one turn (the
first turn of a run starts with :func:`begin`); messages a workflow sends to
itself (start the next stage, the next task, complete the stage or the
workflow) are plain calls here and never become rows. A turn amounts to a
:class:`~stabilize_aio.state.commit.Commit` (what the store sees) and
:class:`~stabilize_aio.state.commit.Effects` (what happens after it).

One module per message family over a small kernel (``kernel.py``): task calls
(``tasks.py``), signals (``signals.py``), control and containment
(``control.py``), an operator's verbs (``verbs.py``), coordinating stages
(``coordination.py``). The rules are stabilize's (docs/architecture.md, "Semantics").
Handlers import no store, runtime, pool or anyio (a test checks the imports).
"""

from __future__ import annotations

from typing import assert_never

from ..messages.durable import (
    CancelRegion,
    CancelWorkflow,
    ChildDone,
    Granted,
    PauseWorkflow,
    RestartWorkflow,
    ResumeWorkflow,
    RunTask,
    Send,
    SignalStage,
    SignalTimeout,
    SkipStage,
    StageTimeout,
    StartDeadline,
    WorkflowTimeout,
)
from ..messages.memory import FailWorkflow, Message, ParkTask, Sent, TaskDone, Undecodable
from ..state.commit import Commit, Effects
from ..state.turn import Turn
from ..state.workflow import WorkflowState
from . import control, coordination, kernel, signals, subflows, tasks, verbs

__all__ = ("apply", "begin", "handle", "start")


def apply(turn: Turn, message: Message) -> None:
    """Fold one message into a turn (every message kind has its case: a missing one is a type error)."""
    match message:
        case TaskDone():
            tasks.task_done(turn, message)
        case RunTask():
            tasks.redelivered_run(turn, message)
        case ParkTask():
            tasks.park(turn, message)
        case SignalStage():
            signals.signal(turn, message)
        case CancelWorkflow():
            control.cancel_workflow(turn, message)
        case StageTimeout():
            control.stage_timeout(turn, message)
        case FailWorkflow():
            control.fail(turn, message)
        case Undecodable():
            control.undecodable(turn, message)
        case Send():
            subflows.redelivered(turn, message)
        case Sent():
            subflows.sent(turn, message)
        case ChildDone():
            subflows.child_done(turn, message)
        case WorkflowTimeout():
            control.workflow_timeout(turn, message)
        case PauseWorkflow():
            verbs.pause(turn, message)
        case ResumeWorkflow():
            verbs.resume(turn, message)
        case RestartWorkflow():
            verbs.restart(turn, message)
        case SkipStage():
            verbs.skip(turn, message)
        case CancelRegion():
            coordination.cancel_region(turn, message)
        case SignalTimeout():
            signals.signal_timeout(turn, message)
        case Granted():
            coordination.granted(turn, message)
        case StartDeadline():
            control.start_deadline(turn, message)
        case _:
            assert_never(message)
    if turn.state.coordinated and turn.record.waits:  # stages wait for a mutex or a milestone: freed now?
        coordination.settle(turn)


def begin(turn: Turn) -> None:
    """Fold the start of a just-submitted run into a turn (committed with the run's insert: no start row)."""
    kernel.begin(turn)
    if turn.state.coordinated and turn.record.waits:
        coordination.settle(turn)


def handle(state: WorkflowState, message: Message, now: float) -> tuple[Commit, Effects]:
    """Apply one message to ``state`` (unchanged) and return what it commits and what follows."""
    turn = Turn(state, now)
    apply(turn, message)
    return turn.commit, turn.effects


def start(state: WorkflowState, now: float) -> tuple[Commit, Effects]:
    """The start turn of ``state`` (unchanged): what it commits and what follows."""
    turn = Turn(state, now)
    begin(turn)
    return turn.commit, turn.effects
