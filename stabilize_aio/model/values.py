"""Values shared by records, messages and views: errors, events, signals, quarantined rows."""

from __future__ import annotations

from typing import Any

import msgspec


class Signal(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A signal's name and data, as a suspended stage receives it."""

    name: str
    data: Any = None


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


class QuarantineRow(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A stored row that could not be decoded, as it moves to the quarantine table."""

    source: str  # the table it came from: outbox, workflows, stages
    key: str  # its key there: the outbox id, "workflow", the stage index
    body: bytes
    error: str
    at: float = 0.0  # when it moved to the quarantine (the turn's time; stamped by the turn that moves it)
