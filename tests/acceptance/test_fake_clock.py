"""An engine on a FakeClock: durable waits (retries, polls) pass when the test moves time, not in real time."""

from __future__ import annotations

import pytest

from stabilize_aio import (
    ConfigurationError,
    Engine,
    RetryPolicy,
    Stage,
    StageView,
    TaskResult,
    TransientError,
    Workflow,
    WorkflowStatus,
)
from stabilize_aio.testing import FakeClock
from stabilize_aio.testing.clock import START

HOUR = 3600.0


async def test_a_retry_an_hour_later_runs_when_the_fake_clock_passes_the_hour(db_url: str) -> None:
    """A transient failure with a one-hour backoff is retried exactly when the fake clock reaches the hour."""
    clock = FakeClock()
    engine = Engine(db_url, clock=clock)
    calls: list[float] = []

    @engine.task("flaky", retry=RetryPolicy(max_attempts=3, initial=HOUR, maximum=HOUR, jitter=0))
    async def flaky(stage: StageView) -> TaskResult:
        calls.append(clock.time())
        if len(calls) == 1:
            raise TransientError("down for an hour")
        return TaskResult.success(outputs={"attempt": stage.attempt})

    async with engine:
        run = await engine.submit(Workflow(application="t", name="w", stages=[Stage("a", "flaky")]))
        await engine.wait_idle()  # the first call failed; its retry waits on the timer heap
        await clock.advance(HOUR - 1)
        await engine.wait_idle()
        before_the_hour = (list(calls), (await run.get()).status)
        await clock.advance(1)
        view = await run.wait(timeout=10)
    assert ([START], WorkflowStatus.RUNNING) == before_the_hour
    assert [START, START + HOUR] == calls
    assert (WorkflowStatus.SUCCEEDED, {"attempt": 2}) == (view.status, dict(view.outputs))
    assert (START, START + HOUR) == (view.created_at, view.ended_at)


async def test_a_running_task_is_polled_at_its_fake_interval(db_url: str) -> None:
    """A task that returns ``running`` is called again after its poll interval on the fake clock, not before."""
    clock = FakeClock()
    engine = Engine(db_url, clock=clock)
    calls: list[float] = []

    @engine.task("poll", poll_interval=30.0)
    async def poll(stage: StageView) -> TaskResult:
        calls.append(clock.time())
        return TaskResult.success() if len(calls) == 3 else TaskResult.running()

    async with engine:
        run = await engine.submit(Workflow(application="t", name="w", stages=[Stage("a", "poll")]))
        await engine.wait_idle()
        await clock.advance(29.0)
        await engine.wait_idle()
        early = list(calls)
        await clock.advance(1.0)  # the second poll is due (t=30)
        await engine.wait_idle()  # a step's commit runs in the database thread, which advance() cannot see
        await clock.advance(30.0)  # the third (t=60)
        view = await run.wait(timeout=10)
    assert [START] == early
    assert [START, START + 30.0, START + 60.0] == calls
    assert WorkflowStatus.SUCCEEDED == view.status


@pytest.mark.parametrize(
    ("option", "value"),
    [("batch", 0), ("lease", -1.0), ("poll_interval", 0.0), ("thread_limit", 0), ("stop_grace", -1.0)],
)
def test_an_option_out_of_range_is_refused_naming_it(option: str, value: float) -> None:
    """Engine options are checked when the engine is built, and the error names the option and its value."""
    with pytest.raises(ConfigurationError, match=rf"Engine\({option}={value!r}\)") as caught:
        Engine("sqlite:///never-opened.db", **{option: value})  # type: ignore[arg-type]
    assert isinstance(caught.value, ValueError)  # what callers caught before


def test_a_heartbeat_not_shorter_than_the_lease_is_refused() -> None:
    """A heartbeat as long as the lease would let leases expire between renewals."""
    with pytest.raises(ValueError, match="shorter than the lease"):
        Engine("sqlite:///never-opened.db", lease=10.0, heartbeat=10.0)


def test_the_config_is_frozen_and_says_what_the_engine_was_built_with() -> None:
    """``engine.config`` holds the options (the heartbeat defaulting to a third of the lease) and cannot change."""
    engine = Engine("sqlite:///never-opened.db", lease=9.0, batch=7)
    assert (9.0, 3.0, 7) == (engine.config.lease, engine.config.heartbeat_interval, engine.config.batch)
    with pytest.raises(AttributeError):
        engine.config.batch = 1  # type: ignore[misc]
