"""A live workflow in memory: its records plus derived indices (O(1) readiness)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..model.records import LIVE, StageRun, StageSpec, WorkflowRecord
from ..model.status import WorkflowStatus
from .commit import Commit

_SKIPPED = WorkflowStatus.SKIPPED


def edge_weights(run: StageRun, child: int) -> tuple[int, int, int]:
    """What the edge from a stage in state ``run`` to ``child`` adds to the child's (outstanding, dead, halted)."""
    status = run.status
    if not status.can_continue:
        return 1, 0, int(status.is_halt)
    return 0, int((run.pruned and status is _SKIPPED) or child in run.dropped), 0


def edges_changed(old: StageRun, new: StageRun) -> bool:
    """Whether a stage's change can change what its edges weigh (False on the hot path of field updates)."""
    return old.status is not new.status or old.pruned is not new.pruned or old.dropped != new.dropped


class WorkflowState:
    """A live workflow in memory: records plus derived indices. Owned by one actor."""

    __slots__ = ("_ancestors", "active", "children", "dead", "halted", "outstanding", "record", "runs", "specs")

    def __init__(self, record: WorkflowRecord, specs: list[StageSpec], runs: list[StageRun]) -> None:
        self.record = record
        self.specs = specs
        self.runs = runs
        self.children: list[list[int]] = [[] for _ in specs]
        for spec in specs:
            for req in spec.requisites:
                self.children[req].append(spec.index)
        self.outstanding = [0] * len(specs)
        self.dead = [0] * len(specs)
        self.halted = [0] * len(specs)
        for spec in specs:
            for r in spec.requisites:
                self.add_edge(spec.index, edge_weights(runs[r], spec.index), 1)
        self.active = sum(1 for r in runs if r.status in LIVE)
        self._ancestors: dict[int, list[int]] = {}

    def apply(self, t: Commit) -> None:
        """Make a committed turn part of the state."""
        if t.workflow is not None:
            self.record = t.workflow
        for i, spec in t.respecs.items():
            self.specs[i] = spec
        for i, run in t.stages.items():
            old = self.runs[i]
            self.runs[i] = run
            if old.status in LIVE and run.status not in LIVE:
                self.active -= 1
            elif run.status in LIVE and old.status not in LIVE:
                self.active += 1
            if edges_changed(old, run):
                for c in self.children[i]:
                    before, after = edge_weights(old, c), edge_weights(run, c)
                    if before != after:
                        self.add_edge(c, before, -1)
                        self.add_edge(c, after, 1)

    def add_edge(self, child: int, weights: tuple[int, int, int], sign: int) -> None:
        """Add (``sign`` 1) or take away (-1) one edge's weights from ``child``'s counts."""
        out, dead, halted = weights
        if out:
            self.outstanding[child] += sign
        if dead:
            self.dead[child] += sign
        if halted:
            self.halted[child] += sign

    def stage_context(self, index: int, run_of: Callable[[int], StageRun] | None = None) -> dict[str, Any]:
        """The context a task of stage ``index`` sees, computed at dispatch.

        Layers, later winning: the run's inputs, the outputs of all transitive
        ancestors in declaration order, the stage's own context, the outputs of
        its earlier tasks, and the context updates its tasks returned. A turn
        passes ``run_of`` to read the stage runs through its overlay (inputs never change).
        """
        runs = self.runs.__getitem__ if run_of is None else run_of
        ctx = dict(self.record.inputs)
        for a in self.ancestors(index):
            ctx.update(runs(a).outputs)
        run = runs(index)
        ctx.update(self.specs[index].context)
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
