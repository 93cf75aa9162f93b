"""Every message, as msgspec tagged structs.

Durable messages (:data:`Durable`) are outbox rows: committed with the state
change that produced them, delivered in memory after that commit, deleted in the
transaction of their effect. Their ids are deterministic (stage index,
generation, task, attempt, poll), so a redelivery has the same id as the
original. In-memory messages never reach the store.

Records, messages and views are declared ``gc=False``: they are acyclic data,
so the garbage collector need not track them, and a process holding many live
workflows does not pay for scanning them (measured in docs/performance.md).
"""

from __future__ import annotations

from typing import Any

import msgspec

from ._model import TaskResult
from ._retry import RetryPolicy


class StartWorkflow(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag="start"):
    """Written by submit: start the run."""

    id: str = "start"
    deliver_at: float | None = None


class RunTask(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag="run"):
    """A task run in flight or waiting (poll, retry backoff): lives until its result commits."""

    id: str
    stage: int
    task: int
    task_type: str
    generation: int
    attempt: int
    deliver_at: float | None = None


class StageTimeout(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag="stage_timeout"):
    """Fires when a stage has run longer than its ``stage_timeout``."""

    id: str
    stage: int
    generation: int
    deliver_at: float | None = None


class CancelWorkflow(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag="cancel"):
    """A command from outside: cancel the run."""

    id: str
    reason: str = ""
    deliver_at: float | None = None


class Signal(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A signal's name and data, as a suspended stage receives it."""

    name: str
    data: Any = None


class SignalStage(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag="signal"):
    """A command from outside: a signal for one stage (resumes it if it is suspended)."""

    id: str
    stage: int
    signal: Signal
    deliver_at: float | None = None


Durable = StartWorkflow | RunTask | StageTimeout | CancelWorkflow | SignalStage

durable_encoder = msgspec.msgpack.Encoder()
durable_decoder: msgspec.msgpack.Decoder[Durable] = msgspec.msgpack.Decoder(Durable)


class ErrorInfo(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """An error recorded on a stage or a workflow: small, size-capped, traceback kept.

    ``kind`` says whose failure it is: ``"task"`` (a task failed, timed out or
    could not run) or ``"engine"`` (the engine could not apply a step of this
    workflow: a handler bug, an illegal status change, an undecodable row, a
    write the database refused; the workflow ended TERMINAL, nothing else did).
    """

    type: str
    message: str
    attempt: int = 0
    transient: bool = False
    traceback: str = ""
    kind: str = "task"

    MESSAGE_CAP = 2_000
    TRACEBACK_CAP = 8_000

    @classmethod
    def engine(cls, type: str, message: str, *, traceback: str = "") -> ErrorInfo:
        """An engine fault local to one workflow (``kind="engine"``, never transient), capped."""
        return cls.capped(type, message, attempt=0, transient=False, traceback=traceback, kind="engine")

    @classmethod
    def capped(
        cls, type: str, message: str, *, attempt: int, transient: bool, traceback: str = "", kind: str = "task"
    ) -> ErrorInfo:
        """Build an ErrorInfo whose message and traceback are cut to their caps."""
        return cls(
            type=type[:200],
            message=_cap(message, cls.MESSAGE_CAP),
            attempt=attempt,
            transient=transient,
            traceback=_cap(traceback, cls.TRACEBACK_CAP),
            kind=kind,
        )


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 15] + "… [truncated]"


class Event(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A line of a workflow's append-only history, written in the transaction of its step.

    ``key`` is unique per workflow and deterministic (``stage.completed:3:0`` is
    stage 3, generation 0), so the store refuses a step recorded twice.
    """

    key: str
    kind: str
    at: float
    stage: str | None = None
    status: str | None = None
    attempt: int | None = None
    message: str | None = None  # what happened, for events that need saying (an engine fault)


class TaskOutcome(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """How a task call ended, as the pool reports it to the actor.

    Exactly one of ``result`` and ``error`` is set. ``free_retry`` marks a call
    that was never made (an open circuit): it is retried without using up an attempt.
    """

    result: TaskResult | None = None
    error: ErrorInfo | None = None
    retry_after: float | None = None
    context_update: dict[str, Any] = {}
    retry: RetryPolicy = RetryPolicy()
    poll_interval: float = 1.0
    free_retry: bool = False


class TaskDone(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """In memory: the result of the task run ``run`` returns to its actor."""

    run: RunTask
    outcome: TaskOutcome


class ParkTask(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """In memory: a RunTask whose task type this engine does not have."""

    run: RunTask


class QuarantineRow(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A stored row that could not be decoded, as it moves to the quarantine table."""

    source: str  # the table it came from: outbox, workflows, stages
    key: str  # its key there: the outbox id, "workflow", the stage index
    body: bytes
    error: str


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


InMemory = TaskDone | ParkTask | FailWorkflow | Undecodable
Message = Durable | InMemory
