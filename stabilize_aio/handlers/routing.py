"""Routing helpers of the kernel: a partial join's ``cancel_remaining``, an unreachable join, MULTI_MERGE runs.

They end or start stages through the kernel (which calls them when a join
decides so); the rules are in ``dag/joins.py`` and docs/patterns.md.
"""

from __future__ import annotations

from ..model.status import WorkflowStatus
from ..state.turn import Turn
from . import gates
from .kernel import complete_stage, fail_unstarted, prune, release

S = WorkflowStatus


def cancel_remaining(turn: Turn, j: int) -> None:
    """A partial join started: prune its requisites that have not ended, and what only they needed.

    Upward, a requisite's own requisite that has not ended is pruned too once
    every stage after it is pruned (its work would reach nothing).
    """
    why = f"canceled by join {turn.spec(j).ref_id!r} (cancel_remaining)"
    stack = [r for r in turn.spec(j).requisites if not turn.run(r).status.is_complete]
    while stack:
        r = stack.pop()
        if turn.run(r).status.is_complete:
            continue
        prune(turn, r, why)
        for q in turn.spec(r).requisites:
            if not turn.run(q).status.is_complete and all(turn.run(c).pruned for c in turn.state.children[q]):
                stack.append(q)


def unreachable(turn: Turn, c: int) -> None:
    """A partial join too few requisites can still reach: it fails (with fail_workflow=False: SKIPPED)."""
    spec = turn.spec(c)
    counts = turn.counts(c)
    message = (
        f"stage {spec.ref_id!r}: its {spec.join_type.value} join needs {spec.join_threshold} of "
        f"{counts.requisites} requisites, and only {counts.arrived + counts.pending} can still arrive"
    )
    if not spec.fail_workflow:
        complete_stage(turn, c, S.SKIPPED, pruned=message)
        return
    fail_unstarted(turn, c, gates.failure("JoinError", message))


def merge_run(turn: Turn, i: int) -> None:
    """A MULTI_MERGE join starts its next run: one per arrival, each a generation of its own.

    The run sees the outputs of the requisite whose arrival it is over the
    others', its ref id as ``_merge_from`` and its number as ``_merge_index``.
    """
    run = turn.run(i)
    if run.fired == len(run.arrivals):  # a jump's target: a run for no arrival (the arrivals keep theirs)
        turn.update_stage(i, outputs={}, context_update={**run.context_update, "_merge_index": 0})
        return
    trigger = run.arrivals[run.fired]
    context = {**turn.run(trigger).outputs, "_merge_from": turn.spec(trigger).ref_id, "_merge_index": run.fired + 1}
    turn.update_stage(i, fired=run.fired + 1, outputs={}, context_update=context)


def merge_close(turn: Turn, i: int) -> None:
    """A MULTI_MERGE join between runs that no requisite can fire again ends for its downstream as its last run."""
    turn.update_stage(i, merging=False)
    release(turn, i)
