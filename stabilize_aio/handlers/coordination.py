"""Stages that coordinate: mutexes, deferred choices, milestones and cancel regions.

A ready stage with a :class:`~stabilize_aio.model.coordination.Coordination`
passes :func:`gate` before it starts (the kernel's ``start_stage`` asks):

* a **deferred choice** another stage of its group has won prunes it;
* a **milestone** not reached yet makes it wait, one passed skips it;
* a **mutex** held (or waited for by a stage that came first) makes it wait.

Waiting stages stay NOT_STARTED, listed in ``WorkflowRecord.waits`` in the
order they came; they hold no pool slot and nothing polls: after every message
of a turn that leaves stages waiting, :func:`settle` starts those that may go
now (a holder ended, a milestone was reached), first come first served.
"""

from __future__ import annotations

from ..messages.durable import CancelRegion, Granted, StartDeadline
from ..model.coordination import Coordination, rank
from ..model.records import LIVE
from ..model.status import WorkflowStatus
from ..state.commit import Claim
from ..state.turn import Turn
from .kernel import GOING, complete_stage, maybe_complete, open_run, prune, start_stage
from .undo import CLAIMED, HOLDS, drop_pending

S = WorkflowStatus


def gate(turn: Turn, i: int, c: Coordination) -> bool:
    """Whether ready stage ``i`` starts now; if not, it waits in ``waits`` or has ended (pruned, skipped)."""
    if c.choice is not None:
        winner = turn.record.chosen.get(c.choice)
        if winner is not None and winner != i:
            unwait(turn, i)
            prune(turn, i, f"deferred choice {c.choice!r}: {turn.spec(winner).ref_id!r} was chosen")
            return False
    if c.milestone >= 0:
        m = turn.run(c.milestone).status
        if m is not c.milestone_status:
            if rank(m) < rank(c.milestone_status):
                _wait(turn, i)
                return False
            unwait(turn, i)
            ref = turn.spec(c.milestone).ref_id
            complete_stage(turn, i, S.SKIPPED, note=f"milestone {ref!r} passed {c.milestone_status.value} ({m.value})")
            return False
    if c.mutex_key is not None:
        if c.mutex_scope == "global":  # through the store's claims: every run on the database
            run = turn.run(i)
            if run.claim != HOLDS:
                if not run.claim:
                    key = f"mutex:{c.mutex_key}"
                    turn.claim(Claim(key=key, stage=i, generation=run.generation))
                    turn.update_stage(i, claim=CLAIMED)
                    if key not in turn.record.claimed:
                        turn.update_workflow(claimed=(*turn.record.claimed, key))
                _wait(turn, i)
                return False
        elif _contended(turn, i, c.mutex_key):
            _wait(turn, i)
            return False
    unwait(turn, i)
    return True


def granted(turn: Turn, msg: Granted) -> None:
    """A claim came first: the waiting stage starts holding its key, or the buffered run is admitted."""
    turn.discard(msg.id)  # (delivered here and, on a shared database, maybe woken for too: no fence)
    record = turn.record
    if msg.stage < 0:
        if record.status is S.BUFFERED and msg.generation == record.epoch:
            admit(turn)
        return
    run = turn.run(msg.stage) if msg.stage < turn.size else None
    if run is None or run.claim != CLAIMED or run.generation != msg.generation or run.status is not S.NOT_STARTED:
        return  # stale: the stage ended or was reset meanwhile (its claim went with it)
    turn.update_stage(msg.stage, claim=HOLDS)
    start_stage(turn, msg.stage)  # (or it stays waiting: a paused run starts it at resume)
    maybe_complete(turn)


def admit(turn: Turn) -> None:
    """A buffered run got its slot: it starts (a restarted one starts the stages its restart reset)."""
    record = turn.record
    if record.start_deadline is not None:
        turn.drop(f"start_deadline:{record.epoch}")
    if not record.deferred and record.epoch == 0:
        open_run(turn)
        return
    from .verbs import start_reset  # noqa: PLC0415 (the verbs are built on this module)

    start_reset(turn, record.deferred)


def _contended(turn: Turn, i: int, key: str) -> bool:
    """Whether another stage of the run holds ``key`` (is live) or waits for it ahead of stage ``i``."""
    for k, run in turn.runs():
        if k != i and run.status in LIVE and _key(turn, k) == key:
            return True
    for k in turn.record.waits:
        if k == i:
            return False  # first come, first served: those behind it do not count
        if _key(turn, k) == key and _at_milestone(turn, k):
            return True  # (one still waiting for its milestone is not in the key's queue yet)
    return False


def _at_milestone(turn: Turn, k: int) -> bool:
    """Whether stage ``k`` has no milestone or its milestone is in the status it waits for."""
    c = turn.spec(k).coord
    return c is None or c.milestone < 0 or turn.run(c.milestone).status is c.milestone_status


def _key(turn: Turn, k: int) -> str | None:
    c = turn.spec(k).coord
    return None if c is None else c.mutex_key


def _wait(turn: Turn, i: int) -> None:
    waits = turn.record.waits
    if i not in waits:
        turn.update_workflow(waits=(*waits, i))


def unwait(turn: Turn, i: int) -> None:
    """Stage ``i`` no longer waits (it started, or ended while it waited)."""
    waits = turn.record.waits
    if i in waits:
        turn.update_workflow(waits=tuple(k for k in waits if k != i))


def settle(turn: Turn, *, ending: bool = False) -> bool:
    """Start the waiting stages that may go now, in the order they came.

    ``ending`` (the run has nothing else to do): a stage still waiting for a
    milestone that can no longer come is skipped. Returns whether the run may
    complete now (nothing started, nothing waits).
    """
    turn.holds += 1
    while True:
        for i in turn.record.waits:
            if turn.record.status is not S.RUNNING:
                break
            if turn.run(i).status is S.NOT_STARTED:
                start_stage(turn, i)
            else:
                unwait(turn, i)  # it ended meanwhile (an operator skipped it, a cancel)
        if not (ending and _strand(turn)):
            break  # (a stranded stage was skipped: what waited behind it may go now)
    turn.holds -= 1
    if not ending:
        maybe_complete(turn)
        return False
    return not (turn.active or turn.record.waits) and turn.record.status is S.RUNNING


def _strand(turn: Turn) -> bool:
    """Nothing runs and nothing can come: skip the stages waiting for a milestone not reached; any skipped?"""
    record = turn.record
    if turn.active or record.status is not S.RUNNING or any(turn.run(k).claim == CLAIMED for k in record.waits):
        return False  # (a stage waiting for a global mutex will run: its milestone may still come)
    skipped = False
    for i in record.waits:
        c = turn.spec(i).coord
        if c is not None and turn.run(i).status is S.NOT_STARTED and not _at_milestone(turn, i) and not turn.active:
            unwait(turn, i)  # nothing runs: its milestone cannot be reached any more
            ref = turn.spec(c.milestone).ref_id
            complete_stage(turn, i, S.SKIPPED, note=f"milestone {ref!r} never reached {c.milestone_status.value}")
            skipped = True
    return skipped


def choose(turn: Turn, i: int, group: str) -> None:
    """Stage ``i`` commits first in its deferred choice group: it wins, the others are pruned (calls cancelled)."""
    record = turn.record
    if group in record.chosen:
        return
    turn.update_workflow(chosen={**record.chosen, group: i})
    why = f"deferred choice {group!r}: {turn.spec(i).ref_id!r} was chosen"
    for k in range(turn.size):
        c = turn.spec(k).coord
        if k != i and c is not None and c.choice == group and not turn.run(k).status.is_complete:
            unwait(turn, k)
            prune(turn, k, why)


def cancel_region(turn: Turn, msg: CancelRegion) -> None:
    """Cancel every unfinished stage of the region for real: CANCELED, and the run follows its failure rules."""
    turn.consume(msg.id)
    if turn.record.status not in GOING:
        return  # finished, or not started (BUFFERED: refused at the door)
    turn.holds += 1
    for k in range(turn.size):
        c = turn.spec(k).coord
        run = turn.run(k)
        if c is None or c.region != msg.region or run.status.is_complete or turn.record.status.is_complete:
            continue
        unwait(turn, k)
        if run.status in LIVE:
            drop_pending(turn, k, run)
        complete_stage(turn, k, S.CANCELED, note=f"cancel region {msg.region!r}")
    turn.holds -= 1
    maybe_complete(turn)


def buffer(turn: Turn) -> None:
    """The run waits BUFFERED for a slot of its admission key (a claim, granted in insertion order)."""
    record = turn.record
    admission = record.admission
    assert admission is not None
    key = f"admit:{admission.key}"
    turn.set_workflow(S.BUFFERED, claimed=(key,))
    turn.record_event(
        "workflow.buffered", f"workflow.buffered:{record.epoch}", status=S.BUFFERED,
        message=f"waiting for a slot of {admission.key!r} (max_concurrent={admission.max_concurrent})",
    )  # fmt: skip
    limit, purge = admission.max_concurrent, not admission.keep_waiting
    turn.claim(Claim(key=key, stage=-1, generation=record.epoch, limit=limit, purge=purge))
    if record.start_deadline is not None:  # from its submit (a restart: from the restart)
        deadline = (record.created_at if record.epoch == 0 else turn.now) + record.start_deadline
        turn.emit(StartDeadline(id=f"start_deadline:{record.epoch}", deliver_at=deadline))
