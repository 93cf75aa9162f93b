"""The group writer: one task commits every queued op, in groups, over a backend's one write primitive.

A :class:`GroupWriter` is composed over a :class:`~stabilize_aio.store.protocol.Backend`
(the store whose ``commit_group`` writes a list of ops in one transaction). The
stores hold one and delegate the Store contract's write half to it
(:class:`WritesThroughGroupWriter`). The writer task is the only one that writes:
work that must run on the writer's connection besides ops (SQLite's schedule
and retention statements) is queued with :meth:`GroupWriter.call` and runs in
the writer's task, in queue order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

import anyio

from .._errors import ConcurrencyError, DataError, StoreError
from .protocol import Backend, NewWorkflow, Op, StoreStatistics, Then

T = TypeVar("T")


class _Pending:
    __slots__ = ("done", "error", "op", "then")

    def __init__(self, op: Op, done: anyio.Event, then: Then | None = None) -> None:
        self.op = op
        self.done = done  # shared by every op of the writer's round
        self.then = then
        self.error: BaseException | None = None


class _Call:
    """Work queued to run in the writer's task (between groups, in queue order), and its outcome."""

    __slots__ = ("done", "error", "result", "work")

    def __init__(self, work: Callable[[], Awaitable[Any]], done: anyio.Event) -> None:
        self.work = work
        self.done = done
        self.result: Any = None
        self.error: BaseException | None = None

    async def run(self) -> None:
        try:
            self.result = await self.work()
        except Exception as exc:  # the caller's error, raised in the caller, never the writer's
            self.error = exc


class GroupWriter:
    """Commits queued ops in groups of at most ``max_group``, one transaction each, over ``backend``.

    If a group fails on a fence (ConcurrencyError) or on one op's data
    (DataError), it is rolled back and replayed op by op, so only the offending
    ops are refused. It keeps the write counters of :class:`StoreStatistics`.
    """

    def __init__(self, backend: Backend, *, max_group: int = 500) -> None:
        self._backend = backend
        self.max_group = max_group
        self._queue: deque[_Pending | _Call] = deque()
        self._wake = anyio.Event()
        self._round = anyio.Event()  # set when every item queued before the writer's next take is done
        self._committing: anyio.Event | None = None
        self.commits = 0
        self.transitions = 0
        self.workflows_inserted = 0
        self.bytes_written = 0
        self.groups_replayed = 0
        self.largest_group = 0

    @property
    def queued(self) -> int:
        """How many items wait for the writer's next round."""
        return len(self._queue)

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

    async def call(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run ``work()`` in the writer's task after everything queued before it; return its result.

        It runs shielded, between groups, so nothing else writes meanwhile;
        what it raises is raised here.
        """
        queued = _Call(work, self._round)
        self._queue.append(queued)
        self._wake.set()
        await queued.done.wait()
        if queued.error is not None:
            raise queued.error
        return cast("T", queued.result)

    async def run(self) -> None:
        """The writer loop; runs until cancelled.

        Each round takes everything queued, commits the ops in groups of at
        most ``max_group`` (one transaction each; a queued call ends the group
        before it and runs on its own), calls the ``then`` of each enqueued op
        right after its group, and at the end wakes all the round's awaiting
        callers with one event.
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
                for part in self._parts(taken):
                    if isinstance(part, _Call):
                        await part.run()
                        continue
                    self.largest_group = max(self.largest_group, len(part))
                    await self._commit_group(part)
                    for p in part:
                        if p.then is not None:
                            try:
                                p.then(p.error)
                            except Exception as exc:  # every other op still hears back, every caller wakes
                                failed = failed or exc
            self._committing = None
            done.set()
            if failed is not None:
                raise failed

    def _parts(self, taken: list[_Pending | _Call]) -> list[list[_Pending] | _Call]:
        """The round in order: groups of at most ``max_group`` ops, and the calls between them."""
        parts: list[list[_Pending] | _Call] = []
        group: list[_Pending] = []
        for item in taken:
            if isinstance(item, _Call):
                if group:
                    parts.append(group)
                    group = []
                parts.append(item)
                continue
            group.append(item)
            if len(group) == self.max_group:
                parts.append(group)
                group = []
        if group:
            parts.append(group)
        return parts

    async def flush(self) -> None:
        """Wait until everything queued so far is committed."""
        if self._committing is not None:
            await self._committing.wait()
        if self._queue:
            await self._round.wait()

    async def _commit_group(self, group: list[_Pending]) -> None:
        try:
            await self._commit([p.op for p in group])
        except (ConcurrencyError, DataError):  # one op's fault, maybe: replay op by op, refuse only the offenders
            self.groups_replayed += 1
            for p in group:
                try:
                    await self._commit([p.op])
                except StoreError as exc:
                    p.error = exc
                self._count([p])
            return
        except StoreError as exc:
            for p in group:
                p.error = exc
            return
        self._count(group)

    async def _commit(self, ops: Sequence[Op]) -> None:
        self.bytes_written += await self._backend.commit_group(ops)
        self.commits += 1

    def _count(self, group: Sequence[_Pending]) -> None:
        for p in group:
            if p.error is None:
                if isinstance(p.op, NewWorkflow):
                    self.workflows_inserted += 1
                else:
                    self.transitions += 1

    def statistics(self, *, outbox_reads: int) -> StoreStatistics:
        """The counters, with the reads of the outbox the store counted."""
        return StoreStatistics(
            commits=self.commits,
            transitions=self.transitions,
            workflows_inserted=self.workflows_inserted,
            outbox_reads=outbox_reads,
            bytes_written=self.bytes_written,
            groups_replayed=self.groups_replayed,
            largest_group=self.largest_group,
            queued=len(self._queue),
        )


class WritesThroughGroupWriter:
    """The Store contract's write half, delegated to the store's :class:`GroupWriter` (``self.writer``).

    A store sets ``self.writer = GroupWriter(self)`` (itself as the backend)
    and counts ``self.outbox_reads``.
    """

    writer: GroupWriter
    outbox_reads: int

    async def write(self, op: Op) -> None:
        """Queue ``op`` for the next group commit and wait until it is durable (see :meth:`GroupWriter.write`)."""
        await self.writer.write(op)

    def enqueue(self, op: Op, then: Then) -> None:
        """Queue ``op`` for the next group commit without waiting for it (see :meth:`GroupWriter.enqueue`)."""
        self.writer.enqueue(op, then)

    async def run_writer(self) -> None:
        """The group writer loop (see :meth:`GroupWriter.run`); runs in the engine's task group until cancelled."""
        await self.writer.run()

    async def flush(self) -> None:
        """Wait until everything queued so far is committed."""
        await self.writer.flush()

    def statistics(self) -> StoreStatistics:
        """Counters since open."""
        return self.writer.statistics(outbox_reads=self.outbox_reads)
