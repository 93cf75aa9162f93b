"""Stage types expanded at the door: a ``Stage(type=...)`` takes the plan its registered function returns.

The plan (tasks and synthetic stages) is compiled into the run's stage specs
like any other stage's, so a later engine recovers the run without the function.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

from .._errors import DefinitionError
from ..model.definitions import Stage, Workflow
from ..model.plans import StagePlan, StageType, synthetic


def expand_types(workflow: Workflow, types: Mapping[str, StageType]) -> Workflow:
    """``workflow`` with every typed stage replaced by what its type plans (the same workflow if none is typed).

    Raises:
        DefinitionError: naming the stage, for a type that is not registered, a
            function that raises or returns something else than a StagePlan, or a
            plan that is not a valid stage.
    """
    if all(s.type is None and s.workflow is None for s in workflow.stages):
        return workflow
    stages = [_expanded(s, types) for s in workflow.stages]
    return Workflow(
        application=workflow.application,
        name=workflow.name,
        stages=stages,
        max_jumps=workflow.max_jumps,
        timeout=workflow.timeout,
    )


def _expanded(stage: Stage, types: Mapping[str, StageType]) -> Stage:
    if stage.type is not None:
        return _planned(stage, stage.type, types)
    if stage.workflow is not None:
        child = expand_types(stage.workflow, types)
        if child is not stage.workflow:
            stage = copy.copy(stage)
            stage.workflow = child
    return stage


def _planned(stage: Stage, name: str, types: Mapping[str, StageType]) -> Stage:
    ref = stage.ref_id
    fn = types.get(name)
    if fn is None:
        raise DefinitionError(
            f"stage {ref!r}: stage type {name!r} is not registered (registered: {', '.join(sorted(types)) or 'none'})",
            stage=ref,
        )
    try:
        plan = fn(stage)
    except Exception as exc:
        raise DefinitionError(f"stage {ref!r}: stage type {name!r} raised {exc!r}", stage=ref) from exc
    if not isinstance(plan, StagePlan):
        raise DefinitionError(
            f"stage {ref!r}: stage type {name!r} returned {type(plan).__name__}, not a StagePlan", stage=ref
        )
    for task in plan.tasks:
        if not isinstance(task, str) or not task:
            raise DefinitionError(f"stage {ref!r}: stage type {name!r} planned a bad task type {task!r}", stage=ref)
    planned = copy.copy(stage)
    planned.tasks = plan.tasks
    planned.before = synthetic(ref, "before", plan.before)
    planned.after = synthetic(ref, "after", plan.after)
    planned.on_failure = synthetic(ref, "on_failure", plan.on_failure)
    if plan.compensate is not None and (not isinstance(plan.compensate, str) or not plan.compensate):
        raise DefinitionError(
            f"stage {ref!r}: stage type {name!r} planned a bad compensate {plan.compensate!r}", stage=ref
        )
    planned.compensate = plan.compensate
    return planned
