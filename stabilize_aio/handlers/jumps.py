"""Jumps: a stage goes on at another stage instead of downstream (``TaskResult.jump_to``), in one turn.

* **Back** (the target is the source or one of its ancestors): the target and
  every stage between it and the source are reset, each to a new generation
  (so new idempotency keys), running ones cancelled; stages beside that path
  keep their state. The target starts again with the jump's context merged in.
* **Forward** (any other target): the source succeeds with its outputs and
  every edge out of it dead, so the stages only its branch would have run are
  pruned (SKIPPED); a stage that another live edge reaches still runs. The
  target is reset if it had run, and starts now whatever its requisites say.

Every jump but a loop's counts against the run's ``max_jumps``; over budget, the
source fails with a ``JumpError`` naming it. ``stage.jumped`` records each jump.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..model.status import WorkflowStatus
from ..state.turn import Turn
from .gates import failure
from .kernel import GOING, complete_stage, maybe_complete, start_stage
from .undo import reset

S = WorkflowStatus


def jump(
    turn: Turn,
    i: int,
    target: str,
    *,
    context: Mapping[str, Any],
    outputs: Mapping[str, Any],
    loop: bool = False,
) -> None:
    """Stage ``i`` (RUNNING, its call done) jumps to the stage ``target``; ``loop``: a loop's jump (not counted)."""
    state = turn.state
    source = turn.spec(i)
    try:
        t = state.stage_index(target)
    except KeyError:
        _fail(turn, i, f"stage {source.ref_id!r}: jump target {target!r} is not a stage of this workflow")
        return
    record = turn.record
    if not loop:
        if record.jumps >= record.max_jumps:
            _fail(
                turn,
                i,
                f"stage {source.ref_id!r}: jump to {target!r} refused: the run has taken its "
                f"max_jumps={record.max_jumps} jumps",
            )
            return
        turn.update_workflow(jumps=record.jumps + 1)
    run = turn.run(i)
    keys = ", ".join(sorted(context))
    turn.record_event(
        "stage.jumped",
        f"stage.jumped:{i}:{run.generation}",
        stage=i,
        message=f"{source.ref_id} -> {target} (context: [{keys}])",
    )
    turn.holds += 1
    if t == i or t in state.ancestors(i):
        for k in _between(turn, t, i):
            reset(turn, k)
        turn.update_stage(t, context_update={**outputs, **context})
        start_stage(turn, t)
    else:
        if outputs:
            turn.update_stage(i, outputs={**run.outputs, **outputs})
        if turn.run(t).status is not S.NOT_STARTED:
            reset(turn, t)
        turn.update_stage(t, context_update={**turn.run(t).context_update, **context})
        start_stage(turn, t)  # first: pruning from the source's dead edges must not reach the target
        after = turn.run(i)
        if turn.record.status in GOING and after.status is S.RUNNING and after.generation == run.generation:
            # (what the target's start set off may have reset the source already: a loop around this one)
            complete_stage(turn, i, S.SUCCEEDED, dropped=tuple(state.children[i]))
    turn.holds -= 1
    maybe_complete(turn)


def _between(turn: Turn, t: int, i: int) -> list[int]:
    """The stages a jump back from ``i`` to ``t`` resets: ``t``, ``i`` and each stage on a path between them."""
    state = turn.state
    scope = {t, i}
    scope.update(k for k in state.ancestors(i) if t in state.ancestors(k))
    return sorted(scope)


def _fail(turn: Turn, i: int, message: str) -> None:
    error = failure("JumpError", message, attempt=turn.run(i).attempt)
    complete_stage(turn, i, turn.spec(i).failure_status(), error)
