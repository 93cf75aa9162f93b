"""Multi-instance stages: a stage that runs once per element of a list, or a number of times.

``Stage("fetch", task="fetch", instances=MultiInstance(over="urls", item_key="url", max_parallel=20))``.
Each instance is a stage of its own made when the stage starts (``fetch[0]``,
``fetch[1]``, ...; its own row, so each step writes O(1) whatever the count),
runs the stage's tasks with ``context[item_key]`` and ``instance_index``, and
has its own idempotency key. The rules are in docs/patterns.md.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .._errors import DefinitionError


class MultiInstance(msgspec.Struct, frozen=True, kw_only=True, gc=False, omit_defaults=True):
    """How a stage fans out into instances.

    Attributes:
        over: the context key of the list to run over (one instance per element).
        count: or how many instances to run (``over`` and ``count``: exactly one).
        item_key: the context key under which an instance sees its element.
        max_parallel: at most this many instances run at a time (None: all).
        complete_after: the stage succeeds once this many instances have
            succeeded; instances not started by then end SKIPPED.
        cancel_remaining: with ``complete_after``, instances still running then
            are cancelled for real and end SKIPPED too.
    """

    over: str | None = None
    count: int | None = None
    item_key: str = "item"
    max_parallel: int | None = None
    complete_after: int | None = None
    cancel_remaining: bool = False


def check_instances(ref_id: str, mi: Any) -> MultiInstance:
    """``mi`` if it is a valid MultiInstance for stage ``ref_id``, else DefinitionError naming the stage."""
    where = f"stage {ref_id!r}: instances"
    if not isinstance(mi, MultiInstance):
        raise DefinitionError(f"{where} takes a MultiInstance, not {type(mi).__name__}", stage=ref_id)
    if (mi.over is None) == (mi.count is None):
        raise DefinitionError(f"{where}: give exactly one of over= and count=", stage=ref_id)
    if mi.over is not None and (not isinstance(mi.over, str) or not mi.over):
        raise DefinitionError(f"{where}: over= names a context key, got {mi.over!r}", stage=ref_id)
    for label, value, least in (("count", mi.count, 0), ("max_parallel", mi.max_parallel, 1),
                                ("complete_after", mi.complete_after, 1)):  # fmt: skip
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < least):
            raise DefinitionError(f"{where}: {label} must be an int >= {least}, got {value!r}", stage=ref_id)
    if not isinstance(mi.item_key, str) or not mi.item_key:
        raise DefinitionError(f"{where}: item_key must be a non-empty str, got {mi.item_key!r}", stage=ref_id)
    if mi.cancel_remaining and mi.complete_after is None:
        raise DefinitionError(f"{where}: cancel_remaining needs complete_after", stage=ref_id)
    if mi.count is not None and mi.complete_after is not None and mi.complete_after > mi.count:
        raise DefinitionError(
            f"{where}: complete_after {mi.complete_after} cannot be reached with count {mi.count}", stage=ref_id
        )
    return mi


class InstanceCounts(msgspec.Struct, frozen=True, kw_only=True, gc=False, omit_defaults=True):
    """A multi-instance stage's progress (O(1) however many instances it has)."""

    first: int  # the index of its first instance (the others follow)
    n: int  # how many
    started: int = 0  # instances started (in index order)
    ended: int = 0
    succeeded: int = 0
    closed: bool = False  # the stage has ended: later instance ends change nothing
