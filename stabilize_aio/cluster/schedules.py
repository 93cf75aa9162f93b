"""Durable cron schedules: the book of them, and firing the due ticks (the leader does).

Each tick starts the run ``schedule:<name>:<tick>`` exactly once, also across
leader changes: the run id is derived from the tick (an idempotent submit),
and the schedule is advanced past it by compare-and-set. Ticks missed while no
engine ran are fired once, not replayed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import msgspec

from .._clock import Clock
from .._errors import CronError, DefinitionError
from .._ids import derive
from ..model.records import StageSpec, WorkflowRecord
from ..store.protocol import ScheduleRow
from .cron import Cron

log = logging.getLogger("stabilize_aio.engine")

#: Starts a run of a record template and its specs under a given id (idempotent: an existing id is left alone).
StartRun = Callable[[WorkflowRecord, list[StageSpec], str], Awaitable[object]]


class ScheduleStore(Protocol):
    """What schedules need of a store."""

    async def put_schedule(self, row: ScheduleRow) -> None: ...
    async def delete_schedule(self, name: str) -> bool: ...
    async def list_schedules(self, *, due_before: float | None = None) -> list[ScheduleRow]: ...
    async def advance_schedule(self, name: str, fired_at: float, next_at: float) -> bool: ...


class ScheduleInfo(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A durable schedule: its name, cron, next tick, and the workflow it starts."""

    name: str
    cron: str
    next_at: float
    application: str
    workflow: str


class _Scheduled(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What a schedule stores: the run's record template and its stage specs."""

    record: WorkflowRecord
    specs: tuple[StageSpec, ...]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Scheduled)


class Schedules:
    """The schedules of one store."""

    def __init__(self, store: ScheduleStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def put(
        self, name: str, template: WorkflowRecord, specs: list[StageSpec], *, cron: str, first_at: float | None
    ) -> ScheduleInfo:
        """Create or replace schedule ``name``.

        Raises:
            DefinitionError: a bad cron expression (nothing is written).
        """
        try:
            parsed = Cron(cron)
        except CronError as exc:
            raise DefinitionError(f"schedule {name!r}: {exc}") from exc
        body = _encoder.encode(_Scheduled(record=template, specs=tuple(specs)))
        next_at = first_at if first_at is not None else parsed.next_after(self._clock.time())
        await self._store.put_schedule(ScheduleRow(name=name, cron=cron, next_at=next_at, body=body))
        return ScheduleInfo(
            name=name, cron=cron, next_at=next_at, application=template.application, workflow=template.name
        )

    async def remove(self, name: str) -> bool:
        """Remove a schedule; False if there was none."""
        return await self._store.delete_schedule(name)

    async def list(self) -> list[ScheduleInfo]:
        """Every schedule that can be decoded, by name."""
        out = []
        for row in await self._store.list_schedules():
            try:
                stored = _decoder.decode(row.body)
            except msgspec.DecodeError:
                log.error("schedule %r cannot be decoded; it is left out", row.name)
                continue
            record = stored.record
            out.append(
                ScheduleInfo(
                    name=row.name,
                    cron=row.cron,
                    next_at=row.next_at,
                    application=record.application,
                    workflow=record.name,
                )
            )
        return out

    async def fire_due(self, start_run: StartRun) -> int:
        """Start the run of every due tick and advance its schedule; returns the ticks fired."""
        now = self._clock.time()
        fired = 0
        for row in await self._store.list_schedules(due_before=now):
            try:
                stored = _decoder.decode(row.body)
            except msgspec.DecodeError as exc:  # one bad schedule must not stop the others
                log.error("schedule %r cannot be decoded (%r); it is skipped", row.name, exc)
                continue
            await start_run(stored.record, list(stored.specs), derive("schedule", row.name, str(int(row.next_at))))
            following = Cron(row.cron).next_after(max(row.next_at, now))  # missed ticks: fired once, not replayed
            if await self._store.advance_schedule(row.name, row.next_at, following):
                fired += 1
        return fired
