"""Outside commands: the durable rows ``cancel`` and ``signal`` commit for a run's actor.

A command is checked against the run's state at the door (the stage exists,
the run has not finished), committed as an outbox row (with a wake-up for its
owner when that is another process), and only then handed to the actor. The
actor decides again when the row arrives: a command that comes too late is
dropped there, never applied to a finished run.
"""

from __future__ import annotations

import secrets
from typing import Any

from .._errors import DefinitionError, EngineStateError
from ..messages.durable import CancelWorkflow, SignalStage
from ..model.values import Signal
from ..state.workflow import WorkflowState

#: One cancel row per run at most: a second cancel while one is pending is refused by its key.
CANCEL_ID = "cancel"


def cancel_command(reason: str) -> CancelWorkflow:
    """The row that cancels a run."""
    return CancelWorkflow(id=CANCEL_ID, reason=reason)


def signal_command(state: WorkflowState, stage: str, name: str, data: Any) -> SignalStage:
    """The row that signals ``stage`` of the run in ``state`` (``data`` already normalised by ``plain``).

    Raises:
        DefinitionError: the run has no stage ``stage``.
        EngineStateError: the run has finished.
    """
    workflow_id = state.record.id
    try:
        index = state.stage_index(stage)
    except KeyError:
        raise DefinitionError(f"workflow {workflow_id!r} has no stage {stage!r}", stage=stage) from None
    if state.record.status.is_complete:
        raise EngineStateError(
            f"workflow {workflow_id!r} is {state.record.status.value}: signal {name!r} for stage {stage!r} refused"
        )
    return SignalStage(id=f"signal:{secrets.token_hex(8)}", stage=index, signal=Signal(name=name, data=data))
