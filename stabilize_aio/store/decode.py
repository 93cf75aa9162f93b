"""Tolerant decoding of stored rows: a bad row becomes a placeholder, never an exception."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from ..messages.durable import durable_decoder
from ..messages.memory import Undecodable
from ..model.records import StageRun, StageSpec, WorkflowRecord
from ..model.status import WorkflowStatus
from ..model.values import Event, QuarantineRow
from .protocol import LoadedWorkflow, Pending, log

#: One msgpack encoder and the record decoders every SQL store uses, built once.
encode_row = msgspec.msgpack.Encoder().encode

decode_record = msgspec.msgpack.Decoder(WorkflowRecord).decode

decode_spec = msgspec.msgpack.Decoder(StageSpec).decode

decode_run = msgspec.msgpack.Decoder(StageRun).decode

decode_event = msgspec.msgpack.Decoder(Event).decode

_BAD_ROW = (msgspec.DecodeError, ValueError, TypeError)

#: The columns every SQL store reads with a workflow's body, and with a stage's spec and run
#: (the plain columns make a placeholder when a body cannot be decoded).
WORKFLOW_COLUMNS = "body, application, name, status, version, created_at, ended_at"

STAGE_COLUMNS = "idx, ref_id, status, version, spec, run"

EVENT_COLUMNS = "body, key, kind, stage, at"


def _status(value: Any) -> WorkflowStatus:
    try:
        return WorkflowStatus(value)
    except ValueError:
        return WorkflowStatus.TERMINAL


def decode_workflow_row(workflow_id: str, row: Sequence[Any]) -> tuple[WorkflowRecord, QuarantineRow | None]:
    """A workflow record from ``WORKFLOW_COLUMNS``; a placeholder (and the damage) if its body is bad."""
    body = bytes(row[0])
    try:
        record = decode_record(body)
        if record.id != workflow_id:
            raise ValueError(f"the body is of workflow {record.id!r}")
        return record, None
    except _BAD_ROW as exc:
        placeholder = WorkflowRecord(
            id=workflow_id,
            application=str(row[1]),
            name=str(row[2]),
            status=_status(row[3]),
            version=int(row[4]),
            created_at=float(row[5]),
            ended_at=None if row[6] is None else float(row[6]),
        )
        return placeholder, QuarantineRow(source="workflows", key="body", body=body, error=repr(exc))


def decode_loaded(workflow_id: str, wf_row: Sequence[Any], stage_rows: Sequence[Sequence[Any]]) -> LoadedWorkflow:
    """A workflow from its rows (``WORKFLOW_COLUMNS``, then ``STAGE_COLUMNS`` by index), never raising for bad rows."""
    record, bad = decode_workflow_row(workflow_id, wf_row)
    damage = [bad] if bad is not None else []
    repair: list[int] = []
    specs: list[StageSpec] = []
    runs: list[StageRun] = []
    for idx, ref_id, status, version, spec_body, run_body in stage_rows:
        index = int(idx)
        try:
            spec = decode_spec(spec_body)
            if spec.index != index or any(r >= len(stage_rows) or r < 0 for r in spec.requisites):
                raise ValueError(f"the spec is of stage {spec.index} with requisites {spec.requisites}")
        except _BAD_ROW as exc:
            spec = StageSpec(ref_id=str(ref_id), index=index, name=str(ref_id), tasks=(), context={}, requisites=())
            damage.append(QuarantineRow(source="stages.spec", key=str(index), body=bytes(spec_body), error=repr(exc)))
            repair.append(index)
        try:
            run = decode_run(run_body)
        except _BAD_ROW as exc:
            run = StageRun(status=_status(status), version=int(version))
            damage.append(QuarantineRow(source="stages.run", key=str(index), body=bytes(run_body), error=repr(exc)))
            if index not in repair:
                repair.append(index)
        specs.append(spec)
        runs.append(run)
    return LoadedWorkflow(record=record, specs=specs, runs=runs, damage=tuple(damage), repair=tuple(repair))


def decode_pending(workflow_id: str, row_id: str, body: Any) -> Pending:
    """An outbox row's message, or an :class:`Undecodable` in its place (delivered to its workflow)."""
    try:
        return durable_decoder.decode(body)
    except _BAD_ROW as exc:
        log.error(
            "workflow %s: outbox row %r cannot be decoded (%r); it goes to quarantine",
            workflow_id,
            row_id,
            exc,
            extra={"workflow_id": workflow_id},
        )
        raw = bytes(body)
        return Undecodable(id=row_id, row=QuarantineRow(source="outbox", key=row_id, body=raw, error=repr(exc)))


def decode_pending_rows(rows: Sequence[Sequence[Any]]) -> list[tuple[str, Pending]]:
    """``(workflow id, message)`` of outbox rows read as ``workflow_id, id, body``."""
    return [(str(wid), decode_pending(str(wid), str(mid), body)) for wid, mid, body in rows]


def decode_event_row(row: Sequence[Any]) -> Event:
    """A history event from ``EVENT_COLUMNS``; one built from its columns if its body is bad."""
    try:
        return decode_event(row[0])
    except _BAD_ROW:
        return Event(key=str(row[1]), kind=str(row[2]), stage=row[3], at=float(row[4]), message="undecodable event")
