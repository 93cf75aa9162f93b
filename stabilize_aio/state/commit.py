"""What one actor turn commits (:class:`Transition`)."""

from __future__ import annotations

import msgspec

from ..messages.durable import Durable, RunTask
from ..model.records import StageRun, StageSpec, WorkflowRecord
from ..model.values import Event, QuarantineRow


class Transition(msgspec.Struct, kw_only=True, gc=False):
    """What one actor turn commits, and what happens after the commit."""

    workflow_id: str
    workflow: WorkflowRecord | None = None
    stages: dict[int, StageRun] = {}
    base_versions: dict[int, int] = {}
    base_workflow_version: int = 0
    consumed: list[str] = []
    discarded: list[str] = []
    emitted: list[Durable] = []
    dispatch: list[RunTask] = []
    cancel_runs: list[str] = []
    events: list[Event] = []
    finished: bool = False
    notify: bool = False  # wake the process that owns this workflow's shard (written from elsewhere)
    # containment only (never on the hot path):
    purge: bool = False  # delete every outbox row of the workflow (it ended for a fault: nothing may come back)
    quarantine: list[QuarantineRow] = []  # undecodable rows moved to the quarantine table
    respecs: dict[int, StageSpec] = {}  # stage definitions written back (placeholders of undecodable ones)

    @property
    def empty(self) -> bool:
        """True when nothing is written."""
        return (
            self.workflow is None
            and not self.stages
            and not self.consumed
            and not self.discarded
            and not self.emitted
            and not self.events
            and not self.purge
            and not self.quarantine
        )
