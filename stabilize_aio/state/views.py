"""Views of a live or loaded workflow state."""

from __future__ import annotations

from ..model.views import InstanceInfo, StageInfo, WorkflowView
from .workflow import WorkflowState


def view_of(state: WorkflowState) -> WorkflowView:
    """Build a WorkflowView from a workflow's state."""
    r = state.record
    members: dict[int, list[InstanceInfo]] = {}
    for spec, run in zip(state.specs, state.runs, strict=True):
        fanned = run.fanned
        if fanned is not None:  # a multi-instance stage: its current instances (a rerun made new ones)
            members[spec.index] = [
                InstanceInfo(index=k, status=r.status, outputs=dict(r.outputs), error=r.error, attempt=r.attempt)
                for k, r in enumerate(state.runs[fanned.first : fanned.first + fanned.n])
            ]
    stages = tuple(
        StageInfo(
            ref_id=spec.ref_id,
            name=spec.name,
            status=run.status,
            context=state.stage_context(spec.index),
            outputs=dict(run.outputs),
            error=run.error,
            attempt=run.attempt,
            started_at=run.started_at,
            ended_at=run.ended_at,
            generation=run.generation,
            pruned=run.pruned,
            instances=tuple(members.get(spec.index, ())),
        )
        for spec, run in zip(state.specs, state.runs, strict=True)
        if spec.role != "instance"
    )
    return WorkflowView(
        workflow_id=r.id,
        application=r.application,
        name=r.name,
        status=r.status,
        inputs=dict(r.inputs),
        stages=stages,
        created_at=r.created_at,
        started_at=r.started_at,
        ended_at=r.ended_at,
        cancel_reason=r.cancel_reason,
        error=r.error,
        jumps=r.jumps,
        compensation=r.compensation if r.compensation != "running" else None,
        epoch=r.epoch,
        pause_reason=r.pause_reason,
    )
