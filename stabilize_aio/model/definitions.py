"""Workflow definitions: :class:`Stage`, :class:`Workflow` and :class:`TaskResult`.

A definition is validated when it is built: duplicate or unknown ref ids, cycles,
an empty workflow and contexts msgspec cannot encode raise a
:class:`~stabilize_aio.DefinitionError` naming the stage. Whether the task types
are registered is checked by the engine at submit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec

from .._codec import plain
from .._errors import (
    CycleError,
    DefinitionError,
    DuplicateStageError,
    EmptyWorkflowError,
    InvalidIdError,
    UnknownRequisiteError,
)
from .._ids import check_id
from .conditions import parse
from .status import WorkflowStatus


class Stage:
    """One node of a workflow: tasks run in order once all requisites can continue.

    Args:
        ref_id: the stage's key in the DAG.
        task: the registered task type to run (or use ``tasks``).
        tasks: several task types run in order.
        context: the stage's own context; its keys win over ancestors' outputs.
        requisites: ref ids of the stages that must finish first (an AND join).
        name: a label for people (defaults to ``ref_id``).
        continue_on_failure: a failure ends the stage FAILED_CONTINUE and its
            downstream still runs (stabilize's ``continuePipelineOnFailure``).
        fail_workflow: False makes a failure STOPPED instead of TERMINAL: this
            branch stops, the others go on (stabilize's ``failPipeline=False``).
        complete_other_branches_then_fail: a failure stops this branch, lets the
            other branches finish, then ends the workflow TERMINAL.
        timeout: per-call timeout in seconds, overriding the task type's.
        stage_timeout: the whole stage's limit in seconds, from its start,
            across retries and restarts; past it the stage fails.
    """

    __slots__ = (
        "complete_other_branches_then_fail",
        "context",
        "continue_on_failure",
        "enabled",
        "fail_workflow",
        "name",
        "output_reducers",
        "ref_id",
        "requisites",
        "stage_timeout",
        "tasks",
        "timeout",
    )

    def __init__(
        self,
        ref_id: str,
        task: str | None = None,
        *,
        tasks: Sequence[str] | None = None,
        context: Mapping[str, Any] | None = None,
        requisites: Iterable[str] = (),
        name: str | None = None,
        continue_on_failure: bool = False,
        fail_workflow: bool = True,
        complete_other_branches_then_fail: bool = False,
        timeout: float | None = None,
        stage_timeout: float | None = None,
        enabled: str | None = None,
        output_reducers: Mapping[str, str] | None = None,
    ) -> None:
        if not isinstance(ref_id, str) or not ref_id:
            raise DefinitionError(f"stage ref id must be a non-empty string, got {ref_id!r}")
        try:
            check_id(ref_id, what="stage ref id")
        except InvalidIdError as exc:
            raise DefinitionError(f"stage {ref_id[:60]!r}: {exc}", stage=ref_id) from None
        if task is not None and tasks is not None:
            raise DefinitionError(f"stage {ref_id!r}: give either task= or tasks=, not both", stage=ref_id)
        names = (task,) if task is not None else tuple(tasks or ())
        for t in names:
            if not isinstance(t, str) or not t:
                raise DefinitionError(f"stage {ref_id!r}: bad task type {t!r}", stage=ref_id)
        if isinstance(requisites, str):
            requisites = (requisites,)
        for value, label in ((timeout, "timeout"), (stage_timeout, "stage_timeout")):
            if value is not None and not value > 0:
                raise DefinitionError(f"stage {ref_id!r}: {label} must be > 0", stage=ref_id)
        ctx = plain(dict(context or {}), what="context", stage=ref_id)
        if enabled is not None:
            parse(enabled, stage=ref_id, what="enabled")  # refused here if it does not parse
        reducers = dict(output_reducers or {})
        for key, reducer in reducers.items():
            if not isinstance(key, str) or not isinstance(reducer, str) or not reducer:
                raise DefinitionError(
                    f"stage {ref_id!r}: output_reducers maps output keys to reducer names, got {key!r}: {reducer!r}",
                    stage=ref_id,
                )
        if reducers and not tuple(requisites):
            raise DefinitionError(f"stage {ref_id!r}: output_reducers need requisites to reduce", stage=ref_id)
        self.ref_id = ref_id
        self.tasks: tuple[str, ...] = names
        self.context: dict[str, Any] = ctx
        self.requisites: tuple[str, ...] = tuple(requisites)
        self.name = name or ref_id
        self.continue_on_failure = continue_on_failure
        self.fail_workflow = fail_workflow
        self.complete_other_branches_then_fail = complete_other_branches_then_fail
        self.timeout = timeout
        self.stage_timeout = stage_timeout
        #: A condition over the stage's context, evaluated when it becomes ready: false skips it (SKIPPED).
        self.enabled = enabled
        #: Per output key, how the requisites' values are combined (``model/reducers.py``).
        self.output_reducers = reducers

    def __repr__(self) -> str:
        return f"Stage({self.ref_id!r}, tasks={list(self.tasks)!r}, requisites={list(self.requisites)!r})"


class Workflow:
    """A workflow definition: a DAG of stages. Submitting it starts a run.

    Raises:
        DefinitionError: (a subclass naming the stage) for an empty workflow,
            duplicate or unknown ref ids, and cycles.
    """

    __slots__ = ("application", "name", "order", "stages")

    def __init__(self, *, application: str, name: str, stages: Sequence[Stage]) -> None:
        for label, value in (("application", application), ("name", name)):
            try:
                check_id(value, what=f"workflow {label}")
            except InvalidIdError as exc:
                raise DefinitionError(str(exc)) from None
        self.application = application
        self.name = name
        self.stages: tuple[Stage, ...] = tuple(stages)
        if not self.stages:
            raise EmptyWorkflowError(f"workflow {name!r} has no stages")
        seen: dict[str, int] = {}
        for i, stage in enumerate(self.stages):
            if not isinstance(stage, Stage):
                raise DefinitionError(f"workflow {name!r}: item {i} is not a Stage: {stage!r}")
            if stage.ref_id in seen:
                raise DuplicateStageError(f"stage {stage.ref_id!r}: duplicate ref id", stage=stage.ref_id)
            seen[stage.ref_id] = i
        for stage in self.stages:
            for req in stage.requisites:
                if req == stage.ref_id:
                    raise UnknownRequisiteError(f"stage {stage.ref_id!r}: depends on itself", stage=stage.ref_id)
                if req not in seen:
                    raise UnknownRequisiteError(
                        f"stage {stage.ref_id!r}: unknown requisite {req!r}", stage=stage.ref_id
                    )
        self.order = _topological_check(self.stages, seen)

    def __repr__(self) -> str:
        return f"Workflow(application={self.application!r}, name={self.name!r}, stages={len(self.stages)})"


def _topological_check(stages: tuple[Stage, ...], index: dict[str, int]) -> tuple[int, ...]:
    """Return a topological order of stage indices, or raise CycleError naming a stage."""
    pending = [len(set(s.requisites)) for s in stages]
    children: list[list[int]] = [[] for _ in stages]
    for i, s in enumerate(stages):
        for req in set(s.requisites):
            children[index[req]].append(i)
    ready = [i for i, n in enumerate(pending) if n == 0]
    order: list[int] = []
    while ready:
        i = ready.pop()
        order.append(i)
        for c in children[i]:
            pending[c] -= 1
            if pending[c] == 0:
                ready.append(c)
    if len(order) != len(stages):
        cycle = _find_cycle(stages, index, {i for i, n in enumerate(pending) if n > 0})
        ref = stages[cycle[0]].ref_id
        path = " -> ".join(stages[i].ref_id for i in [*cycle, cycle[0]])
        raise CycleError(f"stage {ref!r}: is part of a dependency cycle ({path})", stage=ref)
    return tuple(order)


def _find_cycle(stages: tuple[Stage, ...], index: dict[str, int], stuck: set[int]) -> list[int]:
    """A cycle among the stuck stages, in requisite order, starting at its first declared stage.

    Every stuck stage has a stuck requisite, so walking requisites from any stuck
    stage must revisit one: the walk from there on is a cycle.
    """
    node = min(stuck)
    seen: dict[int, int] = {}
    walk: list[int] = []
    while node not in seen:
        seen[node] = len(walk)
        walk.append(node)
        node = min(index[r] for r in stages[node].requisites if index[r] in stuck)
    cycle = walk[seen[node] :]
    first = cycle.index(min(cycle))
    return cycle[first:] + cycle[:first]


class TaskResult(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What a task returns. Build it with the class methods.

    ``outputs`` are merged into the stage's outputs (what downstream stages see);
    ``context`` is a context update kept for the next call of this stage's tasks.
    """

    status: WorkflowStatus
    outputs: dict[str, Any] = {}
    context: dict[str, Any] = {}
    error: str | None = None

    @classmethod
    def success(
        cls, *, outputs: Mapping[str, Any] | None = None, context: Mapping[str, Any] | None = None
    ) -> TaskResult:
        """The task succeeded; the stage moves to its next task."""
        return cls(status=WorkflowStatus.SUCCEEDED, outputs=dict(outputs or {}), context=dict(context or {}))

    @classmethod
    def running(
        cls, *, outputs: Mapping[str, Any] | None = None, context: Mapping[str, Any] | None = None
    ) -> TaskResult:
        """Not done yet: call the task again after its poll interval, context kept."""
        return cls(status=WorkflowStatus.RUNNING, outputs=dict(outputs or {}), context=dict(context or {}))

    @classmethod
    def failed_continue(
        cls,
        error: str | None = None,
        *,
        outputs: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> TaskResult:
        """Failed, but the stage and its downstream go on; the stage ends FAILED_CONTINUE."""
        return cls(
            status=WorkflowStatus.FAILED_CONTINUE,
            outputs=dict(outputs or {}),
            context=dict(context or {}),
            error=error,
        )

    @classmethod
    def terminal(
        cls,
        error: str | None = None,
        *,
        outputs: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> TaskResult:
        """Failed for good: the stage fails (TERMINAL unless the stage says otherwise)."""
        return cls(
            status=WorkflowStatus.TERMINAL,
            outputs=dict(outputs or {}),
            context=dict(context or {}),
            error=error,
        )

    @classmethod
    def stopped(
        cls,
        error: str | None = None,
        *,
        outputs: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> TaskResult:
        """Stop this branch: the stage ends STOPPED, other branches go on."""
        return cls(
            status=WorkflowStatus.STOPPED,
            outputs=dict(outputs or {}),
            context=dict(context or {}),
            error=error,
        )

    @classmethod
    def suspend(cls, *, context: Mapping[str, Any] | None = None) -> TaskResult:
        """Wait for a signal: the stage stays SUSPENDED until ``engine.signal(...)`` resumes it.

        The task is then called again with ``_signal_name`` and ``_signal_data`` in its context.
        """
        return cls(status=WorkflowStatus.SUSPENDED, context=dict(context or {}))

    @classmethod
    def canceled(
        cls,
        error: str | None = None,
        *,
        outputs: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> TaskResult:
        """The task gave up: as in stabilize, the stage takes its failure status."""
        return cls(
            status=WorkflowStatus.CANCELED,
            outputs=dict(outputs or {}),
            context=dict(context or {}),
            error=error,
        )
