"""TaskPool: one per task type; a semaphore bulkhead, a bounded backlog, supervised calls.

``offer`` never waits (DESIGN rule 9): a job takes a bulkhead slot if one is
free, else a backlog place, else it is refused and its RunTask row simply stays
pending in the store; the pool asks for such rows again once its backlog has
drained (``refill``). Each call runs in its own cancel scope under
``anyio.fail_after``; a call the engine cancels (user cancel, stage timeout,
shutdown) reports nothing, so its row is either already consumed or redelivered.
"""

from __future__ import annotations

import logging
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import msgspec

from .._clock import SYSTEM_CLOCK, Clock
from .._codec import plain
from .._errors import EncodingError, TransientError
from ..messages.durable import RunTask
from ..messages.memory import TaskDone, TaskOutcome
from ..model.results import TaskResult
from ..model.values import ErrorInfo
from ..model.views import StageView
from ..resilience.breaker import BreakerStatistics, CircuitBreaker
from .registry import TaskDefinition

log = logging.getLogger("stabilize_aio.pool")


class Job:
    """One task call waiting for or holding a bulkhead slot."""

    __slots__ = ("cancelled", "key", "run", "scope", "started_at", "timeout", "view", "workflow_id")

    def __init__(self, workflow_id: str, run: RunTask, view: StageView, timeout: float) -> None:
        self.workflow_id = workflow_id
        self.key = (workflow_id, run.id)
        self.run = run
        self.view = view
        self.timeout = timeout
        self.scope: anyio.CancelScope | None = None
        self.cancelled = False  # set when the engine cancels the call (not a timeout)
        self.started_at: float | None = None  # wall-clock start of the call (reported with its outcome)

    def cancel(self) -> None:
        """Cancel the call on the engine's behalf: it will report nothing."""
        self.cancelled = True
        if self.scope is not None:
            self.scope.cancel()


class PoolStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A pool's counters."""

    task_type: str
    concurrency: int
    active: int
    queued: int
    rejected: int
    completed: int
    failed: int
    timed_out: int
    cancelled: int
    crashed: int
    breaker: BreakerStatistics | None


Report = Callable[[Job, TaskDone | None], None]


class TaskPool:
    """The supervised worker pool of one task type."""

    def __init__(
        self,
        definition: TaskDefinition,
        tg: anyio.abc.TaskGroup,
        report: Report,
        refill: Callable[[TaskPool], None],
        thread_limiter: anyio.CapacityLimiter,
        *,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.definition = definition
        self.options = definition.options
        self.limiter = anyio.CapacityLimiter(self.options.concurrency)
        self.breaker = CircuitBreaker(self.options.breaker, clock=clock) if self.options.breaker is not None else None
        self._clock = clock
        self._tg = tg
        self._report = report
        self._refill = refill
        self._threads = thread_limiter
        self._backlog: deque[Job] = deque()
        self._running: dict[tuple[str, str], Job] = {}
        self._known: set[tuple[str, str]] = set()
        self.overflowed = False  # a job was refused since the last complete refill scan
        self.draining = False
        self.rejected = self.completed = self.failed = self.timed_out = 0
        self.cancelled = self.crashed = 0
        self._idle: anyio.Event | None = None  # made only while someone waits for idleness
        self._workers = 0
        self._waiting: list[_Worker] = []

    def __repr__(self) -> str:
        return (
            f"<TaskPool {self.definition.name!r} active={len(self._running)}/"
            f"{self.options.concurrency} queued={len(self._backlog)}>"
        )

    def offer(self, job: Job) -> bool:
        """Take a job without waiting; False if it must stay pending in the store."""
        if job.key in self._known:
            running = self._running.get(job.key)
            if running is not None and running.cancelled:  # its cancelled call still unwinds (a thread, say)
                self.rejected += 1
                self.overflowed = True
                return False  # its row stays pending: the refill once that call has ended delivers it again
            return True
        if self.draining:
            return False
        if not self._backlog and self._try_start(job):
            return True
        if len(self._backlog) < self.options.backlog:
            self._backlog.append(job)
            self._known.add(job.key)
            return True
        self.rejected += 1
        self.overflowed = True
        return False

    def refilled(self, rejected_before: int) -> None:
        """A refill scan reached the end: nothing refused is left behind, unless a job was refused since it began.

        ``rejected_before`` is :attr:`rejected` when the scan began (a refusal during
        the scan may be of a row it had already passed).
        """
        if self.rejected == rejected_before:
            self.overflowed = False

    def _try_start(self, job: Job) -> bool:
        try:
            self.limiter.acquire_on_behalf_of_nowait(job)
        except anyio.WouldBlock:
            return False
        self._known.add(job.key)
        self._running[job.key] = job
        if self._waiting:  # hand it to an idle worker: cheaper than spawning a task
            worker = self._waiting.pop()
            worker.job = job
            worker.wake.set()
        else:
            self._workers += 1
            self._tg.start_soon(self._worker, job, name=f"worker {self.definition.name}")
        return True

    def knows(self, workflow_id: str, run_id: str) -> bool:
        """Whether this run is running or queued here."""
        return (workflow_id, run_id) in self._known

    def cancel(self, key: tuple[str, str]) -> bool:
        """Cancel a running call or drop a queued one (key: workflow id, run id)."""
        job = self._running.get(key)
        if job is not None:
            job.cancel()
            return True
        for queued in self._backlog:
            if queued.key == key:
                self._backlog.remove(queued)
                self._known.discard(key)
                return True
        return False

    def drain(self) -> list[Job]:
        """Stop starting calls; return the queued jobs (their rows stay pending)."""
        self.draining = True
        dropped = list(self._backlog)
        self._backlog.clear()
        for job in dropped:
            self._known.discard(job.key)
        return dropped

    def cancel_all(self) -> None:
        """Cancel every running call (shutdown: they report nothing)."""
        for job in list(self._running.values()):
            job.cancel()
        for worker in self._waiting:
            worker.job = None
            worker.wake.set()  # idle workers leave
        self._waiting.clear()

    def _set_idle(self) -> None:
        if self._idle is not None:
            self._idle.set()
            self._idle = None

    async def wait_idle(self) -> None:
        """Wait until no call runs."""
        while self._running:
            if self._idle is None:
                self._idle = anyio.Event()
            await self._idle.wait()

    @property
    def active(self) -> int:
        """Calls running now."""
        return len(self._running)

    @property
    def queued(self) -> int:
        """Jobs waiting in the backlog."""
        return len(self._backlog)

    def room(self) -> int:
        """How many more jobs the pool takes now (free slots plus free backlog places)."""
        return self.options.concurrency - len(self._running) + self.options.backlog - len(self._backlog)

    async def _worker(self, first: Job) -> None:
        """A supervised worker: runs jobs, then takes the next from the backlog or waits idle."""
        job: Job | None = first
        me = _Worker()
        try:
            while job is not None:
                await self._run(job)
                job = self._next_from_backlog()
                if job is not None:
                    await anyio.lowlevel.checkpoint()  # fairness: tasks that never await must not starve actors
                elif not self.draining:
                    me.wake = anyio.Event()
                    self._waiting.append(me)
                    await me.wake.wait()
                    job = me.job
                    me.job = None
        finally:
            self._workers -= 1
            if me in self._waiting:
                self._waiting.remove(me)

    async def _run(self, job: Job) -> None:
        done: TaskDone | None = None
        try:
            done = await self._call(job)
        except Exception:  # a bug of ours, not the task's: count it, report a failure
            self.crashed += 1
            log.exception("task pool %s crashed on %s", self.definition.name, job.run.id)
            error = ErrorInfo.capped("EngineError", traceback.format_exc(), attempt=job.run.attempt, transient=True)
            done = TaskDone(run=job.run, outcome=self._outcome(job, error=error))
        finally:
            self._running.pop(job.key, None)
            self._known.discard(job.key)
            self.limiter.release_on_behalf_of(job)
            if not self._running and not self._backlog:
                self._set_idle()
        self._report(job, done)

    def _next_from_backlog(self) -> Job | None:
        """Give this worker the next queued job (taking its slot), or ask for a refill."""
        if self._backlog and not self.draining:
            job = self._backlog[0]
            try:
                self.limiter.acquire_on_behalf_of_nowait(job)
            except anyio.WouldBlock:
                return None
            self._backlog.popleft()
            self._running[job.key] = job
            return job
        if self.overflowed and not self.draining:
            self._refill(self)
        return None

    async def _call(self, job: Job) -> TaskDone | None:
        breaker = self.breaker
        if breaker is None:
            return await self._call_guarded(job)
        if not breaker.allow():
            error = ErrorInfo.capped(
                "CircuitOpen",
                f"stage {job.view.ref_id!r}: the circuit of task type {job.view.task!r} is open",
                attempt=job.view.attempt,
                transient=True,
            )
            retry_after = max(breaker.retry_after(), 0.001)
            outcome = self._outcome(job, error=error, retry_after=retry_after, free_retry=True)
            return TaskDone(run=job.run, outcome=outcome)
        done: TaskDone | None = None
        try:
            done = await self._call_guarded(job)
        finally:
            if done is None:
                breaker.abandon()  # cancelled: neither a success nor a failure
            else:
                breaker.record(success=done.outcome.error is None)
        return done

    async def _call_guarded(self, job: Job) -> TaskDone | None:
        view = job.view
        extra = {"workflow_id": job.workflow_id, "stage": view.ref_id, "task": view.task, "attempt": view.attempt}
        log.debug("task started", extra=extra)
        # One scope does both jobs: its deadline is the call's timeout, and cancel()
        # (flagged on the job) is the engine's cancellation.
        with anyio.CancelScope(deadline=anyio.current_time() + job.timeout) as scope:
            job.scope = scope
            job.started_at = self._clock.time()
            if job.cancelled:
                scope.cancel()
            try:
                if self.definition.is_async:
                    value = await self.definition.call(view)  # type: ignore[misc]
                else:
                    # A thread cannot be interrupted: at the deadline (or the engine's cancel) the call is
                    # abandoned; the thread runs to its end and its result is discarded.
                    value = await anyio.to_thread.run_sync(
                        self.definition.call, view, limiter=self._threads, abandon_on_cancel=True
                    )
                if not (scope.cancel_called or anyio.current_time() >= scope.deadline):
                    return TaskDone(run=job.run, outcome=self._check_result(job, value))
                # a result that came after the deadline (or the cancel) counts as a timeout (or nothing)
            except TimeoutError:  # the task's own TimeoutError counts as transient, like a timeout
                self.failed += 1
                log.info("task raised TimeoutError", extra=extra)
                error = _error_info(
                    TimeoutError(f"stage {view.ref_id!r}: task timed out"), view.attempt, transient=True
                )
                return TaskDone(run=job.run, outcome=self._outcome(job, error=error))
            except TransientError as exc:
                self.failed += 1
                log.info("task raised a transient error: %s", exc, extra=extra)
                try:
                    update = plain(exc.context_update, what="TransientError context_update", stage=view.ref_id)
                except EncodingError as bad:
                    error = _error_info(bad, view.attempt, transient=False)
                    return TaskDone(run=job.run, outcome=self._outcome(job, error=error))
                error = _error_info(exc, view.attempt, transient=True)
                return TaskDone(
                    run=job.run,
                    outcome=self._outcome(job, error=error, retry_after=exc.retry_after, context_update=update),
                )
            except Exception as exc:
                self.failed += 1
                log.warning("task failed: %r", exc, extra=extra)
                return TaskDone(
                    run=job.run, outcome=self._outcome(job, error=_error_info(exc, view.attempt, transient=False))
                )
        if not job.cancelled:  # the deadline passed: a timeout, retried as transient
            self.timed_out += 1
            log.warning("task timed out after %ss", job.timeout, extra=extra)
            error = ErrorInfo.capped(
                "TaskTimeout",
                f"stage {view.ref_id!r}: task {view.task!r} timed out after {job.timeout}s",
                attempt=view.attempt,
                transient=True,
            )
            return TaskDone(run=job.run, outcome=self._outcome(job, error=error))
        self.cancelled += 1
        log.info("task cancelled by the engine", extra=extra)
        return None

    def _check_result(self, job: Job, value: Any) -> TaskOutcome:
        view = job.view
        if not isinstance(value, TaskResult):
            error = ErrorInfo.capped(
                "TypeError",
                f"stage {view.ref_id!r}: task {view.task!r} returned {type(value).__name__}, not TaskResult",
                attempt=view.attempt,
                transient=False,
            )
            self.failed += 1
            return self._outcome(job, error=error)
        try:
            outputs = plain(value.outputs, what="outputs", stage=view.ref_id)
            context = plain(value.context, what="context update", stage=view.ref_id)
        except EncodingError as exc:
            self.failed += 1
            return self._outcome(job, error=_error_info(exc, view.attempt, transient=False))
        if outputs is not value.outputs or context is not value.context:
            value = msgspec.structs.replace(value, outputs=outputs, context=context)
        self.completed += 1
        return self._outcome(job, result=value)

    def _outcome(self, job: Job, **kwargs: Any) -> TaskOutcome:
        options = self.options
        return TaskOutcome(
            retry=options.retry, poll_interval=options.poll_interval, started_at=job.started_at, **kwargs
        )

    def statistics(self) -> PoolStatistics:
        """Counters of this pool."""
        return PoolStatistics(
            task_type=self.definition.name,
            concurrency=self.options.concurrency,
            active=len(self._running),
            queued=len(self._backlog),
            rejected=self.rejected,
            completed=self.completed,
            failed=self.failed,
            timed_out=self.timed_out,
            cancelled=self.cancelled,
            crashed=self.crashed,
            breaker=self.breaker.statistics() if self.breaker is not None else None,
        )


class _Worker:
    __slots__ = ("job", "wake")

    def __init__(self) -> None:
        self.job: Job | None = None
        self.wake = anyio.Event()


def _error_info(exc: BaseException, attempt: int, *, transient: bool) -> ErrorInfo:
    return ErrorInfo.capped(
        type(exc).__name__,
        str(exc) or repr(exc),
        attempt=attempt,
        transient=transient,
        traceback="".join(traceback.format_exception(exc)),
    )
