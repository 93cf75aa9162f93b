"""Retry policies: a small frozen struct compiled to tenacity's wait strategy.

Jitter is derived from the id of the message that failed, not from a random
generator, so the handler that schedules the retry stays deterministic.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
import tenacity

from .._errors import ConfigurationError


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """How a task that fails transiently (or times out) is retried.

    Attributes:
        max_attempts: total calls including the first; 1 means never retry.
        initial: the delay before the second attempt, in seconds.
        maximum: the cap on any delay, in seconds.
        multiplier: the growth of the delay per attempt.
        jitter: a fraction of the delay added at random (0 to 1).
    """

    max_attempts: int = 5
    initial: float = 1.0
    maximum: float = 60.0
    multiplier: float = 2.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigurationError("max_attempts must be at least 1")
        if self.initial < 0 or self.maximum < 0 or self.multiplier < 1:
            raise ConfigurationError("delays must be >= 0 and multiplier >= 1")
        if not 0 <= self.jitter <= 1:
            raise ConfigurationError("jitter must be between 0 and 1")

    def wait_strategy(self) -> tenacity.wait.wait_base:
        """The tenacity wait strategy this policy compiles to (without jitter)."""
        return tenacity.wait_exponential(multiplier=self.initial, exp_base=self.multiplier, max=self.maximum)

    def stop_strategy(self) -> tenacity.stop.stop_base:
        """The tenacity stop strategy this policy compiles to."""
        return tenacity.stop_after_attempt(self.max_attempts)

    def gives_up_after(self, attempt: int) -> bool:
        """Whether a failed ``attempt`` (1-based) was the last one allowed."""
        return bool(self.stop_strategy()(_state(attempt)))

    def delay(self, attempt: int, *, seed: str, retry_after: float | None = None) -> float:
        """Seconds to wait after failed ``attempt`` before the next one.

        ``seed`` (a message id) makes the jitter deterministic; ``retry_after``
        from a :class:`TransientError` is a floor.
        """
        base = float(self.wait_strategy()(_state(attempt)))
        digest = hashlib.blake2b(seed.encode(), digest_size=8).digest()
        fraction = int.from_bytes(digest, "big") / 2**64
        value = min(base + base * self.jitter * fraction, self.maximum) if base else 0.0
        if retry_after is not None:
            value = max(value, retry_after)
        return value


def _state(attempt: int) -> Any:
    state = tenacity.RetryCallState(retry_object=tenacity.AsyncRetrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    return state
