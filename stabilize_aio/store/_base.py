"""The Store contract every backend implements, and the group writer they share.

A store persists workflows, stages and the outbox. Writes arrive as *ops*
(a new workflow, or one actor turn's :class:`~stabilize_aio._state.Transition`)
and are grouped: the writer takes everything queued, commits it in one
transaction with one statement batch per table, and wakes each op's caller.
If a group fails its fences (a consumed row already gone, a row at another
version), it is rolled back and replayed op by op so only the offending op is
refused with :class:`~stabilize_aio.ConcurrencyError`.
"""

from __future__ import annotations

import logging
import time
import zlib
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.lowlevel
import msgspec

from .._errors import ConcurrencyError, DataError, StoreError
from .._messages import Durable, Event, QuarantineRow, Undecodable, durable_decoder
from .._state import StageRun, StageSpec, Transition, WorkflowRecord
from .._status import WorkflowStatus

log = logging.getLogger("stabilize_aio.store")


class NewWorkflow(msgspec.Struct, kw_only=True, gc=False):
    """An op: insert a submitted workflow, its stages and its start row."""

    record: WorkflowRecord
    specs: list[StageSpec]
    runs: list[StageRun]
    start: Durable | None = None  # a start row, delivered after the commit
    begin: Transition | None = None  # or the start turn itself, committed with the insert
    notify: bool = False  # wake the process that owns this workflow's shard (submitted from elsewhere)


Op = NewWorkflow | Transition


class StoreStatistics(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Counters of a store since it opened."""

    commits: int
    transitions: int
    workflows_inserted: int
    outbox_reads: int
    bytes_written: int
    groups_replayed: int
    largest_group: int
    queued: int


class ScheduleRow(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A durable schedule as stored: its cron, its next tick, and the encoded workflow to start."""

    name: str
    cron: str
    next_at: float
    body: bytes


class LoadedWorkflow(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A workflow as read from the store.

    Rows that could not be decoded are replaced by placeholders built from the
    rows' plain columns (id, names, status, version, times) and listed in
    ``damage`` with their raw bytes; ``repair`` names the stages whose
    placeholders must be written back. Nothing here raises for a bad row.
    """

    record: WorkflowRecord
    specs: list[StageSpec]
    runs: list[StageRun]
    damage: tuple[QuarantineRow, ...] = ()
    repair: tuple[int, ...] = ()


class QuarantinedRow(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A row in the quarantine table: where it came from, why, and its raw bytes."""

    workflow_id: str
    source: str
    key: str
    body: bytes
    error: str
    at: float


#: A pending outbox row as read: its message, or the undecodable row in its place.
Pending = Durable | Undecodable


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


#: Workflows are spread over this many shards; a process owns the actors of the shards it leases.
SHARDS = 32


def shard_of(workflow_id: str) -> int:
    """The shard of a workflow: a stable hash of its id (the same in every process and release)."""
    return zlib.crc32(workflow_id.encode()) % SHARDS


#: Called by the group writer right after an op's group committed (None) or failed (the error).
Then = Callable[[BaseException | None], None]


class _Pending:
    __slots__ = ("done", "error", "op", "then")

    def __init__(self, op: Op, done: anyio.Event, then: Then | None = None) -> None:
        self.op = op
        self.done = done  # shared by every op of the writer's round
        self.then = then
        self.error: BaseException | None = None


class Store(ABC):
    """The persistence contract (SQLite now; PostgreSQL implements the same)."""

    def __init__(self) -> None:
        self._queue: deque[_Pending] = deque()
        self._wake = anyio.Event()
        self._round = anyio.Event()  # set when every op queued before the writer's next take is done
        self._committing: anyio.Event | None = None
        self.commits = 0
        self.transitions = 0
        self.workflows_inserted = 0
        self.outbox_reads = 0
        self.bytes_written = 0
        self.groups_replayed = 0
        self.largest_group = 0
        self.max_group = 500
        self.migrations_applied: list[int] = []  # numbers of the migrations open() applied (SQLite)

    # lifecycle ---------------------------------------------------------------
    @abstractmethod
    async def open(self) -> None:
        """Check, lock and migrate the database; raise a StoreError subclass if unusable."""

    @abstractmethod
    async def close(self) -> None:
        """Close connections and release locks (idempotent)."""

    # writes ------------------------------------------------------------------
    async def write(self, op: Op) -> None:
        """Queue ``op`` for the next group commit and wait until it is durable.

        Raises:
            ConcurrencyError: the op's fence failed (it was not written).
            StoreError: the database failed.
        """
        pending = _Pending(op, self._round)
        self._queue.append(pending)
        self._wake.set()
        await pending.done.wait()
        if pending.error is not None:
            raise pending.error

    def enqueue(self, op: Op, then: Then) -> None:
        """Queue ``op`` for the next group commit without waiting for it.

        ``then(error)`` is called in the writer's task as soon as the op's group
        has committed (``error`` is None) or failed (a ConcurrencyError for a
        failed fence, a StoreError for a failed database). It must not block;
        it may enqueue further ops (they go into the next round). This is how
        actors commit: no task waits per turn, and the writer acts on every
        committed turn of a group in one pass.
        """
        self._queue.append(_Pending(op, self._round, then))
        self._wake.set()

    async def run_writer(self) -> None:
        """The group writer loop; runs in the engine's task group until cancelled.

        Each round takes everything queued, commits it in groups of at most
        ``max_group`` ops (one transaction each), calls the ``then`` of each
        enqueued op right after its group, and at the end wakes all the
        round's awaiting callers with one event.
        """
        while True:
            if not self._queue:
                await self._wake.wait()
                self._wake = anyio.Event()
                continue
            taken = list(self._queue)
            self._queue.clear()
            done, self._round = self._round, anyio.Event()
            self._committing = done
            failed: BaseException | None = None  # a callback's exception: raised once the round is done
            with anyio.CancelScope(shield=True):
                for start in range(0, len(taken), self.max_group):
                    group = taken[start : start + self.max_group]
                    self.largest_group = max(self.largest_group, len(group))
                    await self._commit_group(group)
                    for p in group:
                        if p.then is not None:
                            try:
                                p.then(p.error)
                            except Exception as exc:  # every other op still hears back, every caller wakes
                                failed = failed or exc
            self._committing = None
            done.set()
            if failed is not None:
                raise failed

    async def flush(self) -> None:
        """Wait until everything queued so far is committed."""
        if self._committing is not None:
            await self._committing.wait()
        if self._queue:
            await self._round.wait()

    async def _commit_group(self, group: list[_Pending]) -> None:
        try:
            await self._write_ops([p.op for p in group])
        except (ConcurrencyError, DataError):  # one op's fault, maybe: replay op by op, refuse only the offenders
            self.groups_replayed += 1
            for p in group:
                try:
                    await self._write_ops([p.op])
                except StoreError as exc:
                    p.error = exc
                self._count([p])
            return
        except StoreError as exc:
            for p in group:
                p.error = exc
            return
        self._count(group)

    def _count(self, group: Sequence[_Pending]) -> None:
        for p in group:
            if p.error is None:
                if isinstance(p.op, NewWorkflow):
                    self.workflows_inserted += 1
                else:
                    self.transitions += 1

    @abstractmethod
    async def _write_ops(self, ops: Sequence[Op]) -> None:
        """Write ops in ONE transaction; raise ConcurrencyError if a fence fails (rolled back)."""

    # reads -------------------------------------------------------------------
    @abstractmethod
    async def load(self, workflow_id: str) -> LoadedWorkflow | None:
        """Read one workflow with its stages, or None."""

    @abstractmethod
    async def pending_messages(self) -> list[tuple[str, Pending]]:
        """Every outbox row (recovery at start): (workflow id, message)."""

    @abstractmethod
    async def pending_runs(
        self, task_type: str, limit: int, now: float, after: tuple[str, str] | None = None
    ) -> list[tuple[str, Pending]]:
        """Due RunTask rows of one task type in key order, after the key ``after`` (a pool refilling)."""

    @abstractmethod
    async def events(self, workflow_id: str) -> list[Event]:
        """A workflow's history, in commit order."""

    @abstractmethod
    async def quarantined(self, workflow_id: str | None = None) -> list[QuarantinedRow]:
        """The rows moved to the quarantine table (of one workflow), oldest first."""

    # many processes (leases; PostgreSQL) ----------------------------------------
    #: Whether this backend shares a database between engine processes through shard leases.
    supports_leases: bool = False

    async def heartbeat(self, owner: str, lease: float) -> int:
        """Record that ``owner`` is alive; return how many engines are alive (this one included)."""
        return 1

    async def claim(self, owner: str, count: int, lease: float) -> dict[int, int]:
        """Lease up to ``count`` free or expired shards for ``owner``: {shard: new epoch}."""
        raise NotImplementedError(f"{type(self).__name__} has no shard leases")

    async def renew(self, owner: str, held: dict[int, int], lease: float) -> set[int]:
        """Extend the leases ``owner`` holds at the given epochs; return the shards it lost."""
        raise NotImplementedError(f"{type(self).__name__} has no shard leases")

    async def release(self, owner: str, shards: Sequence[int]) -> None:
        """Hand leases back at once (graceful stop, rebalance)."""
        raise NotImplementedError(f"{type(self).__name__} has no shard leases")

    async def leave(self, owner: str) -> None:  # noqa: B027 - optional: a store without leases has no members
        """Graceful stop: hand back every lease of ``owner`` and forget it as an engine, at once."""

    @abstractmethod
    async def statuses(self, workflow_ids: Sequence[str]) -> dict[str, WorkflowStatus]:
        """The status of each of these workflows that exists (one cheap query; waits and their safety net)."""

    @abstractmethod
    async def pending_for(self, workflow_id: str) -> list[Pending]:
        """The outbox rows of one workflow (a wake-up from another process, a check after a refused fence)."""

    async def listen(
        self,
        on_wake: Callable[[str], None],
        on_done: Callable[[str], None],
        on_members: Callable[[str], None] | None = None,
    ) -> None:
        """Receive other processes' wake-ups (a workflow id for its owner), completions and membership changes."""
        raise NotImplementedError(f"{type(self).__name__} has no cross-process notifications")

    #: Set by the engine when it runs on leases: {shard: epoch} it holds. Every turn of a
    #: workflow in a shard not held at that epoch is refused with LeaseLostError (fencing).
    fence: dict[int, int] | None = None
    #: This engine process's lease owner id (set by the engine).
    owner: str = ""

    # schedules and retention (the leader's global services) -------------------------
    @abstractmethod
    async def put_schedule(self, row: ScheduleRow) -> None:
        """Create or replace a schedule."""

    @abstractmethod
    async def delete_schedule(self, name: str) -> bool:
        """Remove a schedule; False if there was none."""

    @abstractmethod
    async def list_schedules(self, *, due_before: float | None = None) -> list[ScheduleRow]:
        """Schedules by name, or only those whose next tick is at or before ``due_before``."""

    @abstractmethod
    async def advance_schedule(self, name: str, fired_at: float, next_at: float) -> bool:
        """Move a schedule past the tick ``fired_at`` (compare-and-set: False if someone else did)."""

    @abstractmethod
    async def delete_finished(self, ended_before: float, limit: int) -> int:
        """Retention: delete up to ``limit`` finished workflows that ended before a time; return how many."""

    @abstractmethod
    async def list_workflows(self, *, status: str | None, application: str | None, limit: int) -> list[WorkflowRecord]:
        """Workflow records, newest first, filtered."""

    def statistics(self) -> StoreStatistics:
        """Counters since open."""
        return StoreStatistics(
            commits=self.commits,
            transitions=self.transitions,
            workflows_inserted=self.workflows_inserted,
            outbox_reads=self.outbox_reads,
            bytes_written=self.bytes_written,
            groups_replayed=self.groups_replayed,
            largest_group=self.largest_group,
            queued=len(self._queue),
        )


class Rows:
    """Ops flattened into per-statement parameter rows, and the bytes they carry."""

    __slots__ = ("batches", "nbytes")

    def __init__(self) -> None:
        self.batches: dict[str, list[tuple[Any, ...]]] = {
            "wf_insert": [],
            "stage_insert": [],
            "wf_update": [],
            "stage_update": [],
            "outbox_delete": [],
            "outbox_discard": [],
            "outbox_purge": [],
            "outbox_insert": [],
            "event_insert": [],
            "stage_respec": [],
            "quarantine_insert": [],
        }
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
        except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as exc:
            wid = item.record.id if isinstance(item, NewWorkflow) else item.workflow_id
            raise DataError(f"workflow {wid!r}: a row of this write cannot be encoded: {exc}") from exc
    rows.nbytes = nbytes
    return rows


def _add_rows(out: dict[str, list[tuple[Any, ...]]], item: Op, enc: Callable[[Any], bytes]) -> None:
    """Append one op's parameter rows to the per-statement batches."""
    op: Transition
    if isinstance(item, NewWorkflow):
        # The start turn committed with the insert is folded into it: the rows go in
        # as the turn leaves them (no UPDATE of rows inserted a moment before).
        begin = item.begin
        r = item.record if begin is None or begin.workflow is None else begin.workflow
        out["wf_insert"].append(
            (r.id, r.application, r.name, r.status._value_, r.version, r.created_at, r.ended_at, enc(r))
        )
        changed = begin.stages if begin is not None else {}
        for spec, initial in zip(item.specs, item.runs, strict=True):
            run = changed.get(spec.index, initial)
            out["stage_insert"].append(
                (r.id, spec.index, spec.ref_id, run.status._value_, run.version, enc(spec), enc(run))
            )
        if item.start is not None:
            out["outbox_insert"].append(_outbox_row(r.id, item.start, enc))
        if begin is None:
            return
        if begin.consumed or begin.discarded:
            raise StoreError(f"the start turn of {r.id!r} consumes rows; a new workflow has none")
        op = msgspec.structs.replace(begin, workflow=None, stages={})  # its rows and events remain
    else:
        op = item
    wid = op.workflow_id
    if op.workflow is not None:
        r = op.workflow
        out["wf_update"].append((r.status._value_, r.version, r.ended_at, enc(r), wid, op.base_workflow_version))
    for idx, run in op.stages.items():
        out["stage_update"].append((run.status._value_, run.version, enc(run), wid, idx, _base_version(op, idx)))
    for mid in op.consumed:
        out["outbox_delete"].append((wid, mid))
    for mid in op.discarded:
        out["outbox_discard"].append((wid, mid))
    for msg in op.emitted:
        out["outbox_insert"].append(_outbox_row(wid, msg, enc))
    for ev in op.events:
        out["event_insert"].append((wid, ev.key, ev.kind, ev.stage, ev.at, enc(ev)))
    if op.purge:
        out["outbox_purge"].append((wid,))
    for idx, spec in op.respecs.items():
        out["stage_respec"].append((enc(spec), wid, idx))
    for bad in op.quarantine:
        out["quarantine_insert"].append((wid, bad.source, bad.key, bad.body, bad.error, time.time()))


def migrations(dialect: str) -> list[tuple[int, str]]:
    """The numbered migrations of a dialect (``sqlite``, ``postgres``) shipped with the package, in order."""
    folder = resources.files("stabilize_aio.store").joinpath("sql", dialect)
    found = [(int(f.name.split("_", 1)[0]), f.read_text()) for f in folder.iterdir() if f.name.endswith(".sql")]
    return sorted(found)


def redact_url(url: str) -> str:
    """The URL with its password masked, for logs, reprs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _base_version(op: Transition, idx: int) -> int:
    """The version the stage row must have before this turn (fence)."""
    base = op.base_versions.get(idx)
    if base is None:
        raise StoreError(f"transition for {op.workflow_id!r} lacks the base version of stage {idx}")
    return base


def _outbox_row(wid: str, msg: Durable, enc: Any) -> tuple[Any, ...]:
    task_type = getattr(msg, "task_type", None)
    return (wid, msg.id, msg.deliver_at, type(msg).__name__, task_type, enc(msg))
