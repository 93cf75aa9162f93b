"""Which workflows this engine process owns: all of them, or the shards it leases.

On SQLite one engine owns everything (:class:`SoleOwner`; the file lock keeps a
second engine out). On PostgreSQL several engine processes share the database
(:class:`LeaseKeeper`): workflows hash to :data:`~stabilize_aio.store.shards.SHARDS`
shards, and each engine leases a fair share of them in the ``leases`` table,
renews them with a heartbeat, and owns the actors of those shards. A lease is
fenced by its epoch: the store refuses any turn of a shard this process does
not hold at the epoch it claimed, so a process that lost a lease cannot write.

The keeper, every ``heartbeat`` seconds, and at once when another engine joins,
leaves or releases shards (a notification on the members channel; a burst of
them is one step):

1. records this engine as alive and counts the engines alive (the fair share
   is ``ceil(SHARDS / engines)``);
2. renews its leases; shards it lost (taken over after it was too slow) are
   handed to ``on_lost`` at once;
3. claims free or expired shards up to its fair share (``on_gain`` recovers
   their pending work), or releases shards beyond it so a newcomer can take
   them (rebalance; the release notifies, so the newcomer claims them at once).

A graceful stop (:meth:`LeaseKeeper.leave`) hands every lease back and deletes
the engine's row in one statement that notifies the others: they count one
engine fewer and claim its shards at once, not a lease later.

Lease and heartbeat times are generous by default (30 s, 10 s) so a busy
2-core machine never fences a healthy process; tests shorten them.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType

import anyio

from ..store.protocol import LeaseStore
from ..store.shards import SHARDS, shard_of

log = logging.getLogger("stabilize_aio.membership")


class SoleOwner:
    """One engine owns every workflow (SQLite)."""

    def owns(self, workflow_id: str) -> bool:
        """Always True."""
        return True

    #: Every shard, at epoch 0 (read-only).
    held: Mapping[int, int] = MappingProxyType(dict.fromkeys(range(SHARDS), 0))


class LeaseKeeper:
    """Leases a fair share of the shards and keeps it (PostgreSQL).

    ``store`` has the :class:`~stabilize_aio.store.protocol.LeaseStore`
    capability (the type says so); the keeper hands it its owner id and
    its live ``held`` mapping once (``set_fence``), and the store checks every
    state-changing turn against that mapping as it is at the time.
    """

    def __init__(
        self,
        store: LeaseStore,
        *,
        lease: float,
        heartbeat: float,
        on_gain: Callable[[dict[int, int]], Awaitable[None]],
        on_lost: Callable[[set[int]], None],
        claims: bool = True,
    ) -> None:
        self.store = store
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.lease = lease
        self.heartbeat = heartbeat
        self.claims = claims  # False: a pure client, which owns nothing
        self._on_gain = on_gain
        self._on_lost = on_lost
        self.held: dict[int, int] = {}
        self.engines = 1
        self.gained = self.lost = self.released = 0
        self._changed = anyio.Event()
        self._poked = anyio.Event()  # another engine joined, left or released shards: step now
        self._stepping = anyio.Lock()  # a step and leave() never interleave
        self._left = False
        store.set_fence(self.owner, self.held)  # the store checks every turn against this very dict

    def __repr__(self) -> str:
        return f"<LeaseKeeper {self.owner} holds {len(self.held)}/{SHARDS} shards, engines={self.engines}>"

    def owns(self, workflow_id: str) -> bool:
        """Whether this process holds the lease of the workflow's shard."""
        return shard_of(workflow_id) in self.held

    def poke(self, owner: str) -> None:
        """A notification on the members channel (``owner`` joined, left or released): step soon.

        Called by the driver outside any task: it only sets an event, which
        :meth:`run` waits on, so notifications that arrive before the step runs
        are one step. This engine's own notifications are ignored.
        """
        if owner != self.owner and self.claims and not self._left:
            self._poked.set()

    async def step(self) -> None:
        """One heartbeat: renew, count engines, claim up to a fair share or release beyond it."""
        if not self.claims:
            return
        async with self._stepping:
            if not self._left:
                await self._step()

    async def _step(self) -> None:
        self.engines = await self.store.heartbeat(self.owner, self.lease)
        if self.held:
            lost = await self.store.renew(self.owner, dict(self.held), self.lease)
            if lost:
                self._drop(lost)
                self.lost += len(lost)
                log.warning("lost the leases of shards %s", sorted(lost))
        fair = math.ceil(SHARDS / max(self.engines, 1))
        if len(self.held) < fair:
            gained = await self.store.claim(self.owner, fair - len(self.held), self.lease)
            if gained:
                self.held.update(gained)
                self.gained += len(gained)
                log.info("claimed shards %s", sorted(gained))
                await self._on_gain(gained)
                self._notify()
        elif len(self.held) > fair:
            extra = sorted(self.held)[fair:]
            self._drop(set(extra))  # stop writing them first, then hand them over
            await self.store.release(self.owner, extra)
            self.released += len(extra)
            log.info("released shards %s to rebalance", extra)

    def _drop(self, shards: set[int]) -> None:
        for shard in shards:
            self.held.pop(shard, None)
        self._on_lost(shards)
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_changed(self) -> None:
        """Wait until the set of shards held changes (gained, lost or released)."""
        await self._changed.wait()

    async def run(self) -> None:
        """Heartbeat forever, and step when poked (runs in the engine's task group)."""
        while True:
            with anyio.move_on_after(self.heartbeat):
                await self._poked.wait()
            self._poked = anyio.Event()
            try:
                await self.step()
            except Exception:  # a failed heartbeat is retried at the next one; the fence keeps writes safe
                log.exception("lease heartbeat failed; retrying in %ss", self.heartbeat)

    async def leave(self) -> None:
        """Graceful stop: stop writing every shard, then hand them back and delete this engine's row, at once.

        The others hear it (members channel) and claim the shards in their next
        step, counting one engine fewer. No step runs after this one.
        """
        if not self.claims:
            return  # a pure client was never a member
        async with self._stepping:
            self._left = True
            self._drop(set(self.held))  # stop writing them first, then hand them over
            await self.store.leave(self.owner)
