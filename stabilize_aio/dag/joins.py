"""Join policies: when a stage whose requisites are arriving starts.

The kernel asks the stage's policy each time one of its requisites completes in
a status that can continue (an *arrival*), with two counts the workflow state
keeps up to date in O(1) per arrival: how many requisites the stage has, and how
many of them have not yet completed in a status that can continue. A policy must
decide from these alone (no scan of the requisites), so readiness stays O(1) per
arrival however wide the fan-in.

Today every stage joins with :data:`AND`. Further kinds (OR, N-of-M, first-of-N,
multi-merge) are new policies returned by :func:`join_of` for the stages that
declare them.
"""

from __future__ import annotations

from typing import Protocol

from ..model.records import StageSpec


class JoinPolicy(Protocol):
    """Decides, at an arrival, whether a stage that has not started starts now."""

    @property
    def name(self) -> str: ...

    def ready(self, *, requisites: int, outstanding: int) -> bool:
        """Whether the stage starts, given its number of requisites and those still outstanding."""
        ...


class AndJoin:
    """Start once every requisite has completed in a status that can continue."""

    __slots__ = ()

    name = "and"

    def ready(self, *, requisites: int, outstanding: int) -> bool:
        return outstanding == 0


#: The one AND policy (policies hold no state: one instance serves every stage).
AND = AndJoin()


def join_of(spec: StageSpec) -> JoinPolicy:
    """The join policy of a stage (the plug-in point for join kinds a stage declares)."""
    return AND
