"""Dispatcher: routes messages by workflow id to their actors, activates and passivates them, counts.

The dispatcher delivers every message to its workflow's
:class:`~stabilize_aio.runtime.actor.WorkflowActor`, creating the actor (whose
state is then loaded once) when the workflow has none in memory; the actor owns
its turns from there (``runtime/actor.py``), and what happens after a commit is
``runtime/effects.py``. An actor with an empty mailbox, no turn committing and
nothing in flight leaves memory. A run starts through :meth:`Dispatcher.begin`,
whose start turn the actor commits with the run's insert.

Nothing ever waits to enter a mailbox (DESIGN rule 9): outside input per
workflow is bounded by construction (one idempotent cancel row, signals sent
one at a time by their callers), task results are bounded by the pools'
bulkheads, and an actor's own follow-ups are folded into its turn. So no cycle
of bounded queues can deadlock.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import msgspec

from ..messages.durable import Durable, Send
from ..messages.memory import Message, TaskDone
from ..model.reducers import BUILTIN, Reducer
from ..pool.pool import Job, TaskPool
from ..state.workflow import WorkflowState
from .actor import WorkflowActor
from .effects import AfterCommit

if TYPE_CHECKING:
    from ..store import Store

__all__ = ("Dispatcher", "MailboxStatistics")


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


class Dispatcher:
    """Routes messages to actors, activates (loads) and passivates them, and keeps their counters."""

    def __init__(
        self,
        *,
        store: Store,
        tg: anyio.abc.TaskGroup,
        pools: dict[str, TaskPool],
        schedule: Callable[[str, Durable], None],
        on_finished: Callable[[WorkflowState], None],
        owns: Callable[[str], bool] = lambda workflow_id: True,
        clock: Callable[[], float],
        batch: int = 256,
        reducers: Mapping[str, Reducer] = BUILTIN,
        perform: Callable[[str, Send], Awaitable[None]] | None = None,
        on_changed: Callable[[WorkflowState], None] | None = None,
        reread: Callable[[str], Awaitable[None]] | None = None,
        grant: Callable[[list[str], bool], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self._tg = tg
        self._perform = perform
        self._reread = reread
        self._grant = grant
        self._grant_keys: set[str] = set()  # keys to grant once the grant under way is done
        self._grant_freed = False
        self._grant_busy = False
        self._awaiting: list[WorkflowActor] = []  # actors that claimed a key: in memory until it is granted
        self.effects = AfterCommit(
            pools, schedule, on_finished, self._send if perform is not None else None, on_changed=on_changed,
            redeliver=self._redeliver if reread is not None else None,
            grant=self._granting if grant is not None else None,
        )  # fmt: skip
        self._owns = owns
        self.clock = clock
        self.batch = batch
        self.reducers = reducers  # the output reducers a join stage may name (built in + registered)
        self.actors: dict[str, WorkflowActor] = {}
        self.activations = self.passivations = self.turns = self.messages = self.reloads = 0
        self.duplicates = 0  # durable messages dropped by id before they were applied
        self.failed = 0  # workflows ended TERMINAL by containment
        self._running = 0  # actors with a turn committing or their state loading
        self._quiet: anyio.Event | None = None  # made only while someone waits for quiet

    def __repr__(self) -> str:
        return f"<Dispatcher actors={len(self.actors)} running={self._running}>"

    # starting and stopping -----------------------------------------------------
    async def begin(self, state: WorkflowState, *, owned: bool) -> None:
        """Start a fresh run: its actor folds the start turn and commits it with the run's insert (one commit).

        Returns once committed. Raises ``ConcurrencyError`` if the workflow id
        exists (nothing of the actor stays), and other store errors as they come.
        When ``owned`` is False (another process owns the shard, and is woken by
        the commit), nothing acts on it here after the commit.
        """
        await WorkflowActor(state.record.id, state, self).begin(owned=owned)

    def stop_dispatching(self) -> None:
        """Start no more task calls (stopping): RunTasks stay pending and are redelivered at the next start."""
        self.effects.stop()

    # routing ---------------------------------------------------------------
    def deliver(self, workflow_id: str, message: Message, *, state: WorkflowState | None = None) -> None:
        """Put a message in its workflow's mailbox and run a turn if the actor is idle (never waits).

        A message for a workflow whose shard this process does not own is dropped:
        its owner has the row and will deliver it.
        """
        if self._owns(workflow_id):
            self._actor(workflow_id, state).post(message)

    def _actor(self, workflow_id: str, state: WorkflowState | None) -> WorkflowActor:
        """The workflow's actor, activated if needed; a known state is handed to one that has none yet."""
        actor = self.actors.get(workflow_id)
        if actor is None:
            actor = self.actors[workflow_id] = WorkflowActor(workflow_id, state, self)
            self.activations += 1
        elif state is not None:
            actor.hand_state(state)
        return actor

    def task_finished(self, job: Job, done: TaskDone | None) -> None:
        """A pool's report: a result enters the mailbox; a cancelled call just leaves."""
        actor = self.actors.get(job.workflow_id)
        if actor is not None:
            actor.call_finished(job.run.id)
        if done is not None:
            self.deliver(job.workflow_id, done)
        elif actor is not None:
            actor.maybe_leave()

    def drop(self, lost: Callable[[str], bool]) -> None:
        """Forget the actors of workflows this process no longer owns, and cancel their calls.

        Their rows stay in the store; the new owner redelivers them. A turn of theirs
        that is committing now is refused by the store's lease fence (and if it
        committed first, nothing acts on it here).
        """
        for workflow_id in [w for w in self.actors if lost(w)]:
            self.actors.pop(workflow_id).drop()
            self.passivations += 1

    def live_state(self, workflow_id: str) -> WorkflowState | None:
        """The committed in-memory state of a live workflow, if any."""
        actor = self.actors.get(workflow_id)
        return actor.state if actor is not None else None

    async def wait_quiet(self) -> None:
        """Wait until no actor has a turn committing or its state loading."""
        while self._running:
            if self._quiet is None:
                self._quiet = anyio.Event()
            await self._quiet.wait()

    # the actors' host (runtime/actor.py) ------------------------------------------
    def counted(self, *, turns: int = 0, messages: int = 0, reloads: int = 0, duplicates: int = 0) -> None:
        """An actor's turns, messages, reloads and dropped duplicates, summed here."""
        self.turns += turns
        self.messages += messages
        self.reloads += reloads
        self.duplicates += duplicates

    def contained(self) -> None:
        """An actor's FailWorkflow turn committed (a workflow ended by containment)."""
        self.failed += 1

    def busy(self) -> None:
        self._running += 1

    def idle(self) -> None:
        self._running -= 1
        if self._running == 0 and self._quiet is not None:
            self._quiet.set()
            self._quiet = None

    def holds(self, actor: WorkflowActor) -> bool:
        """Whether ``actor`` is the live actor of its workflow (not dropped meanwhile)."""
        return self.actors.get(actor.workflow_id) is actor

    def leave(self, actor: WorkflowActor) -> None:
        """Passivate an idle actor."""
        if self.actors.get(actor.workflow_id) is actor:
            del self.actors[actor.workflow_id]
            self.passivations += 1

    def adopt_actor(self, actor: WorkflowActor, state: WorkflowState) -> WorkflowActor:
        """Activate the actor of a just-started run, or hand its state to the one a message activated meanwhile."""
        home = self.actors.get(actor.workflow_id)
        if home is None:
            home = self.actors[actor.workflow_id] = actor
            self.activations += 1
        else:
            home.hand_state(state)
        return home

    def awaits(self, actor: WorkflowActor) -> None:
        """An actor whose committed turn claimed a shared key: it stays until that grant is done."""
        if self._grant is None:  # (no grants here: nothing to wait for)
            actor.awaiting = False
            return
        self._awaiting.append(actor)

    def spawn(self, fn: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        self._tg.start_soon(fn, name=name)

    def _send(self, workflow_id: str, send: Send) -> None:
        """Do what a run owes another in a task of its own (counted busy: ``wait_quiet`` waits for it)."""
        perform = self._perform
        assert perform is not None
        self._background(functools.partial(perform, workflow_id, send), f"{send.kind} for {workflow_id}")

    def _redeliver(self, workflow_id: str) -> None:
        """Read a run's pending rows back and deliver them, in a task of its own (a resume)."""
        reread = self._reread
        assert reread is not None
        self._background(functools.partial(reread, workflow_id), f"redeliver {workflow_id}")

    def _granting(self, keys: list[str], freed: bool) -> None:
        """Grant claims on shared keys a commit changed, in a task of its own; the keys of commits that come
        while a grant runs are granted together once it is done (one transaction for many commits)."""
        self._grant_keys.update(keys)
        self._grant_freed = self._grant_freed or freed
        if not self._grant_busy:
            self._grant_busy = True
            self._background(self._grant_loop, "grant claims")

    async def _grant_loop(self) -> None:
        grant = self._grant
        assert grant is not None
        try:
            while self._grant_keys:
                keys, freed = sorted(self._grant_keys), self._grant_freed
                self._grant_keys.clear()
                self._grant_freed = False
                awaiting, self._awaiting = self._awaiting, []
                try:
                    await grant(keys, freed)  # (what it grants here is delivered to actors still in memory)
                finally:
                    for actor in awaiting:  # those not granted wait without an actor, as any parked run
                        actor.awaiting = False
                        actor.maybe_leave()
        finally:
            self._grant_busy = False

    def _background(self, fn: Callable[[], Awaitable[None]], name: str) -> None:
        """Run ``fn`` in a task of its own, counted busy (``wait_quiet`` waits for it)."""
        self.busy()

        async def go() -> None:
            try:
                await fn()
            finally:
                self.idle()

        self._tg.start_soon(go, name=name)

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
