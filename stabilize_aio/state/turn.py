"""A turn: an overlay on a WorkflowState through which handlers read and write."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec

from ..messages.durable import Durable, RunTask
from ..model.records import LIVE, StageRun, StageSpec, WorkflowRecord, set_stage_status, set_workflow_status
from ..model.status import WorkflowStatus
from ..model.values import Event
from .commit import Transition
from .workflow import WorkflowState


class Turn:
    """An overlay on a WorkflowState through which handlers read and write."""

    __slots__ = ("_active", "_outstanding", "_record", "_runs", "now", "state", "t")

    def __init__(self, state: WorkflowState, now: float) -> None:
        self.state = state
        self.now = now
        self.t = Transition(workflow_id=state.record.id)
        self._runs: dict[int, StageRun] = {}
        self._record: WorkflowRecord | None = None
        self._outstanding: dict[int, int] = {}
        self._active = state.active

    # reads -----------------------------------------------------------------
    @property
    def record(self) -> WorkflowRecord:
        return self._record if self._record is not None else self.state.record

    def run(self, i: int) -> StageRun:
        r = self._runs.get(i)
        return r if r is not None else self.state.runs[i]

    def spec(self, i: int) -> StageSpec:
        return self.state.specs[i]

    def outstanding(self, i: int) -> int:
        v = self._outstanding.get(i)
        return v if v is not None else self.state.outstanding[i]

    @property
    def active(self) -> int:
        return self._active

    def runs(self) -> Iterator[tuple[int, StageRun]]:
        for i in range(len(self.state.specs)):
            yield i, self.run(i)

    # writes ----------------------------------------------------------------
    def set_stage(self, i: int, target: WorkflowStatus, *, reset: bool = False, **changes: Any) -> StageRun:
        old = self.run(i)
        new = set_stage_status(self.spec(i), old, target, reset=reset, version=old.version + 1, **changes)
        self._put(i, old, new)
        return new

    def update_stage(self, i: int, **changes: Any) -> StageRun:
        """Change a stage's other fields (never its status)."""
        old = self.run(i)
        new = msgspec.structs.replace(old, version=old.version + 1, **changes)
        self._put(i, old, new)
        return new

    def _put(self, i: int, old: StageRun, new: StageRun) -> None:
        if old.status in LIVE and new.status not in LIVE:
            self._active -= 1
        elif new.status in LIVE and old.status not in LIVE:
            self._active += 1
        if new.status.can_continue and not old.status.can_continue:
            for c in self.state.children[i]:
                self._outstanding[c] = self.outstanding(c) - 1
        self._runs[i] = new
        self.t.base_versions.setdefault(i, self.state.runs[i].version)
        self.t.stages[i] = new

    def set_workflow(self, target: WorkflowStatus, *, fail: bool = False, **changes: Any) -> None:
        old = self.record
        self._record = set_workflow_status(old, target, fail=fail, version=old.version + 1, **changes)
        self.t.base_workflow_version = self.state.record.version
        self.t.workflow = self._record

    def record_event(
        self,
        kind: str,
        key: str,
        *,
        stage: int | None = None,
        status: WorkflowStatus | None = None,
        message: str | None = None,
    ) -> None:
        """Append a history event to this turn."""
        run = self.run(stage) if stage is not None else None
        self.t.events.append(
            Event(
                key=key,
                kind=kind,
                at=self.now,
                stage=self.spec(stage).ref_id if stage is not None else None,
                status=status._value_ if status is not None else None,
                attempt=run.attempt if run is not None else None,
                message=message,
            )
        )

    def consume(self, message_id: str) -> None:
        """Delete a row in this turn; a row emitted in this same turn is simply not written."""
        for k, m in enumerate(self.t.emitted):
            if m.id == message_id:
                del self.t.emitted[k]
                self.t.dispatch = [d for d in self.t.dispatch if d.id != message_id]
                return
        self.t.consumed.append(message_id)

    def discard(self, message_id: str) -> None:
        """Delete a row that may already be gone (a late or repeated command): no fence."""
        self.t.discarded.append(message_id)

    def emit(self, message: Durable) -> None:
        self.t.emitted.append(message)
        if isinstance(message, RunTask) and message.deliver_at is None:
            self.t.dispatch.append(message)
