"""Circuit breakers: the state machine on a fake clock, and an open circuit end to end."""

from __future__ import annotations

import anyio
import pytest

from stabilize_aio import (
    CircuitBreakerPolicy,
    CircuitState,
    Engine,
    RetryPolicy,
    Stage,
    StageView,
    TaskResult,
    Workflow,
    WorkflowStatus,
)
from stabilize_aio.pool.pool import TaskPool
from stabilize_aio.pool.registry import make_definition
from stabilize_aio.resilience.breaker import CircuitBreaker
from stabilize_aio.testing import FakeClock


class MonotonicOnly(FakeClock):
    """A fake clock whose wall time must not be read: a cooldown is a duration."""

    def time(self) -> float:
        raise AssertionError("a breaker measures its cooldown on the monotonic clock")


POLICY = CircuitBreakerPolicy(failure_rate=0.5, window=4, minimum_calls=4, cooldown=10.0)


def test_opens_at_the_failure_rate_over_the_window() -> None:
    """The circuit stays closed below minimum_calls and opens once half of the window failed."""
    breaker = CircuitBreaker(POLICY, clock=FakeClock())
    for success in (False, True, False):
        assert breaker.allow()
        breaker.record(success=success)
    assert CircuitState.CLOSED == breaker.state
    breaker.record(success=True)  # 2 of 4 failed: 50 %
    assert (CircuitState.OPEN, 1) == (breaker.state, breaker.opened)


async def test_open_rejects_until_cooldown_then_lets_one_probe_through() -> None:
    """An open circuit refuses calls and says how long to wait; after cooldown exactly one probe passes."""
    clock = MonotonicOnly()
    breaker = CircuitBreaker(POLICY, clock=clock)
    for _ in range(4):
        breaker.record(success=False)
    await clock.advance(4.0)
    assert (False, 6.0) == (breaker.allow(), breaker.retry_after())
    await clock.advance(6.0)
    assert (CircuitState.HALF_OPEN, 0.0) == (breaker.state, breaker.retry_after())
    assert (True, False) == (breaker.allow(), breaker.allow())
    assert 2 == breaker.rejected


@pytest.mark.parametrize(("probe_ok", "expected"), [(True, CircuitState.CLOSED), (False, CircuitState.OPEN)])
async def test_probe_result_closes_or_reopens(probe_ok: bool, expected: CircuitState) -> None:
    """A successful probe closes the circuit; a failed one opens it for another cooldown."""
    clock = FakeClock()
    breaker = CircuitBreaker(POLICY, clock=clock)
    for _ in range(4):
        breaker.record(success=False)
    await clock.advance(10.0)
    assert breaker.allow()
    breaker.record(success=probe_ok)
    assert expected == breaker.state
    if not probe_ok:
        assert 10.0 == breaker.retry_after()


async def test_an_abandoned_probe_frees_the_half_open_slot() -> None:
    """A probe call cancelled before its outcome lets the next call probe instead."""
    clock = FakeClock()
    breaker = CircuitBreaker(POLICY, clock=clock)
    for _ in range(4):
        breaker.record(success=False)
    await clock.advance(10.0)
    assert breaker.allow()
    breaker.abandon()
    assert breaker.allow()


async def test_wait_for_is_woken_by_the_transition() -> None:
    """wait_for(state) returns when the machine reaches that state."""
    breaker = CircuitBreaker(POLICY, clock=FakeClock())
    seen: list[CircuitState] = []

    async def watch() -> None:
        await breaker.wait_for(CircuitState.OPEN)
        seen.append(breaker.state)

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        await anyio.wait_all_tasks_blocked()
        for _ in range(4):
            breaker.record(success=False)
    assert [CircuitState.OPEN] == seen


async def test_cooldown_runs_on_the_pools_clock() -> None:
    """A TaskPool builds its breaker on the clock it is given: the circuit half-opens after the fake cooldown."""
    clock = MonotonicOnly()

    async def call(stage: StageView) -> TaskResult:  # pragma: no cover - never called
        return TaskResult.success()

    definition = make_definition("t", call, breaker=POLICY)
    limiter = anyio.CapacityLimiter(1)
    async with anyio.create_task_group() as tg:
        pool = TaskPool(definition, tg, lambda job, done: None, lambda pool: None, limiter, clock=clock)
        assert pool.breaker is not None
        for _ in range(4):
            pool.breaker.record(success=False)
        await clock.advance(9.5)
        assert (CircuitState.OPEN, 0.5) == (pool.breaker.state, pool.breaker.retry_after())
        await clock.advance(0.5)
        assert CircuitState.HALF_OPEN == pool.breaker.state


def test_bad_policies_are_refused() -> None:
    """A policy outside its ranges raises at construction."""
    with pytest.raises(ValueError, match="failure_rate"):
        CircuitBreakerPolicy(failure_rate=0)
    with pytest.raises(ValueError, match="minimum_calls"):
        CircuitBreakerPolicy(window=5, minimum_calls=6)


async def test_rejected_calls_are_retried_later_and_succeed(db_url: str) -> None:
    """Work that arrives while the circuit is open is not called, keeps attempt 1, and succeeds after cooldown."""
    calls: list[tuple[str, int]] = []
    engine = Engine(db_url)

    @engine.task(
        "flaky",
        retry=RetryPolicy(max_attempts=10, initial=0.01, jitter=0.0),
        breaker=CircuitBreakerPolicy(failure_rate=1.0, window=2, minimum_calls=2, cooldown=0.3),
    )
    async def flaky(stage: StageView) -> TaskResult:
        calls.append((stage.ref_id, stage.attempt))
        if stage.ref_id == "opener":
            raise ConnectionError("down")
        return TaskResult.success()

    async with engine:
        opener = await engine.submit(
            Workflow(application="t", name="o", stages=[Stage("opener", "flaky", continue_on_failure=True)])
        )
        breaker = engine.breaker("flaky")
        assert breaker is not None
        await opener.wait(timeout=10)
        # one permanent failure is not enough with minimum_calls=2; a second opener trips it
        second = await engine.submit(
            Workflow(application="t", name="o2", stages=[Stage("opener", "flaky", continue_on_failure=True)])
        )
        await second.wait(timeout=10)
        await breaker.wait_for(CircuitState.OPEN)
        late = await engine.submit(Workflow(application="t", name="late", stages=[Stage("late", "flaky")]))
        view = await late.wait(timeout=10)
        rejected = breaker.rejected
    assert (WorkflowStatus.SUCCEEDED, [("late", 1)]) == (view.status, [c for c in calls if c[0] == "late"])
    assert rejected >= 1
    assert 1 == view.stage("late").attempt
