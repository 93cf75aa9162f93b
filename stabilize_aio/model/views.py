"""What users and tasks see: :class:`StageView` (a task's input), workflow views and summaries."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .records import WorkflowRecord

from collections.abc import Mapping
from typing import Any

import msgspec

from .status import WorkflowStatus
from .values import ErrorInfo


class StageView(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What a task receives: one call of one task of one stage.

    Attributes:
        ref_id: the stage's ref id.
        workflow_id: the run's id.
        context: read-only: the run's inputs, under the outputs of all ancestors
            (declaration order), under the stage's own context, under the
            outputs and context updates of this stage's earlier calls.
        attempt: 1 on the first call, +1 per retry after an error or timeout
            (``running`` polls keep it).
        idempotency_key: stable across retries and crash redeliveries of this
            task run; send it with side effects so a repeated call is harmless.
        task: the task type being run.
        name: the stage's name.
    """

    ref_id: str
    workflow_id: str
    context: Mapping[str, Any]
    attempt: int
    idempotency_key: str
    task: str = ""
    name: str = ""


class InstanceInfo(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One instance of a multi-instance stage, as read."""

    index: int
    status: WorkflowStatus
    outputs: dict[str, Any]
    error: ErrorInfo | None
    attempt: int


class StageInfo(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A stage of a workflow run, as read: plain data (dicts, lists), the same from every path."""

    ref_id: str
    name: str
    status: WorkflowStatus
    context: dict[str, Any]
    outputs: dict[str, Any]
    error: ErrorInfo | None
    attempt: int
    started_at: float | None
    ended_at: float | None
    generation: int = 0  # how many times the stage was reset (a jump, a loop, a MULTI_MERGE run): 0 at first
    pruned: bool = False  # SKIPPED by a pattern (a split not taking it, cancel_remaining, a jump), not a condition
    instances: tuple[InstanceInfo, ...] = ()  # a multi-instance stage's instances, in order


class WorkflowSummary(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One line of ``engine.list()``."""

    workflow_id: str
    application: str
    name: str
    status: WorkflowStatus
    created_at: float
    ended_at: float | None

    @classmethod
    def of(cls, record: WorkflowRecord) -> WorkflowSummary:
        """The summary of a run's record."""
        return cls(
            workflow_id=record.id,
            application=record.application,
            name=record.name,
            status=record.status,
            created_at=record.created_at,
            ended_at=record.ended_at,
        )


class WorkflowView(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A workflow run, as read: status, stages and merged outputs, as plain JSON-ready data.

    ``error`` is set when the engine ended the run TERMINAL for a fault local to
    it (``error.kind == "engine"``: a handler bug, an undecodable row, a write
    the database refused); a task's failure is on its stage.
    """

    workflow_id: str
    application: str
    name: str
    status: WorkflowStatus
    inputs: dict[str, Any]
    stages: tuple[StageInfo, ...]
    created_at: float
    started_at: float | None
    ended_at: float | None
    cancel_reason: str | None
    error: ErrorInfo | None = None
    jumps: int = 0  # jumps the run has taken (TaskResult.jump_to; loop jumps not counted)
    compensation: str | None = None  # after a failed or cancelled run's compensations: "done" or "failed"
    epoch: int = 0  # how many times the run was restarted in place (engine.restart)
    pause_reason: str | None = None  # why it is PAUSED (engine.pause(..., reason=...))

    def stage(self, ref_id: str) -> StageInfo:
        """The stage with this ref id (raises KeyError)."""
        for s in self.stages:
            if s.ref_id == ref_id:
                return s
        raise KeyError(ref_id)

    @property
    def outputs(self) -> dict[str, Any]:
        """The outputs of all stages merged, in declaration order (a new plain dict)."""
        merged: dict[str, Any] = {}
        for s in self.stages:
            merged.update(s.outputs)
        return merged
