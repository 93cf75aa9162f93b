"""In-memory messages: they never reach the store."""

from __future__ import annotations

from typing import Any

import msgspec

from ..model.results import TaskResult
from ..model.retry import RetryPolicy
from ..model.values import ErrorInfo, QuarantineRow
from .durable import Durable, RunTask


class TaskOutcome(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """How a task call ended, as the pool reports it to the actor.

    Exactly one of ``result`` and ``error`` is set. ``free_retry`` marks a call
    that was never made (an open circuit): it is retried without using up an attempt.
    ``started_at`` is when the call really started (its ``task.started`` event).
    """

    result: TaskResult | None = None
    error: ErrorInfo | None = None
    retry_after: float | None = None
    context_update: dict[str, Any] = {}
    retry: RetryPolicy = RetryPolicy()
    poll_interval: float = 1.0
    free_retry: bool = False
    started_at: float | None = None  # wall-clock time the call started (None: never made)


class TaskDone(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """In memory: the result of the task run ``run`` returns to its actor."""

    run: RunTask
    outcome: TaskOutcome


class ParkTask(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """In memory: a RunTask whose task type this engine does not have."""

    run: RunTask


class FailWorkflow(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """In memory: end the workflow TERMINAL for a fault local to it (containment).

    ``quarantine`` holds rows that could not be decoded: their raw bytes move
    to the quarantine table in the same turn; ``repair`` lists the stage
    indexes whose stored rows are placeholders to write back decodable.
    """

    error: ErrorInfo
    quarantine: tuple[QuarantineRow, ...] = ()
    repair: tuple[int, ...] = ()


class Undecodable(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """In memory: an outbox row whose body could not be decoded, delivered to its workflow in its place."""

    id: str
    row: QuarantineRow
    deliver_at: float | None = None


class Sent(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """In memory: the runtime did what a :class:`~stabilize_aio.messages.durable.Send` row asked (delete it)."""

    id: str
    deliver_at: float | None = None


InMemory = TaskDone | ParkTask | FailWorkflow | Undecodable | Sent

Message = Durable | InMemory
