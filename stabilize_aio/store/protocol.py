"""The Store contract and its capabilities, and the values that cross it.

* :class:`Store` is what the engine needs of any backend: reads, and writing
  ops through a group writer (:class:`~stabilize_aio.store.writer.GroupWriter`)
  that commits each group of ops in one transaction, under a fence.
* :class:`Backend` is the one write primitive a group writer is composed over:
  commit a list of ops in one transaction.
* :class:`LeaseStore` and :class:`NotifyStore` are capabilities of a database
  shared by engine processes (PostgreSQL): test them with ``isinstance``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, runtime_checkable

import msgspec

from ..messages.durable import Durable
from ..messages.memory import Undecodable
from ..model.records import StageRun, StageSpec, WorkflowRecord
from ..model.status import WorkflowStatus
from ..model.values import Event, QuarantineRow
from ..state.commit import Commit

log = logging.getLogger("stabilize_aio.store")


class NewWorkflow(msgspec.Struct, kw_only=True, gc=False):
    """An op: insert a submitted workflow and its stages, with its start turn (``begin``) in the same commit."""

    record: WorkflowRecord
    specs: list[StageSpec]
    runs: list[StageRun]
    begin: Commit | None = None  # the start turn, committed with the insert
    notify: bool = False  # wake the process that owns this workflow's shard (submitted from elsewhere)


Op = NewWorkflow | Commit


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


class Backend(Protocol):
    """The write primitive a :class:`~stabilize_aio.store.writer.GroupWriter` is composed over."""

    async def commit_group(self, ops: Sequence[Op]) -> int:
        """Write ``ops`` in ONE transaction, or nothing; return the bytes of the encoded blobs written.

        Raises:
            ConcurrencyError: a fence failed or a row is already there (rolled back).
            DataError: the database refused the data of an op (rolled back).
            StoreError: the database failed.
        """
        ...


class Store(Protocol):
    """The persistence contract: reads, and ops written in groups under a fence.

    Every backend implements it by holding a group writer over its own
    :class:`Backend` primitive (``write``, ``enqueue``, ``run_writer``,
    ``flush`` and ``statistics`` are the writer's). The only writes are ops
    (new workflows and turns), each group of them one transaction whose
    fences (row versions, consumed rows, event keys, and shard leases where
    the database is shared) refuse a stale turn; and the leader's schedule and
    retention statements.
    """

    # lifecycle ---------------------------------------------------------------
    async def open(self) -> None:
        """Check, lock and migrate the database; raise a StoreError subclass if unusable."""
        ...

    async def close(self) -> None:
        """Close connections and release locks (idempotent)."""
        ...

    # writes (the group writer) -----------------------------------------------
    async def write(self, op: Op) -> None:
        """Queue ``op`` for the next group commit and wait until it is durable (ConcurrencyError: refused)."""
        ...

    async def grant(self, keys: Sequence[str] | None, *, freed: bool = False) -> list[tuple[str, Durable]]:
        """Grant claims on shared keys (None: every key with a waiting claim), in one transaction.

        Writes a ``Granted`` row for each claim granted (and, ``freed``, a cancel row for each waiting
        run that asked to be purged) into its run's outbox, waking their owners elsewhere; returns
        them as (workflow id, message) so this process delivers its own at once (``store/claims.py``).
        """
        ...

    def enqueue(self, op: Op, then: Then) -> None:
        """Queue ``op`` for the next group commit; ``then(error)`` is called in the writer's task after it."""
        ...

    async def run_writer(self) -> None:
        """The group writer loop; runs in the engine's task group until cancelled."""
        ...

    async def flush(self) -> None:
        """Wait until everything queued so far is committed."""
        ...

    def statistics(self) -> StoreStatistics:
        """Counters since open."""
        ...

    # reads -------------------------------------------------------------------
    async def load(self, workflow_id: str) -> LoadedWorkflow | None:
        """Read one workflow with its stages, or None."""
        ...

    async def pending_messages(self) -> list[tuple[str, Pending]]:
        """Every outbox row (recovery at start): (workflow id, message)."""
        ...

    async def pending_runs(
        self, task_type: str, limit: int, now: float, after: tuple[str, str] | None = None
    ) -> list[tuple[str, Pending]]:
        """Due RunTask rows of one task type in key order, after the key ``after`` (a pool refilling)."""
        ...

    async def pending_for(self, workflow_id: str) -> list[Pending]:
        """The outbox rows of one workflow (a wake-up from another process, a check after a refused fence)."""
        ...

    async def events(self, workflow_id: str) -> list[Event]:
        """A workflow's history, in commit order."""
        ...

    async def quarantined(self, workflow_id: str | None = None) -> list[QuarantinedRow]:
        """The rows moved to the quarantine table (of one workflow), oldest first."""
        ...

    async def statuses(self, workflow_ids: Sequence[str]) -> dict[str, WorkflowStatus]:
        """The status of each of these workflows that exists (one cheap query; waits and their safety net)."""
        ...

    async def list_workflows(self, *, status: str | None, application: str | None, limit: int) -> list[WorkflowRecord]:
        """Workflow records, newest first, filtered."""
        ...

    # schedules and retention (the leader's global services) -------------------------
    async def put_schedule(self, row: ScheduleRow) -> None:
        """Create or replace a schedule."""
        ...

    async def delete_schedule(self, name: str) -> bool:
        """Remove a schedule; False if there was none."""
        ...

    async def list_schedules(self, *, due_before: float | None = None) -> list[ScheduleRow]:
        """Schedules by name, or only those whose next tick is at or before ``due_before``."""
        ...

    async def advance_schedule(self, name: str, fired_at: float, next_at: float) -> bool:
        """Move a schedule past the tick ``fired_at`` (compare-and-set: False if someone else did)."""
        ...

    async def delete_finished(self, ended_before: float, limit: int) -> int:
        """Retention: delete up to ``limit`` finished workflows that ended before a time, in one transaction."""
        ...


@runtime_checkable
class LeaseStore(Protocol):
    """A database shared by engine processes through shard leases (PostgreSQL).

    Lease times are the database's clock. A lease is fenced by its epoch: once
    :meth:`set_fence` named this process's owner and its live ``{shard: epoch}``,
    every group with turns that change state checks those shards' leases first,
    so a turn of a shard not held at its epoch is refused (LeaseLostError).
    """

    async def heartbeat(self, owner: str, lease: float) -> int:
        """Record that ``owner`` is alive; return how many engines are alive (this one included)."""
        ...

    async def claim(self, owner: str, count: int, lease: float) -> dict[int, int]:
        """Lease up to ``count`` free or expired shards for ``owner``: {shard: new epoch}."""
        ...

    async def renew(self, owner: str, held: dict[int, int], lease: float) -> set[int]:
        """Extend the leases ``owner`` holds at the given epochs; return the shards it lost."""
        ...

    async def release(self, owner: str, shards: Sequence[int]) -> None:
        """Hand leases back at once (graceful stop, rebalance)."""
        ...

    async def leave(self, owner: str) -> None:
        """Graceful stop: hand back every lease of ``owner`` and forget it as an engine, at once."""
        ...

    def set_fence(self, owner: str, held: Mapping[int, int] | None) -> None:
        """Fence every state-changing turn against ``held``, read at each group (the caller's live mapping).

        ``owner`` is this process's lease owner; ``None`` turns fencing off
        (nothing is checked), an empty mapping refuses every fenced turn.
        """
        ...


@runtime_checkable
class NotifyStore(Protocol):
    """A database that tells other engine processes about commits and membership changes (PostgreSQL)."""

    async def listen(
        self,
        on_wake: Callable[[str], None],
        on_done: Callable[[str], None],
        on_members: Callable[[str], None] | None = None,
    ) -> None:
        """Receive other processes' wake-ups (a workflow id for its owner), completions and membership changes."""
        ...
