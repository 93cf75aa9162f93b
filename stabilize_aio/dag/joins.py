"""Join policies: when a stage whose requisites are ending starts, waits, is pruned or fails.

The kernel asks the stage's policy each time one of its requisites ends (an
*arrival*), with counts the workflow state keeps up to date in O(1) per arrival
(:class:`Counts`). A policy decides from these alone (no scan of the
requisites), so readiness stays O(1) per arrival however wide the fan-in.

An edge into the stage is *dead* when its requisite was pruned (SKIPPED by a
pattern) or dropped it (an OR split that did not take it, a forward jump). Dead
edges are neither waited for nor counted as arrivals; a stage whose every edge
is dead is pruned in turn, so pruning spreads downstream.
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple

from ..model.records import StageSpec
from ..model.routing import JoinType


class Decision(Enum):
    """What a not-started stage does at an arrival."""

    WAIT = "wait"
    START = "start"
    PRUNE = "prune"  # every edge into it is dead: SKIPPED, pruned (spreads downstream)
    UNREACHABLE = "unreachable"  # a partial join that too few requisites can still reach
    CLOSE = "close"  # a MULTI_MERGE join between runs that no requisite can fire again: it ends as its last run


class Counts(NamedTuple):
    """A stage's requisites, as the state counts them."""

    requisites: int  # how many
    outstanding: int  # not ended in a status that can continue (halted ones included)
    dead: int  # ended pruned, or dropped the edge
    halted: int  # ended in a halting status (STOPPED, TERMINAL, CANCELED)
    fired: int = 0  # a MULTI_MERGE join: how many runs it has started (since it was last reset)
    merges: int = 0  # ... and how many arrivals it has noted for runs (one run each)

    @property
    def arrived(self) -> int:
        """Ended in a status that can continue over a live edge."""
        return self.requisites - self.outstanding - self.dead

    @property
    def pending(self) -> int:
        """Not ended yet (may still arrive)."""
        return self.outstanding - self.halted


def and_join(requisites: int, outstanding: int, dead: int) -> Decision:
    """AND and OR: start once every requisite has ended over a live edge or a dead one (pruned if all are dead).

    Asked from three ints, so the kernel decides the common join without
    building its :class:`Counts`.
    """
    if outstanding:
        return Decision.WAIT
    return Decision.PRUNE if dead == requisites else Decision.START


def decide(spec: StageSpec, c: Counts) -> Decision:
    """The decision of ``spec``'s join policy for counts ``c`` (O(1))."""
    kind = spec.join_type
    if kind is JoinType.AND or kind is JoinType.OR:
        return and_join(c.requisites, c.outstanding, c.dead)
    if kind is JoinType.MULTI_MERGE:  # one run per arrival, one after the other
        if c.merges > c.fired:
            return Decision.START
        if c.pending:
            return Decision.WAIT
        if c.fired:
            return Decision.CLOSE
        return Decision.PRUNE if c.dead == c.requisites else Decision.WAIT
    need = spec.join_threshold  # DISCRIMINATOR (1) or N_OF_M
    if c.arrived >= need:
        return Decision.START
    if c.arrived + c.pending >= need:
        return Decision.WAIT
    return Decision.PRUNE if c.halted == 0 else Decision.UNREACHABLE
