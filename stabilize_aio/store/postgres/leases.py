"""Shard leases on PostgreSQL (table ``leases``, times on the database clock), and the fence they give a group.

``claim``/``renew``/``release``/``leave`` and the heartbeat are single
statements. The fence is the lease keeper's live ``{shard: epoch}``
(:meth:`Leases.set_fence`): every group with turns that change state first
locks its shards' lease rows ``FOR SHARE`` and checks owner and epoch
(:meth:`Leases.check`), so a process that lost a lease writes nothing
(:class:`LeaseLostError`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, Protocol

from ..._errors import LeaseLostError
from ...state.commit import Commit
from ..protocol import Op
from ..queries import queries
from ..shards import shard_of

SQL = queries("stabilize_aio.store.postgres")


class Fetch(Protocol):
    """The store's read on a pooled connection, retried in place (``attempts``) and mapped to StoreError."""

    def __call__(self, sql: str, *args: Any, what: str = ..., attempts: int | None = ...) -> Awaitable[list[Any]]: ...


class Leases:
    """The lease statements, and the fence: who this process is and the shards it holds at which epoch.

    Args:
        fetch: runs one statement on a reader connection.
        members_channel: the channel a join, a release and a leave notify.
    """

    def __init__(self, fetch: Fetch, members_channel: str) -> None:
        self._fetch = fetch
        self._members = members_channel
        self.owner = ""
        self.fence: Mapping[int, int] | None = None

    def set_fence(self, owner: str, held: Mapping[int, int] | None) -> None:
        """Fence state-changing turns against ``held`` (read at every group: pass the keeper's live mapping)."""
        self.owner = owner
        self.fence = held

    async def heartbeat(self, owner: str, lease: float) -> int:
        """Record ``owner`` as alive now; forget engines silent for 3 leases; count those seen within one.

        An owner that was not counted (new, or silent for a lease) notifies the
        members channel in the same statement: the others rebalance at once.
        """
        rows = await self._fetch(SQL["heartbeat"], owner, lease, self._members, what="heartbeat")
        return int(rows[0][0])

    async def claim(self, owner: str, count: int, lease: float) -> dict[int, int]:
        """Lease up to ``count`` free or expired shards, lowest first: {shard: new epoch}.

        Tried once: a claim whose answer was lost may have taken shards, and
        those expire unrenewed, where a retry would take more.
        """
        if count <= 0:
            return {}
        rows = await self._fetch(SQL["claim"], owner, count, lease, what="claim", attempts=1)
        return {int(r[0]): int(r[1]) for r in rows}

    async def renew(self, owner: str, held: dict[int, int], lease: float) -> set[int]:
        """Extend the leases ``owner`` still holds at the given epochs; return the shards it lost."""
        if not held:
            return set()
        rows = await self._fetch(SQL["renew"], owner, list(held), list(held.values()), lease, what="renew")
        return set(held) - {int(r[0]) for r in rows}

    async def release(self, owner: str, shards: Sequence[int]) -> None:
        """Hand ``owner``'s leases of ``shards`` back: free for the next claim at once (the members hear it)."""
        if shards:
            await self._fetch(SQL["release"], owner, list(shards), self._members, what="release")

    async def leave(self, owner: str) -> None:
        """A graceful stop: hand back every lease of ``owner`` and delete its engine row, then notify the members."""
        await self._fetch(SQL["leave"], owner, self._members, what="leave")

    def fence_of(self, ops: Sequence[Op]) -> dict[int, int] | None:
        """{shard: epoch} the group's turns need, or None when nothing is fenced.

        Only turns that change a workflow or its stages, or consume rows, are
        fenced: a new workflow and an outside command (a row for the owner, with
        ``notify``) may be written by any process.

        Raises:
            LeaseLostError: a turn's shard is not leased by this process at all.
        """
        fence = self.fence
        if fence is None:
            return None
        shards = {shard_of(op.workflow_id) for op in ops if isinstance(op, Commit) and _changes_state(op)}
        if not shards:
            return None
        missing = shards - fence.keys()
        if missing:
            raise LeaseLostError(
                f"{self.owner!r} holds no lease on shards {sorted(missing)}", shards=frozenset(missing)
            )
        return {shard: fence[shard] for shard in shards}

    async def check(self, conn: Any, fence: dict[int, int]) -> None:
        """First in a group's transaction: lock the fence's lease rows FOR SHARE, refuse the group if one is lost.

        Raises:
            LeaseLostError: a shard is no longer this owner's at its epoch.
        """
        held = {int(r[0]) for r in await conn.fetch(SQL["fence"], list(fence), list(fence.values()), self.owner)}
        lost = fence.keys() - held
        if lost:
            raise LeaseLostError(f"{self.owner!r} lost the leases of shards {sorted(lost)}", shards=frozenset(lost))


def _changes_state(op: Commit) -> bool:
    """Whether a turn needs its shard's lease: it changes the workflow or stages, or consumes rows."""
    return op.workflow is not None or bool(op.stages) or bool(op.consumed)
