"""The engine's running parts, wired together: what lives in the engine's task group.

The :class:`~stabilize_aio.Engine` is a facade; this is what it composes. The
parts talk through callables and small protocols, never through the engine:

* the dispatcher routes messages to workflow actors (``runtime/dispatcher.py``);
* one :class:`~stabilize_aio.pool.pool.TaskPool` per task type runs the calls;
* the timer service holds every ``deliver_at`` row in one heap;
* recovery redelivers the outbox (at start, on a gained lease, on a wake-up);
* refills read back the rows a full pool refused;
* waiters are woken by the commit that finishes their run;
* membership says which workflows this process owns (all of them on SQLite,
  its leased shards on PostgreSQL).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import anyio
import anyio.abc
import msgspec

from .._clock import Clock
from .._config import EngineConfig
from .._errors import ConcurrencyError, EngineStateError, WorkflowNotFound
from .._ids import new_id
from ..cluster.membership import LeaseKeeper, SoleOwner
from ..messages.durable import Durable, Send
from ..model.records import StageRun, StageSpec, WorkflowRecord
from ..model.reducers import BUILTIN
from ..model.values import Event
from ..model.views import WorkflowView
from ..pool.pool import TaskPool
from ..pool.registry import Registry
from ..resilience.breaker import CircuitBreaker
from ..state.commit import Commit
from ..state.workflow import WorkflowState
from ..store import Store
from ..store.protocol import LeaseStore, NotifyStore, Pending
from ..store.shards import shard_of
from .children import Children
from .dispatcher import Dispatcher
from .recovery import Recovery
from .refill import Refiller
from .statistics import EngineStatistics, engine_statistics
from .timers import TimerService
from .waiters import GetView, Waiters

log = logging.getLogger("stabilize_aio.engine")

#: Attempts at granting claims after a commit before leaving it to the next release, start or safety net.
_GRANT_ATTEMPTS = 4


class Runtime:
    """The parts of one engine that run: built when it starts, stopped when it stops."""

    def __init__(
        self,
        store: Store,
        config: EngineConfig,
        clock: Clock,
        registry: Registry,
        get: GetView,
    ) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self._registry = registry
        self.running = False  # accepting work from other processes (set by start, cleared by shutdown)
        self.membership: SoleOwner | LeaseKeeper = SoleOwner()
        self.dispatcher: Dispatcher | None = None
        self.pools: dict[str, TaskPool] = {}
        self.timers = TimerService(self.deliver, clock=clock)
        self.waiters = Waiters(store, live=self.live, get=get)
        self.recovery = Recovery(
            store, deliver=self.deliver, schedule=self.timers.add, live=self.live_ids, accepts=self.accepts, clock=clock
        )
        self.refiller = Refiller(store, deliver=self.deliver, quiet=self.quiet, clock=clock)

    async def start(self, tg: anyio.abc.TaskGroup) -> None:
        """Build the parts that live in ``tg``, recover pending work, and start the loops."""
        config, store = self.config, self.store
        if isinstance(store, LeaseStore):
            self.membership = LeaseKeeper(
                store, lease=config.lease, heartbeat=config.heartbeat_interval, on_gain=self._shards_gained,
                on_lost=self._shards_lost, claims=not config.client,
            )  # fmt: skip
        elif config.client:
            raise EngineStateError("a client engine needs a shared database (PostgreSQL)")
        dispatcher = self.dispatcher = Dispatcher(
            store=store, tg=tg, pools=self.pools, schedule=self.timers.add, on_finished=self._finished,
            owns=self.membership.owns, clock=self.clock.time, batch=config.batch,
            reducers={**BUILTIN, **self._registry.reducers}, perform=self._perform,
            on_changed=self.waiters.changed, reread=self.recovery.reread, grant=self.grant,
        )  # fmt: skip
        self.children = Children(self, dispatcher.deliver)
        threads = anyio.CapacityLimiter(config.thread_limit)
        for name, definition in self._registry.definitions.items():
            self.pools[name] = TaskPool(
                definition, tg, dispatcher.task_finished, self.refiller.request, threads, clock=self.clock
            )
        self.refiller.start(tg)
        self.running = True
        tg.start_soon(store.run_writer, name="store writer")
        membership = self.membership
        if isinstance(membership, LeaseKeeper):
            if not isinstance(store, NotifyStore):
                raise EngineStateError(f"{store!r} leases shards but sends no notifications: it cannot share work")
            tg.start_soon(self.recovery.wake_loop, tg, name="wake-ups")
            await store.listen(self.recovery.woken, self.waiters.done_elsewhere, membership.poke)
            await membership.step()  # claim a first share (and recover it) before returning
            tg.start_soon(membership.run, name="lease keeper")
            held = (lambda: ()) if config.client else (lambda: membership.held)
            sweep = None if config.client else functools.partial(self.grant, None, False)
            tg.start_soon(self.recovery.safety_net, config.poll_interval, held, self.waiters, sweep, name="safety net")
        else:
            await self.recovery.recover(None)
        if not config.client:
            await self.grant(None, False)  # claims a crash left ungranted (their turn committed, the grant never ran)
        tg.start_soon(self.timers.run, name="timers")

    async def shutdown(self, grace: float) -> None:
        """Pools stop starting calls; running ones get ``grace`` seconds, then are cancelled; turns flush."""
        self.running = False
        self.refiller.stop()
        dispatcher, pools = self.dispatcher, self.pools.values()
        with anyio.CancelScope(shield=True):
            for pool in pools:
                pool.drain()
            with anyio.move_on_after(grace):
                for pool in pools:
                    await pool.wait_idle()
            if dispatcher is not None:
                dispatcher.stop_dispatching()
            for pool in pools:
                pool.cancel_all()
            with anyio.move_on_after(max(grace, 5.0)):
                for pool in pools:
                    await pool.wait_idle()
                if dispatcher is not None:
                    await dispatcher.wait_quiet()
                await self.store.flush()
            if isinstance(self.membership, LeaseKeeper):
                with anyio.move_on_after(5.0):  # leases back, row gone: the others take over at once
                    await self.membership.leave()

    def closed(self) -> None:
        """The task group is gone: wake every waiter (they find the engine stopped)."""
        self.running = False
        self.refiller.stop()
        self.waiters.close()

    # the runs ----------------------------------------------------------------
    async def grant(self, keys: list[str] | None, freed: bool) -> None:
        """Grant claims on shared keys (None: all that wait); deliver the rows of the runs this process owns.

        The store wrote them and woke their owners elsewhere; a failure is logged, and the
        next release of the key, the next start or the safety net grants again.
        """
        for attempt in range(1, _GRANT_ATTEMPTS + 1):
            try:
                rows = await self.store.grant(keys, freed=freed)
                break
            except Exception:
                log.exception("granting claims on %s failed (attempt %d)", keys or "every key", attempt)
                if attempt == _GRANT_ATTEMPTS:
                    return  # (the next release of the key, the next start or the safety net grants it)
                await self.clock.sleep(attempt * 0.5)
        for workflow_id, message in rows:
            if self.owns(workflow_id):
                self.deliver(workflow_id, message)

    async def _perform(self, workflow_id: str, send: Send) -> None:
        await self.children.perform(workflow_id, send)

    def owns(self, workflow_id: str) -> bool:
        """Whether this process runs the workflow's actor."""
        return self.membership.owns(workflow_id)

    async def start_run(self, template: WorkflowRecord, specs: list[StageSpec], workflow_id: str | None) -> str:
        """Commit a new run of these specs with its first turn (see :meth:`start_new`); returns its id."""
        return (await self.start_new(template, specs, workflow_id))[0]

    async def start_new(
        self, template: WorkflowRecord, specs: list[StageSpec], workflow_id: str | None
    ) -> tuple[str, bool]:
        """Commit a new run of these specs with its first turn (through its actor): (its id, whether made now).

        A caller-given id that exists already is returned as it is (an idempotent submit), not made.
        """
        assert self.dispatcher is not None
        if workflow_id is None:
            workflow_id = self.local_id()
        elif await self.exists(workflow_id):
            return workflow_id, False
        record = msgspec.structs.replace(template, id=workflow_id, created_at=self.clock.time())
        try:
            state = WorkflowState(record, specs, [StageRun() for _ in specs])
            await self.dispatcher.begin(state, owned=self.owns(workflow_id))
        except ConcurrencyError:
            if not await self.exists(workflow_id):
                raise
            return workflow_id, False  # another submit made it meanwhile
        return workflow_id, True

    async def command(self, workflow_id: str, message: Durable) -> None:
        """Commit an outside command's row (waking its owner elsewhere), then hand it to its actor here."""
        assert self.dispatcher is not None
        owned = self.owns(workflow_id)
        await self.store.write(Commit(workflow_id=workflow_id, emitted=[message], notify=not owned))
        if owned:
            self.dispatcher.deliver(workflow_id, message)

    async def until(self, workflow_id: str, done: Callable[[WorkflowView], bool]) -> WorkflowView:
        """The run's view once ``done(view)`` holds (see :meth:`Waiters.until`)."""
        return await self.waiters.until(workflow_id, done)

    async def state(self, workflow_id: str) -> WorkflowState:
        """The run's live state, or its state as stored (WorkflowNotFound)."""
        state = self.live(workflow_id)
        if state is not None:
            return state
        loaded = await self.store.load(workflow_id)
        if loaded is None:
            raise WorkflowNotFound(workflow_id)
        return WorkflowState(loaded.record, list(loaded.specs), list(loaded.runs))

    async def history(self, workflow_id: str) -> list[Event]:
        """A run's events in commit order (WorkflowNotFound)."""
        events = await self.store.events(workflow_id)
        if not events and await self.store.load(workflow_id) is None:
            raise WorkflowNotFound(workflow_id)
        return events

    async def wait(self, workflow_id: str, timeout: float | None) -> WorkflowView:
        """A run's final view once it completes (see :meth:`Waiters.wait`)."""
        return await self.waiters.wait(workflow_id, timeout)

    async def exists(self, workflow_id: str) -> bool:
        """Whether a run has this id."""
        return self.live(workflow_id) is not None or bool(await self.store.statuses([workflow_id]))

    def local_id(self) -> str:
        """A new id; on leases, one whose shard this process holds (so the run needs no hand-off).

        Ids are random anyway, so drawing until one lands on a held shard changes
        nothing for the caller (a client, which holds none, takes the first draw).
        """
        held = self.membership.held
        for _ in range(64):
            workflow_id = new_id(clock=self.clock)
            if not held or shard_of(workflow_id) in held:
                return workflow_id
        return workflow_id

    def leads(self) -> bool:
        """SQLite: the one engine. PostgreSQL: the engine holding shard 0 (a client never leads)."""
        return not self.config.client and 0 in self.membership.held

    async def wait_idle(self) -> None:
        """Until no call runs, no actor runs a turn and nothing waits to be committed."""
        dispatcher = self.dispatcher
        assert dispatcher is not None
        while True:
            for pool in self.pools.values():
                await pool.wait_idle()
            await dispatcher.wait_quiet()
            await self.store.flush()
            if dispatcher.statistics().running_actors == 0 and all(p.active == 0 for p in self.pools.values()):
                return

    async def wait_leases_changed(self) -> None:
        """Until the leased shards change (EngineStateError on a store without leases)."""
        if not isinstance(self.membership, LeaseKeeper):
            raise EngineStateError("this engine's store has no shard leases (they never change)")
        await self.membership.wait_changed()

    def breaker(self, task_type: str) -> CircuitBreaker | None:
        """The circuit breaker of a task type's pool, if it has one."""
        pool = self.pools.get(task_type)
        return pool.breaker if pool is not None else None

    def statistics(self, state: str) -> EngineStatistics:
        """The engine's statistics, in lifecycle state ``state``."""
        dispatcher, members = self.dispatcher, self.membership
        keeper = members if isinstance(members, LeaseKeeper) else None
        return engine_statistics(
            state=state, store=self.store.statistics(),
            mailboxes=dispatcher.statistics() if dispatcher is not None else None, timers=self.timers.pending,
            pools=[p.statistics() for p in self.pools.values()], leases=members.held, leader=self.leads(),
            engines=keeper.engines if keeper else 1, owner=keeper.owner if keeper else None,
        )  # fmt: skip

    # wiring ------------------------------------------------------------------
    def deliver(self, workflow_id: str, message: Pending) -> None:
        """A message for a workflow's actor."""
        if self.dispatcher is not None:
            self.dispatcher.deliver(workflow_id, message)

    def live(self, workflow_id: str) -> WorkflowState | None:
        """The committed state of a live workflow, if it has an actor."""
        return self.dispatcher.live_state(workflow_id) if self.dispatcher is not None else None

    def live_ids(self) -> list[str]:
        """The workflows with a live actor."""
        return list(self.dispatcher.actors) if self.dispatcher is not None else []

    def accepts(self, workflow_id: str) -> bool:
        """Whether a wake-up for this workflow is for this process."""
        return self.running and self.membership.owns(workflow_id)

    async def quiet(self) -> None:
        """Until no actor has a turn committing or its state loading."""
        if self.dispatcher is not None:
            await self.dispatcher.wait_quiet()

    def _finished(self, state: WorkflowState) -> None:
        wid = state.record.id
        log.info("workflow %s finished %s", wid, state.record.status.value, extra={"workflow_id": wid})
        self.waiters.finished(state)

    async def _shards_gained(self, gained: dict[int, int]) -> None:
        await self.recovery.recover(set(gained))

    def _shards_lost(self, shards: set[int]) -> None:
        if self.dispatcher is not None:
            self.dispatcher.drop(lambda workflow_id: shard_of(workflow_id) in shards)
