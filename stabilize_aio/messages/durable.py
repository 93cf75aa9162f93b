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

import msgspec

from ..model.values import Signal


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


Durable = RunTask | StageTimeout | CancelWorkflow | SignalStage

durable_encoder = msgspec.msgpack.Encoder()

durable_decoder: msgspec.msgpack.Decoder[Durable] = msgspec.msgpack.Decoder(Durable)
