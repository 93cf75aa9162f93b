"""Granting claims on shared keys: global mutexes and admission slots, first come first served.

A claim is a row of ``claims`` inserted by the turn that wants its key (an
insert: a contended key never fails a group commit) and deleted by the turn
that ends its stage or run. Granting a key, in one transaction of the backend
(on PostgreSQL under the key's advisory lock, so two processes never grant one
key at once): while fewer than the key's limit are granted, the oldest waiting
claims are marked granted and a ``Granted`` row is written into their run's
outbox (idempotent: a fixed id). When a slot freed (a holder released it), the
waiting runs it did not take that asked for stabilize's purge
(``keep_waiting=False``) get a cancel row.

The backend runs the statements; this module decides (one logic for both).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from ..messages.durable import CancelWorkflow, Durable, Granted

#: Runs a named statement of the backend's queries with its parameters; returns its rows.
Fetch = Callable[[str, tuple[Any, ...]], Awaitable[list[Any]]]
#: Runs a named statement once per parameter row (one call for many rows).
Many = Callable[[str, list[tuple[Any, ...]]], Awaitable[None]]

#: The reason a purged run is cancelled with.
PURGED = "admission: no slot was free when one freed (keep_waiting=False)"


async def grant(
    fetch: Fetch, many: Many, keys: Iterable[str] | None, *, freed: bool, lock: bool = False
) -> list[tuple[str, Durable]]:
    """Grant what may be granted of ``keys`` (None: every key with a waiting claim); the rows to write.

    ``freed``: a claim of these keys was just released (purging waiting runs is due); ``lock``: take
    each key's lock first (``claim_lock``: PostgreSQL; SQLite's one writer serializes grants).
    """
    if keys is None:
        keys = [str(r[0]) for r in await fetch("claim_keys_waiting", ())]
    out: list[tuple[str, Durable]] = []
    for key in sorted(set(keys)):  # (sorted: two processes lock keys in one order)
        if lock:
            await fetch("claim_lock", (key,))
        first = await fetch("claim_limit", (key,))  # the oldest waiting claim's limit (none waits: nothing to do)
        if not first:
            continue
        limit = int(first[0][0])
        held = int((await fetch("claim_held", (key, limit)))[0][0])
        free = max(limit - held, 0)
        if not free:
            continue  # (no slot freed: nothing is purged either)
        taken = await fetch("claim_waiting", (key, free))
        await many("claim_grant", [(seq,) for seq, *_ in taken])
        for _, workflow_id, stage, generation in taken:
            grant_row = Granted(id=f"grant:{stage}:{generation}", key=key, stage=stage, generation=generation)
            out.append((str(workflow_id), grant_row))
        if freed:  # a slot freed and was taken: the runs it did not take and that asked to be purged are
            purged = await fetch("claim_purged", (key,))
            await many("claim_drop", [(seq,) for seq, *_ in purged])
            for _, workflow_id, generation in purged:
                out.append((str(workflow_id), CancelWorkflow(id=f"cancel:{generation}", reason=PURGED)))
    return out
