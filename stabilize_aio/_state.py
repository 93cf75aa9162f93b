"""Run state: the persisted records, the in-memory workflow state, and a turn's overlay.

A stage's definition (:class:`StageSpec`) is written once at submit; each step
rewrites only that stage's small :class:`StageRun`. The in-memory
:class:`WorkflowState` adds what can be derived (children, the count of
requisites still outstanding per stage, the number of running stages), so
readiness is O(1) per arrival and nothing is rescanned.

A :class:`Turn` is an overlay on a state: handlers read and write through it,
and its :meth:`Turn.transition` is what the actor commits. The state changes
only when :meth:`WorkflowState.apply` is called after that commit.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec

from ._messages import Durable, ErrorInfo, Event, QuarantineRow, RunTask, Signal
from ._status import WorkflowStatus, transition

S = WorkflowStatus
#: Stage statuses of work under way: a workflow completes only when no stage is in one.
LIVE = frozenset({S.RUNNING, S.SUSPENDED})


class StageSpec(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A stage's definition as stored (immutable for the run)."""

    ref_id: str
    index: int
    name: str
    tasks: tuple[str, ...]
    context: dict[str, Any]
    requisites: tuple[int, ...]
    continue_on_failure: bool = False
    fail_workflow: bool = True
    complete_other_branches_then_fail: bool = False
    timeout: float | None = None
    stage_timeout: float | None = None

    def failure_status(self) -> WorkflowStatus:
        """The status a failed task gives this stage (stabilize's ``failure_status``)."""
        if self.continue_on_failure:
            return S.FAILED_CONTINUE
        if self.complete_other_branches_then_fail or not self.fail_workflow:
            return S.STOPPED
        return S.TERMINAL


class StageRun(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A stage's runtime state: the one row a step rewrites."""

    status: WorkflowStatus = S.NOT_STARTED
    version: int = 0
    outputs: dict[str, Any] = {}
    context_update: dict[str, Any] = {}
    task_index: int = 0
    attempt: int = 1
    polls: int = 0
    generation: int = 0
    failed_continue: bool = False
    error: ErrorInfo | None = None
    started_at: float | None = None
    ended_at: float | None = None
    run_id: str | None = None
    timer_id: str | None = None
    parked: bool = False
    signals: tuple[Signal, ...] = ()  # signals that came while the stage was not suspended, oldest first


class WorkflowRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A workflow run's own row."""

    id: str
    application: str
    name: str
    status: WorkflowStatus = S.NOT_STARTED
    version: int = 0
    inputs: dict[str, Any] = {}
    created_at: float = 0.0
    started_at: float | None = None
    ended_at: float | None = None
    cancel_reason: str | None = None
    error: ErrorInfo | None = None  # why the engine ended it TERMINAL (kind "engine"), if it did


def set_stage_status(
    spec: StageSpec, run: StageRun, target: WorkflowStatus, *, reset: bool = False, **changes: Any
) -> StageRun:
    """The one way a stage's status changes: checked against the table."""
    status = transition(run.status, target, what=f"stage {spec.ref_id!r}", reset=reset)
    return msgspec.structs.replace(run, status=status, **changes)


def set_workflow_status(
    record: WorkflowRecord, target: WorkflowStatus, *, fail: bool = False, **changes: Any
) -> WorkflowRecord:
    """The one way a workflow's status changes: checked against the table (``fail``: the containment edge)."""
    status = transition(record.status, target, what=f"workflow {record.id!r}", fail=fail)
    return msgspec.structs.replace(record, status=status, **changes)


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


class WorkflowState:
    """A live workflow in memory: records plus derived indices. Owned by one actor."""

    __slots__ = ("_ancestors", "active", "children", "outstanding", "record", "runs", "specs")

    def __init__(self, record: WorkflowRecord, specs: list[StageSpec], runs: list[StageRun]) -> None:
        self.record = record
        self.specs = specs
        self.runs = runs
        self.children: list[list[int]] = [[] for _ in specs]
        for spec in specs:
            for req in spec.requisites:
                self.children[req].append(spec.index)
        self.outstanding = [sum(1 for r in spec.requisites if not runs[r].status.can_continue) for spec in specs]
        self.active = sum(1 for r in runs if r.status in LIVE)
        self._ancestors: dict[int, list[int]] = {}

    def apply(self, t: Transition) -> None:
        """Make a committed transition part of the state."""
        if t.workflow is not None:
            self.record = t.workflow
        for i, spec in t.respecs.items():
            self.specs[i] = spec
        for i, run in t.stages.items():
            old = self.runs[i]
            self.runs[i] = run
            if old.status in LIVE and run.status not in LIVE:
                self.active -= 1
            elif run.status in LIVE and old.status not in LIVE:
                self.active += 1
            if run.status.can_continue and not old.status.can_continue:
                for c in self.children[i]:
                    self.outstanding[c] -= 1

    def stage_context(self, index: int) -> dict[str, Any]:
        """The context a task of stage ``index`` sees, computed at dispatch.

        Layers, later winning: the run's inputs, the outputs of all transitive
        ancestors in declaration order, the stage's own context, the outputs of
        its earlier tasks, and the context updates its tasks returned.
        """
        ctx = dict(self.record.inputs)
        for a in self.ancestors(index):
            ctx.update(self.runs[a].outputs)
        run = self.runs[index]
        ctx.update(self.specs[index].context)
        ctx.update(run.outputs)
        ctx.update(run.context_update)
        return ctx

    def ancestors(self, index: int) -> list[int]:
        """Transitive ancestors of a stage, in declaration order (computed once per stage)."""
        known = self._ancestors.get(index)
        if known is not None:
            return known
        seen: set[int] = set()
        stack = list(self.specs[index].requisites)
        while stack:
            i = stack.pop()
            if i not in seen:
                seen.add(i)
                stack.extend(self.specs[i].requisites)
        result = self._ancestors[index] = sorted(seen)
        return result

    def stage_index(self, ref_id: str) -> int:
        """The index of the stage ``ref_id`` (raises KeyError)."""
        for spec in self.specs:
            if spec.ref_id == ref_id:
                return spec.index
        raise KeyError(ref_id)


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
