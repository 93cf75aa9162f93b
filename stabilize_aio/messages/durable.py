"""Durable messages: outbox rows, as msgspec tagged structs, and their codec.

They are committed with the state change that produced them, delivered in
memory after that commit, deleted in the transaction of their effect. Their ids
are deterministic, so a redelivery has the same id as the original.

Records, messages and views are declared ``gc=False``: they are acyclic data.

A run has no start row: its start turn is committed with its insert. A ``start``
row (tag ``"start"``) left by an earlier development version decodes as no
message here, so it reaches its workflow as an ``Undecodable``: the row moves to
the quarantine table and that workflow ends TERMINAL with an ``UndecodableRow`` error."""

from __future__ import annotations

from typing import Any

import msgspec

from ..model.values import ErrorInfo, Signal


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


class SignalStage(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag="signal"):
    """A command from outside: a signal for one stage (resumes it if it is suspended)."""

    id: str
    stage: int
    signal: Signal
    deliver_at: float | None = None


class Send(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag="send"):
    """Something one run owes another, kept until it is done: start a child, tell a parent, cancel a child.

    Committed with the turn that decides it; after that commit the runtime does
    it (each is idempotent: a child's id, a parent's row id, a cancel are fixed)
    and acknowledges with :class:`~stabilize_aio.messages.memory.Sent`, whose
    turn deletes this row. A crash in between redelivers the row: it is done again.
    """

    id: str
    target: str  # the other run's id
    kind: str  # "start" (a child), "done" (tell the parent), "cancel" (a child)
    stage: int = -1  # start: this run's stage; done: the parent's stage
    generation: int = 0  # ... and that stage's generation
    inputs: dict[str, Any] = {}  # start: the child's inputs
    status: str | None = None  # done: the child's final status
    outputs: dict[str, Any] = {}  # done: the child's outputs
    error: ErrorInfo | None = None  # done: why the child failed
    deliver_at: float | None = None


class ChildDone(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag="child_done"):
    """A child run ended: its parent's stage ends with it (written into the parent's outbox)."""

    id: str
    child: str
    stage: int
    generation: int
    status: str
    outputs: dict[str, Any] = {}
    error: ErrorInfo | None = None
    deliver_at: float | None = None


class WorkflowTimeout(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag="workflow_timeout"):
    """Fires when a run has lived longer than its ``timeout`` (from its durable start)."""

    id: str
    deliver_at: float | None = None


class PauseWorkflow(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag="pause"):
    """A command from outside: pause the run (``cancel``: its running calls too, to run again at resume)."""

    id: str
    reason: str = ""
    cancel: bool = False
    deliver_at: float | None = None


class ResumeWorkflow(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag="resume"):
    """A command from outside: resume a paused run."""

    id: str
    deliver_at: float | None = None


class RestartWorkflow(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag="restart"):
    """A command from outside: re-open a finished run in place (``stage``: from that stage; -1: its failures)."""

    id: str
    stage: int = -1
    epoch: int = 0  # the epoch the caller saw: a restart of an epoch that is over is dropped
    deliver_at: float | None = None


class SkipStage(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag="skip"):
    """A command from outside: end one unfinished stage SKIPPED (its call cancelled); its downstream goes on."""

    id: str
    stage: int
    deliver_at: float | None = None


class CancelRegion(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag="cancel_region"):
    """A command from outside: cancel every unfinished stage of a cancel region for real."""

    id: str
    region: str
    deliver_at: float | None = None


class SignalTimeout(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag="signal_timeout"):
    """Fires when a suspended stage's signal wait (``TaskResult.suspend(timeout=...)``) runs out."""

    id: str
    stage: int
    on_timeout: str = "fail"  # "fail", "skip" or "continue"
    deliver_at: float | None = None


class Granted(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag="grant"):
    """A claim on a shared key came first: its stage may start (stage -1: the run is admitted)."""

    id: str
    key: str
    stage: int
    generation: int  # the stage's generation (the run's epoch for an admission) the claim was made for
    deliver_at: float | None = None


class StartDeadline(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag="start_deadline"):
    """Fires when a run still waiting to start (BUFFERED) passes its ``start_deadline``."""

    id: str
    deliver_at: float | None = None


Durable = (
    RunTask
    | StageTimeout
    | CancelWorkflow
    | SignalStage
    | Send
    | ChildDone
    | WorkflowTimeout
    | PauseWorkflow
    | ResumeWorkflow
    | RestartWorkflow
    | SkipStage
    | CancelRegion
    | SignalTimeout
    | Granted
    | StartDeadline
)

#: The outside commands: rows with a random id, each applied at most once by its actor (late ones dropped).
COMMANDS = (CancelWorkflow, SignalStage, PauseWorkflow, ResumeWorkflow, RestartWorkflow, SkipStage, CancelRegion)

durable_encoder = msgspec.msgpack.Encoder()

durable_decoder: msgspec.msgpack.Decoder[Durable] = msgspec.msgpack.Decoder(Durable)
