"""WorkflowActor and Dispatcher: one writer per workflow, batched turns, passivation.

The dispatcher routes every message by workflow id to that workflow's actor,
activating it (loading its state once) if needed. An actor drains its mailbox up
to a bound, folds the messages into one :class:`~stabilize_aio._state.Turn`,
commits it through the store's group writer, applies it to its in-memory state,
and only then acts: RunTasks to the pools, delayed rows to the timer service,
cancellations to running calls, wake-ups to waiters. An actor with an empty
mailbox and nothing in flight leaves memory (its coroutine has already ended).

Nothing ever waits to enter a mailbox (DESIGN rule 9): outside input per
workflow is bounded by construction (one start row, one idempotent cancel row),
task results are bounded by the pools' bulkheads, and an actor's own follow-ups
are folded into its turn. So no cycle of bounded queues can deadlock.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from types import MappingProxyType
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import msgspec

from . import _handlers
from ._errors import ConcurrencyError, LeaseLostError
from ._messages import Durable, Message, ParkTask, RunTask, TaskDone
from ._pool import Job, TaskPool
from ._state import Transition, Turn, WorkflowState
from ._views import StageView

if TYPE_CHECKING:
    from .store import Store

log = logging.getLogger("stabilize_aio.actor")


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


class WorkflowActor:
    """The single writer of one workflow while it is live."""

    __slots__ = ("dispatched", "inflight", "loads", "mailbox", "running", "state", "waiting", "wake", "workflow_id")

    def __init__(self, workflow_id: str, state: WorkflowState | None) -> None:
        self.workflow_id = workflow_id
        self.state = state
        self.mailbox: deque[Message] = deque()
        #: RunTask ids whose call is running in a pool (passivation waits for these).
        self.inflight: set[str] = set()
        #: RunTask ids handed to a pool whose row is not consumed yet: never dispatched twice,
        #: even when a redelivery overtakes the call's own result in the mailbox.
        self.dispatched: set[str] = set()
        self.running = False  # its coroutine exists (doing a turn, or waiting for calls in flight)
        self.waiting = False  # its coroutine waits on `wake` for a result of a call in flight
        self.wake = anyio.Event()
        self.loads = 0

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
        self._running = 0
        self._quiet: anyio.Event | None = None  # made only while someone waits for quiet
        self.accept_dispatch = True

    def __repr__(self) -> str:
        return f"<Dispatcher actors={len(self.actors)} running={self._running}>"

    # routing ---------------------------------------------------------------
    def deliver(self, workflow_id: str, message: Message, *, state: WorkflowState | None = None) -> None:
        """Put a message in its workflow's mailbox (never waits; task results always get in).

        A message for a workflow whose shard this process does not own is dropped:
        its owner has the row and will deliver it.
        """
        if not self._owns(workflow_id):
            return
        actor = self.actors.get(workflow_id)
        if actor is None:
            actor = self.actors[workflow_id] = WorkflowActor(workflow_id, state)
            self.activations += 1
        elif actor.state is None and state is not None:
            actor.state = state
        actor.mailbox.append(message)
        if actor.waiting:
            self._resume(actor)
        elif not actor.running:
            actor.running = True
            self._busy()
            self._tg.start_soon(self._run, actor, name=f"actor {workflow_id}")

    def adopt(self, state: WorkflowState, t: Transition) -> None:
        """Take a workflow whose first transition was committed by submit, and act on it."""
        actor = self.actors.get(state.record.id)
        if actor is None:
            actor = self.actors[state.record.id] = WorkflowActor(state.record.id, state)
            self.activations += 1
        self._after_commit(actor, state, t)
        if not actor.running:
            if actor.mailbox:  # e.g. a ParkTask for a task type this engine lacks
                actor.running = True
                self._busy()
                self._tg.start_soon(self._run, actor, name=f"actor {state.record.id}")
            else:
                self._maybe_passivate(actor)

    def drop(self, lost: Callable[[str], bool]) -> None:
        """Forget the actors of workflows this process no longer owns, and cancel their calls.

        Their rows stay in the store; the new owner redelivers them. A turn of theirs
        that is committing now is refused by the store's lease fence.
        """
        for workflow_id in [w for w in self.actors if lost(w)]:
            actor = self.actors.pop(workflow_id)
            actor.mailbox.clear()
            for run_id in actor.inflight:
                self._cancel_call(workflow_id, run_id)
            actor.inflight.clear()
            actor.dispatched.clear()
            if actor.waiting:
                self._resume(actor)  # let its coroutine leave
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

    def _resume(self, actor: WorkflowActor) -> None:
        actor.waiting = False
        self._busy()
        actor.wake.set()

    def task_finished(self, job: Job, done: TaskDone | None) -> None:
        """A pool's report: a result enters the reserved lane; a cancelled call just leaves."""
        actor = self.actors.get(job.workflow_id)
        if actor is not None:
            actor.inflight.discard(job.run.id)
        if done is not None:
            self.deliver(job.workflow_id, done)
        elif actor is not None:
            if actor.waiting and not actor.inflight:
                self._resume(actor)  # its last call was cancelled: let it leave
            elif not actor.running:
                self._maybe_passivate(actor)

    async def wait_quiet(self) -> None:
        """Wait until no actor is running a turn."""
        while self._running:
            if self._quiet is None:
                self._quiet = anyio.Event()
            await self._quiet.wait()

    def live_state(self, workflow_id: str) -> WorkflowState | None:
        """The committed in-memory state of a live workflow, if any."""
        actor = self.actors.get(workflow_id)
        return actor.state if actor is not None else None

    # turns -----------------------------------------------------------------
    async def _run(self, actor: WorkflowActor) -> None:
        try:
            while True:
                await self._drain(actor)
                if not actor.inflight or not self.accept_dispatch:
                    break
                # Calls are in flight: wait for their results instead of leaving and being respawned.
                actor.wake = anyio.Event()
                actor.waiting = True
                self._idle()
                await actor.wake.wait()
        finally:
            if actor.waiting:
                actor.waiting = False
            else:
                self._idle()
            actor.running = False
            self._maybe_passivate(actor)

    async def _drain(self, actor: WorkflowActor) -> None:
        """Run turns until the mailbox is empty."""
        failures = 0
        while actor.mailbox:
            if actor.state is None:
                loaded = await self._store.load(actor.workflow_id)
                actor.loads += 1
                if loaded is None:
                    log.warning("messages for unknown workflow %s dropped", actor.workflow_id)
                    actor.mailbox.clear()
                    break
                actor.state = WorkflowState(loaded.record, list(loaded.specs), list(loaded.runs))
            state = actor.state
            batch = [actor.mailbox.popleft() for _ in range(min(self._batch, len(actor.mailbox)))]
            turn = Turn(state, self._clock())
            for message in batch:
                _handlers.apply(turn, message)
            t = turn.t
            self.turns += 1
            self.messages += len(batch)
            if not t.empty:
                try:
                    await self._store.write(t)
                except LeaseLostError:
                    log.warning("workflow %s: shard lease lost; its new owner continues", actor.workflow_id)
                    actor.mailbox.clear()
                    actor.state = None
                    break
                except ConcurrencyError:
                    failures += 1
                    self.reloads += 1
                    log.warning("turn of %s refused by its fence; reloading", actor.workflow_id)
                    actor.state = None
                    if failures > 3:
                        log.error("workflow %s keeps failing its fence; left to recovery", actor.workflow_id)
                        actor.mailbox.clear()
                        break
                    actor.mailbox.extendleft(reversed(batch))  # results are put back, not lost
                    continue
                state.apply(t)
            failures = 0
            self._after_commit(actor, state, t)

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
        if actor.running or actor.mailbox or actor.inflight:
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
        )
