"""Sub-workflow stages: a stage that runs a child run and ends with it.

The child's id is ``<parent id>/<ref>.<generation>`` (hashed when it would pass
the id limit), so a crash never starts it twice and a reset (a jump, a restart)
gets a fresh child. Its definition was compiled with the parent
(``StageSpec.child``); its inputs are the stage's full context. What one run
owes another is a :class:`~stabilize_aio.messages.durable.Send` row committed
with the turn that decides it and done by the runtime after the commit
(``runtime/children.py``): start the child when the stage starts, cancel it when
the stage stops without it (a cancel, a halt, a prune, a jump), tell the parent
when the child ends. The parent's stage then ends with the child: SUCCEEDED
with the child's outputs, or failed (its failure status) with the child's error.
"""

from __future__ import annotations

from typing import Any

from .._ids import derive
from ..messages.durable import ChildDone, Send
from ..messages.memory import Sent
from ..model.status import WorkflowStatus
from ..state.turn import Turn
from .gates import failure
from .kernel import complete_stage

S = WorkflowStatus


class SubWorkflow:
    """The stage kind of a sub-workflow stage (its work: its child run)."""

    __slots__ = ()

    name = "subworkflow"

    def begin(self, turn: Turn, i: int) -> None:
        spec = turn.spec(i)
        run = turn.run(i)
        child = derive(turn.record.id, f"{spec.ref_id}.{run.generation}", sep="/")
        turn.update_stage(i, child=child)
        inputs = turn.stage_context(i)
        turn.send(
            Send(
                id=f"w{i}.{run.generation}",
                target=child,
                kind="start",
                stage=i,
                generation=run.generation,
                inputs=inputs,
            )
        )


#: The one sub-workflow kind (kinds hold no state).
SUBWORKFLOW = SubWorkflow()


def redelivered(turn: Turn, msg: Send) -> None:
    """A Send row still pending (recovery, the safety net): it is done again (each is idempotent)."""
    turn.resend(msg)


def sent(turn: Turn, msg: Sent) -> None:
    """The runtime did what a Send row asked: the row goes (it may be gone: a repeat)."""
    turn.discard(msg.id)


def child_done(turn: Turn, msg: ChildDone) -> None:
    """The child run of stage ``msg.stage`` ended: the stage ends with it (unless it moved on meanwhile)."""
    i = msg.stage
    run = turn.run(i) if 0 <= i < turn.size else None
    if run is None or run.status is not S.RUNNING or run.generation != msg.generation or run.child != msg.child:
        turn.discard(msg.id)  # stale: the stage ended or was reset without waiting for this child
        return
    turn.consume(msg.id)
    spec = turn.spec(i)
    status = WorkflowStatus(msg.status)
    if status is S.SUCCEEDED:
        turn.update_stage(i, outputs={**run.outputs, **msg.outputs})
        complete_stage(turn, i, S.SUCCEEDED)
        return
    text = f"stage {spec.ref_id!r}: its sub-workflow {msg.child!r} ended {status.value}"
    if msg.error is not None:
        text += f": {msg.error.message}"
    complete_stage(turn, i, spec.failure_status(), failure("ChildFailed", text))


def tell_parent(turn: Turn, status: WorkflowStatus) -> None:
    """A child run ends with ``status``: owe its parent the news (outputs: its stages', declaration order)."""
    record = turn.record
    if record.parent is None:
        return
    outputs: dict[str, Any] = {}
    error = record.error
    for i, run in turn.runs():
        spec = turn.spec(i)
        if spec.parent is None:
            outputs.update(run.outputs)
            if error is None and run.error is not None and not run.status.can_continue:
                error = run.error
    turn.send(
        Send(
            id="tell-parent",
            target=record.parent,
            kind="done",
            stage=record.parent_stage,
            generation=record.parent_generation,
            status=status.value,
            outputs=outputs,
            error=error,
        )
    )


def cancel_child(turn: Turn, i: int) -> None:
    """Stage ``i`` stops without its child (a cancel, a halt, a prune, a reset): the child is cancelled too."""
    run = turn.run(i)
    if run.child is not None:
        turn.send(
            Send(id=f"x{i}.{run.generation}", target=run.child, kind="cancel", stage=i, generation=run.generation)
        )
