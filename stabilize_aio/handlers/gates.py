"""Gates: what a stage's conditions and reducers say, asked by the kernel (they end no stage themselves).

* :func:`reduced`: a join stage's output reducers, written into its context;
* :func:`enabled`: its ``enabled`` condition, when it becomes ready;
* :func:`split_taken`: an OR split's conditions, when it succeeds.

Each returns the error a stage fails with when its condition or reducer cannot
be evaluated (an :class:`ErrorInfo`), and the kernel ends the stage.
"""

from __future__ import annotations

import functools

from ..model.conditions import Condition, ConditionError, parse
from ..model.records import StageSpec
from ..model.reducers import ReducerError, reduce_outputs
from ..model.values import ErrorInfo
from ..state.turn import Turn


@functools.lru_cache(maxsize=4096)
def condition(source: str, stage: str) -> Condition:
    """A parsed condition (parsed once per expression and stage: parsing is the costly part)."""
    return parse(source, stage=stage)


def failure(kind: str, message: str, attempt: int = 1) -> ErrorInfo:
    """The error of a stage failed by a gate (never transient: the same inputs fail the same way)."""
    return ErrorInfo.capped(kind, message, attempt=attempt, transient=False)


def reduced(turn: Turn, i: int, spec: StageSpec) -> ErrorInfo | None:
    """Reduce the requisites' outputs into stage ``i``'s context (what its tasks see); an error: a reducer failed."""
    assert spec.output_reducers is not None
    upstream = [turn.run(r).outputs for r in spec.reduce_from]
    try:
        values = reduce_outputs(spec.ref_id, spec.output_reducers, upstream, turn.reducers)
    except ReducerError as exc:
        return failure("ReducerError", str(exc))
    if values:
        turn.update_stage(i, context_update={**turn.run(i).context_update, **values})
    return None


def enabled(turn: Turn, i: int, source: str) -> bool | ErrorInfo:
    """Whether stage ``i`` runs, over its context; an error: the condition cannot be evaluated."""
    try:
        return condition(source, turn.spec(i).ref_id).evaluate(turn.stage_context(i))
    except ConditionError as exc:
        return failure("ConditionError", str(exc))


def split_taken(turn: Turn, i: int, spec: StageSpec) -> set[int] | ErrorInfo:
    """The children an OR split takes (those without a condition always), over its context and outputs."""
    assert spec.split_conditions is not None
    context = turn.stage_context(i)
    taken = set(turn.state.children[i])
    for c, source in spec.split_conditions.items():
        try:
            if not condition(source, spec.ref_id).evaluate(context):
                taken.discard(c)
        except ConditionError as exc:
            return failure("ConditionError", str(exc), attempt=turn.run(i).attempt)
    return taken
