"""Routing vocabulary: join and split kinds, and the persisted description of a loop's control stages.

The names are stabilize's (``JoinType``, ``SplitType``); what each does is in
``docs/patterns.md``. A join kind is decided at each end of one of the stage's
requisites from counters (``dag/joins.py``); a split is decided when the split
stage ends (``handlers/routing.py``); loops are two control stages on the jump
mechanism (``handlers/loops.py``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

import msgspec


class JoinType(StrEnum):
    """How a stage with several requisites decides to start."""

    AND = "AND"  # every requisite ended in a status that can continue (pruned ones are dead edges)
    OR = "OR"  # the branches an OR split activated (the others are pruned: dead edges)
    DISCRIMINATOR = "DISCRIMINATOR"  # the first requisite that can continue
    N_OF_M = "N_OF_M"  # the join_threshold-th requisite that can continue
    MULTI_MERGE = "MULTI_MERGE"  # once per requisite that can continue; its downstream once, after the last


class SplitType(StrEnum):
    """Which downstream stages a stage activates when it ends."""

    AND = "AND"  # all of them
    OR = "OR"  # those whose split_conditions hold (a downstream without a condition is always taken)


#: The join kinds that fire before every requisite has ended (``cancel_remaining`` applies to them).
PARTIAL_JOINS = frozenset({JoinType.DISCRIMINATOR, JoinType.N_OF_M})

LoopRole = Literal["enter", "exit"]


class LoopSpec(msgspec.Struct, frozen=True, kw_only=True, gc=False, omit_defaults=True):
    """A loop control stage as stored (built by ``stabilize_aio.patterns``; the run needs no function to go on).

    ``enter`` (ref ``<prefix>/enter``) opens each iteration: it publishes the
    carried values and ``iteration``; a while loop also asks its condition there.
    ``exit`` (ref ``<prefix>``) closes it: a repeat-until loop asks its condition
    there; it jumps back to ``enter`` or ends the loop with the body's last outputs.
    """

    role: LoopRole
    kind: Literal["while", "until"]
    condition: str
    partner: str  # the other control stage's ref id
    max_iterations: int
    on_max: Literal["fail", "continue"]
    body: tuple[str, ...] = ()  # ref ids of the body stages (on the exit stage): whose outputs are carried
