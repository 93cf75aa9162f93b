"""Multi-instance stages: the stage kind that fans a stage out into instances (model/instances.py).

When the stage starts, its instances are made as stages of their own
(``<ref>[k]``, appended to the run, each its own row), each with the stage's
tasks and, in its context, ``instance_index`` and (``over=``) its element under
``item_key``. At most ``max_parallel`` run at a time; the stage keeps O(1)
counters (``StageRun.fanned``). It succeeds when every instance has ended (or
``complete_after`` have succeeded) with outputs ``{"instances": [each
instance's outputs in order, or None]}``; a failed instance fails it by its
flags. Instances it no longer needs end SKIPPED (pruned): those not started,
and with ``cancel_remaining`` the running ones, whose calls are cancelled.
"""

from __future__ import annotations

import msgspec

from ..model.instances import InstanceCounts
from ..model.records import LIVE, StageSpec
from ..model.status import WorkflowStatus
from ..model.values import ErrorInfo
from ..state.turn import Turn
from .gates import failure
from .kernel import complete_stage, prune, start_stage
from .undo import cancel_live

S = WorkflowStatus


class Instances:
    """The stage kind of a multi-instance stage (its work: its instances)."""

    __slots__ = ()

    name = "instances"

    def begin(self, turn: Turn, i: int) -> None:
        spec = turn.spec(i)
        mi = spec.instances
        assert mi is not None
        items: list[object] | None = None
        if mi.over is not None:
            value = turn.stage_context(i).get(mi.over)
            if not isinstance(value, list):
                message = f"stage {spec.ref_id!r}: instances over {mi.over!r} needs a list in its context, got "
                complete_stage(turn, i, spec.failure_status(), failure("InstancesError", message + repr(value)[:200]))
                return
            items = value
        n = len(items) if items is not None else (mi.count or 0)
        if mi.complete_after is not None and mi.complete_after > n:
            message = f"stage {spec.ref_id!r}: complete_after {mi.complete_after} cannot be reached with {n} instances"
            complete_stage(turn, i, spec.failure_status(), failure("InstancesError", message))
            return
        if n == 0:
            turn.update_stage(i, outputs={**turn.run(i).outputs, "instances": []})
            complete_stage(turn, i, S.SUCCEEDED)
            return
        first = turn.size
        generation = turn.run(i).generation  # (a rerun of the stage: its instances' keys are new)
        for k in range(n):
            context: dict[str, object] = {"instance_index": k}
            if items is not None:
                context[mi.item_key] = items[k]
            turn.add_stage(
                StageSpec(
                    ref_id=f"{spec.ref_id}[{k}]",
                    index=first + k,
                    name=f"{spec.name}[{k}]",
                    tasks=spec.tasks,
                    context=context,
                    requisites=(),
                    continue_on_failure=spec.continue_on_failure,
                    fail_workflow=spec.fail_workflow,
                    complete_other_branches_then_fail=spec.complete_other_branches_then_fail,
                    timeout=spec.timeout,
                    parent=i,
                    role="instance",
                ),
                generation=generation,
            )
        turn.update_stage(i, fanned=InstanceCounts(first=first, n=n))
        _fill(turn, i)


#: The one multi-instance kind (kinds hold no state).
INSTANCES = Instances()


def _fill(turn: Turn, i: int) -> None:
    """Start instances in index order up to ``max_parallel`` running."""
    counts = turn.run(i).fanned
    mi = turn.spec(i).instances
    assert counts is not None
    assert mi is not None
    started = counts.started
    while started < counts.n and (mi.max_parallel is None or started - counts.ended < mi.max_parallel):
        started += 1
    if started == counts.started:
        return
    turn.update_stage(i, fanned=msgspec.structs.replace(counts, started=started))
    for k in range(counts.started, started):
        start_stage(turn, counts.first + k)


def stop(turn: Turn, p: int) -> None:
    """Stage ``p`` ends (a deadline, a prune, a reset) before its instances: they are cancelled, and count no more."""
    counts = turn.run(p).fanned
    assert counts is not None
    turn.update_stage(p, fanned=msgspec.structs.replace(counts, closed=True))
    for k in range(counts.first, counts.first + counts.n):
        cancel_live(turn, k)


def ended(turn: Turn, s: int, status: WorkflowStatus) -> None:
    """Instance ``s`` ended: its stage counts it, starts the next, or ends (done, enough, or failed)."""
    p = turn.spec(s).parent
    assert p is not None
    run = turn.run(p)
    counts = run.fanned
    if counts is None or not counts.first <= s < counts.first + counts.n:
        return  # an instance of an earlier run of the stage (reset since): nothing to count
    counts = msgspec.structs.replace(
        counts, ended=counts.ended + 1, succeeded=counts.succeeded + (status is S.SUCCEEDED)
    )
    spec = turn.spec(p)
    changes: dict[str, object] = {"fanned": counts}
    if status is S.FAILED_CONTINUE and not run.failed_continue:  # the stage will end FAILED_CONTINUE: say why
        changes.update(failed_continue=True, error=_failed(turn, spec.ref_id, s, status))
    turn.update_stage(p, **changes)
    if run.status is not S.RUNNING or counts.closed:
        return  # the stage has ended (or is ending): the instance's end changes nothing
    mi = spec.instances
    assert mi is not None
    if mi.complete_after is not None and counts.succeeded >= mi.complete_after:
        _close(turn, p, S.SUCCEEDED, f"not needed: {spec.ref_id!r} had {mi.complete_after} instances succeed")
    elif not status.can_continue:
        error = _failed(turn, spec.ref_id, s, status)
        _close(turn, p, spec.failure_status(), f"not needed: {spec.ref_id!r} failed", error=error, cancel=True)
    elif counts.ended == counts.n:
        _close(turn, p, S.FAILED_CONTINUE if turn.run(p).failed_continue else S.SUCCEEDED, "")
    else:
        _fill(turn, p)


def _failed(turn: Turn, ref_id: str, s: int, status: WorkflowStatus) -> ErrorInfo:
    """The error of a stage one of whose instances failed (the instance's own error in it)."""
    cause = turn.run(s).error
    message = f"stage {ref_id!r}: its instance {turn.spec(s).ref_id!r} ended {status.value}"
    return failure("InstanceFailed", f"{message}: {cause.message}" if cause else message)


def _close(
    turn: Turn, p: int, status: WorkflowStatus, why: str, *, error: ErrorInfo | None = None, cancel: bool | None = None
) -> None:
    """End stage ``p`` with ``status``: its outputs gathered, the instances it no longer needs pruned."""
    run = turn.run(p)
    counts = run.fanned
    mi = turn.spec(p).instances
    assert counts is not None
    assert mi is not None
    members = range(counts.first, counts.first + counts.n)
    gathered = [dict(turn.run(k).outputs) if turn.run(k).status.can_continue else None for k in members]
    turn.update_stage(
        p, outputs={**run.outputs, "instances": gathered}, fanned=msgspec.structs.replace(counts, closed=True)
    )
    cancel = mi.cancel_remaining if cancel is None else cancel
    for k in members:
        state = turn.run(k).status
        if state is S.NOT_STARTED or (cancel and state in LIVE):
            prune(turn, k, why)
    complete_stage(turn, p, status, error)
