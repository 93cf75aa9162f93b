"""The Engine: a facade over the parts it composes: its configuration, lifecycle and public verbs.

``async with engine`` is the primary form; ``start()`` and ``stop()`` must come from
one task (see :mod:`stabilize_aio._lifecycle`). What each part does is in docs/architecture.md.
"""

from __future__ import annotations

import builtins
import functools
import logging
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar, Unpack

import anyio
import anyio.abc

from ._clock import SYSTEM_CLOCK, Clock
from ._config import DEFAULT_URL, EngineConfig
from ._control import RunControl
from ._errors import EngineStateError, WorkflowExists
from ._ids import check_id
from ._lifecycle import Life, Lifecycle
from ._run import WorkflowRun
from .cluster.leader import LeaderServices
from .cluster.schedules import ScheduleInfo, Schedules
from .dag.compile import Prepared, prepare
from .model.definitions import Workflow
from .model.plans import StageType
from .model.reducers import Reducer
from .model.status import WorkflowStatus
from .model.values import Event
from .model.views import WorkflowSummary, WorkflowView
from .pool.registry import Registry, TaskOptionArgs, registering
from .resilience.breaker import CircuitBreaker
from .runtime.parts import Runtime
from .runtime.statistics import EngineStatistics
from .state.views import view_of
from .store import Store, store_from_url
from .store.url import redact_url

__all__ = ("Engine",)

log = logging.getLogger("stabilize_aio.engine")
F = TypeVar("F", bound=Callable[..., Any])
R = TypeVar("R", bound=Reducer)
T = TypeVar("T", bound=StageType)


class Engine(RunControl):
    """A durable workflow engine on one store.

    ``url`` names the store (``sqlite:///path.db``, the default ``./stabilize.db``, or
    ``postgresql://…``); ``store`` gives one instead; ``clock`` is where time comes
    from (a ``stabilize_aio.testing.FakeClock`` in tests). The other options are
    :class:`~stabilize_aio._config.EngineConfig`'s, documented there, and checked
    here (``ConfigurationError``, a ``ValueError``, naming the option).
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        store: Store | None = None,
        clock: Clock | None = None,
        thread_limit: int = 40,
        batch: int = 256,
        stop_grace: float = 10.0,
        client: bool = False,
        lease: float = 30.0,
        heartbeat: float | None = None,
        poll_interval: float = 5.0,
        retention: float | None = None,
        leader_interval: float = 1.0,
        max_depth: int = 10,
    ) -> None:
        self.config = EngineConfig(
            url=url, thread_limit=thread_limit, batch=batch, stop_grace=stop_grace, client=client, lease=lease,
            heartbeat=heartbeat, poll_interval=poll_interval, retention=retention, leader_interval=leader_interval,
            max_depth=max_depth,
        )  # fmt: skip
        self.url = url
        self._store = store if store is not None else store_from_url(url)
        self._clock = clock if clock is not None else SYSTEM_CLOCK
        self._registry = Registry()
        self._life = Lifecycle()
        self._runtime = Runtime(self._store, self.config, self._clock, self._registry, self.get)
        self._schedules = Schedules(self._store, self._clock)
        runtime = self._runtime
        self._leader = LeaderServices(
            store=self._store, schedules=self._schedules, start_run=runtime.start_run, is_leader=runtime.leads,
            clock=self._clock, interval=self.config.leader_interval, retention=self.config.retention,
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"<Engine {redact_url(self.url)!r} {self._life.life.value} tasks={sorted(self._registry.definitions)}>"

    # registration ------------------------------------------------------------
    def task(self, name: str, **options: Unpack[TaskOptionArgs]) -> Callable[[F], F]:
        """Register the decorated ``async def`` (or plain ``def``) as task type ``name`` (options: :meth:`register`)."""
        return registering(functools.partial(self.register, name, **options))

    def register(self, name: str, task: Any, **options: Unpack[TaskOptionArgs]) -> None:
        """Register a function, a :class:`Task` instance or a Task class as task type ``name``.

        Options (each None for its default, see :class:`TaskOptions`): ``concurrency``, ``backlog``,
        ``timeout``, ``retry``, ``poll_interval``, ``breaker``. RegistrationError: after start, a
        duplicate name, or bad options.
        """
        self._registry.add_task(name, task, **options)

    def reducer(self, name: str) -> Callable[[R], R]:
        """Register the decorated ``fn(values: list) -> value`` as output reducer ``name`` (before start)."""
        return registering(functools.partial(self._registry.add_reducer, name))

    def stage_type(self, name: str) -> Callable[[T], T]:
        """Register the decorated ``fn(stage) -> StagePlan`` as stage type ``name`` (before start; used at submit)."""
        return registering(functools.partial(self._registry.add_type, name))

    # lifecycle ---------------------------------------------------------------
    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stop(self.config.stop_grace, exc)

    async def start(self) -> None:
        """Open the store, recover pending work and start the engine's loops.

        Raises:
            EngineStateError: the engine was started before.
            StoreError: the database is locked by another engine, corrupt, foreign or too new.
        """
        self._life.starting()
        self._registry.close()
        try:
            await self._store.open()
        except BaseException:
            await self._life.close(None)  # no task group yet: just STOPPED
            raise
        try:
            tg = await self._life.enter()
            await self._runtime.start(tg)
            if not self.config.client:
                tg.start_soon(self._leader.run, name="leader services")
        except BaseException:
            await self._close(None)
            raise
        self._life.started()
        log.info("engine started on %s", redact_url(self.url))

    async def stop(self, grace: float | None = None) -> None:
        """Stop intake, let running tasks finish within ``grace`` seconds, then cancel them.

        Tasks the engine cancels record no result and run again on the next start.
        """
        await self._stop(self.config.stop_grace if grace is None else grace, None)

    async def _stop(self, grace: float, user_exc: BaseException | None) -> None:
        if self._life.stopping():
            try:
                await self._runtime.shutdown(grace)
            finally:
                await self._close(user_exc)
            log.info("engine stopped")

    async def _close(self, user_exc: BaseException | None) -> None:
        try:
            await self._life.close(user_exc)
        finally:
            with anyio.CancelScope(shield=True):
                await self._store.close()
            self._runtime.closed()

    def _require_running(self) -> Runtime:
        if not self._life.running:
            raise EngineStateError(f"the engine is {self._life.life.value}; use it inside `async with engine`")
        return self._runtime

    # submit and schedules ----------------------------------------------------
    async def submit(
        self, workflow: Workflow, *, context: Mapping[str, Any] | None = None, workflow_id: str | None = None,
        if_exists: str = "return",
    ) -> WorkflowRun:  # fmt: skip
        """Start a new run of ``workflow`` (``context``: its inputs); returns once it is durably committed.

        A ``workflow_id`` that exists: ``if_exists="return"`` returns that run (``run.created`` False),
        ``"reject"`` raises WorkflowExists, whatever the input. DefinitionError: an unregistered task
        type or inputs msgspec cannot encode (nothing is written)."""
        runtime = self._require_running()
        if workflow_id is not None:
            check_id(workflow_id)
        if if_exists not in ("return", "reject"):
            raise ValueError(f"if_exists must be 'return' or 'reject', got {if_exists!r}")
        wid, created = await runtime.start_new(*self._prepare(workflow, context, "submit"), workflow_id)
        if not created and if_exists == "reject":
            raise WorkflowExists(wid)
        return WorkflowRun(self, wid, created=created)

    def _prepare(self, workflow: Workflow, context: Mapping[str, Any] | None, what: str) -> Prepared:
        r, known = self._registry, None if self.config.client else self._registry.definitions
        return prepare(
            workflow, context, registered=known, reducers=r.reducers, types=r.types, unknown=r.unknown,
            max_depth=self.config.max_depth, what=what,
        )  # fmt: skip

    async def schedule(
        self, name: str, workflow: Workflow, *, cron: str, context: Mapping[str, Any] | None = None,
        first_at: float | None = None,
    ) -> ScheduleInfo:  # fmt: skip
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
        template, specs = self._prepare(workflow, context, "schedule")
        return await self._schedules.put(name, template, specs, cron=cron, first_at=first_at)

    async def unschedule(self, name: str) -> bool:
        """Remove a schedule; False if there was none. Runs already started go on."""
        self._require_running()
        return await self._schedules.remove(name)

    async def schedules(self) -> builtins.list[ScheduleInfo]:
        """The durable schedules, by name."""
        return await self._schedules.list()

    async def fire_due_schedules(self) -> int:
        """Start the runs of every due schedule tick (the leader does this on its own); returns ticks fired."""
        return await self._leader.fire_due_schedules()

    async def apply_retention(self) -> int:
        """Delete finished workflows older than ``retention`` (the leader does this on its own); returns how many."""
        return await self._leader.apply_retention()

    # queries -----------------------------------------------------------------
    def handle(self, workflow_id: str) -> WorkflowRun:
        """A handle on an existing run (also one submitted by an earlier process)."""
        return WorkflowRun(self, workflow_id)

    async def get(self, workflow_id: str) -> WorkflowView:
        """The current view of a run.

        Raises:
            WorkflowNotFound: no run has this id.
        """
        check_id(workflow_id)
        return view_of(await self._runtime.state(workflow_id))

    async def wait(self, workflow_id: str, timeout: float | None = None) -> WorkflowView:
        """Wait until a run completes and return its final view (``run.wait()`` by id).

        Raises:
            WorkflowNotFound: no run has this id.
            EngineStateError: the engine is stopped.
            TimeoutError: ``timeout`` seconds passed (the workflow goes on).
        """
        check_id(workflow_id)
        if self._life.life is Life.STOPPED:
            raise EngineStateError(f"wait() for {workflow_id!r} on an engine that is stopped (use a running engine)")
        return await self._runtime.wait(workflow_id, timeout)

    async def list(
        self, *, status: WorkflowStatus | str | None = None, application: str | None = None, limit: int = 100
    ) -> builtins.list[WorkflowSummary]:
        """Runs, newest first, optionally filtered by status (the enum or its name in any case) and application."""
        value = WorkflowStatus.parse(status).value if status is not None else None
        records = await self._store.list_workflows(status=value, application=application, limit=limit)
        return [WorkflowSummary.of(r) for r in records]

    async def history(self, workflow_id: str) -> builtins.list[Event]:
        """A run's append-only history (workflow and stage lifecycle), in commit order.

        Raises:
            WorkflowNotFound: no run has this id.
        """
        check_id(workflow_id)
        return await self._runtime.history(workflow_id)

    # control (cancel, signal, pause, resume, restart, skip, cancel_region: _control.py) --------------
    async def wait_idle(self) -> None:
        """Wait until no task call runs, no actor runs a turn and nothing waits to be committed (timers may wait)."""
        await self._require_running().wait_idle()

    async def wait_leases_changed(self) -> None:
        """Wait until the shards this engine leases change (PostgreSQL; see ``statistics().leases``).

        Raises:
            EngineStateError: the engine runs on a store without leases (SQLite), where they never change.
        """
        await self._runtime.wait_leases_changed()

    def statistics(self) -> EngineStatistics:
        """Counters of the engine, its store, its actors and its pools, and its leases."""
        return self._runtime.statistics(self._life.life.value)

    def breaker(self, task_type: str) -> CircuitBreaker | None:
        """The circuit breaker of a registered task type while the engine runs (None: it has none)."""
        return self._runtime.breaker(task_type)

    @property
    def store(self) -> Store:
        """The engine's store."""
        return self._store
