"""Configuration: one frozen :class:`EngineConfig` per Engine, and the one place the environment is read.

Two Engines in one process never share configuration. The only environment
variable the package reads is ``STABILIZE_CRASH_POINTS`` (fault points armed in
a child process by a crash test), read once, here, when the package is imported.
"""

from __future__ import annotations

import os

import msgspec

from ._errors import ConfigurationError

DEFAULT_URL = "sqlite:///stabilize.db"
CRASH_POINTS_ENV = "STABILIZE_CRASH_POINTS"


class EngineConfig(msgspec.Struct, frozen=True, kw_only=True):
    """What an Engine is built with (the keyword arguments of :class:`~stabilize_aio.Engine`), checked once.

    Attributes:
        url: the store's URL (``sqlite:///path.db`` or ``postgresql://…``).
        thread_limit: worker threads for plain ``def`` tasks.
        batch: messages an actor folds into one turn at most.
        stop_grace: the default grace period of ``stop()``, in seconds.
        client: a pure client (PostgreSQL): it submits, reads, cancels and waits,
            but leases no shards and runs no tasks.
        lease: seconds a shard lease lasts without renewal (PostgreSQL).
        heartbeat: seconds between lease renewals (None: a third of ``lease``).
        poll_interval: seconds between safety-net polls for work and completions
            that another process's notification may have missed (PostgreSQL).
        retention: seconds finished workflows are kept; the leader deletes older ones (None: forever).
        leader_interval: seconds between the leader's checks for due schedules.
        max_depth: how deep sub-workflows may nest (checked at submit).

    Raises:
        ConfigurationError: an option out of range, named with its value (also a ValueError).
    """

    url: str = DEFAULT_URL
    thread_limit: int = 40
    batch: int = 256
    stop_grace: float = 10.0
    client: bool = False
    lease: float = 30.0
    heartbeat: float | None = None  # None: a third of ``lease``
    poll_interval: float = 5.0
    retention: float | None = None
    leader_interval: float = 1.0
    max_depth: int = 10

    def __post_init__(self) -> None:
        positive = {
            "thread_limit": self.thread_limit,
            "batch": self.batch,
            "lease": self.lease,
            "poll_interval": self.poll_interval,
            "leader_interval": self.leader_interval,
            "max_depth": self.max_depth,
        }
        if self.heartbeat is not None:
            positive["heartbeat"] = self.heartbeat
        for name, value in positive.items():
            if not value > 0:
                raise ConfigurationError(f"Engine({name}={value!r}): must be greater than 0")
        for name, seconds in (("stop_grace", self.stop_grace), ("retention", self.retention)):
            if seconds is not None and not seconds >= 0:
                raise ConfigurationError(f"Engine({name}={seconds!r}): must be 0 or more seconds")
        if self.heartbeat is not None and self.heartbeat >= self.lease:
            raise ConfigurationError(
                f"Engine(heartbeat={self.heartbeat!r}, lease={self.lease!r}): the heartbeat must be shorter than the"
                " lease, or leases expire between renewals"
            )

    @property
    def heartbeat_interval(self) -> float:
        """Seconds between lease renewals."""
        return self.heartbeat if self.heartbeat is not None else self.lease / 3


class Environment(msgspec.Struct, frozen=True, kw_only=True):
    """What the package takes from the process environment."""

    crash_points: str = ""


def read_environment() -> Environment:
    """The environment, read now (the package reads it once, at import)."""
    return Environment(crash_points=os.environ.get(CRASH_POINTS_ENV, ""))


ENVIRONMENT = read_environment()
