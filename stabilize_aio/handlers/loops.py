"""Loops: the two control stages ``stabilize_aio.patterns`` builds, on the jump mechanism.

``<prefix>/enter`` opens each iteration and publishes, as its outputs, the
values carried from the last one and ``iteration`` (1-based), which the body
sees; a while loop asks its condition there first. ``<prefix>`` (the exit)
closes it: it carries the body's outputs back to ``enter`` with a loop jump
(reset, new generations: new idempotency keys), or ends the loop with them as
its outputs, so they reach the stages after the loop. A repeat-until loop asks
its condition at the exit. Loop jumps do not count toward ``max_jumps``; the
bound is ``max_iterations`` (``on_max``: fail the exit stage or leave normally),
and the exit's ``loop`` output says how it ended.
"""

from __future__ import annotations

from typing import Any

from ..model.conditions import ConditionError
from ..model.routing import LoopSpec
from ..model.status import WorkflowStatus
from ..state.turn import Turn
from .gates import condition, failure
from .jumps import jump
from .kernel import complete_stage

S = WorkflowStatus

_EXIT = "_loop_exit"  # in the exit's context when enter sends it there: why the loop ends
_DONE = "_loop_iterations"  # ... and how many iterations ran


class LoopControl:
    """The stage kind of a loop's control stages (no task: the kernel decides in the turn)."""

    __slots__ = ()

    name = "loop"

    def begin(self, turn: Turn, i: int) -> None:
        loop = turn.spec(i).loop
        assert loop is not None
        if loop.role == "enter":
            _enter(turn, i, loop)
        else:
            _exit(turn, i, loop)


#: The one loop kind (kinds hold no state).
LOOP = LoopControl()


def _enter(turn: Turn, i: int, loop: LoopSpec) -> None:
    carried = dict(turn.run(i).context_update)
    k = carried.pop("iteration", 1)
    if loop.kind == "while":
        holds = _ask(turn, i, loop, k)
        if holds is None:
            return
        if not holds or k > loop.max_iterations:
            reason = "condition" if not holds else "max_iterations"
            jump(turn, i, loop.partner, context={**carried, _EXIT: reason, _DONE: k - 1}, outputs={}, loop=True)
            return
    turn.update_stage(i, outputs={**carried, "iteration": k})
    complete_stage(turn, i, S.SUCCEEDED)


def _exit(turn: Turn, i: int, loop: LoopSpec) -> None:
    own = turn.run(i).context_update
    if _EXIT in own:  # a while loop's enter found it done
        carried = {key: v for key, v in own.items() if key not in (_EXIT, _DONE)}
        _leave(turn, i, loop, carried, reason=own[_EXIT], iterations=own[_DONE])
        return
    state = turn.state
    k = turn.run(state.stage_index(loop.partner)).outputs.get("iteration", 1)
    carried = {}
    for ref in (loop.partner, *loop.body):
        carried.update(turn.run(state.stage_index(ref)).outputs)
    carried.pop("iteration", None)
    if loop.kind == "until":
        done = _ask(turn, i, loop, k)
        if done is None:
            return
        if done or k >= loop.max_iterations:
            _leave(turn, i, loop, carried, reason="condition" if done else "max_iterations", iterations=k)
            return
    jump(turn, i, loop.partner, context={**carried, "iteration": k + 1}, outputs={}, loop=True)


def _ask(turn: Turn, i: int, loop: LoopSpec, k: int) -> bool | None:
    """The loop's condition over stage ``i``'s context and ``iteration``; None: it failed the stage."""
    prefix = turn.spec(i).ref_id if loop.role == "exit" else loop.partner
    context = turn.stage_context(i)
    context["iteration"] = k
    try:
        return condition(loop.condition, prefix).evaluate(context)
    except ConditionError as exc:
        complete_stage(turn, i, turn.spec(i).failure_status(), failure("ConditionError", str(exc)))
        return None


def _leave(turn: Turn, i: int, loop: LoopSpec, carried: dict[str, Any], *, reason: str, iterations: int) -> None:
    """End the loop at its exit stage with the body's last outputs (and how it ended, under ``loop``)."""
    turn.update_stage(i, outputs={**carried, "loop": {"iterations": iterations, "exit": reason}})
    if reason == "max_iterations" and loop.on_max == "fail":
        message = (
            f"loop {turn.spec(i).ref_id!r} reached max_iterations={loop.max_iterations} "
            f"without its condition {loop.condition!r} ending it"
        )
        complete_stage(turn, i, turn.spec(i).failure_status(), failure("LoopError", message))
        return
    complete_stage(turn, i, S.SUCCEEDED)
