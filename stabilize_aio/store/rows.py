"""Ops to rows: what a group of ops writes, per statement."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import msgspec

from .._errors import DataError, StoreError
from ..messages.durable import Durable
from ..state.commit import Commit
from .protocol import NewWorkflow, Op

#: The batches of a group, in the order they are written: each is written with the named query of
#: its key, but a discard deletes as a consumed row does (without the fence: a late or repeated
#: command may find nothing).
BATCHES = (
    "wf_insert",
    "stage_insert",
    "wf_update",
    "stage_update",
    "outbox_delete",
    "outbox_discard",
    "outbox_purge",
    "outbox_insert",
    "event_insert",
    "stage_respec",
    "quarantine_insert",
    "claim_delete",
    "claim_delete_all",
    "claim_insert",
)

#: The named query a batch is written with.
QUERY_OF: Mapping[str, str] = MappingProxyType({key: key for key in BATCHES} | {"outbox_discard": "outbox_delete"})

#: The batches whose summed row count must equal their length: a row that is not there (or at
#: another version) fails the whole group.
FENCED = frozenset({"wf_update", "stage_update", "outbox_delete"})


class Rows:
    """Ops flattened into per-statement parameter rows, and the bytes they carry."""

    __slots__ = ("batches", "nbytes")

    def __init__(self) -> None:
        self.batches: dict[str, list[tuple[Any, ...]]] = {key: [] for key in BATCHES}
        self.nbytes = 0  # the encoded blobs written: what O(1) writes per step is measured by


def rows_for(ops: Sequence[Op], encode: Callable[[Any], bytes]) -> Rows:
    """Flatten ops into per-statement parameter rows (shared by the SQL stores)."""
    rows = Rows()
    out = rows.batches
    nbytes = 0

    def enc(value: Any) -> bytes:
        nonlocal nbytes
        data = encode(value)
        nbytes += len(data)
        return data

    for item in ops:
        try:
            _add_rows(out, item, enc)
        except Exception as exc:  # (an op that cannot become rows fails its workflow, never the engine)
            wid = item.record.id if isinstance(item, NewWorkflow) else item.workflow_id
            raise DataError(f"workflow {wid!r}: a row of this write cannot be encoded: {exc!r}") from exc
    rows.nbytes = nbytes
    return rows


def _add_rows(out: dict[str, list[tuple[Any, ...]]], item: Op, enc: Callable[[Any], bytes]) -> None:
    """Append one op's parameter rows to the per-statement batches."""
    op: Commit
    if isinstance(item, NewWorkflow):
        # The start turn committed with the insert is folded into it: the rows go in
        # as the turn leaves them (no UPDATE of rows inserted a moment before).
        begin = item.begin
        r = item.record if begin is None or begin.workflow is None else begin.workflow
        out["wf_insert"].append(
            (r.id, r.application, r.name, r.status._value_, r.version, r.created_at, r.ended_at, enc(r))
        )
        changed = begin.stages if begin is not None else {}
        made = (begin.added or []) if begin is not None else []  # stages the start turn made (a root's instances)
        for spec, initial in zip((*item.specs, *made), (*item.runs, *(changed[s.index] for s in made)), strict=True):
            run = changed.get(spec.index, initial)
            out["stage_insert"].append(
                (r.id, spec.index, spec.ref_id, run.status._value_, run.version, enc(spec), enc(run))
            )
        if begin is None:
            return
        if begin.consumed or begin.discarded:
            raise StoreError(f"the start turn of {r.id!r} consumes rows; a new workflow has none")
        op = msgspec.structs.replace(begin, workflow=None, stages={}, added=None)  # its rows and events remain
    else:
        op = item
    wid = op.workflow_id
    if op.workflow is not None:
        r = op.workflow
        out["wf_update"].append((r.status._value_, r.version, r.ended_at, enc(r), wid, op.base_workflow_version))
    added = op.added
    if added:  # stages made at run time: inserted as their turn leaves them
        new = {spec.index for spec in added}
        for spec in added:
            run = op.stages[spec.index]
            out["stage_insert"].append(
                (wid, spec.index, spec.ref_id, run.status._value_, run.version, enc(spec), enc(run))
            )
    updates = out["stage_update"]
    for idx, run in op.stages.items():
        if added and idx in new:
            continue
        updates.append((run.status._value_, run.version, enc(run), wid, idx, _base_version(op, idx)))
    for mid in op.consumed:
        out["outbox_delete"].append((wid, mid))
    for mid in op.discarded:
        out["outbox_discard"].append((wid, mid))
    for msg in op.emitted:
        out["outbox_insert"].append(outbox_row(wid, msg, enc))
    for ev in op.events:
        out["event_insert"].append((wid, ev.key, ev.kind, ev.stage, ev.at, enc(ev)))
    if op.purge:
        out["outbox_purge"].append((wid,))
    for idx, spec in (op.respecs or {}).items():
        out["stage_respec"].append((enc(spec), wid, idx))
    for bad in op.quarantine or ():
        out["quarantine_insert"].append((wid, bad.source, bad.key, bad.body, bad.error, bad.at))
    if op.release_all:
        out["claim_delete_all"].append((wid,))
    for stage in op.releases or ():
        out["claim_delete"].append((wid, stage))
    for c in op.claims or ():
        out["claim_insert"].append((c.key, wid, c.stage, c.generation, c.limit, int(c.purge)))


def _base_version(op: Commit, idx: int) -> int:
    """The version the stage row must have before this turn (fence)."""
    base = op.base_versions.get(idx)
    if base is None:
        raise StoreError(f"transition for {op.workflow_id!r} lacks the base version of stage {idx}")
    return base


def outbox_row(wid: str, msg: Durable, enc: Any) -> tuple[Any, ...]:
    task_type = getattr(msg, "task_type", None)
    return (wid, msg.id, msg.deliver_at, type(msg).__name__, task_type, enc(msg))
