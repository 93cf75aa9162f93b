"""Compiling a definition: a validated :class:`~stabilize_aio.Workflow` becomes the records a run is made of.

The door's last checks run here, before anything is written: every task type
must be registered (unless a pure client submits, which runs nothing), and the
inputs must survive the store's encoding (:func:`~stabilize_aio._codec.plain`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import msgspec

from .._codec import plain
from .._errors import DefinitionError, UnknownTaskError
from ..model.coordination import Coordination
from ..model.definitions import Stage, Workflow
from ..model.plans import StageType
from ..model.records import ChildPlan, StageSpec, WorkflowRecord
from ..model.reducers import BUILTIN, ReducerError
from ..model.routing import JoinType
from .expand import expand_types


def check_definition(
    workflow: Workflow,
    context: Mapping[str, Any] | None,
    *,
    registered: Collection[str] | None,
    reducers: Collection[str] = (),
    what: str,
) -> dict[str, Any]:
    """The run's inputs, normalised; refuses unregistered task types and reducers (``registered`` None: not checked).

    Raises:
        TypeError: ``workflow`` is not a Workflow.
        UnknownTaskError: a stage names a task type that is not registered.
        EncodingError: the inputs cannot be encoded.
    """
    if not isinstance(workflow, Workflow):
        raise TypeError(f"{what}() takes a Workflow, not {type(workflow).__name__}")
    if registered is not None:
        nested = any(s.workflow is not None for s in workflow.stages)
        for stage in _all_stages(workflow) if nested else workflow.stages:
            for ref, task in _tasks_of(stage) if _composed(stage) else ((stage.ref_id, t) for t in stage.tasks):
                if task not in registered:
                    raise UnknownTaskError(
                        f"stage {ref!r}: task type {task!r} is not registered "
                        f"(registered: {', '.join(sorted(registered)) or 'none'})",
                        stage=ref,
                    )
            for key, name in stage.output_reducers.items():
                if name not in BUILTIN and name not in reducers:
                    raise ReducerError(
                        f"stage {stage.ref_id!r}: output reducer {name!r} for {key!r} is neither built in "
                        f"({', '.join(BUILTIN)}) nor registered ({', '.join(sorted(reducers)) or 'none'})",
                        stage=stage.ref_id,
                    )
    return plain(dict(context or {}), what="workflow context (inputs)")


def _all_stages(workflow: Workflow) -> list[Stage]:
    """The workflow's stages and, depth first, those of its sub-workflows' definitions."""
    out: list[Stage] = []
    for s in workflow.stages:
        out.append(s)
        if s.workflow is not None:
            out.extend(_all_stages(s.workflow))
    return out


def depth_of(workflow: Workflow) -> int:
    """How deep sub-workflows nest in ``workflow`` (1: none)."""
    return 1 + max((depth_of(s.workflow) for s in workflow.stages if s.workflow is not None), default=0)


def _tasks_of(stage: Stage) -> list[tuple[str, str]]:
    """(ref id, task type) of every task a stage runs, its synthetic stages' included."""
    out = [(stage.ref_id, t) for t in stage.tasks]
    for child in _synthetic_of(stage):
        out.extend((f"{stage.ref_id}/{child.ref_id}", t) for t in child.tasks)
    if stage.compensate is not None:
        out.append((f"{stage.ref_id}/compensate", stage.compensate))
    return out


def _composed(stage: Stage) -> bool:
    """Whether a stage runs tasks beyond its own (synthetic stages, a compensation)."""
    return bool(stage.before or stage.after or stage.on_failure) or stage.compensate is not None


def _synthetic_of(stage: Stage) -> tuple[Stage, ...]:
    return (*stage.before, *stage.after, *stage.on_failure)


#: The routing fields of a plain stage: none (the defaults; shared, never written).
_PLAIN: dict[str, Any] = {}


def _child(workflow: Workflow, unknown: Collection[str]) -> ChildPlan:
    """A sub-workflow's child run, compiled with its parent (it is stored with it)."""
    record, specs = compile_workflow(workflow, {}, unknown)
    return ChildPlan(application=record.application, name=record.name, specs=specs, max_jumps=record.max_jumps)


def _coord(c: Coordination, index: Mapping[str, int]) -> Coordination:
    """A stage's coordination with its milestone named by index."""
    return c if c.milestone_ref is None else msgspec.structs.replace(c, milestone=index[c.milestone_ref])


def _plain(s: Stage) -> bool:
    """Whether a stage routes nothing (an AND join, no split, not a loop's)."""
    return s.join_type is JoinType.AND and not s.split_conditions and s.loop is None


def _routing(s: Stage, index: Mapping[str, int]) -> dict[str, Any]:
    """A routing stage's routing fields."""
    return {
        "join_type": s.join_type,
        "join_threshold": s.join_threshold,
        "cancel_remaining": s.cancel_remaining,
        "split_conditions": {index[down]: source for down, source in s.split_conditions.items()},
        "loop": s.loop,
    }


def _with_synthetic(workflow: Workflow, specs: list[StageSpec], unknown: Collection[str]) -> list[StageSpec]:
    """The specs with each stage's synthetic stages appended (indices after the workflow's own stages).

    A stage that declares ``compensate`` gets its compensation stage ``<ref>/compensate``.
    """
    out = list(specs)
    for i, s in enumerate(workflow.stages):
        roles: dict[str, list[int]] = {"before": [], "after": [], "on_failure": []}
        for role, children in (("before", s.before), ("after", s.after), ("on_failure", s.on_failure)):
            for c in children:
                k = len(out)
                roles[role].append(k)
                out.append(
                    StageSpec(
                        ref_id=f"{s.ref_id}/{c.ref_id}",
                        index=k,
                        name=c.name if c.name != c.ref_id else f"{s.ref_id}/{c.ref_id}",
                        tasks=c.tasks,
                        context=c.context,
                        requisites=(),
                        continue_on_failure=c.continue_on_failure,
                        fail_workflow=c.fail_workflow,
                        complete_other_branches_then_fail=c.complete_other_branches_then_fail,
                        timeout=c.timeout,
                        stage_timeout=c.stage_timeout,
                        enabled=c.enabled,
                        parent=i,
                        role=role,
                    )
                )
        compensation = None
        if s.compensate is not None:
            compensation = len(out)
            out.append(
                StageSpec(
                    ref_id=f"{s.ref_id}/compensate",
                    index=compensation,
                    name=f"{s.ref_id}/compensate",
                    tasks=(s.compensate,),
                    context={},
                    requisites=(),
                    parent=i,
                    role="compensate",
                )
            )
        out[i] = msgspec.structs.replace(
            out[i],
            before=tuple(roles["before"]),
            after=tuple(roles["after"]),
            on_failure=tuple(roles["on_failure"]),
            type=s.type,
            compensation=compensation,
            unknown_ok=tuple(k for k, t in enumerate(s.tasks) if t in unknown) if compensation is not None else (),
        )
    return out


#: What the door makes of a definition: the run's record template and its stage specs.
Prepared = tuple[WorkflowRecord, list[StageSpec]]


def prepare(
    workflow: Workflow,
    context: Mapping[str, Any] | None,
    *,
    registered: Collection[str] | None,
    reducers: Collection[str],
    types: Mapping[str, StageType],
    unknown: Collection[str] = (),
    max_depth: int = 10,
    what: str,
) -> Prepared:
    """The door: stage types expanded, the definition checked (:func:`check_definition`), then compiled.

    ``unknown``: the task types registered with ``compensate_unknown``.
    """
    if isinstance(workflow, Workflow):
        workflow = expand_types(workflow, types)
        if any(s.workflow is not None for s in workflow.stages) and depth_of(workflow) > max_depth:
            raise DefinitionError(
                f"workflow {workflow.name!r}: sub-workflows nest {depth_of(workflow)} deep; the engine's "
                f"max_depth is {max_depth}"
            )
    inputs = check_definition(workflow, context, registered=registered, reducers=reducers, what=what)
    return compile_workflow(workflow, inputs, unknown)


def compile_workflow(workflow: Workflow, inputs: dict[str, Any], unknown: Collection[str] = ()) -> Prepared:
    """A run's record template (no id, no creation time yet) and its stage specs, requisites as indices."""
    index = {s.ref_id: i for i, s in enumerate(workflow.stages)}
    specs = [
        StageSpec(
            ref_id=s.ref_id,
            index=i,
            name=s.name,
            tasks=s.tasks,
            context=s.context,
            requisites=tuple(sorted({index[r] for r in s.requisites})),
            continue_on_failure=s.continue_on_failure,
            fail_workflow=s.fail_workflow,
            complete_other_branches_then_fail=s.complete_other_branches_then_fail,
            timeout=s.timeout,
            stage_timeout=s.stage_timeout,
            enabled=s.enabled,
            instances=s.instances,
            child=None if s.workflow is None else _child(s.workflow, unknown),
            coord=None if s.coordination is None else _coord(s.coordination, index),
            output_reducers=dict(s.output_reducers) if s.output_reducers else None,
            reduce_from=tuple(dict.fromkeys(index[r] for r in s.requisites)) if s.output_reducers else (),
            **(
                _PLAIN
                if s.join_type is JoinType.AND and not s.split_conditions and s.loop is None
                else _routing(s, index)
            ),
        )
        for i, s in enumerate(workflow.stages)
    ]
    if any(s.before or s.after or s.on_failure or s.type or s.compensate for s in workflow.stages):
        specs = _with_synthetic(workflow, specs, unknown)
    record = WorkflowRecord(
        id="",
        application=workflow.application,
        name=workflow.name,
        inputs=inputs,
        max_jumps=workflow.max_jumps,
        timeout=workflow.timeout,
        start_deadline=workflow.start_deadline,
        admission=workflow.admission,
    )
    return record, specs
