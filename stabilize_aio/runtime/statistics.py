"""What an engine counts, in one frozen struct (``engine.statistics()``)."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import msgspec

from ..pool.pool import PoolStatistics
from ..store.protocol import StoreStatistics
from .dispatcher import MailboxStatistics


class EngineStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """Everything countable about an engine, in one frozen struct.

    ``leases`` are the shards this engine holds (every shard on SQLite, none for a
    pure client), ``leader`` whether it runs the global services (schedules,
    retention), ``engines`` how many engines share the database (PostgreSQL).
    """

    state: str
    commits: int
    transitions: int
    outbox_reads: int
    bytes_written: int
    live_actors: int
    timers_pending: int
    store: StoreStatistics
    mailboxes: MailboxStatistics | None
    pools: tuple[PoolStatistics, ...]
    leases: tuple[int, ...] = ()
    leader: bool = False
    engines: int = 1
    owner: str | None = None


def engine_statistics(
    *,
    state: str,
    store: StoreStatistics,
    mailboxes: MailboxStatistics | None,
    timers: int,
    pools: Sequence[PoolStatistics],
    leases: Collection[int],
    leader: bool,
    engines: int,
    owner: str | None,
) -> EngineStatistics:
    """Gather the parts' statistics."""
    return EngineStatistics(
        state=state,
        commits=store.commits,
        transitions=store.transitions,
        outbox_reads=store.outbox_reads,
        bytes_written=store.bytes_written,
        live_actors=mailboxes.live_actors if mailboxes is not None else 0,
        timers_pending=timers,
        store=store,
        mailboxes=mailboxes,
        pools=tuple(pools),
        leases=tuple(sorted(leases)),
        leader=leader,
        engines=engines,
        owner=owner,
    )
