"""Workflow definitions: :class:`Stage` and :class:`Workflow` (and, re-exported, :class:`TaskResult`).

A definition is validated when it is built: duplicate or unknown ref ids, cycles,
an empty workflow and contexts msgspec cannot encode raise a
:class:`~stabilize_aio.DefinitionError` naming the stage. Whether the task types
are registered is checked by the engine at submit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

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
from .coordination import Coordination, admission, check_milestones, coordination, seconds
from .instances import MultiInstance, check_instances
from .plans import synthetic
from .routing import PARTIAL_JOINS, JoinType, LoopSpec, SplitType
from .status import WorkflowStatus

#: The empty mapping plain stages share (no allocation per stage; read-only).
_EMPTY: Mapping[str, str] = MappingProxyType({})


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
        enabled: a condition over the stage's context, asked when it becomes
            ready: false skips it (SKIPPED; its downstream goes on).
        output_reducers: per output key, how the requisites' values are
            combined into this stage's context (``collect``, ``sum``, ...).
        join_type: how the stage starts from its requisites (:class:`JoinType`;
            default AND: all of them).
        join_threshold: for ``JoinType.N_OF_M``, how many requisites must arrive.
        cancel_remaining: a DISCRIMINATOR or N_OF_M join prunes the requisites
            that have not ended when it starts (running ones are cancelled for
            real); they end SKIPPED.
        split_type: ``SplitType.OR`` activates only the downstream stages whose
            ``split_conditions`` hold when this stage succeeds.
        split_conditions: downstream ref id -> condition over this stage's
            context and outputs (a downstream without one is always taken).
        before: stages run one after another before this stage's tasks (ref
            ids ``<ref_id>/<child>``; a failing one fails this stage).
        after: stages run one after another once its tasks succeed; this
            stage succeeds after them.
        on_failure: stages run one after another when it fails; it stays failed.
        type: a registered stage type (``@engine.stage_type``) whose plan gives
            the tasks and synthetic stages, expanded at submit.
        compensate: a task type that undoes this stage: when the run fails or is
            cancelled after it succeeded, it runs (in reverse order of completion).
        instances: run the stage's tasks once per element of a context list, or a
            number of times (:class:`MultiInstance`); each instance a stage of its own.
        workflow: a sub-workflow stage: it runs this workflow as a child run
            (inputs: the stage's context) and ends with it, its outputs the child's.
        mutex_key: no two stages holding this key run at once (from start to end;
            waiters first come, first served); ``mutex_scope`` ``"workflow"`` (the
            default: this run's stages) or ``"global"`` (every run on the store).
        deferred_choice_group: the first stage of the group whose task commits to
            a result (anything but running or suspend) or gets a signal wins; the
            others are cancelled for real and end SKIPPED (pruned).
        milestone_ref_id: when ready, the stage waits until that stage is in
            ``milestone_status`` (default SUSPENDED), runs while it is, and is
            SKIPPED if it has passed it.
        cancel_region: the region ``engine.cancel_region(wid, region)`` cancels.
    """

    __slots__ = (
        "after",
        "before",
        "cancel_remaining",
        "compensate",
        "complete_other_branches_then_fail",
        "context",
        "continue_on_failure",
        "coordination",
        "enabled",
        "fail_workflow",
        "instances",
        "join_threshold",
        "join_type",
        "loop",
        "name",
        "on_failure",
        "output_reducers",
        "ref_id",
        "requisites",
        "split_conditions",
        "split_type",
        "stage_timeout",
        "tasks",
        "timeout",
        "type",
        "workflow",
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
        join_type: JoinType | str = JoinType.AND,
        join_threshold: int | None = None,
        cancel_remaining: bool = False,
        split_type: SplitType | str = SplitType.AND,
        split_conditions: Mapping[str, str] | None = None,
        before: Sequence[Stage] | None = None,
        after: Sequence[Stage] | None = None,
        on_failure: Sequence[Stage] | None = None,
        type: str | None = None,
        compensate: str | None = None,
        instances: MultiInstance | None = None,
        workflow: Workflow | None = None,
        mutex_key: str | None = None,
        mutex_scope: str = "workflow",
        deferred_choice_group: str | None = None,
        milestone_ref_id: str | None = None,
        milestone_status: WorkflowStatus | str | None = None,
        cancel_region: str | None = None,
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
        reducers: Mapping[str, str] = dict(output_reducers) if output_reducers else _EMPTY
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
        self.join_type, self.join_threshold = _join(ref_id, join_type, join_threshold, cancel_remaining, requisites)
        self.cancel_remaining = cancel_remaining
        self.split_type, self.split_conditions = _split(ref_id, split_type, split_conditions)
        #: A loop control stage (set by ``stabilize_aio.patterns``), else None.
        self.loop: LoopSpec | None = None
        if type is not None and (not isinstance(type, str) or not type):
            raise DefinitionError(f"stage {ref_id!r}: type must be a stage type's name, got {type!r}", stage=ref_id)
        if type is not None and (names or before or after or on_failure):
            raise DefinitionError(
                f"stage {ref_id!r}: a stage of type {type!r} gets its tasks and synthetic stages from the type",
                stage=ref_id,
            )
        #: The registered stage type whose plan this stage takes at submit, else None.
        self.type = type
        self.before = synthetic(ref_id, "before", before)
        self.after = synthetic(ref_id, "after", after)
        self.on_failure = synthetic(ref_id, "on_failure", on_failure)
        if compensate is not None and (not isinstance(compensate, str) or not compensate):
            raise DefinitionError(f"stage {ref_id!r}: compensate must be a task type, got {compensate!r}", stage=ref_id)
        if compensate is not None and type is not None:
            raise DefinitionError(f"stage {ref_id!r}: a stage of type {type!r} gets compensate from it", stage=ref_id)
        #: The task type that undoes this stage (run when the run fails or is cancelled), else None.
        self.compensate = compensate
        #: How the stage fans out into instances, else None.
        self.instances = None if instances is None else check_instances(ref_id, instances)
        if self.instances is not None and not names and type is None:
            raise DefinitionError(f"stage {ref_id!r}: a multi-instance stage needs tasks to run", stage=ref_id)
        if workflow is not None and (not isinstance(workflow, Workflow) or names or type or self.instances):
            raise DefinitionError(
                f"stage {ref_id!r}: workflow= takes a Workflow, for a stage with no tasks, type or instances",
                stage=ref_id,
            )
        #: A sub-workflow stage's child definition, else None.
        self.workflow = workflow
        #: Its mutex, deferred choice, milestone and cancel region (None: it has none).
        self.coordination: Coordination | None = coordination(
            ref_id, mutex_key=mutex_key, mutex_scope=mutex_scope, deferred_choice_group=deferred_choice_group,
            milestone_ref_id=milestone_ref_id, milestone_status=milestone_status, cancel_region=cancel_region,
        )  # fmt: skip
        if self.instances is not None and (before or after or on_failure):
            raise DefinitionError(
                f"stage {ref_id!r}: a multi-instance stage has no synthetic stages (give them to a stage around it)",
                stage=ref_id,
            )

    def __repr__(self) -> str:
        return f"Stage({self.ref_id!r}, tasks={list(self.tasks)!r}, requisites={list(self.requisites)!r})"


def _join(
    ref_id: str, join_type: JoinType | str, threshold: int | None, cancel_remaining: bool, requisites: Iterable[str]
) -> tuple[JoinType, int]:
    """The join kind and its threshold, checked (a threshold more than the requisites is refused by Workflow)."""
    if join_type is JoinType.AND and threshold is None and not cancel_remaining:
        return JoinType.AND, 0  # the default, at once: most stages
    try:
        kind = JoinType(join_type.upper() if isinstance(join_type, str) else join_type)
    except ValueError:
        valid = ", ".join(k.value for k in JoinType)
        raise DefinitionError(
            f"stage {ref_id!r}: unknown join_type {join_type!r} (one of {valid})", stage=ref_id
        ) from None
    if kind is not JoinType.AND and not tuple(requisites):
        raise DefinitionError(f"stage {ref_id!r}: a {kind.value} join needs requisites", stage=ref_id)
    if kind is JoinType.N_OF_M:
        if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 1:
            raise DefinitionError(
                f"stage {ref_id!r}: an N_OF_M join needs join_threshold >= 1, got {threshold!r}", stage=ref_id
            )
    elif threshold is not None:
        raise DefinitionError(f"stage {ref_id!r}: join_threshold is for N_OF_M joins only", stage=ref_id)
    if cancel_remaining and kind not in PARTIAL_JOINS:
        raise DefinitionError(
            f"stage {ref_id!r}: cancel_remaining is for DISCRIMINATOR and N_OF_M joins only", stage=ref_id
        )
    return kind, 1 if kind is JoinType.DISCRIMINATOR else (threshold or 0)


def _split(
    ref_id: str, split_type: SplitType | str, conditions: Mapping[str, str] | None
) -> tuple[SplitType, Mapping[str, str]]:
    """The split kind and its conditions, each parsed (which downstream they name is checked by Workflow)."""
    if split_type is SplitType.AND and not conditions:
        return SplitType.AND, _EMPTY  # the default, at once: most stages
    try:
        kind = SplitType(split_type.upper() if isinstance(split_type, str) else split_type)
    except ValueError:
        raise DefinitionError(
            f"stage {ref_id!r}: unknown split_type {split_type!r} (AND or OR)", stage=ref_id
        ) from None
    conds = dict(conditions or {})
    if conds and kind is not SplitType.OR:
        raise DefinitionError(f"stage {ref_id!r}: split_conditions need split_type=SplitType.OR", stage=ref_id)
    for down, source in conds.items():
        if not isinstance(down, str):
            raise DefinitionError(f"stage {ref_id!r}: split_conditions keys are ref ids, got {down!r}", stage=ref_id)
        parse(source, stage=ref_id, what=f"split condition for {down!r}")
    return kind, conds


class Workflow:
    """A workflow definition: a DAG of stages. Submitting it starts a run.

    ``max_jumps`` bounds the jumps a run takes; ``timeout`` (seconds from its
    durable start) ends a run CANCELED; ``start_deadline`` (seconds from its
    submit) cancels a run that has not started by then (one waiting BUFFERED);
    ``concurrency_key`` with ``max_concurrent`` (default 1) lets at most that
    many unfinished runs of the key run, the others wait BUFFERED and start in
    submit order (``keep_waiting=False``: those left when a slot frees are
    CANCELED instead, stabilize's purge).

    Raises:
        DefinitionError: (a subclass naming the stage) for an empty workflow,
            duplicate or unknown ref ids, and cycles.
    """

    __slots__ = ("admission", "application", "max_jumps", "name", "order", "stages", "start_deadline", "timeout")

    def __init__(
        self,
        *,
        application: str,
        name: str,
        stages: Sequence[Stage],
        max_jumps: int = 10,
        timeout: float | None = None,
        start_deadline: float | None = None,
        concurrency_key: str | None = None,
        max_concurrent: int | None = None,
        keep_waiting: bool = True,
    ) -> None:
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
            for child in (*stage.before, *stage.after, *stage.on_failure):
                full = f"{stage.ref_id}/{child.ref_id}"
                if full in seen:
                    raise DuplicateStageError(
                        f"stage {stage.ref_id!r}: its synthetic stage {full!r} has the ref id of another stage",
                        stage=stage.ref_id,
                    )
                seen[full] = -1  # (not a requisite anyone may name: refused below)
        for stage in self.stages:
            for req in stage.requisites:
                if req == stage.ref_id:
                    raise UnknownRequisiteError(f"stage {stage.ref_id!r}: depends on itself", stage=stage.ref_id)
                if seen.get(req, -1) < 0:
                    raise UnknownRequisiteError(
                        f"stage {stage.ref_id!r}: unknown requisite {req!r}", stage=stage.ref_id
                    )
        self.order = _topological_check(self.stages, seen)
        if not isinstance(max_jumps, int) or isinstance(max_jumps, bool) or max_jumps < 0:
            raise DefinitionError(f"workflow {name!r}: max_jumps must be an int >= 0, got {max_jumps!r}")
        #: How many jumps a run may take (``TaskResult.jump_to``; loop jumps are not counted).
        self.max_jumps = max_jumps
        #: Seconds a run may live from its start; past it, it ends CANCELED for real (its compensations run).
        self.timeout = seconds(name, "timeout", timeout)
        #: Seconds after its submit a run must have started by (one waiting BUFFERED); past it, CANCELED.
        self.start_deadline = seconds(name, "start_deadline", start_deadline)
        #: Its admission limit (concurrency_key, max_concurrent, keep_waiting), else None.
        self.admission = admission(
            name, concurrency_key=concurrency_key, max_concurrent=max_concurrent, keep_waiting=keep_waiting
        )
        _check_routing(self.stages, seen)
        check_milestones({s.ref_id: s.coordination for s in self.stages if s.coordination is not None}, seen)

    def __repr__(self) -> str:
        return f"Workflow(application={self.application!r}, name={self.name!r}, stages={len(self.stages)})"


def _check_routing(stages: tuple[Stage, ...], index: dict[str, int]) -> None:
    """Refuse a threshold no run can reach, a split condition on a stage that is not downstream, a broken loop."""
    if not any(s.join_type is JoinType.N_OF_M or s.split_conditions or s.loop is not None for s in stages):
        return
    children: dict[str, set[str]] = {s.ref_id: set() for s in stages}
    for s in stages:
        for req in s.requisites:
            children[req].add(s.ref_id)
    for s in stages:
        n = len(set(s.requisites))
        if s.join_type is JoinType.N_OF_M and s.join_threshold > n:
            raise DefinitionError(
                f"stage {s.ref_id!r}: join_threshold {s.join_threshold} cannot be reached with {n} requisite(s)",
                stage=s.ref_id,
            )
        for down in s.split_conditions:
            if down not in children[s.ref_id]:
                raise DefinitionError(
                    f"stage {s.ref_id!r}: split condition names {down!r}, which is not a stage directly downstream "
                    f"of it (downstream: {', '.join(sorted(children[s.ref_id])) or 'none'})",
                    stage=s.ref_id,
                )
        if s.loop is not None:
            for ref in (s.loop.partner, *s.loop.body):
                if ref not in index:
                    raise DefinitionError(
                        f"stage {s.ref_id!r}: loop stage {ref!r} is not in the workflow (splice every stage "
                        "while_loop/repeat_until returns)",
                        stage=s.ref_id,
                    )


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
