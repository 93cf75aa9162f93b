"""Shards: a stable hash of a workflow id."""

from __future__ import annotations

import zlib

#: Workflows are spread over this many shards; a process owns the actors of the shards it leases.
SHARDS = 32


def shard_of(workflow_id: str) -> int:
    """The shard of a workflow: a stable hash of its id (the same in every process and release)."""
    return zlib.crc32(workflow_id.encode()) % SHARDS
