"""WorkflowActor: the single writer of one live workflow; it owns its turns from fold to effects.

An actor is a mailbox plus a small state machine, not a coroutine of its own
(docs/architecture.md, "A turn"): it is idle, loading its state, or committing
one turn. A message that finds it idle runs a turn at once, in the task that
delivered it: the actor drains up to ``batch`` messages, folds them through the
pure handlers into one :class:`~stabilize_aio.state.turn.Turn` and queues the
turn's :class:`~stabilize_aio.state.commit.Commit` on the store's group writer
(which never waits). The writer calls the actor back when the group committed
(:meth:`WorkflowActor.on_committed`, in the writer's task): the actor applies
the commit to its state and acts on the turn's
:class:`~stabilize_aio.state.commit.Effects` (``runtime/effects.py``), then runs
its next turn if messages arrived meanwhile. A refused commit is handled here
too: a fence that failed (reload and retry), a lost lease (leave), data the
database refused (containment).

Containment (rule 10): a handler that raises, an illegal status change, an
undecodable row, a write refused for its data or a turn that keeps failing its
fence replaces the mailbox with one in-memory ``FailWorkflow`` turn that ends
the workflow TERMINAL (``runtime/containment.py``); if that turn fails too,
the actor gives up (its rows stay).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Coroutine, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from .. import _faults, handlers
from .._errors import ConcurrencyError, DataError, LeaseLostError
from ..messages.durable import COMMANDS, Granted, RunTask, SignalTimeout, StageTimeout, StartDeadline, WorkflowTimeout
from ..messages.memory import FailWorkflow, Message, Undecodable
from ..model.reducers import Reducer
from ..model.values import ErrorInfo, QuarantineRow
from ..state.commit import Commit, Effects
from ..state.turn import Turn
from ..state.workflow import WorkflowState
from ..store.protocol import NewWorkflow
from .containment import engine_error, failing_turn
from .effects import AfterCommit, CallBook

if TYPE_CHECKING:
    from ..store import Store

log = logging.getLogger("stabilize_aio.actor")

#: The message classes that are outbox rows (``Durable``): a second delivery of one (same id) is dropped.
DURABLE = (RunTask, StageTimeout, SignalTimeout, WorkflowTimeout, StartDeadline, Granted, *COMMANDS)

#: How many ids of rows consumed by committed turns an actor remembers to drop late duplicates.
_RECENT = 256

#: Turns of one workflow refused by their fence in a row (after reloading) before it is failed.
_FENCE_FAILURES = 3


class Host(Protocol):
    """What an actor needs of its dispatcher: the store, the clock, the effects, and where it counts."""

    store: Store
    effects: AfterCommit
    clock: Callable[[], float]
    batch: int
    reducers: Mapping[str, Reducer]

    def counted(self, *, turns: int = 0, messages: int = 0, reloads: int = 0, duplicates: int = 0) -> None: ...

    def contained(self) -> None: ...

    def busy(self) -> None: ...

    def idle(self) -> None: ...

    def holds(self, actor: WorkflowActor) -> bool: ...

    def leave(self, actor: WorkflowActor) -> None: ...

    def adopt_actor(self, actor: WorkflowActor, state: WorkflowState) -> WorkflowActor: ...

    def awaits(self, actor: WorkflowActor) -> None: ...

    def spawn(self, fn: Callable[[], Coroutine[Any, Any, None]], name: str) -> None: ...


class WorkflowActor:
    """The single writer of one workflow while it is live.

    Its turns run in the task that delivered the message which found it idle (a
    pool worker, the timer service, the group writer that committed its last
    turn), and it never has more than one turn committing. The actor is its own
    commit callback (``store.enqueue(commit, actor)`` calls :meth:`on_committed`),
    so queueing a turn allocates nothing beyond the turn itself.
    """

    __slots__ = (
        "awaiting",
        "calls",
        "committing",
        "failures",
        "host",
        "ids",
        "loading",
        "mailbox",
        "recent",
        "revalidate",
        "state",
        "turn",
        "workflow_id",
    )

    def __init__(self, workflow_id: str, state: WorkflowState | None, host: Host) -> None:
        self.workflow_id = workflow_id
        self.state = state
        self.host = host
        self.mailbox: deque[Message] = deque()
        #: Its calls: running in a pool (passivation waits for these), or handed to one (never twice).
        self.calls = CallBook()
        #: The messages of the turn being committed (None when no turn is committing), and the turn.
        self.committing: list[Message] | None = None
        self.turn: Turn | None = None
        self.loading = False  # its state is being read from the store
        self.failures = 0  # turns refused by their fence in a row
        #: Ids of the durable messages in the mailbox or in the committing turn (duplicates are dropped).
        self.ids: set[str] = set()
        #: Ids of rows consumed or discarded by its committed turns, newest last (late duplicates are dropped).
        self.recent: dict[str, None] = {}
        #: After a refused fence: the next load also drops mailbox rows the store no longer has.
        self.revalidate = False
        #: Its turn claimed a shared key: it stays in memory until that grant is done (its answer needs no load).
        self.awaiting = False

    @property
    def busy(self) -> bool:
        """Whether a turn of it is committing or its state is loading (no other turn may start)."""
        return self.committing is not None or self.loading

    def __repr__(self) -> str:
        status = self.state.record.status if self.state else "unloaded"
        return (
            f"<WorkflowActor {self.workflow_id} {status} mailbox={len(self.mailbox)} running={len(self.calls.running)}>"
        )

    # input -------------------------------------------------------------------
    def post(self, message: Message) -> None:
        """Put a message in the mailbox (a durable one already in hand is dropped) and run a turn if idle."""
        if isinstance(message, DURABLE):
            mid = message.id
            if mid in self.ids or mid in self.recent:
                self.host.counted(duplicates=1)
                return  # a second delivery of a row already in hand or already consumed
            self.ids.add(mid)
        self.mailbox.append(message)
        if not self.busy:
            self.step()

    def step(self) -> None:
        """Run the idle actor's next turn now, loading its state first if it has none."""
        if not self.mailbox:
            self.maybe_leave()
        elif self.state is None:
            self.loading = True
            self.host.busy()
            self.host.spawn(self._load, f"load {self.workflow_id}")
        else:
            self._turns(self.state)

    def maybe_leave(self) -> None:
        """Leave memory if nothing is left to do: no turn, no message, no call in flight."""
        if not (self.busy or self.mailbox or self.calls.running or self.awaiting):
            self.host.leave(self)

    def drop(self) -> None:
        """Forget everything in hand and cancel the calls in flight (they report nothing; rows stay)."""
        self.mailbox.clear()
        self.ids.clear()
        for run_id in self.calls.clear():
            self.host.effects.cancel_call(self.workflow_id, run_id)

    def call_finished(self, run_id: str) -> None:
        """A pool reports that a call of this workflow ended (its result, if any, comes as a message)."""
        self.calls.finished(run_id)

    def hand_state(self, state: WorkflowState) -> None:
        """A state known elsewhere (a run just started here): taken if this actor has none and is not loading one."""
        if self.state is None and not self.loading:
            self.state = state

    # turns -------------------------------------------------------------------
    def _fold(self, state: WorkflowState, batch: Sequence[Message], *, start: bool = False) -> Turn:
        """The one place a turn starts: fold ``batch`` (after the run's start, if ``start``) into a new turn."""
        turn = Turn(state, self.host.clock(), self.host.reducers)
        if start:
            handlers.begin(turn)
        for message in batch:
            handlers.apply(turn, message)
        return turn

    def _turns(self, state: WorkflowState) -> None:
        """Fold the mailbox into one turn and queue its commit; act on it when it commits."""
        host = self.host
        mailbox = self.mailbox
        while mailbox:
            batch = [mailbox.popleft() for _ in range(min(host.batch, len(mailbox)))]
            try:
                turn = self._fold(state, batch)
                if _faults.armed:
                    _faults.hit("actor.before_commit", self.workflow_id)
            except Exception as exc:  # a handler bug or an illegal status change: this workflow fails
                if not self._contain(exc, "applying its messages", batch):
                    return
                continue
            host.counted(turns=1, messages=len(batch))
            commit = turn.commit
            if commit.empty:
                self._settle(batch, commit)
                self._effects(state, commit, turn.effects)  # nothing to write (it may still dispatch)
                continue
            self.committing = batch
            self.turn = turn
            host.busy()
            host.store.enqueue(commit, self)
            return
        self.maybe_leave()

    async def begin(self, *, owned: bool) -> None:
        """Fold the run's start turn and commit it with the run's insert (one commit); act on it if ``owned``.

        Raises what the store raises (``ConcurrencyError``: the id exists); then
        nothing of this actor stays. Not owned, nothing acts on it here: the
        owner of its shard is woken by the commit, and this actor just leaves.
        """
        state = self.state
        assert state is not None
        turn = self._fold(state, (), start=True)
        commit = turn.commit
        op = NewWorkflow(record=state.record, specs=state.specs, runs=list(state.runs), begin=commit, notify=not owned)
        await self.host.store.write(op)
        if not owned:
            return
        home = self.host.adopt_actor(self, state)  # this actor, or the live one a message activated meanwhile
        if home.acted(state, commit, turn.effects, []) and not home.busy:
            home.step()

    def on_committed(self, error: BaseException | None) -> None:
        """The group writer's report on this actor's turn: act on it, then run the next turn."""
        batch, turn = self.committing, self.turn
        self.committing = self.turn = None
        host = self.host
        host.idle()
        if not host.holds(self):
            return  # dropped while committing: its shard's new owner continues
        assert batch is not None
        assert turn is not None
        if error is None:
            if not self.acted(turn.state, turn.commit, turn.effects, batch):
                return
        elif isinstance(error, LeaseLostError):
            log.warning("workflow %s: shard lease lost; its new owner continues", self.workflow_id)
            self.mailbox.clear()
            self.ids.clear()
            self.state = None
        elif isinstance(error, DataError):  # refused alone too: this workflow's data, not the database
            if not self._contain(error, "committing a step the database refused", batch):
                return
        elif isinstance(error, ConcurrencyError):
            self.failures += 1
            host.counted(reloads=1)
            self.state = None
            self.mailbox.extendleft(reversed(batch))  # results are put back, not lost
            if self.failures > _FENCE_FAILURES:
                if not self._contain(error, f"its turns failed their fence {self.failures} times", batch):
                    return
            else:
                log.warning("turn of %s refused by its fence (%s); reloading", self.workflow_id, error)
                self.revalidate = True  # and drop messages whose rows are gone (duplicates)
        else:
            raise error  # the database failed: the engine stops with it
        self.step()

    __call__ = on_committed  # the store's ``then`` callback

    def acted(self, state: WorkflowState, commit: Commit, effects: Effects, batch: list[Message]) -> bool:
        """Apply a committed turn to ``state`` and act on it; False if the actor gave up (see :meth:`_fail`)."""
        try:
            if _faults.armed:
                _faults.hit("actor.after_commit", self.workflow_id)
            state.apply(commit)
            self.failures = 0
            if effects.finished and state.record.error is not None:
                self.host.contained()  # its FailWorkflow turn committed
            self._settle(batch, commit)
            self._effects(state, commit, effects)
            if _faults.armed:
                _faults.hit("actor.after_effects", self.workflow_id)
        except Exception as exc:  # the step is committed; acting on it failed: reload it, then fail it
            self.state = None
            return self._contain(exc, "acting on a committed step", batch)
        return True

    def _effects(self, state: WorkflowState, commit: Commit, effects: Effects) -> None:
        if commit.claims and not self.awaiting:  # the grant runs now: stay for its answer (see Host.awaits)
            self.awaiting = True
            self.host.awaits(self)
        parks = self.host.effects.apply(self.workflow_id, self.calls, state, commit, effects)
        if parks:
            self.mailbox.extend(parks)

    def _contain(self, exc: BaseException, what: str, batch: Sequence[Message]) -> bool:
        """A fault local to this workflow while ``batch`` was its turn: fail the workflow (see :meth:`_fail`)."""
        return self._fail(engine_error(self.workflow_id, exc, what), batch, exc=exc)

    def _fail(
        self,
        error: ErrorInfo,
        batch: Sequence[Message],
        *,
        exc: BaseException | None = None,
        damage: tuple[QuarantineRow, ...] = (),
        repair: tuple[int, ...] = (),
    ) -> bool:
        """Replace the mailbox with one FailWorkflow turn (``containment.failing_turn``); False: gave up."""
        message: FailWorkflow | None = failing_turn(
            self.workflow_id, error, batch, self.mailbox, exc=exc, damage=damage, repair=repair
        )
        if message is None:
            self.forget()
            return False
        self.failures = 0
        self.mailbox.clear()
        self.ids.clear()
        self.mailbox.append(message)
        return True

    def _settle(self, batch: list[Message], commit: Commit) -> None:
        """A turn is done: its messages leave the mailbox's ids; the rows it consumed are remembered."""
        ids, recent = self.ids, self.recent
        for message in batch:
            if isinstance(message, DURABLE):
                ids.discard(message.id)
        for mid in (*commit.consumed, *commit.discarded):
            recent[mid] = None
        while len(recent) > _RECENT:
            del recent[next(iter(recent))]

    # loading -----------------------------------------------------------------
    async def _load(self) -> None:
        wid = self.workflow_id
        host = self.host
        before = list(self.mailbox) if self.revalidate else []
        self.revalidate = False
        try:
            loaded = await host.store.load(wid)
            pending = {m.id for m in await host.store.pending_for(wid)} if before else None
        finally:
            self.loading = False
            host.idle()
        if not host.holds(self):
            return  # dropped while loading (its shard was lost)
        if pending is not None:
            stale = {id(m) for m in before if isinstance(m, DURABLE) and m.id not in pending}
            if stale:  # rows already consumed: duplicates that slipped past the ids (their fence failed)
                host.counted(duplicates=len(stale))
                kept = [m for m in self.mailbox if id(m) not in stale]
                self.mailbox = deque(kept)
                self.ids = {m.id for m in kept if isinstance(m, DURABLE)}
        if loaded is None:
            self._unknown()
            return
        try:
            self.state = WorkflowState(loaded.record, list(loaded.specs), list(loaded.runs))
        except Exception as exc:  # rows that decode but do not fit together: nothing can run it
            log.error("workflow %s: its stored state is inconsistent (%r); its messages are dropped", wid, exc)
            self.forget()
            return
        if loaded.damage:
            what = ", ".join(f"{row.source} {row.key}" for row in loaded.damage)
            error = ErrorInfo.engine(
                "UndecodableRow",
                f"workflow {wid!r}: stored rows could not be decoded ({what}: {loaded.damage[0].error}); "
                "their bytes were moved to the quarantine table",
            )
            self._fail(error, (), damage=loaded.damage, repair=loaded.repair)
        self.step()

    def _unknown(self) -> None:
        """Messages for a workflow the store does not have: dropped; undecodable rows still move to quarantine."""
        wid = self.workflow_id
        bad = [m for m in self.mailbox if isinstance(m, Undecodable)]
        log.warning("%d message(s) for unknown workflow %s dropped", len(self.mailbox), wid)
        self.forget()
        if bad:
            now = self.host.clock()
            rows = [msgspec.structs.replace(m.row, at=now) for m in bad]
            commit = Commit(workflow_id=wid, discarded=[m.id for m in bad], quarantine=rows)
            self.host.store.enqueue(commit, partial(_log_failure, wid))

    def forget(self) -> None:
        """Give up: drop the mailbox (its rows stay in the store) and leave memory."""
        self.mailbox.clear()
        self.ids.clear()
        self.state = None
        self.maybe_leave()


def _log_failure(workflow_id: str, error: BaseException | None) -> None:
    if error is not None:
        log.error("workflow %s: moving its undecodable rows to quarantine failed: %r", workflow_id, error)
