"""Synthetic stages and stage types: what a stage runs before its tasks, after them, and when it fails.

``Stage(..., before=[...], after=[...], on_failure=[...])`` names them; a stage
type (``@engine.stage_type(name)``, ``Stage(..., type=name)``) is a function of
the stage that returns its :class:`StagePlan`, expanded when the run is
submitted and stored with it, so a later engine recovers the run without the
function. In the run they are real stages with ref ids ``<parent>/<child>``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

from .._errors import DefinitionError

if TYPE_CHECKING:
    from .definitions import Stage

Role = Literal["before", "after", "on_failure"]

#: A stage type: the stage as written -> its plan (``@engine.stage_type(name)``).
StageType = Callable[["Stage"], "StagePlan"]


class StagePlan:
    """What a stage type makes of a stage: its tasks and its synthetic stages.

    Args:
        tasks: the task types the stage runs, in order.
        before: stages run one after another before those tasks.
        after: stages run one after another once they succeed.
        on_failure: stages run one after another when the stage fails (it stays failed).
        compensate: the task type that undoes the stage (see ``Stage(compensate=)``).
    """

    __slots__ = ("after", "before", "compensate", "on_failure", "tasks")

    def __init__(
        self,
        tasks: Sequence[str] = (),
        before: Sequence[Stage] = (),
        after: Sequence[Stage] = (),
        on_failure: Sequence[Stage] = (),
        compensate: str | None = None,
    ) -> None:
        if isinstance(tasks, str):
            tasks = (tasks,)
        self.tasks: tuple[str, ...] = tuple(tasks)
        self.before: tuple[Stage, ...] = tuple(before)
        self.after: tuple[Stage, ...] = tuple(after)
        self.on_failure: tuple[Stage, ...] = tuple(on_failure)
        self.compensate = compensate

    def __repr__(self) -> str:
        return (
            f"StagePlan(tasks={list(self.tasks)!r}, before={len(self.before)}, after={len(self.after)}, "
            f"on_failure={len(self.on_failure)})"
        )


def synthetic(parent: str, role: Role, stages: Sequence[Stage] | None) -> tuple[Stage, ...]:
    """The checked synthetic stages of ``parent`` for ``role``: plain stages, no requisites, none of their own."""
    if not stages:
        return ()
    from .definitions import Stage  # noqa: PLC0415 (definitions imports this module)

    out = tuple(stages)
    seen: set[str] = set()
    for s in out:
        if not isinstance(s, Stage):
            raise DefinitionError(f"stage {parent!r}: {role} holds {s!r}, not a Stage", stage=parent)
        where = f"stage {parent!r}: {role} stage {s.ref_id!r}"
        if s.requisites:
            raise DefinitionError(f"{where} has requisites; synthetic stages run in list order", stage=parent)
        if s.before or s.after or s.on_failure or s.type is not None or s.compensate is not None or s.instances:
            raise DefinitionError(f"{where} has synthetic stages, a type or a compensate of its own", stage=parent)
        if s.ref_id in seen:
            raise DefinitionError(f"{where} is there twice", stage=parent)
        seen.add(s.ref_id)
    return out
