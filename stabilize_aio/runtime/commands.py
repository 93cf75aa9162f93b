"""Outside commands: the durable rows the verbs (cancel, signal, pause, resume, restart, skip,
cancel_region) commit for a run's actor.

A command is checked against the run's state at the door (the stage exists,
the run has not finished), committed as an outbox row (with a wake-up for its
owner when that is another process), and only then handed to the actor. The
actor decides again when the row arrives: a command that comes too late is
dropped there, never applied to a finished run.
"""

from __future__ import annotations

import secrets
from typing import Any

from .._errors import DefinitionError, EngineStateError, RunStateError
from ..messages.durable import (
    CancelRegion,
    CancelWorkflow,
    PauseWorkflow,
    RestartWorkflow,
    ResumeWorkflow,
    SignalStage,
    SkipStage,
)
from ..model.status import WorkflowStatus
from ..model.values import Signal
from ..state.workflow import WorkflowState

S = WorkflowStatus


def cancel_command(state: WorkflowState, reason: str) -> CancelWorkflow:
    """The row that cancels a run: one per epoch at most (a second, while one is pending, is refused by its key)."""
    return CancelWorkflow(id=f"cancel:{state.record.epoch}", reason=reason)


def _token() -> str:
    return secrets.token_hex(8)


def _refuse(state: WorkflowState, verb: str, why: str = "") -> RunStateError:
    record = state.record
    return RunStateError(f"workflow {record.id!r} is {record.status.value}: {verb} refused{why}")


def _stage(state: WorkflowState, stage: str, verb: str) -> int:
    """The index of one of the run's own stages (DefinitionError naming it otherwise)."""
    try:
        i = state.stage_index(stage)
    except KeyError:
        raise DefinitionError(
            f"workflow {state.record.id!r} has no stage {stage!r}: {verb} refused", stage=stage
        ) from None
    spec = state.specs[i]
    if spec.parent is not None or spec.role is not None:
        raise DefinitionError(
            f"workflow {state.record.id!r}: stage {stage!r} belongs to another stage ({spec.role}): {verb} its stage",
            stage=stage,
        )
    return i


def _require_going(state: WorkflowState, verb: str) -> None:
    """RunStateError unless the run is going (RUNNING or PAUSED): finished, or still waiting to start."""
    status = state.record.status
    if status is not S.RUNNING and status is not S.PAUSED:
        hint = " (a run waiting to start: cancel it, or steer it once it runs)" if status is S.BUFFERED else ""
        raise _refuse(state, verb, hint)


def pause_command(state: WorkflowState, reason: str, cancel: bool) -> PauseWorkflow:
    """The row that pauses a run (RunStateError unless it is RUNNING or PAUSED)."""
    _require_going(state, "pause")
    return PauseWorkflow(id=f"pause:{_token()}", reason=reason, cancel=cancel)


def resume_command(state: WorkflowState) -> ResumeWorkflow | None:
    """The row that resumes a paused run; None when it is not paused (nothing to do)."""
    return ResumeWorkflow(id=f"resume:{_token()}") if state.record.status is S.PAUSED else None


def restart_command(state: WorkflowState, stage: str | None) -> RestartWorkflow:
    """The row that re-opens a finished run in place (from ``stage``, or its failed stages)."""
    record = state.record
    if not record.status.is_complete:
        raise _refuse(state, "restart", " (only a finished run restarts)")
    i = -1 if stage is None else _stage(state, stage, "restart")
    if i < 0 and record.status is S.SUCCEEDED:
        raise _refuse(state, "restart", " (a run that succeeded restarts from a stage: restart(wid, stage=...))")
    return RestartWorkflow(id=f"restart:{record.epoch}", stage=i, epoch=record.epoch)


def skip_command(state: WorkflowState, stage: str) -> SkipStage:
    """The row that skips one unfinished stage."""
    i = _stage(state, stage, "skip")
    _require_going(state, "skip")
    run = state.runs[i]
    if run.status.is_complete:
        raise RunStateError(
            f"workflow {state.record.id!r}: stage {stage!r} is {run.status.value} already: skip refused"
        )
    return SkipStage(id=f"skip:{_token()}", stage=i)


def region_command(state: WorkflowState, region: str) -> CancelRegion:
    """The row that cancels a cancel region (DefinitionError if no stage of the run is in it)."""
    if not any(s.coord is not None and s.coord.region == region for s in state.specs):
        raise DefinitionError(f"workflow {state.record.id!r} has no stage in cancel region {region!r}")
    _require_going(state, "cancel_region")
    return CancelRegion(id=f"region:{_token()}", region=region)


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
