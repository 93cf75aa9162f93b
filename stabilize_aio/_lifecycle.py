"""An engine's lifecycle: an explicit state machine and the task group it hosts.

::

    CREATED --start()--> STARTING --> RUNNING --stop()--> STOPPING --> STOPPED   (never restarted)
    (a start that fails goes to STOPPED; a stopped engine is not started again: make a new Engine)

The task group is entered by the task that calls ``start()`` and must be left by
that same task, so ``stop()`` from another task is refused (the engine goes on).
A failure inside the group cancels it and comes out of ``stop()`` as one
:class:`~stabilize_aio.StabilizeError`; a user's own exception leaving
``async with engine`` propagates unchanged.
"""

from __future__ import annotations

import enum

import anyio
import anyio.abc

from ._errors import EngineStateError, StabilizeError


class Life(enum.Enum):
    """Where an engine is in its life."""

    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Lifecycle:
    """The state of one engine and its task group."""

    def __init__(self) -> None:
        self.life = Life.CREATED
        self.tg: anyio.abc.TaskGroup | None = None
        self._owner_task: int | None = None  # the task that called start(): stop() must come from it

    @property
    def running(self) -> bool:
        return self.life is Life.RUNNING

    def starting(self) -> None:
        """``start()`` begins (EngineStateError if it ran before)."""
        if self.life is not Life.CREATED:
            raise EngineStateError(f"an engine starts once; this one is {self.life.value} (make a new Engine)")
        self.life = Life.STARTING
        self._owner_task = anyio.get_current_task().id

    async def enter(self) -> anyio.abc.TaskGroup:
        """Enter the engine's task group (in the task that called ``start()``)."""
        tg = self.tg = anyio.create_task_group()
        await tg.__aenter__()
        return tg

    def started(self) -> None:
        self.life = Life.RUNNING

    def stopping(self) -> bool:
        """``stop()`` begins: False if already stopped; EngineStateError if not running or from another task."""
        if self.life is Life.STOPPED:
            return False
        if self.life is not Life.RUNNING:
            raise EngineStateError(f"stop() on an engine that is {self.life.value}")
        if anyio.get_current_task().id != self._owner_task:
            raise EngineStateError(
                "stop() must be called from the task that called start() (the engine's task group lives "
                "in that task); use `async with engine` in one task, or call start() and stop() from the "
                "same task. The engine is still running."
            )
        self.life = Life.STOPPING
        return True

    async def close(self, user_exc: BaseException | None) -> None:
        """Cancel and leave the task group (if entered); the engine is STOPPED after this, whatever happens."""
        tg, self.tg = self.tg, None
        self.life = Life.STOPPED
        if tg is None:
            return
        tg.cancel_scope.cancel()
        try:
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
