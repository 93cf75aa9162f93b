"""Building run states in tests the way submit does, without an engine."""

from __future__ import annotations

from typing import Any

import msgspec

from stabilize_aio import Workflow
from stabilize_aio.dag.compile import compile_workflow
from stabilize_aio.model.records import StageRun
from stabilize_aio.state.workflow import WorkflowState


def initial_state(
    workflow: Workflow, workflow_id: str, inputs: dict[str, Any], created_at: float = 0.0
) -> WorkflowState:
    """The state of a just-submitted run of ``workflow`` (NOT_STARTED, no stage run yet)."""
    template, specs = compile_workflow(workflow, inputs)
    record = msgspec.structs.replace(template, id=workflow_id, created_at=created_at)
    return WorkflowState(record, specs, [StageRun() for _ in specs])
