"""Compiling a definition: a validated :class:`~stabilize_aio.Workflow` becomes the records a run is made of.

The door's last checks run here, before anything is written: every task type
must be registered (unless a pure client submits, which runs nothing), and the
inputs must survive the store's encoding (:func:`~stabilize_aio._codec.plain`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from .._codec import plain
from .._errors import UnknownTaskError
from ..model.definitions import Stage, Workflow
from ..model.records import StageSpec, WorkflowRecord
from ..model.reducers import BUILTIN, ReducerError
from ..model.routing import JoinType


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
        for stage in workflow.stages:
            for task in stage.tasks:
                if task not in registered:
                    raise UnknownTaskError(
                        f"stage {stage.ref_id!r}: task type {task!r} is not registered "
                        f"(registered: {', '.join(sorted(registered)) or 'none'})",
                        stage=stage.ref_id,
                    )
            for key, name in stage.output_reducers.items():
                if name not in BUILTIN and name not in reducers:
                    raise ReducerError(
                        f"stage {stage.ref_id!r}: output reducer {name!r} for {key!r} is neither built in "
                        f"({', '.join(BUILTIN)}) nor registered ({', '.join(sorted(reducers)) or 'none'})",
                        stage=stage.ref_id,
                    )
    return plain(dict(context or {}), what="workflow context (inputs)")


#: The routing fields of a plain stage: none (the defaults; shared, never written).
_PLAIN: dict[str, Any] = {}


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


def compile_workflow(workflow: Workflow, inputs: dict[str, Any]) -> tuple[WorkflowRecord, list[StageSpec]]:
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
    record = WorkflowRecord(
        id="", application=workflow.application, name=workflow.name, inputs=inputs, max_jumps=workflow.max_jumps
    )
    return record, specs
