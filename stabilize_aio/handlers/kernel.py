"""The kernel every message family builds on: start a run, start, end and prune stages, finish.

Two plug-in points, where the next issues add kinds without touching the rest:

* **joins**: at each end of a requisite (an *arrival*) the stage's join policy
  (``dag/joins.py``, :func:`~stabilize_aio.dag.joins.decide`) decides from
  counts the state keeps in O(1): start, wait, prune (every edge dead) or, for
  a partial join that can no longer be reached, fail or skip;
* **stage kinds**: every stage starts the same way (RUNNING, its stage timer,
  ``stage.started``), then its kind (``kind_of(spec)``) begins its work: its
  tasks one after another (``TaskStage``), or a loop's control
  (``handlers/loops.py``); multi-instance and sub-workflow stages are further kinds.

A stage *pruned* by a pattern (an OR split not taking it, a join's
``cancel_remaining``, a forward jump) ends SKIPPED with ``pruned`` set: its
edges are dead, so its downstream is pruned in turn unless another live edge
leads there. Pruning never halts the run.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..dag.joins import Decision, and_join, decide
from ..messages.durable import RunTask, StageTimeout, WorkflowTimeout
from ..model.records import LIVE, StageRun, StageSpec
from ..model.routing import JoinType
from ..model.status import WorkflowStatus
from ..model.values import ErrorInfo
from ..state.turn import Turn
from ..state.workflow import arrived
from . import gates
from .undo import cancel_stages, drop_pending, release_all, release_claim, reset, stop_waiting

S = WorkflowStatus
#: The ends of a stage that run its on_failure stages first.
FAILURES = frozenset({S.TERMINAL, S.STOPPED, S.FAILED_CONTINUE})
#: A run that is going: RUNNING, or PAUSED (results are recorded, nothing new is dispatched or started).
GOING = frozenset({S.RUNNING, S.PAUSED})
_MULTI_MERGE = JoinType.MULTI_MERGE
_AND = JoinType.AND


def run_key(turn: Turn, kind: str) -> str:
    """The key of a workflow-level event: its kind and the run's epoch (a restart in place starts a new one)."""
    return f"{kind}:{turn.record.epoch}"


def deadline_id(turn: Turn) -> str:
    """The id of the run's deadline row (``Workflow(timeout=...)``) in its current epoch."""
    return f"deadline:{turn.record.epoch}"


def begin(turn: Turn) -> None:
    """Start a just-submitted run: RUNNING, every root stage started (committed with the insert).

    A run under an admission limit first waits BUFFERED for a slot (its claim; ``admit``).
    """
    if turn.record.admission is not None:
        from .coordination import buffer  # noqa: PLC0415 (built on this kernel: it imports the kernel)

        buffer(turn)
        return
    open_run(turn)


def open_run(turn: Turn) -> None:
    """The run starts now: RUNNING, its deadline armed, every root stage started."""
    turn.set_workflow(S.RUNNING, started_at=turn.now)
    turn.record_event("workflow.started", f"workflow.started:{turn.record.epoch}", status=S.RUNNING)
    if turn.record.timeout is not None:
        arm_deadline(turn)
    turn.holds += 1
    for i, spec in enumerate(turn.state.specs):
        if not spec.requisites and spec.parent is None:  # (synthetic stages start with their stage)
            start_stage(turn, i)  # (a root an earlier root's join pruned is not started: start_stage checks)
    turn.holds -= 1
    maybe_complete(turn)


def arm_deadline(turn: Turn) -> None:
    """Write the run's deadline row if it has a timeout (from now: its durable start, or its restart)."""
    timeout = turn.record.timeout
    if timeout is not None:
        turn.emit(WorkflowTimeout(id=deadline_id(turn), deliver_at=turn.now + timeout))


def start_stage(turn: Turn, i: int) -> None:
    """Start stage ``i``: its stage timer, its first task (or, without tasks, its success).

    A stage with ``enabled`` is first asked its condition over its context: false
    skips it (SKIPPED, which lets its downstream go on); a condition that cannot
    be evaluated fails it with the condition's error.
    """
    record = turn.record
    if record.status is not S.RUNNING:
        if record.status is S.PAUSED and i not in record.deferred:
            turn.update_workflow(deferred=(*record.deferred, i))  # it starts at resume
        return  # (or an earlier stage of this turn ended the run: a condition or reducer that failed it)
    spec = turn.spec(i)
    if record.halting and spec.role not in ("on_failure", "compensate"):
        return  # on_failure stages or compensations run before the run ends: nothing else starts
    if turn.run(i).status is not S.NOT_STARTED:
        if not turn.run(i).merging:
            return  # started or ended already in this turn (a join's cancel_remaining pruned it, say)
        reset(turn, i, merge_run=True)
    if spec.coord is not None:
        from .coordination import gate  # noqa: PLC0415 (built on this kernel: it imports the kernel)

        if not gate(turn, i, spec.coord):
            return  # it waits (a mutex, a milestone), or it ended (a deferred choice lost, a milestone passed)
    if spec.join_type is _MULTI_MERGE:
        from .routing import merge_run  # noqa: PLC0415 (built on this kernel: it imports the kernel)

        merge_run(turn, i)
    if spec.output_reducers:
        failed = gates.reduced(turn, i, spec)
        if failed is not None:
            fail_unstarted(turn, i, failed)
            return
    if spec.enabled is not None:
        verdict = gates.enabled(turn, i, spec.enabled)
        if verdict is not True:
            if verdict is False:
                complete_stage(turn, i, S.SKIPPED)
            else:
                fail_unstarted(turn, i, verdict)
            return
    run = turn.run(i)
    timer_id = None
    if spec.stage_timeout is not None:
        timer_id = f"t{i}.{run.generation}"
        turn.emit(
            StageTimeout(id=timer_id, stage=i, generation=run.generation, deliver_at=turn.now + spec.stage_timeout)
        )
    turn.set_stage(i, S.RUNNING, started_at=turn.now, task_index=0, attempt=1, polls=0, timer_id=timer_id)
    turn.record_event("stage.started", f"stage.started:{i}:{run.generation}", stage=i, status=S.RUNNING)
    if spec.cancel_remaining:
        from .routing import cancel_remaining  # noqa: PLC0415 (built on this kernel: it imports the kernel)

        cancel_remaining(turn, i)
        now = turn.run(i)
        if now.status is not S.RUNNING or now.generation != run.generation or turn.record.status is not S.RUNNING:
            return  # what it pruned reached it (a join it feeds pruned it, or a halt): its work never begins
    kind_of(spec).begin(turn, i)


class StageKind(Protocol):
    """What a stage of one kind does once it has started (its work; its end goes through :func:`complete_stage`)."""

    @property
    def name(self) -> str: ...

    def begin(self, turn: Turn, i: int) -> None:
        """Begin stage ``i``'s work in this turn (it is RUNNING already)."""
        ...


class TaskStage:
    """A stage that runs its tasks one after another; one without tasks succeeds at once (a join point)."""

    __slots__ = ()

    name = "tasks"

    def begin(self, turn: Turn, i: int) -> None:
        spec = turn.spec(i)
        if spec.before:  # its synthetic before stages first, one after another (handlers/synthetic.py)
            start_stage(turn, spec.before[0])
        elif spec.tasks:
            emit_run(turn, i, deliver_at=None)
        else:
            tasks_done(turn, i)


def run_tasks(turn: Turn, i: int) -> None:
    """Stage ``i`` runs its tasks (its first task now), or, without tasks, is done with them at once."""
    if turn.spec(i).tasks:
        emit_run(turn, i, deliver_at=None)
    else:
        tasks_done(turn, i)


def tasks_done(turn: Turn, i: int) -> None:
    """Stage ``i``'s last task succeeded: its after stages run, or it succeeds (FAILED_CONTINUE if one failed so)."""
    after = turn.spec(i).after
    if after:
        start_stage(turn, after[0])
    else:
        complete_stage(turn, i, S.FAILED_CONTINUE if turn.run(i).failed_continue else S.SUCCEEDED)


#: The one task-stage kind (kinds hold no state: one instance serves every stage).
TASKS = TaskStage()


def kind_of(spec: StageSpec) -> StageKind:
    """The kind of a stage (the plug-in point for the stage kinds a stage declares)."""
    if spec.loop is not None:
        from .loops import LOOP  # noqa: PLC0415 (loops are built on this kernel: it imports the kernel)

        return LOOP
    if spec.instances is not None:
        from .instances import INSTANCES  # noqa: PLC0415 (built on this kernel: it imports the kernel)

        return INSTANCES
    if spec.child is not None:
        from .subflows import SUBWORKFLOW  # noqa: PLC0415 (built on this kernel: it imports the kernel)

        return SUBWORKFLOW
    return TASKS


def fail_unstarted(turn: Turn, i: int, error: ErrorInfo) -> None:
    """Fail a stage that could not start (a condition, reducer or join): RUNNING, then its failure status."""
    turn.set_stage(i, S.RUNNING, started_at=turn.now)
    turn.record_event("stage.started", f"stage.started:{i}:{turn.run(i).generation}", stage=i, status=S.RUNNING)
    complete_stage(turn, i, turn.spec(i).failure_status(), error)


def emit_run(turn: Turn, i: int, *, deliver_at: float | None) -> None:
    """Emit the RunTask of stage ``i``'s current task, attempt and poll (dispatched now or at ``deliver_at``)."""
    run = turn.run(i)
    spec = turn.spec(i)
    rid = f"r{i}.{run.generation}.{run.task_index}.{run.attempt}.{run.polls}"
    turn.emit(
        RunTask(
            id=rid,
            stage=i,
            task=run.task_index,
            task_type=spec.tasks[run.task_index],
            generation=run.generation,
            attempt=run.attempt,
            deliver_at=deliver_at,
        )
    )
    turn.update_stage(i, run_id=rid)


def call_key(i: int, run: StageRun) -> str:
    """The key suffix of one task call's events: stage, generation, task, attempt, poll (its RunTask's id)."""
    return f"{i}:{run.generation}:{run.task_index}:{run.attempt}:{run.polls}"


def current(turn: Turn, run_msg: RunTask) -> StageRun | None:
    """The stage run a RunTask belongs to, or None if the message is stale."""
    if turn.record.status not in GOING:
        return None
    run = turn.run(run_msg.stage)
    if run.status is not S.RUNNING or run.run_id != run_msg.id:
        return None
    return run


def complete_stage(
    turn: Turn,
    i: int,
    status: WorkflowStatus,
    error: ErrorInfo | None = None,
    *,
    pruned: str | None = None,
    dropped: tuple[int, ...] | None = None,
    note: str | None = None,
) -> None:
    """End stage ``i`` with ``status``; decide its children's joins; halt or complete the run.

    ``pruned`` (why) ends it SKIPPED by a pattern; ``dropped`` names children
    whose edge from it is dead (a forward jump); ``note`` says why it was skipped
    otherwise (an operator, a milestone). An OR split's conditions are asked
    here, over its context and outputs, before it ends.
    """
    run = turn.run(i)
    if run.status is S.SUSPENDED:  # a deadline on a signal wait: the stage resumes to end (the table's way)
        run = turn.set_stage(i, S.RUNNING)
    spec = turn.spec(i)
    if spec.before or spec.after or spec.on_failure:
        from . import synthetic  # noqa: PLC0415 (built on this kernel: it imports the kernel)

        if spec.on_failure and status in FAILURES and run.held is None and pruned is None:
            synthetic.fail_over(turn, i, status, error)  # its on_failure stages run first
            return
        synthetic.cancel_children(turn, i)
    if run.fanned is not None and not run.fanned.closed:  # a multi-instance stage ends before its instances
        from .instances import stop  # noqa: PLC0415 (built on this kernel: it imports the kernel)

        stop(turn, i)
    if spec.split_conditions and status is S.SUCCEEDED and dropped is None:
        taken = gates.split_taken(turn, i, spec)
        if isinstance(taken, ErrorInfo):  # a condition could not be evaluated: the split stage fails
            complete_stage(turn, i, spec.failure_status(), taken)
            return
        dropped = tuple(c for c in turn.state.children[i] if c not in taken)
    if run.timer_id is not None:
        turn.consume(run.timer_id)
    changes: dict[str, Any] = {"ended_at": turn.now, "run_id": None, "timer_id": None, "parked": False}
    if run.wait_id is not None:  # a signal wait with a timeout: its row goes
        turn.consume(run.wait_id)
        changes["wait_id"] = None
    if run.claim:  # its global mutex: the next claim is granted after this commit
        release_claim(turn, i, run)
    if error is not None:
        changes["error"] = error
    if pruned is not None:
        changes["pruned"] = True
    if dropped:
        changes["dropped"] = dropped
    if spec.compensation is not None and status is S.SUCCEEDED:
        changes["done_seq"] = turn.next_done()  # compensations run in reverse order of this
    more = False
    if spec.join_type is _MULTI_MERGE and status.can_continue and pruned is None:
        counts = turn.counts(i)
        more = counts.merges > counts.fired
        if more or counts.pending:
            changes["merging"] = True  # more runs may come: its downstream waits (its edges stay open)
    turn.set_stage(i, status, **changes)
    if status is S.SKIPPED:
        turn.record_event(
            "stage.skipped", f"stage.skipped:{i}:{run.generation}", stage=i, status=status, message=pruned or note
        )
    else:
        turn.record_event("stage.completed", f"stage.completed:{i}:{run.generation}", stage=i, status=status)
    if spec.parent is not None:
        from . import synthetic  # noqa: PLC0415 (built on this kernel: it imports the kernel)

        synthetic.ended(turn, i, status)  # a synthetic stage's end is its stage's business
        return
    if status is S.TERMINAL:
        halt(turn, S.TERMINAL)
        return
    if "merging" in changes:  # a MULTI_MERGE between runs has not ended for its downstream
        if more:  # the next run, for an arrival that came during this one
            start_stage(turn, i)
        maybe_complete(turn)
        return
    release(turn, i)


def release(turn: Turn, i: int) -> None:
    """Stage ``i`` ended for its downstream: each child not started decides; then the run may complete.

    Every MULTI_MERGE child notes the arrival first, before any child acts (one
    child's start may end another requisite of it in the same turn).
    """
    state = turn.state
    for c in () if state.merges is None else state.merges[i]:
        child = turn.run(c)
        if arrived(turn.run(i), c) and (child.merging or not child.status.is_complete):
            turn.update_stage(c, arrivals=(*child.arrivals, i))  # its run for this arrival may have to wait
    turn.holds += 1
    for c in state.children[i]:
        child = turn.run(c)
        if child.status is S.NOT_STARTED or child.merging:
            arrive(turn, c)
    turn.holds -= 1
    maybe_complete(turn)


def arrive(turn: Turn, c: int) -> None:
    """One of stage ``c``'s requisites ended: its join policy decides what ``c`` does now."""
    record = turn.record
    if record.status not in GOING or record.halting:
        return  # an earlier stage of this turn halted the run: nothing more is decided
    spec = turn.spec(c)
    if spec.join_type is _AND:  # the common join, decided without building its counts
        decision = and_join(len(spec.requisites), turn.outstanding(c), turn.dead(c))
    else:
        decision = decide(spec, turn.counts(c))
    if decision is Decision.WAIT:
        return
    if decision is Decision.START:
        start_stage(turn, c)
    elif decision is Decision.PRUNE:
        prune(turn, c, "every stage before it was pruned")
    else:
        from .routing import merge_close, unreachable  # noqa: PLC0415 (built on this kernel: it imports the kernel)

        (merge_close if decision is Decision.CLOSE else unreachable)(turn, c)


def prune(turn: Turn, i: int, why: str) -> None:
    """End stage ``i`` SKIPPED by a pattern (a running call is cancelled for real); its downstream follows."""
    run = turn.run(i)
    record = turn.record
    if run.status.is_complete or record.status not in GOING:
        return
    if record.deferred and i in record.deferred:
        return  # it starts at resume (it was decided ready: a jump's target, say); its gates decide then
    if run.status in LIVE:
        drop_pending(turn, i, run)
    complete_stage(turn, i, S.SKIPPED, pruned=why)


def maybe_complete(turn: Turn) -> None:
    """Complete the workflow once no stage runs and none is about to start.

    A stage about to start (a root the start turn has not reached, a child
    later in the loop over a stage's children) starts in this same turn: while
    such a loop is open (``turn.holds``) the run does not complete, so a stage
    that ended at once (no task, a false condition) cannot end it first.
    """
    if turn.active or turn.holds or turn.record.status is not S.RUNNING:
        return
    if turn.state.coordinated and turn.record.waits:  # ready stages wait for a mutex or a milestone: go now?
        from .coordination import settle  # noqa: PLC0415 (built on this kernel: it imports the kernel)

        if not settle(turn, ending=True):
            return  # something runs again, or a stage waits for a key another run holds
    own = [(i, run) for i, run in turn.runs() if turn.spec(i).parent is None]  # (synthetic: their stage's business)
    statuses = [run.status for _, run in own]
    if S.TERMINAL in statuses:
        final = S.TERMINAL
    elif S.STOPPED in statuses:
        fail = any(run.status is S.STOPPED and turn.spec(i).complete_other_branches_then_fail for i, run in own)
        final = S.TERMINAL if fail else S.SUCCEEDED
    elif S.CANCELED in statuses:
        final = S.CANCELED
    else:
        final = S.SUCCEEDED
    finish(turn, final)


def halt(turn: Turn, status: WorkflowStatus, *, include_not_started: bool = False, **changes: Any) -> None:
    """End the run with ``status`` (TERMINAL, CANCELED): live stages cancelled, compensations first if owed."""
    from . import compensation  # noqa: PLC0415 (built on this kernel: it imports the kernel)

    unpause(turn)
    order = compensation.owed(turn) if turn.record.compensation is None else []
    cancel_stages(turn, include_not_started=include_not_started)
    stop_waiting(turn)
    if order:
        compensation.begin(turn, order, status, **changes)
    else:
        finish(turn, status, **changes)


def finish(turn: Turn, status: WorkflowStatus, **changes: Any) -> None:
    """End the run with ``status`` in this turn (its waiters are woken after the commit; a parent is told)."""
    if turn.record.parent is not None:
        from .subflows import tell_parent  # noqa: PLC0415 (built on this kernel: it imports the kernel)

        tell_parent(turn, status)
    record = turn.record
    if record.halting:
        changes.setdefault("halting", False)  # (it has ended: nothing is winding down any more)
    if record.waits:
        changes.setdefault("waits", ())
    if record.claimed:
        release_all(turn)
        changes.setdefault("claimed", ())
    if record.timeout is not None:
        turn.drop(deadline_id(turn))  # its deadline row, if it is still there (or written in this very turn)
    if record.status is S.PAUSED:
        unpause(turn)
    turn.set_workflow(status, ended_at=turn.now, **changes)
    turn.record_event("workflow.completed", f"workflow.completed:{record.epoch}", status=status)
    turn.finish()


def unpause(turn: Turn) -> None:
    """A PAUSED run that ends (a deadline, a cancel, a failure) passes through RUNNING within the turn."""
    if turn.record.status is S.PAUSED:
        turn.set_workflow(S.RUNNING, pause_reason=None, deferred=())
