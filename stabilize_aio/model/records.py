"""The persisted records of a run and the two status writers.

A stage's definition (:class:`StageSpec`) is written once at submit; each step
rewrites only that stage's small :class:`StageRun`."""

from __future__ import annotations

from typing import Any

import msgspec

from .coordination import Admission, Coordination
from .instances import InstanceCounts, MultiInstance
from .routing import JoinType, LoopSpec
from .status import WorkflowStatus, transition
from .values import ErrorInfo, Signal

S = WorkflowStatus

#: Stage statuses of work under way: a workflow completes only when no stage is in one.
LIVE = frozenset({S.RUNNING, S.SUSPENDED})


class ChildPlan(msgspec.Struct, frozen=True, kw_only=True, gc=False, omit_defaults=True):
    """A sub-workflow stage's child run as compiled at the parent's submit (stored with the parent)."""

    application: str
    name: str
    specs: list[StageSpec]
    max_jumps: int = 10


class StageSpec(msgspec.Struct, frozen=True, kw_only=True, gc=False, omit_defaults=True):
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
    enabled: str | None = None  # a condition (model/conditions.py): false when ready -> SKIPPED
    output_reducers: dict[str, str] | None = None  # output key -> reducer name (model/reducers.py)
    reduce_from: tuple[int, ...] = ()  # the requisites whose outputs are reduced, in declared order
    join_type: JoinType = JoinType.AND  # how it starts from its requisites (dag/joins.py)
    join_threshold: int = 0  # N_OF_M: how many requisites must arrive (DISCRIMINATOR: 1)
    cancel_remaining: bool = False  # a partial join prunes the requisites that have not ended when it starts
    split_conditions: dict[int, str] | None = None  # an OR split: child index -> condition (no condition: taken)
    loop: LoopSpec | None = None  # a loop control stage (model/routing.py)
    before: tuple[int, ...] = ()  # synthetic stages run before its tasks, in order (model/plans.py)
    after: tuple[int, ...] = ()  # ... after them, once they succeed
    on_failure: tuple[int, ...] = ()  # ... when it fails
    parent: int | None = None  # a synthetic stage: the stage it belongs to
    role: str | None = None  # a synthetic stage: "before", "after" or "on_failure"
    type: str | None = None  # the stage type whose plan it was built from
    compensation: int | None = None  # its compensation stage (<ref>/compensate), if it declares compensate
    unknown_ok: tuple[int, ...] = ()  # its tasks whose type compensates a call in flight (compensate_unknown)
    instances: MultiInstance | None = None  # a multi-instance stage (model/instances.py)
    child: ChildPlan | None = None  # a sub-workflow stage: the run it starts
    coord: Coordination | None = None  # its mutex, deferred choice, milestone, cancel region (model/coordination.py)

    def failure_status(self) -> WorkflowStatus:
        """The status a failed task gives this stage (stabilize's ``failure_status``)."""
        if self.continue_on_failure:
            return S.FAILED_CONTINUE
        if self.complete_other_branches_then_fail or not self.fail_workflow:
            return S.STOPPED
        return S.TERMINAL


class StageRun(msgspec.Struct, frozen=True, kw_only=True, gc=False, omit_defaults=True):
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
    pruned: bool = False  # SKIPPED by a pattern (a split not taking it, a join's cancel_remaining, a jump)
    dropped: tuple[int, ...] = ()  # children whose edge from this stage is dead (an OR split, a forward jump)
    fired: int = 0  # a MULTI_MERGE join: how many of its runs have started
    arrivals: tuple[int, ...] = ()  # a MULTI_MERGE join: the requisites that arrived, in order (one run each)
    held: WorkflowStatus | None = None  # a failed stage running its on_failure stages: the status it ends with
    fanned: InstanceCounts | None = None  # a multi-instance stage: its instances' progress
    child: str | None = None  # a sub-workflow stage: the id of the child run it started
    done_seq: int = 0  # a stage that declares compensate: its place in the order stages succeeded (1, 2, ...)
    merging: bool = False  # a MULTI_MERGE join between runs, ended as its last run: more may come (edges stay open)
    wait_id: str | None = None  # a suspended stage's signal wait with a timeout: the row that ends the wait
    claim: int = 0  # a global mutex stage: 1 its claim waits, 2 it holds the key (store table ``claims``)


class WorkflowRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False, omit_defaults=True):
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
    halting: bool = False  # on_failure stages or compensations run before the run ends: nothing else starts
    parent: str | None = None  # a child run: its parent run's id, stage and that stage's generation
    parent_stage: int = -1
    parent_generation: int = 0
    depth: int = 0  # how deep in sub-workflows (0: a run submitted from outside)
    compensation: str | None = None  # "running", then "done" or "failed" (a compensation that failed for good)
    queue: tuple[int, ...] = ()  # the compensation stages still to run, in order
    ending: WorkflowStatus | None = None  # the status the run ends with once its compensations have run
    timeout: float | None = None  # seconds the run may live from its start (Workflow(timeout=...))
    jumps: int = 0  # jumps taken by the run (loop jumps not counted)
    max_jumps: int = 10  # the budget of jumps (Workflow(max_jumps=...))
    epoch: int = 0  # how many times the run was restarted in place (workflow-level event keys carry it)
    pause_reason: str | None = None  # why the run is PAUSED
    deferred: tuple[int, ...] = ()  # stages that became ready while the run was PAUSED: they start at resume
    waits: tuple[int, ...] = ()  # ready stages waiting for a mutex or a milestone, in the order they came
    chosen: dict[str, int] = {}  # deferred choice groups decided: group -> the stage that won
    start_deadline: float | None = None  # seconds after its creation the run must have started by
    admission: Admission | None = None  # its admission limit (Workflow(concurrency_key=...))
    claimed: tuple[str, ...] = ()  # the shared keys it has claimed (released, and granted again, when it ends)


def set_stage_status(
    spec: StageSpec, run: StageRun, target: WorkflowStatus, *, reset: bool = False, **changes: Any
) -> StageRun:
    """The one way a stage's status changes: checked against the table."""
    status = transition(run.status, target, what=f"stage {spec.ref_id!r}", reset=reset)
    return msgspec.structs.replace(run, status=status, **changes)


def set_workflow_status(
    record: WorkflowRecord, target: WorkflowStatus, *, fail: bool = False, reset: bool = False, **changes: Any
) -> WorkflowRecord:
    """The one way a workflow's status changes: checked against the table (``fail``: the containment edge,
    ``reset``: a restart in place)."""
    status = transition(record.status, target, what=f"workflow {record.id!r}", fail=fail, reset=reset)
    return msgspec.structs.replace(record, status=status, **changes)
