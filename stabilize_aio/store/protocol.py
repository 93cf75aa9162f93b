"""The Store contract every backend implements, and the group writer they share."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence

import anyio
import anyio.lowlevel
import msgspec

from .._errors import ConcurrencyError, DataError, StoreError
from ..messages.durable import Durable
from ..messages.memory import Undecodable
from ..model.records import StageRun, StageSpec, WorkflowRecord
from ..model.status import WorkflowStatus
from ..model.values import Event, QuarantineRow
from ..state.commit import Transition

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
