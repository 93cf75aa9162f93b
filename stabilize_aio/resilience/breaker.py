"""Circuit breakers: small async state machines, one per task type.

::

    CLOSED --(failure rate >= threshold over the window)--> OPEN
    OPEN   --(cooldown elapsed, next call)-----------------> HALF_OPEN
    HALF_OPEN --(probe succeeds)--> CLOSED
    HALF_OPEN --(probe fails)-----> OPEN (cooldown again)

A call the breaker refuses is not made: the pool reports it as a transient
``CircuitOpen`` failure with ``retry_after`` set to the rest of the cooldown,
and the handler reschedules it without using up an attempt, so an outage of a
dependency delays work and never loses it. Failures are exceptions and
timeouts of the task; a task's own failed result is a business outcome and
does not count. Time is the monotonic time of an injected
:class:`~stabilize_aio._clock.Clock` (a test passes a ``FakeClock``).
"""

from __future__ import annotations

from collections import deque
from enum import StrEnum

import anyio
import msgspec

from .._clock import SYSTEM_CLOCK, Clock
from .._errors import ConfigurationError


class CircuitState(StrEnum):
    """The three states of a breaker."""

    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


class CircuitBreakerPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """When a task type's circuit opens and for how long.

    Attributes:
        failure_rate: the share of failed calls in the window that opens the circuit.
        window: how many recent calls are counted.
        minimum_calls: calls needed in the window before the rate is judged.
        cooldown: seconds the circuit stays open before one probe call is let through.
    """

    failure_rate: float = 0.5
    window: int = 20
    minimum_calls: int = 10
    cooldown: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.failure_rate <= 1:
            raise ConfigurationError("failure_rate must be in (0, 1]")
        if self.window < 1 or not 1 <= self.minimum_calls <= self.window:
            raise ConfigurationError("window must be >= 1 and 1 <= minimum_calls <= window")
        if self.cooldown < 0:
            raise ConfigurationError("cooldown must be >= 0")


class BreakerStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A breaker's state and counters."""

    state: CircuitState
    opened: int
    rejected: int
    failures_in_window: int
    calls_in_window: int


class CircuitBreaker:
    """One breaker; ``allow()`` before a call, ``record()`` after it."""

    def __init__(self, policy: CircuitBreakerPolicy, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.policy = policy
        self._monotonic = clock.monotonic
        self._state = CircuitState.CLOSED
        self._results: deque[bool] = deque(maxlen=policy.window)
        self._opened_at = 0.0
        self._probing = False
        self.opened = 0
        self.rejected = 0
        self._changed = anyio.Event()

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.state.value} opened={self.opened} rejected={self.rejected}>"

    @property
    def state(self) -> CircuitState:
        """The current state (an OPEN circuit past its cooldown reads HALF_OPEN)."""
        if self._state is CircuitState.OPEN and self._monotonic() - self._opened_at >= self.policy.cooldown:
            self._set(CircuitState.HALF_OPEN)
        return self._state

    def allow(self) -> bool:
        """Whether a call may go through now (HALF_OPEN lets exactly one probe through)."""
        state = self.state
        if state is CircuitState.CLOSED:
            return True
        if state is CircuitState.HALF_OPEN and not self._probing:
            self._probing = True
            return True
        self.rejected += 1
        return False

    def retry_after(self) -> float:
        """Seconds until an OPEN circuit lets a probe through (0 otherwise)."""
        if self._state is not CircuitState.OPEN:
            return 0.0
        return max(0.0, self.policy.cooldown - (self._monotonic() - self._opened_at))

    def record(self, *, success: bool) -> None:
        """Account for a finished call."""
        if self._state is CircuitState.HALF_OPEN and self._probing:
            self._probing = False
            if success:
                self._results.clear()
                self._set(CircuitState.CLOSED)
            else:
                self._open()
            return
        self._results.append(success)
        calls = len(self._results)
        failures = calls - sum(self._results)
        if (
            self._state is CircuitState.CLOSED
            and calls >= self.policy.minimum_calls
            and failures / calls >= self.policy.failure_rate
        ):
            self._open()

    def abandon(self) -> None:
        """A call that was let through ended without an outcome (cancelled): free the probe."""
        self._probing = False

    def _open(self) -> None:
        self._opened_at = self._monotonic()
        self.opened += 1
        self._results.clear()
        self._set(CircuitState.OPEN)

    def _set(self, state: CircuitState) -> None:
        if state is not self._state:
            self._state = state
            self._changed.set()
            self._changed = anyio.Event()

    async def wait_for(self, state: CircuitState) -> None:
        """Wait until the breaker is in ``state`` (an OPEN one turns HALF_OPEN when asked after cooldown)."""
        while self.state is not state:
            await self._changed.wait()

    def statistics(self) -> BreakerStatistics:
        """State and counters."""
        calls = len(self._results)
        return BreakerStatistics(
            state=self.state,
            opened=self.opened,
            rejected=self.rejected,
            failures_in_window=calls - sum(self._results),
            calls_in_window=calls,
        )
