"""A live workflow in memory: its records plus derived indices (O(1) readiness)."""

from __future__ import annotations

from array import array
from collections.abc import Callable
from typing import Any

from ..model.records import LIVE, StageRun, StageSpec, WorkflowRecord
from ..model.routing import JoinType
from ..model.status import WorkflowStatus
from .commit import Commit

_SKIPPED = WorkflowStatus.SKIPPED
_LONG = array("l").itemsize

Weights = tuple[int, int, int]  # what one edge adds to its child's (outstanding, dead, halted)

#: The weights of an edge by its requisite's status (one tuple per kind, so unchanged weights compare by identity).
_OPEN: Weights = (1, 0, 0)
_HALTED: Weights = (1, 0, 1)
_ARRIVED: Weights = (0, 0, 0)
_DEAD: Weights = (0, 1, 0)
_BY_STATUS: dict[WorkflowStatus, Weights] = {
    s: _ARRIVED if s.can_continue else _HALTED if s.is_halt else _OPEN for s in WorkflowStatus
}
#: What :func:`shift` says when the change differs per child (an edge of the stage is dead, or it is merging).
PER_CHILD: Weights = (0, 0, 0)
#: The change of every edge out of a stage whose status goes from one to another (None: no change), when no
#: edge of it is dead: what nearly every status change needs, looked up instead of computed.
_DELTAS: dict[WorkflowStatus, dict[WorkflowStatus, Weights | None]] = {
    a: {
        b: None
        if _BY_STATUS[a] is _BY_STATUS[b]
        else (
            _BY_STATUS[b][0] - _BY_STATUS[a][0],
            _BY_STATUS[b][1] - _BY_STATUS[a][1],
            _BY_STATUS[b][2] - _BY_STATUS[a][2],
        )
        for b in WorkflowStatus
    }
    for a in WorkflowStatus
}


def edge_weights(run: StageRun, child: int) -> Weights:
    """What the edge from a stage in state ``run`` to ``child`` adds to the child's counts."""
    if run.merging:  # a MULTI_MERGE join between runs has not ended for its downstream
        return _OPEN
    weights = _BY_STATUS[run.status]
    if weights is _ARRIVED and ((run.pruned and run.status is _SKIPPED) or child in run.dropped):
        return _DEAD
    return weights


def arrived(run: StageRun, child: int) -> bool:
    """Whether the edge from a stage in state ``run`` to ``child`` is an arrival (ended, can continue, not dead)."""
    return edge_weights(run, child) is _ARRIVED


def shift(old: StageRun, new: StageRun) -> Weights | None:
    """What a stage's change does to every edge out of it: None (nothing), one change for all, or PER_CHILD.

    The one rule for the turn's overlay and the committed state (no allocation:
    the changes are looked up). Without dead edges or a merging join, every
    child's edge changes alike; otherwise ask :func:`child_shift` per child.
    """
    if old.pruned or new.pruned or old.dropped or new.dropped or old.merging or new.merging:
        return PER_CHILD
    return _DELTAS[old.status][new.status]


def child_shift(old: StageRun, new: StageRun, child: int) -> Weights:
    """What a stage's change does to its edge to ``child`` (for :data:`PER_CHILD`)."""
    before, after = edge_weights(old, child), edge_weights(new, child)
    return (after[0] - before[0], after[1] - before[1], after[2] - before[2])


class WorkflowState:
    """A live workflow in memory: records plus derived indices. Owned by one actor."""

    __slots__ = (
        "_ancestors",
        "active",
        "children",
        "coordinated",
        "dead",
        "halted",
        "merges",
        "outstanding",
        "record",
        "runs",
        "specs",
    )

    def __init__(self, record: WorkflowRecord, specs: list[StageSpec], runs: list[StageRun]) -> None:
        self.record = record
        self.specs = specs
        self.runs = runs
        children: list[list[int]] = [[] for _ in specs]
        merges: list[tuple[int, ...]] | None = None
        #: Whether a stage coordinates with others (a mutex, a milestone, a choice): the kernel asks only then.
        self.coordinated = False
        for spec in specs:
            if spec.coord is not None:
                self.coordinated = True
            for req in spec.requisites:
                children[req].append(spec.index)
            if spec.join_type is JoinType.MULTI_MERGE:
                merges = merges or [()] * len(specs)
                for req in spec.requisites:
                    merges[req] = (*merges[req], spec.index)
        # (tuples and arrays of ints: what a live workflow keeps costs the garbage collector nothing to scan)
        self.children: list[tuple[int, ...]] = [tuple(c) for c in children]
        #: Per stage, its MULTI_MERGE children (which note each arrival); None without such joins.
        self.merges: tuple[tuple[int, ...], ...] | None = None if merges is None else tuple(merges)
        self.outstanding = array("l", bytes(_LONG * len(specs)))
        self.dead = array("l", bytes(_LONG * len(specs)))
        self.halted = array("l", bytes(_LONG * len(specs)))
        for spec in specs:
            for r in spec.requisites:
                out, dead, halted = edge_weights(runs[r], spec.index)
                self.outstanding[spec.index] += out
                self.dead[spec.index] += dead
                self.halted[spec.index] += halted
        self.active = sum(1 for r in runs if r.status in LIVE)
        self._ancestors: dict[int, list[int]] = {}

    def apply(self, t: Commit) -> None:
        """Make a committed turn part of the state."""
        if t.workflow is not None:
            self.record = t.workflow
        if t.respecs:
            for i, spec in t.respecs.items():
                self.specs[i] = spec
        if t.added:
            self._grow(t.added)
        for i, run in t.stages.items():
            old = self.runs[i]
            self.runs[i] = run
            if old.status in LIVE and run.status not in LIVE:
                self.active -= 1
            elif run.status in LIVE and old.status not in LIVE:
                self.active += 1
            if (
                old.status is not run.status
                or old.pruned is not run.pruned
                or old.dropped is not run.dropped
                or old.merging is not run.merging
            ):
                d = shift(old, run)
                if d is not None:
                    for c in self.children[i]:
                        out, dead, halted = child_shift(old, run, c) if d is PER_CHILD else d
                        self.outstanding[c] += out
                        self.dead[c] += dead
                        self.halted[c] += halted

    def _grow(self, added: list[StageSpec]) -> None:
        """Append the stages a turn made (NOT_STARTED here; the turn's runs follow in ``apply``)."""
        n = len(added)
        self.specs.extend(added)
        self.runs.extend(StageRun() for _ in added)
        self.children.extend(() for _ in added)
        for counts in (self.outstanding, self.dead, self.halted):
            counts.extend(array("l", bytes(_LONG * n)))
        if self.merges is not None:
            self.merges = self.merges + ((),) * n

    def stage_context(self, index: int, run_of: Callable[[int], StageRun] | None = None) -> dict[str, Any]:
        """The context a task of stage ``index`` sees, computed at dispatch.

        Layers, later winning: the run's inputs, the outputs of all transitive
        ancestors in declaration order, the stage's own context, the outputs of
        its earlier tasks, and the context updates its tasks returned. A turn
        passes ``run_of`` to read the stage runs through its overlay (inputs never change).
        """
        runs = self.runs.__getitem__ if run_of is None else run_of
        spec = self.specs[index]
        if spec.parent is not None:  # a synthetic stage: its stage's context, under its own
            ctx = self.stage_context(spec.parent, run_of)
        else:
            ctx = dict(self.record.inputs)
            for a in self.ancestors(index):
                ctx.update(runs(a).outputs)
        run = runs(index)
        ctx.update(spec.context)
        ctx.update(run.outputs)
        ctx.update(run.context_update)
        return ctx

    def ancestors(self, index: int) -> list[int]:
        """Transitive ancestors of a stage, in declaration order (computed once per stage)."""
        known = self._ancestors.get(index)
        if known is not None:
            return known
        seen: set[int] = set()
        stack = list(self.specs[index].requisites)
        while stack:
            i = stack.pop()
            if i not in seen:
                seen.add(i)
                stack.extend(self.specs[i].requisites)
        result = self._ancestors[index] = sorted(seen)
        return result

    def stage_index(self, ref_id: str) -> int:
        """The index of the stage ``ref_id`` (raises KeyError)."""
        for spec in self.specs:
            if spec.ref_id == ref_id:
                return spec.index
        raise KeyError(ref_id)
