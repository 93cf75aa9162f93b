"""WorkflowActor and Dispatcher: one writer per workflow, batched turns, passivation.

The dispatcher routes every message by workflow id to that workflow's actor,
activating it (loading its state once) if needed. An idle actor drains its
mailbox up to a bound, folds the messages into one
:class:`~stabilize_aio._state.Turn` and queues it on the store's group writer
(:meth:`~stabilize_aio.store.Store.enqueue`); while it commits, new messages
wait in the mailbox. When the group commits, the writer reports back and the
actor applies the turn to its in-memory state and only then acts: RunTasks to
the pools, delayed rows to the timer service, cancellations to running calls,
wake-ups to waiters; then it folds whatever arrived meanwhile into its next turn.
No task waits per turn: turns run in the task that delivered the message (a
pool worker handing in a result, the timer service) or in the writer that
committed the previous turn. An actor with an empty mailbox, no turn committing
and nothing in flight leaves memory.

Nothing ever waits to enter a mailbox (DESIGN rule 9): outside input per
workflow is bounded by construction (one start row, one idempotent cancel row),
task results are bounded by the pools' bulkheads, and an actor's own follow-ups
are folded into its turn. So no cycle of bounded queues can deadlock.

Containment (docs/architecture.md, rule 10): a handler that raises, an illegal
status change, an undecodable row, a write the database refuses for its data
(:class:`~stabilize_aio.DataError`), or a turn that keeps failing its fence
ends *that* workflow TERMINAL (an in-memory :class:`FailWorkflow` turn) with a
``kind="engine"`` error, an event and an ERROR log line; the engine goes on.
Only a failure of the database itself stops the engine.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from types import MappingProxyType
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import msgspec

from .. import _faults
from .._errors import ConcurrencyError, DataError, LeaseLostError
from ..handlers import rules as _handlers
from ..messages.durable import CancelWorkflow, Durable, RunTask, SignalStage, StageTimeout, StartWorkflow
from ..messages.memory import FailWorkflow, Message, ParkTask, TaskDone, Undecodable
from ..model.values import ErrorInfo, QuarantineRow
from ..model.views import StageView
from ..pool.pool import Job, TaskPool
from ..state.commit import Transition
from ..state.turn import Turn
from ..state.workflow import WorkflowState

if TYPE_CHECKING:
    from ..store import Store


log = logging.getLogger("stabilize_aio.actor")

#: The message classes that are outbox rows: a second delivery of one (same id) is dropped.
_DURABLE = (StartWorkflow, RunTask, StageTimeout, CancelWorkflow, SignalStage)

#: How many ids of rows consumed by committed turns an actor remembers to drop late duplicates.
_RECENT = 256

#: Turns of one workflow refused by their fence in a row (after reloading) before it is failed.
_FENCE_FAILURES = 3


class MailboxStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """The dispatcher's view of its actors."""

    live_actors: int
    running_actors: int
    queued_messages: int
    activations: int
    passivations: int
    turns: int
    messages: int
    reloads: int
    duplicates: int
    failed: int


class WorkflowActor:
    """The single writer of one workflow while it is live.

    An actor is a mailbox plus a state machine, not a coroutine of its own: its
    turns run in the task that delivered the message which found it idle (a pool
    worker, the timer service, the group writer that committed its last turn),
    and it never has more than one turn committing. That is what keeps a stage
    to one task crossing (the pool worker's) instead of four.
    """

    __slots__ = (
        "committing",
        "dispatched",
        "failures",
        "ids",
        "inflight",
        "loading",
        "loads",
        "mailbox",
        "recent",
        "revalidate",
        "state",
        "workflow_id",
    )

    def __init__(self, workflow_id: str, state: WorkflowState | None) -> None:
        self.workflow_id = workflow_id
        self.state = state
        self.mailbox: deque[Message] = deque()
        #: RunTask ids whose call is running in a pool (passivation waits for these).
        self.inflight: set[str] = set()
        #: RunTask ids handed to a pool whose row is not consumed yet: never dispatched twice,
        #: even when a redelivery overtakes the call's own result in the mailbox.
        self.dispatched: set[str] = set()
        #: The messages of the turn being committed (None when no turn is committing).
        self.committing: list[Message] | None = None
        self.loading = False  # its state is being read from the store
        self.failures = 0  # turns refused by their fence in a row
        self.loads = 0
        #: Ids of the durable messages in the mailbox or in the committing turn (duplicates are dropped).
        self.ids: set[str] = set()
        #: Ids of rows consumed or discarded by its committed turns, newest last (late duplicates are dropped).
        self.recent: dict[str, None] = {}
        #: After a refused fence: the next load also drops mailbox rows the store no longer has.
        self.revalidate = False

    @property
    def busy(self) -> bool:
        """Whether a turn of it is committing or its state is loading (no other turn may start)."""
        return self.committing is not None or self.loading

    def __repr__(self) -> str:
        status = self.state.record.status if self.state else "unloaded"
        return f"<WorkflowActor {self.workflow_id} {status} mailbox={len(self.mailbox)} inflight={len(self.inflight)}>"


class Dispatcher:
    """Routes messages to actors, runs their turns, and passivates idle ones."""

    def __init__(
        self,
        *,
        store: Store,
        tg: anyio.abc.TaskGroup,
        pools: dict[str, TaskPool],
        schedule: Callable[[str, Durable], None],
        on_finished: Callable[[WorkflowState], None],
        owns: Callable[[str], bool] = lambda workflow_id: True,
        clock: Callable[[], float] = time.time,
        batch: int = 256,
    ) -> None:
        self._store = store
        self._tg = tg
        self._pools = pools
        self._schedule = schedule
        self._on_finished = on_finished
        self._owns = owns
        self._clock = clock
        self._batch = batch
        self.actors: dict[str, WorkflowActor] = {}
        self.activations = self.passivations = self.turns = self.messages = self.reloads = 0
        self.duplicates = 0  # durable messages dropped by id before they were applied
        self.failed = 0  # workflows ended TERMINAL by containment
        self._running = 0  # actors with a turn committing or their state loading
        self._quiet: anyio.Event | None = None  # made only while someone waits for quiet
        self.accept_dispatch = True

    def __repr__(self) -> str:
        return f"<Dispatcher actors={len(self.actors)} running={self._running}>"

    # routing ---------------------------------------------------------------
    def deliver(self, workflow_id: str, message: Message, *, state: WorkflowState | None = None) -> None:
        """Put a message in its workflow's mailbox and run a turn if the actor is idle (never waits).

        A message for a workflow whose shard this process does not own is dropped:
        its owner has the row and will deliver it.
        """
        if not self._owns(workflow_id):
            return
        actor = self._actor(workflow_id, state)
        if isinstance(message, _DURABLE):
            mid = message.id
            if mid in actor.ids or mid in actor.recent:
                self.duplicates += 1
                return  # a second delivery of a row already in hand or already consumed
            actor.ids.add(mid)
        actor.mailbox.append(message)
        if not actor.busy:
            self._step(actor)

    def adopt(self, state: WorkflowState, t: Transition) -> None:
        """Take a workflow whose first transition was committed by submit, and act on it."""
        actor = self._actor(state.record.id, state)
        self._after_commit(actor, state, t)
        if not actor.busy:
            self._step(actor)  # e.g. a ParkTask for a task type this engine lacks; else it passivates

    def _actor(self, workflow_id: str, state: WorkflowState | None) -> WorkflowActor:
        """The workflow's actor, activated if needed; a known state is handed to one that has none yet."""
        actor = self.actors.get(workflow_id)
        if actor is None:
            actor = self.actors[workflow_id] = WorkflowActor(workflow_id, state)
            self.activations += 1
        elif actor.state is None and state is not None and not actor.loading:
            actor.state = state
        return actor

    def drop(self, lost: Callable[[str], bool]) -> None:
        """Forget the actors of workflows this process no longer owns, and cancel their calls.

        Their rows stay in the store; the new owner redelivers them. A turn of theirs
        that is committing now is refused by the store's lease fence (and if it
        committed first, nothing acts on it here).
        """
        for workflow_id in [w for w in self.actors if lost(w)]:
            actor = self.actors.pop(workflow_id)
            actor.mailbox.clear()
            actor.ids.clear()
            for run_id in actor.inflight:
                self._cancel_call(workflow_id, run_id)
            actor.inflight.clear()
            actor.dispatched.clear()
            self.passivations += 1

    def _cancel_call(self, workflow_id: str, run_id: str) -> None:
        """Cancel a running or queued call in whichever pool holds it (it reports nothing)."""
        for pool in self._pools.values():
            if pool.cancel((workflow_id, run_id)):
                return

    def _busy(self) -> None:
        self._running += 1

    def _idle(self) -> None:
        self._running -= 1
        if self._running == 0 and self._quiet is not None:
            self._quiet.set()
            self._quiet = None

    def task_finished(self, job: Job, done: TaskDone | None) -> None:
        """A pool's report: a result enters the mailbox; a cancelled call just leaves."""
        actor = self.actors.get(job.workflow_id)
        if actor is not None:
            actor.inflight.discard(job.run.id)
        if done is not None:
            self.deliver(job.workflow_id, done)
        elif actor is not None:
            self._maybe_passivate(actor)

    async def wait_quiet(self) -> None:
        """Wait until no actor has a turn committing or its state loading."""
        while self._running:
            if self._quiet is None:
                self._quiet = anyio.Event()
            await self._quiet.wait()

    def live_state(self, workflow_id: str) -> WorkflowState | None:
        """The committed in-memory state of a live workflow, if any."""
        actor = self.actors.get(workflow_id)
        return actor.state if actor is not None else None

    # turns -----------------------------------------------------------------
    def _step(self, actor: WorkflowActor) -> None:
        """Run the idle actor's next turn now, loading its state first if it has none."""
        if not actor.mailbox:
            self._maybe_passivate(actor)
        elif actor.state is None:
            actor.loading = True
            self._busy()
            self._tg.start_soon(self._load, actor, name=f"load {actor.workflow_id}")
        else:
            self._turn(actor, actor.state)

    async def _load(self, actor: WorkflowActor) -> None:
        wid = actor.workflow_id
        before = list(actor.mailbox) if actor.revalidate else []
        actor.revalidate = False
        try:
            loaded = await self._store.load(wid)
            pending = {m.id for m in await self._store.pending_for(wid)} if before else None
        finally:
            actor.loading = False
            self._idle()
        actor.loads += 1
        if self.actors.get(wid) is not actor:
            return  # dropped while loading (its shard was lost)
        if pending is not None:
            stale = {id(m) for m in before if isinstance(m, _DURABLE) and m.id not in pending}
            if stale:  # rows already consumed: duplicates that slipped past the ids (their fence failed)
                self.duplicates += len(stale)
                kept = [m for m in actor.mailbox if id(m) not in stale]
                actor.mailbox = deque(kept)
                actor.ids = {m.id for m in kept if isinstance(m, _DURABLE)}
        if loaded is None:
            self._unknown(actor)
            return
        try:
            actor.state = WorkflowState(loaded.record, list(loaded.specs), list(loaded.runs))
        except Exception as exc:  # rows that decode but do not fit together: nothing can run it
            log.error("workflow %s: its stored state is inconsistent (%r); its messages are dropped", wid, exc)
            self._forget(actor)
            return
        if loaded.damage:
            what = ", ".join(f"{row.source} {row.key}" for row in loaded.damage)
            error = ErrorInfo.engine(
                "UndecodableRow",
                f"workflow {wid!r}: stored rows could not be decoded ({what}: {loaded.damage[0].error}); "
                "their bytes were moved to the quarantine table",
            )
            self._fail(actor, error, (), damage=loaded.damage, repair=loaded.repair)
        self._step(actor)

    def _unknown(self, actor: WorkflowActor) -> None:
        """Messages for a workflow the store does not have: dropped; undecodable rows still move to quarantine."""
        wid = actor.workflow_id
        bad = [m for m in actor.mailbox if isinstance(m, Undecodable)]
        log.warning("%d message(s) for unknown workflow %s dropped", len(actor.mailbox), wid)
        self._forget(actor)
        if bad:
            t = Transition(workflow_id=wid, discarded=[m.id for m in bad], quarantine=[m.row for m in bad])
            self._store.enqueue(t, partial(_log_failure, wid))

    def _forget(self, actor: WorkflowActor) -> None:
        """Give up on an actor: drop its mailbox (its rows stay in the store) and let it leave memory."""
        actor.mailbox.clear()
        actor.ids.clear()
        actor.state = None
        self._maybe_passivate(actor)

    def _turn(self, actor: WorkflowActor, state: WorkflowState) -> None:
        """Fold the mailbox into one turn and queue it for the group commit; act when it commits."""
        while actor.mailbox:
            batch = [actor.mailbox.popleft() for _ in range(min(self._batch, len(actor.mailbox)))]
            turn = Turn(state, self._clock())
            try:
                for message in batch:
                    _handlers.apply(turn, message)
                if _faults.armed:
                    _faults.hit("actor.before_commit", actor.workflow_id)
            except Exception as exc:  # a handler bug or an illegal status change: this workflow fails
                if not self._contain(actor, exc, "applying its messages", batch):
                    return
                continue
            t = turn.t
            self.turns += 1
            self.messages += len(batch)
            if t.empty:
                self._settle(actor, batch, t)
                self._after_commit(actor, state, t)  # nothing to write (it may still queue a ParkTask)
                continue
            actor.committing = batch
            self._busy()
            self._store.enqueue(t, partial(self._committed, actor, state, t))
            return
        self._maybe_passivate(actor)

    def _committed(
        self, actor: WorkflowActor, state: WorkflowState, t: Transition, error: BaseException | None
    ) -> None:
        """The group writer's report on an actor's turn: act on it, then run the next turn."""
        batch = actor.committing
        actor.committing = None
        self._idle()
        if self.actors.get(actor.workflow_id) is not actor:
            return  # dropped while committing: its shard's new owner continues
        if error is None:
            try:
                if _faults.armed:
                    _faults.hit("actor.after_commit", actor.workflow_id)
                state.apply(t)
                actor.failures = 0
                if t.finished and state.record.error is not None:
                    self.failed += 1  # its FailWorkflow turn committed
                if batch is not None:
                    self._settle(actor, batch, t)
                self._after_commit(actor, state, t)
                if _faults.armed:
                    _faults.hit("actor.after_effects", actor.workflow_id)
            except Exception as exc:  # the step is committed; acting on it failed: reload it, then fail it
                actor.state = None
                if not self._contain(actor, exc, "acting on a committed step", batch or ()):
                    return
        elif isinstance(error, LeaseLostError):
            log.warning("workflow %s: shard lease lost; its new owner continues", actor.workflow_id)
            actor.mailbox.clear()
            actor.ids.clear()
            actor.state = None
        elif isinstance(error, DataError):  # refused alone too: this workflow's data, not the database
            if not self._contain(actor, error, "committing a step the database refused", batch or ()):
                return
        elif isinstance(error, ConcurrencyError):
            actor.failures += 1
            self.reloads += 1
            actor.state = None
            if batch is not None:
                actor.mailbox.extendleft(reversed(batch))  # results are put back, not lost
            if actor.failures > _FENCE_FAILURES:
                if not self._contain(actor, error, f"its turns failed their fence {actor.failures} times", batch or ()):
                    return
            else:
                log.warning("turn of %s refused by its fence (%s); reloading", actor.workflow_id, error)
                actor.revalidate = True  # and drop messages whose rows are gone (duplicates)
        else:
            raise error  # the database failed: the engine stops with it
        self._step(actor)

    def _settle(self, actor: WorkflowActor, batch: list[Message], t: Transition) -> None:
        """A turn is done: its messages leave the mailbox's ids; the rows it consumed are remembered."""
        ids, recent = actor.ids, actor.recent
        for message in batch:
            if isinstance(message, _DURABLE):
                ids.discard(message.id)
        for mid in (*t.consumed, *t.discarded):
            recent[mid] = None
        while len(recent) > _RECENT:
            del recent[next(iter(recent))]

    def _contain(self, actor: WorkflowActor, exc: BaseException, what: str, batch: Sequence[Message]) -> bool:
        """A fault local to this workflow while ``batch`` was its turn: fail the workflow (see :meth:`_fail`)."""
        error = ErrorInfo.engine(
            type(exc).__name__,
            f"workflow {actor.workflow_id!r}: the engine failed {what}: {exc}",
            traceback="".join(traceback.format_exception(exc)),
        )
        return self._fail(actor, error, batch, exc=exc)

    def _fail(
        self,
        actor: WorkflowActor,
        error: ErrorInfo,
        batch: Sequence[Message],
        *,
        exc: BaseException | None = None,
        damage: tuple[QuarantineRow, ...] = (),
        repair: tuple[int, ...] = (),
    ) -> bool:
        """Replace the workflow's mailbox with one FailWorkflow turn that ends it TERMINAL with ``error``.

        Undecodable rows among the messages dropped (the mailbox and the turn
        ``batch`` that failed) go into the quarantine with ``damage``, so the
        purge of its outbox loses none of their bytes. When ``batch`` was itself
        a FailWorkflow turn, the actor gives up instead and returns False: it
        leaves memory and its rows stay in the store (logged), so nothing loops.
        """
        wid = actor.workflow_id
        if any(isinstance(m, FailWorkflow) for m in batch):
            log.error(
                "workflow %s: could not end it after a fault (%s); its rows stay in the store",
                wid,
                error.message,
                extra={"workflow_id": wid},
            )
            self._forget(actor)
            return False
        log.error("%s; it ends TERMINAL", error.message, exc_info=exc, extra={"workflow_id": wid})
        kept = tuple(m.row for m in (*batch, *actor.mailbox) if isinstance(m, Undecodable))
        actor.failures = 0
        actor.mailbox.clear()
        actor.ids.clear()
        actor.mailbox.append(FailWorkflow(error=error, quarantine=(*damage, *kept), repair=repair))
        return True

    def _after_commit(self, actor: WorkflowActor, state: WorkflowState, t: Transition) -> None:
        actor.dispatched.difference_update(t.consumed)
        for message in t.emitted:
            if message.deliver_at is not None:
                self._schedule(actor.workflow_id, message)
        for run_id in t.cancel_runs:
            actor.inflight.discard(run_id)
            actor.dispatched.discard(run_id)
            self._cancel_call(actor.workflow_id, run_id)
        for run in t.dispatch:
            self._dispatch(actor, state, run)
        if t.finished:
            self._on_finished(state)

    def _dispatch(self, actor: WorkflowActor, state: WorkflowState, run: RunTask) -> None:
        pool = self._pools.get(run.task_type)
        if pool is None:
            if not state.runs[run.stage].parked:
                actor.mailbox.append(ParkTask(run=run))
            log.error(
                "task type %r is not registered; workflow %s parked",
                run.task_type,
                actor.workflow_id,
                extra={"workflow_id": actor.workflow_id, "stage": state.specs[run.stage].ref_id, "task": run.task_type},
            )
            return
        if not self.accept_dispatch:
            return  # stopping: the row stays and is redelivered at the next start
        if run.id in actor.dispatched:
            return  # a redelivery of a call already made; its result is on its way
        spec = state.specs[run.stage]
        view = StageView(
            ref_id=spec.ref_id,
            workflow_id=actor.workflow_id,
            context=MappingProxyType(state.stage_context(run.stage)),
            attempt=run.attempt,
            idempotency_key=f"{actor.workflow_id}:{spec.ref_id}:{run.task}:{run.generation}",
            task=run.task_type,
            name=spec.name,
        )
        timeout = spec.timeout if spec.timeout is not None else pool.options.timeout
        if pool.offer(Job(actor.workflow_id, run, view, timeout)):
            actor.inflight.add(run.id)
            actor.dispatched.add(run.id)

    def _maybe_passivate(self, actor: WorkflowActor) -> None:
        if actor.busy or actor.mailbox or actor.inflight:
            return
        if self.actors.get(actor.workflow_id) is actor:
            del self.actors[actor.workflow_id]
            self.passivations += 1

    def statistics(self) -> MailboxStatistics:
        """Counters of the dispatcher and its actors."""
        return MailboxStatistics(
            live_actors=len(self.actors),
            running_actors=self._running,
            queued_messages=sum(len(a.mailbox) for a in self.actors.values()),
            activations=self.activations,
            passivations=self.passivations,
            turns=self.turns,
            messages=self.messages,
            reloads=self.reloads,
            duplicates=self.duplicates,
            failed=self.failed,
        )


def _log_failure(workflow_id: str, error: BaseException | None) -> None:
    if error is not None:
        log.error("workflow %s: moving its undecodable rows to quarantine failed: %r", workflow_id, error)
