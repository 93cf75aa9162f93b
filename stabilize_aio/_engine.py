"""The Engine: configuration, lifecycle, submit, queries and control.

Lifecycle (an explicit state machine; misuse raises :class:`EngineStateError`)::

    CREATED --start()--> RUNNING --stop()--> STOPPED   (never restarted: make a new Engine)

``async with engine`` is the primary form. ``await engine.start()`` and
``await engine.stop()`` must be called from the same task: the engine's task
group is entered in ``start`` and left in ``stop``. A failure inside the engine
cancels that task group and comes out of ``stop``/``__aexit__`` as one
:class:`StabilizeError`.
"""

from __future__ import annotations

import builtins
import contextlib
import enum
import logging
import secrets
import time
from collections.abc import Callable, Collection, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

import anyio
import anyio.abc
import msgspec

from ._codec import plain
from ._errors import (
    ConcurrencyError,
    CronError,
    DefinitionError,
    EngineStateError,
    RegistrationError,
    StabilizeError,
    UnknownTaskError,
    WorkflowNotFound,
)
from ._ids import check_id, derive, new_id
from .cluster.cron import Cron
from .cluster.membership import LeaseKeeper, SoleOwner
from .handlers import rules as _handlers
from .messages.durable import CancelWorkflow, SignalStage
from .messages.memory import Undecodable
from .model.definitions import Workflow
from .model.records import StageRun, StageSpec, WorkflowRecord
from .model.retry import RetryPolicy
from .model.status import WorkflowStatus
from .model.values import Event, Signal
from .model.views import WorkflowSummary, WorkflowView
from .pool.pool import PoolStatistics, TaskPool
from .pool.registry import TaskDefinition, make_definition
from .resilience.breaker import CircuitBreakerPolicy
from .runtime.dispatcher import Dispatcher, MailboxStatistics
from .runtime.timers import TimerService
from .state.commit import Transition
from .state.views import view_of
from .state.workflow import WorkflowState
from .store import NewWorkflow, Store, StoreStatistics, store_from_url
from .store.protocol import Pending, ScheduleRow
from .store.shards import shard_of
from .store.url import redact_url

log = logging.getLogger("stabilize_aio.engine")
F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_URL = "sqlite:///stabilize.db"


class _Life(enum.Enum):
    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class EngineStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """Everything countable about an engine, in one frozen struct."""

    state: str
    commits: int
    transitions: int
    outbox_reads: int
    bytes_written: int
    live_actors: int
    timers_pending: int
    store: StoreStatistics
    mailboxes: MailboxStatistics | None
    pools: tuple[PoolStatistics, ...]


class WorkflowRun:
    """A handle on one workflow run (this process's or an earlier one's)."""

    __slots__ = ("_engine", "workflow_id")

    def __init__(self, engine: Engine, workflow_id: str) -> None:
        self._engine = engine
        self.workflow_id = check_id(workflow_id)

    def __repr__(self) -> str:
        return f"<WorkflowRun {self.workflow_id}>"

    async def wait(self, timeout: float | None = None) -> WorkflowView:
        """Wait until the run completes and return its final view, whatever the status.

        Woken by the commit that finishes the workflow, not by polling.

        Raises:
            TimeoutError: ``timeout`` seconds passed (the workflow goes on).
        """
        return await self._engine._wait(self.workflow_id, timeout)

    async def get(self) -> WorkflowView:
        """The run's current view."""
        return await self._engine.get(self.workflow_id)


class Engine:
    """A durable workflow engine on one store.

    Args:
        url: ``sqlite:///path.db`` (the default is ``./stabilize.db``).
        store: a Store instance instead of a URL.
        thread_limit: worker threads for plain ``def`` tasks.
        batch: messages an actor folds into one turn at most.
        stop_grace: the default grace period of ``stop()``, in seconds.
        client: a pure client (PostgreSQL): it submits, reads, cancels and waits,
            but leases no shards and runs no tasks.
        lease: seconds a shard lease lasts without renewal (PostgreSQL).
        heartbeat: seconds between lease renewals (default: a third of ``lease``).
        poll_interval: seconds between safety-net polls for work and completions
            that another process's notification may have missed (PostgreSQL).
        retention: seconds finished workflows are kept; the leader deletes older
            ones (None: keep them forever).
        leader_interval: seconds between the leader's checks for due schedules.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        store: Store | None = None,
        thread_limit: int = 40,
        batch: int = 256,
        stop_grace: float = 10.0,
        client: bool = False,
        lease: float = 30.0,
        heartbeat: float | None = None,
        poll_interval: float = 5.0,
        retention: float | None = None,
        leader_interval: float = 1.0,
    ) -> None:
        self.url = url
        self._store = store if store is not None else store_from_url(url)
        self._definitions: dict[str, TaskDefinition] = {}
        self._thread_limit = thread_limit
        self._batch = batch
        self._stop_grace = stop_grace
        self._client = client
        self._lease = lease
        self._heartbeat = heartbeat if heartbeat is not None else lease / 3
        self._poll_interval = poll_interval
        self._retention = retention
        self._leader_interval = leader_interval
        self._membership: SoleOwner | LeaseKeeper = SoleOwner()
        self._life = _Life.CREATED
        self._tg: anyio.abc.TaskGroup | None = None
        self._dispatcher: Dispatcher | None = None
        self._timers: TimerService | None = None
        self._pools: dict[str, TaskPool] = {}
        self._waiters: dict[str, _Waiter] = {}
        self._owner_task: int | None = None  # the task that called start(): stop() must come from it
        self._wake_queue: dict[str, None] = {}  # an ordered set: a second wake-up of a queued one is dropped
        self._picking: set[str] = set()  # their rows are being read
        self._pick_again: set[str] = set()  # woken again while being read
        self._wake_ready: anyio.Event | None = None

    def __repr__(self) -> str:
        return f"<Engine {redact_url(self.url)!r} {self._life.value} tasks={sorted(self._definitions)}>"

    # registration ------------------------------------------------------------
    def task(
        self,
        name: str,
        *,
        concurrency: int | None = None,
        backlog: int | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        poll_interval: float | None = None,
        breaker: CircuitBreakerPolicy | None = None,
    ) -> Callable[[F], F]:
        """Register the decorated ``async def`` (or plain ``def``) as task type ``name``."""

        def decorate(fn: F) -> F:
            self.register(
                name,
                fn,
                concurrency=concurrency,
                backlog=backlog,
                timeout=timeout,
                retry=retry,
                poll_interval=poll_interval,
                breaker=breaker,
            )
            return fn

        return decorate

    def register(
        self,
        name: str,
        task: Any,
        *,
        concurrency: int | None = None,
        backlog: int | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        poll_interval: float | None = None,
        breaker: CircuitBreakerPolicy | None = None,
    ) -> None:
        """Register a function, a :class:`Task` instance or a Task class as task type ``name``.

        Raises:
            RegistrationError: after start, a duplicate name, or bad options.
        """
        if self._life is not _Life.CREATED:
            raise RegistrationError(f"task {name!r}: register tasks before the engine starts")
        if name in self._definitions:
            raise RegistrationError(f"task {name!r} is already registered")
        self._definitions[name] = make_definition(
            name,
            task,
            concurrency=concurrency,
            backlog=backlog,
            timeout=timeout,
            retry=retry,
            poll_interval=poll_interval,
            breaker=breaker,
        )

    # lifecycle ---------------------------------------------------------------
    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stop(self._stop_grace, exc)

    async def start(self) -> None:
        """Open the store, recover pending work and start the engine's loops.

        Raises:
            EngineStateError: the engine was started before.
            StoreError: the database is locked by another engine, corrupt, foreign or too new.
        """
        if self._life is not _Life.CREATED:
            raise EngineStateError(f"an engine starts once; this one is {self._life.value} (make a new Engine)")
        self._life = _Life.STARTING
        self._owner_task = anyio.get_current_task().id
        try:
            await self._store.open()
        except BaseException:
            self._life = _Life.STOPPED
            raise
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        try:
            thread_limiter = anyio.CapacityLimiter(self._thread_limit)
            self._timers = TimerService(self._deliver)
            if self._store.supports_leases:
                self._membership = LeaseKeeper(
                    self._store,
                    lease=self._lease,
                    heartbeat=self._heartbeat,
                    on_gain=self._shards_gained,
                    on_lost=self._shards_lost,
                    claims=not self._client,
                )
            elif self._client:
                raise EngineStateError("a client engine needs a shared database (PostgreSQL)")
            self._dispatcher = Dispatcher(
                store=self._store,
                tg=tg,
                pools=self._pools,
                schedule=self._timers.add,
                on_finished=self._finished,
                owns=self._membership.owns,
                batch=self._batch,
            )
            for name, definition in self._definitions.items():
                self._pools[name] = TaskPool(
                    definition, tg, self._dispatcher.task_finished, self._refill, thread_limiter
                )
            tg.start_soon(self._store.run_writer, name="store writer")
            membership = self._membership
            if isinstance(membership, LeaseKeeper):
                tg.start_soon(self._wake_loop, name="wake-ups")
                await self._store.listen(self._woken, self._done_elsewhere, membership.poke)
                await membership.step()  # claim a first share (and recover it) before returning
                tg.start_soon(membership.run, name="lease keeper")
                tg.start_soon(self._safety_net, name="safety net")
            else:
                await self._recover(None)
            tg.start_soon(self._timers.run, name="timers")
            if not self._client:
                tg.start_soon(self._leader, name="leader services")
        except BaseException:
            tg.cancel_scope.cancel()
            await self._close_group(None)
            raise
        self._life = _Life.RUNNING
        log.info("engine started on %s", redact_url(self.url))

    async def _recover(self, shards: Collection[int] | None, *, due_only: bool = False) -> None:
        """Redeliver what the outbox holds (of the given shards): it is all pending work.

        ``due_only`` (the safety-net poll) skips rows whose time has not come: the
        timer heap has those already. It also skips the rows of workflows that had
        a live actor before or after the read: the actor has those rows in hand,
        and a row it consumed while the read ran would come back stale (harmless,
        but a reload and a turn per workflow for nothing).
        """
        assert self._timers is not None
        live = self._dispatcher.actors if self._dispatcher is not None else {}
        was_live = set(live) if due_only else set()
        rows = await self._store.pending_messages()
        if due_only:
            was_live.update(live)  # and those live after it (not those this loop activates)
        now = time.time()
        count = 0
        for workflow_id, message in rows:
            if shards is not None and shard_of(workflow_id) not in shards:
                continue
            if due_only and workflow_id in was_live:
                continue  # a live actor already has this workflow's rows in hand
            count += 1
            if not (due_only and self._is_future(message, now)):
                self._route(workflow_id, message, now)
        if count and not due_only:
            log.info("recovered %d pending messages", count)

    async def _shards_gained(self, gained: dict[int, int]) -> None:
        """A lease was claimed: its shards' pending work is ours now."""
        await self._recover(set(gained))

    def _shards_lost(self, shards: set[int]) -> None:
        """Leases were lost or handed back: drop those shards' actors and cancel their calls."""
        if self._dispatcher is not None:
            self._dispatcher.drop(lambda workflow_id: shard_of(workflow_id) in shards)

    def _woken(self, workflow_id: str) -> None:
        """Another process committed work for a workflow (LISTEN): queue it for its owner.

        The driver calls this outside any task (no anyio backend is detectable there),
        so it only queues and sets an event; ``_wake_loop`` does the async work.
        Wake-ups of one workflow coalesce: one queued, at most one read at a time.
        """
        if self._life is _Life.RUNNING and self._membership.owns(workflow_id):
            self._wake_queue[workflow_id] = None
            if self._wake_ready is not None:
                self._wake_ready.set()

    async def _wake_loop(self) -> None:
        """Pick up the workflows other processes woke this owner for."""
        while True:
            self._wake_ready = anyio.Event()
            if not self._wake_queue:
                await self._wake_ready.wait()
            while self._wake_queue:
                workflow_id = next(iter(self._wake_queue))
                del self._wake_queue[workflow_id]
                if workflow_id in self._picking:
                    self._pick_again.add(workflow_id)  # read again once the read under way is done
                elif self._tg is not None:
                    self._picking.add(workflow_id)
                    self._tg.start_soon(self._pick_up, workflow_id)

    async def _pick_up(self, workflow_id: str) -> None:
        """Route a woken workflow's rows; again if it was woken while they were read (duplicates drop by id)."""
        try:
            while True:
                self._pick_again.discard(workflow_id)
                now = time.time()
                for message in await self._store.pending_for(workflow_id):
                    self._route(workflow_id, message, now)
                if workflow_id not in self._pick_again:
                    return
        finally:
            self._picking.discard(workflow_id)

    @staticmethod
    def _is_future(message: Pending, now: float) -> bool:
        return message.deliver_at is not None and message.deliver_at > now

    def _route(self, workflow_id: str, message: Pending, now: float) -> None:
        """A pending row read from the store: to the timer heap if its time has not come, else deliver it."""
        assert self._timers is not None
        if not isinstance(message, Undecodable) and self._is_future(message, now):
            self._timers.add(workflow_id, message)
        else:
            self._deliver(workflow_id, message)

    def _done_elsewhere(self, workflow_id: str) -> None:
        """Another process finished a workflow (LISTEN): wake this process's waiters."""
        waiter = self._waiters.pop(workflow_id, None)
        if waiter is not None:
            waiter.event.set()

    async def _safety_net(self) -> None:
        """A slow poll behind LISTEN/NOTIFY: due work of our shards, and completions awaited here."""
        while True:
            await anyio.sleep(self._poll_interval)
            try:
                if self._membership.held and not self._client:
                    await self._recover(set(self._membership.held), due_only=True)
                if self._waiters:
                    for workflow_id, status in (await self._store.statuses(list(self._waiters))).items():
                        if status.is_complete:
                            self._done_elsewhere(workflow_id)
            except Exception:
                log.exception("safety-net poll failed; retrying in %ss", self._poll_interval)

    async def stop(self, grace: float | None = None) -> None:
        """Stop intake, let running tasks finish within ``grace`` seconds, then cancel them.

        Tasks the engine cancels record no result and run again on the next start.
        """
        await self._stop(self._stop_grace if grace is None else grace, None)

    async def _stop(self, grace: float, user_exc: BaseException | None) -> None:
        if self._life is _Life.STOPPED:
            return
        if self._life is not _Life.RUNNING:
            raise EngineStateError(f"stop() on an engine that is {self._life.value}")
        if anyio.get_current_task().id != self._owner_task:
            raise EngineStateError(
                "stop() must be called from the task that called start() (the engine's task group lives "
                "in that task); use `async with engine` in one task, or call start() and stop() from the "
                "same task. The engine is still running."
            )
        self._life = _Life.STOPPING
        tg, dispatcher = self._tg, self._dispatcher
        assert tg is not None
        assert dispatcher is not None
        try:
            with anyio.CancelScope(shield=True):
                for pool in self._pools.values():
                    pool.drain()
                with anyio.move_on_after(grace):
                    for pool in self._pools.values():
                        await pool.wait_idle()
                dispatcher.accept_dispatch = False
                for pool in self._pools.values():
                    pool.cancel_all()
                with anyio.move_on_after(max(grace, 5.0)):
                    for pool in self._pools.values():
                        await pool.wait_idle()
                    await dispatcher.wait_quiet()
                    await self._store.flush()
                if isinstance(self._membership, LeaseKeeper):
                    with anyio.move_on_after(5.0):  # leases back, row gone: the others take over at once
                        await self._membership.leave()
        finally:
            tg.cancel_scope.cancel()
            await self._close_group(user_exc)
        log.info("engine stopped")

    async def _close_group(self, user_exc: BaseException | None) -> None:
        tg = self._tg
        self._tg = None
        self._life = _Life.STOPPED
        try:
            if tg is not None:
                # Only a cancellation is handed to the task group (it may be the group's own,
                # after an internal failure); a user's own exception propagates unchanged.
                cancelled = user_exc if isinstance(user_exc, anyio.get_cancelled_exc_class()) else None
                if cancelled is not None:
                    await tg.__aexit__(type(cancelled), cancelled, cancelled.__traceback__)
                else:
                    await tg.__aexit__(None, None, None)
        except BaseExceptionGroup as group:
            errors = group.exceptions
            first = errors[0] if len(errors) == 1 else group
            raise StabilizeError(f"the engine failed: {first!r}") from group
        finally:
            with anyio.CancelScope(shield=True):
                await self._store.close()
            for waiter in self._waiters.values():
                waiter.event.set()

    def _require_running(self) -> Dispatcher:
        if self._life is not _Life.RUNNING or self._dispatcher is None:
            raise EngineStateError(f"the engine is {self._life.value}; use it inside `async with engine`")
        return self._dispatcher

    # submit ------------------------------------------------------------------
    async def submit(
        self,
        workflow: Workflow,
        *,
        context: Mapping[str, Any] | None = None,
        workflow_id: str | None = None,
    ) -> WorkflowRun:
        """Start a new run of ``workflow``; returns once it is durably committed.

        ``context`` holds per-run inputs. A caller-supplied ``workflow_id`` makes
        submit idempotent: the same id returns the existing run.

        Raises:
            DefinitionError: an unregistered task type or inputs msgspec cannot encode
                (nothing is written).
        """
        self._require_running()
        if workflow_id is not None:
            check_id(workflow_id)
        inputs = self._check_definition(workflow, context, "submit")
        state = _initial_state(workflow, "", inputs)
        return await self._start_run(state.record, state.specs, workflow_id)

    def _check_definition(self, workflow: Workflow, context: Mapping[str, Any] | None, what: str) -> dict[str, Any]:
        """Refuse, before anything is written, task types this engine lacks and inputs that cannot be encoded."""
        if not isinstance(workflow, Workflow):
            raise TypeError(f"{what}() takes a Workflow, not {type(workflow).__name__}")
        for stage in workflow.stages:
            for task in stage.tasks:
                if task not in self._definitions and not self._client:
                    raise UnknownTaskError(
                        f"stage {stage.ref_id!r}: task type {task!r} is not registered "
                        f"(registered: {', '.join(sorted(self._definitions)) or 'none'})",
                        stage=stage.ref_id,
                    )
        return plain(dict(context or {}), what="workflow context (inputs)")

    async def _start_run(
        self, template: WorkflowRecord, specs: list[StageSpec], workflow_id: str | None
    ) -> WorkflowRun:
        """Insert a run of these specs with its start turn in one commit, and act on it."""
        dispatcher = self._require_running()
        if workflow_id is not None:
            if await self._exists(workflow_id):
                return WorkflowRun(self, workflow_id)
        else:
            workflow_id = self._local_id()
        record = msgspec.structs.replace(template, id=workflow_id, created_at=time.time())
        state = WorkflowState(record, specs, [StageRun() for _ in specs])
        begin = _handlers.begin(state, time.time())
        owned = self._membership.owns(workflow_id)
        op = NewWorkflow(record=state.record, specs=state.specs, runs=list(state.runs), begin=begin, notify=not owned)
        try:
            await self._store.write(op)
        except ConcurrencyError:
            if await self._exists(workflow_id):
                return WorkflowRun(self, workflow_id)
            raise
        if owned:
            state.apply(begin)
            dispatcher.adopt(state, begin)
        return WorkflowRun(self, workflow_id)

    # schedules (fired by the leader) ---------------------------------------------
    async def schedule(
        self,
        name: str,
        workflow: Workflow,
        *,
        cron: str,
        context: Mapping[str, Any] | None = None,
        first_at: float | None = None,
    ) -> ScheduleInfo:
        """Start ``workflow`` on a cron expression (five fields, UTC), durably, from whichever engine leads.

        Each tick starts the run ``schedule:<name>:<tick>`` exactly once, also across
        leader changes; ticks missed while no engine ran are fired once, not replayed.
        Scheduling an existing name replaces it. ``first_at`` (epoch seconds) sets
        the first tick instead of the cron's next one.

        Raises:
            DefinitionError: a bad cron expression, unregistered task types or inputs
                that cannot be encoded (nothing is written).
        """
        self._require_running()
        check_id(name, what="schedule name")
        inputs = self._check_definition(workflow, context, "schedule")
        try:
            parsed = Cron(cron)
        except CronError as exc:
            raise DefinitionError(f"schedule {name!r}: {exc}") from exc
        state = _initial_state(workflow, "", inputs)
        body = _schedule_encoder.encode(_Scheduled(record=state.record, specs=tuple(state.specs)))
        next_at = first_at if first_at is not None else parsed.next_after(time.time())
        await self._store.put_schedule(ScheduleRow(name=name, cron=cron, next_at=next_at, body=body))
        return ScheduleInfo(
            name=name, cron=cron, next_at=next_at, application=workflow.application, workflow=workflow.name
        )

    async def unschedule(self, name: str) -> bool:
        """Remove a schedule; False if there was none. Runs already started go on."""
        self._require_running()
        return await self._store.delete_schedule(name)

    async def schedules(self) -> builtins.list[ScheduleInfo]:
        """The durable schedules, by name."""
        rows = await self._store.list_schedules()
        out = []
        for row in rows:
            try:
                stored = _schedule_decoder.decode(row.body)
            except msgspec.DecodeError:
                log.error("schedule %r cannot be decoded; it is left out", row.name)
                continue
            out.append(
                ScheduleInfo(
                    name=row.name,
                    cron=row.cron,
                    next_at=row.next_at,
                    application=stored.record.application,
                    workflow=stored.record.name,
                )
            )
        return out

    def _is_leader(self) -> bool:
        """SQLite: the one engine. PostgreSQL: the engine holding shard 0 (a client never leads)."""
        if self._client:
            return False
        return 0 in self._membership.held

    async def _leader(self) -> None:
        """Global services while this engine leads: fire due schedules, apply retention."""
        while True:
            await anyio.sleep(self._leader_interval)
            if not self._is_leader():
                continue
            try:
                await self.fire_due_schedules()
                await self.apply_retention()
            except Exception:
                log.exception("leader services failed; retrying in %ss", self._leader_interval)

    async def apply_retention(self) -> int:
        """Delete finished workflows older than ``retention`` (the leader does this on its own); returns how many."""
        if self._retention is None:
            return 0
        return await self._store.delete_finished(time.time() - self._retention, 1_000)

    async def fire_due_schedules(self) -> int:
        """Start the runs of every due schedule tick (the leader does this on its own); returns ticks fired."""
        now = time.time()
        fired = 0
        for row in await self._store.list_schedules(due_before=now):
            try:
                stored = _schedule_decoder.decode(row.body)
            except msgspec.DecodeError as exc:  # one bad schedule must not stop the others
                log.error("schedule %r cannot be decoded (%r); it is skipped", row.name, exc)
                continue
            run_id = derive("schedule", row.name, str(int(row.next_at)))
            await self._start_run(stored.record, list(stored.specs), run_id)
            following = Cron(row.cron).next_after(max(row.next_at, now))  # missed ticks: fired once, not replayed
            if await self._store.advance_schedule(row.name, row.next_at, following):
                fired += 1
        return fired

    async def _exists(self, workflow_id: str) -> bool:
        if self._dispatcher is not None and self._dispatcher.live_state(workflow_id) is not None:
            return True
        return bool(await self._store.statuses([workflow_id]))

    def _local_id(self) -> str:
        """A new id; on leases, one whose shard this process holds, so the run needs no hand-off.

        Ids are random anyway, so drawing until one lands on a held shard changes
        nothing for the caller (a client, which holds none, takes the first draw).
        """
        held = self._membership.held
        for _ in range(64):
            workflow_id = new_id()
            if not held or shard_of(workflow_id) in held:
                return workflow_id
        return workflow_id

    def handle(self, workflow_id: str) -> WorkflowRun:
        """A handle on an existing run (also one submitted by an earlier process)."""
        return WorkflowRun(self, workflow_id)

    # queries -----------------------------------------------------------------
    async def get(self, workflow_id: str) -> WorkflowView:
        """The current view of a run.

        Raises:
            WorkflowNotFound: no run has this id.
        """
        check_id(workflow_id)
        state = self._dispatcher.live_state(workflow_id) if self._dispatcher is not None else None
        if state is not None:
            return view_of(state)
        loaded = await self._store.load(workflow_id)
        if loaded is None:
            raise WorkflowNotFound(workflow_id)
        return view_of(WorkflowState(loaded.record, list(loaded.specs), list(loaded.runs)))

    async def list(
        self,
        *,
        status: WorkflowStatus | str | None = None,
        application: str | None = None,
        limit: int = 100,
    ) -> list[WorkflowSummary]:
        """Runs, newest first, optionally filtered by status and application."""
        value = _status_value(status) if status is not None else None
        records = await self._store.list_workflows(status=value, application=application, limit=limit)
        return [
            WorkflowSummary(
                workflow_id=r.id,
                application=r.application,
                name=r.name,
                status=r.status,
                created_at=r.created_at,
                ended_at=r.ended_at,
            )
            for r in records
        ]

    async def history(self, workflow_id: str) -> builtins.list[Event]:
        """A run's append-only history (workflow and stage lifecycle), in commit order.

        Raises:
            WorkflowNotFound: no run has this id.
        """
        check_id(workflow_id)
        events = await self._store.events(workflow_id)
        if not events and await self._store.load(workflow_id) is None:
            raise WorkflowNotFound(workflow_id)
        return events

    async def _wait(self, workflow_id: str, timeout: float | None) -> WorkflowView:
        check_id(workflow_id)
        if self._life is _Life.STOPPED:
            raise EngineStateError(f"wait() for {workflow_id!r} on an engine that is stopped (use a running engine)")
        try:
            return await self._wait_for(workflow_id, timeout)
        except TimeoutError:
            state = self._dispatcher.live_state(workflow_id) if self._dispatcher is not None else None
            status = state.record.status.value if state is not None else "not finished"
            raise TimeoutError(
                f"workflow {workflow_id!r} did not finish within {timeout}s (it is {status}; it goes on)"
            ) from None

    async def _wait_for(self, workflow_id: str, timeout: float | None) -> WorkflowView:
        with anyio.fail_after(timeout) if timeout is not None else contextlib.nullcontext():
            while True:
                waiter = self._waiters.get(workflow_id)
                if waiter is None:
                    waiter = self._waiters[workflow_id] = _Waiter()
                state = self._dispatcher.live_state(workflow_id) if self._dispatcher is not None else None
                if state is not None:
                    if state.record.status.is_complete:
                        return view_of(state)
                else:
                    status = (await self._store.statuses([workflow_id])).get(workflow_id)
                    if status is None:
                        raise WorkflowNotFound(workflow_id)
                    if status.is_complete:
                        return await self.get(workflow_id)
                await waiter.event.wait()
                if waiter.view is not None:
                    return waiter.view
                # woken by another process's notification (or the safety net): look again, since the
                # local actor may not have applied the finishing commit yet

    def _finished(self, state: WorkflowState) -> None:
        log.info(
            "workflow %s finished %s",
            state.record.id,
            state.record.status.value,
            extra={"workflow_id": state.record.id},
        )
        waiter = self._waiters.pop(state.record.id, None)
        if waiter is not None:
            waiter.view = view_of(state)  # built once for every waiter of this run
            waiter.event.set()

    # control -----------------------------------------------------------------
    async def cancel(self, workflow_id: str, reason: str = "") -> WorkflowView:
        """Cancel a run for real: its running task coroutines are cancelled and it ends CANCELED.

        Idempotent: cancelling a finished run returns its view unchanged.
        Returns the run's final view.
        """
        dispatcher = self._require_running()
        view = await self.get(workflow_id)  # checks the id
        if view.status.is_complete:
            return view
        message = CancelWorkflow(id="cancel", reason=reason)
        owned = self._membership.owns(workflow_id)
        try:
            await self._store.write(Transition(workflow_id=workflow_id, emitted=[message], notify=not owned))
        except ConcurrencyError:
            pass  # a cancel is already pending for this run
        else:
            if owned:
                dispatcher.deliver(workflow_id, message)
        return await self._wait(workflow_id, None)

    async def signal(self, workflow_id: str, stage: str, name: str, data: Any = None) -> None:
        """Send a signal to a stage of a run, from any process; it is durable once this returns.

        A stage whose task returned ``TaskResult.suspend()`` resumes: its task is called
        again with ``_signal_name`` and ``_signal_data`` in its context. A signal that
        arrives before the stage suspends is kept on the stage and consumed when it does.

        Raises:
            WorkflowNotFound: no run has this id.
            DefinitionError: the run has no stage ``stage``, or ``data`` cannot be encoded.
            EngineStateError: the run has finished.
        """
        dispatcher = self._require_running()
        check_id(workflow_id)
        data = plain(data, what="signal data", stage=stage)
        state = dispatcher.live_state(workflow_id)
        if state is None:
            loaded = await self._store.load(workflow_id)
            if loaded is None:
                raise WorkflowNotFound(workflow_id)
            state = WorkflowState(loaded.record, list(loaded.specs), list(loaded.runs))
        try:
            index = state.stage_index(stage)
        except KeyError:
            raise DefinitionError(f"workflow {workflow_id!r} has no stage {stage!r}", stage=stage) from None
        if state.record.status.is_complete:
            raise EngineStateError(
                f"workflow {workflow_id!r} is {state.record.status.value}: signal {name!r} for stage {stage!r} refused"
            )
        message = SignalStage(id=f"signal:{secrets.token_hex(8)}", stage=index, signal=Signal(name=name, data=data))
        owned = self._membership.owns(workflow_id)
        await self._store.write(Transition(workflow_id=workflow_id, emitted=[message], notify=not owned))
        if owned:
            dispatcher.deliver(workflow_id, message)

    async def wait_idle(self) -> None:
        """Wait until no task call runs, no actor runs a turn and nothing waits to be committed.

        Timers may still be pending (a poll or a retry later on). Useful in tests.
        """
        dispatcher = self._require_running()
        while True:
            for pool in self._pools.values():
                await pool.wait_idle()
            await dispatcher.wait_quiet()
            await self._store.flush()
            if dispatcher.statistics().running_actors == 0 and all(p.active == 0 for p in self._pools.values()):
                return

    # internals ---------------------------------------------------------------
    def _deliver(self, workflow_id: str, message: Pending) -> None:
        if self._dispatcher is not None:
            self._dispatcher.deliver(workflow_id, message)

    def _refill(self, pool: TaskPool) -> None:
        """A pool that refused work has room again: read its pending rows back.

        A request that comes while a scan runs is never lost: the scan runs again.
        """
        if self._tg is None:
            return
        if pool.refilling:
            pool.refill_again = True
            return
        pool.refilling = True
        self._tg.start_soon(self._refill_from_store, pool, name=f"refill {pool.definition.name}")

    async def _refill_from_store(self, pool: TaskPool) -> None:
        """Page through the pool's due RunTask rows until its room is filled or none are left.

        Rows the pool holds are skipped; a row whose result is not committed yet is
        delivered and dropped as stale by its actor. ``overflowed`` is cleared only
        by a scan that reached the end with no refusal since it began (a refusal
        during the scan may be of a row it already passed); a refill asked for
        during a scan runs another scan after it.
        """
        try:
            while True:
                pool.refill_again = False
                refusals = pool.rejected
                if await self._scan(pool) and pool.rejected == refusals:
                    pool.overflowed = False  # nothing refused is left behind
                if not pool.refill_again:
                    break
        finally:
            pool.refilling = False
        if pool.overflowed and pool.active == 0 and pool.queued == 0 and self._dispatcher is not None:
            await self._dispatcher.wait_quiet()  # let the stale results commit, then look again
            self._refill(pool)

    async def _scan(self, pool: TaskPool) -> bool:
        """Deliver due rows of the pool's task type up to its room; True if the scan reached the end."""
        room = pool.room()
        page = max(room, 64)
        after: tuple[str, str] | None = None
        delivered = 0
        while delivered < room:
            rows = await self._store.pending_runs(pool.definition.name, page, time.time(), after)
            for workflow_id, message in rows:
                if not pool.knows(workflow_id, message.id):
                    self._deliver(workflow_id, message)
                    delivered += 1
            if len(rows) < page:
                return True
            after = (rows[-1][0], rows[-1][1].id)
        return False

    def statistics(self) -> EngineStatistics:
        """Counters of the engine, its store, its actors and its pools."""
        store = self._store.statistics()
        mailboxes = self._dispatcher.statistics() if self._dispatcher is not None else None
        return EngineStatistics(
            state=self._life.value,
            commits=store.commits,
            transitions=store.transitions,
            outbox_reads=store.outbox_reads,
            bytes_written=store.bytes_written,
            live_actors=mailboxes.live_actors if mailboxes is not None else 0,
            timers_pending=self._timers.pending if self._timers is not None else 0,
            store=store,
            mailboxes=mailboxes,
            pools=tuple(p.statistics() for p in self._pools.values()),
        )

    @property
    def store(self) -> Store:
        """The engine's store."""
        return self._store


def _status_value(status: WorkflowStatus | str) -> str:
    """A status filter: the enum or its name in any case (``"running"``); ValueError naming the valid ones."""
    try:
        return WorkflowStatus(status.upper() if isinstance(status, str) else status).value
    except (ValueError, AttributeError):
        valid = ", ".join(s.value for s in WorkflowStatus)
        raise ValueError(f"unknown workflow status {status!r}; one of {valid} (any case)") from None


class ScheduleInfo(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A durable schedule: its name, cron, next tick, and the workflow it starts."""

    name: str
    cron: str
    next_at: float
    application: str
    workflow: str


class _Scheduled(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What a schedule stores: the run's record template and its stage specs."""

    record: WorkflowRecord
    specs: tuple[StageSpec, ...]


_schedule_encoder = msgspec.msgpack.Encoder()
_schedule_decoder = msgspec.msgpack.Decoder(_Scheduled)


class _Waiter:
    """Callers of run.wait() on one run: woken by the commit that finishes it, with its final view."""

    __slots__ = ("event", "view")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.view: WorkflowView | None = None


def _initial_state(workflow: Workflow, workflow_id: str, inputs: dict[str, Any]) -> WorkflowState:
    index = {s.ref_id: i for i, s in enumerate(workflow.stages)}
    specs = [
        StageSpec(
            ref_id=s.ref_id,
            index=i,
            name=s.name,
            tasks=s.tasks,
            context=s.context,
            requisites=tuple(sorted({index[r] for r in s.requisites})),
            continue_on_failure=s.continue_on_failure,
            fail_workflow=s.fail_workflow,
            complete_other_branches_then_fail=s.complete_other_branches_then_fail,
            timeout=s.timeout,
            stage_timeout=s.stage_timeout,
        )
        for i, s in enumerate(workflow.stages)
    ]
    record = WorkflowRecord(
        id=workflow_id,
        application=workflow.application,
        name=workflow.name,
        inputs=inputs,
        created_at=time.time(),
    )
    return WorkflowState(record, specs, [StageRun() for _ in specs])
