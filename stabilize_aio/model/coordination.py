"""How a stage coordinates with others: a mutex, a deferred choice, a milestone, a cancel region.

``Stage(mutex_key=..., deferred_choice_group=..., milestone_ref_id=..., cancel_region=...)``
is checked here when the stage is built and kept as one small :class:`Coordination`
(None for a stage that coordinates with nothing: most of them). What the kernel
does with it is in ``handlers/coordination.py`` and docs/patterns.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from .._errors import DefinitionError
from .status import WorkflowStatus

S = WorkflowStatus

#: The mutex scopes: one workflow's stages, or every workflow's on the store.
SCOPES = ("workflow", "global")

#: How far a stage has come: what a milestone waits for (a status of a lower rank is not there yet).
RANK: Mapping[WorkflowStatus, int] = {S.NOT_STARTED: 0, S.BUFFERED: 0, S.RUNNING: 1, S.PAUSED: 1, S.SUSPENDED: 2}
_DONE_RANK = 3


def rank(status: WorkflowStatus) -> int:
    """A status's place on the way of a stage: not started, running, suspended, finished."""
    return RANK.get(status, _DONE_RANK)


class Coordination(msgspec.Struct, frozen=True, kw_only=True, gc=False, omit_defaults=True):
    """A stage's coordination with other stages, as stored with its spec."""

    mutex_key: str | None = None  # held from the stage's start to its end
    mutex_scope: str = "workflow"  # "workflow" or "global"
    choice: str | None = None  # its deferred choice group: the first to commit wins, the others are pruned
    milestone_ref: str | None = None  # the stage whose status gates this one when it is ready
    milestone: int = -1  # ... its index (set when the workflow is compiled)
    milestone_status: WorkflowStatus = S.SUSPENDED
    region: str | None = None  # its cancel region (engine.cancel_region)


def coordination(
    ref_id: str,
    *,
    mutex_key: str | None,
    mutex_scope: str,
    deferred_choice_group: str | None,
    milestone_ref_id: str | None,
    milestone_status: WorkflowStatus | str | None,
    cancel_region: str | None,
) -> Coordination | None:
    """A stage's coordination, checked (None when it has none); DefinitionError naming the stage."""
    for label, value in (
        ("mutex_key", mutex_key),
        ("deferred_choice_group", deferred_choice_group),
        ("milestone_ref_id", milestone_ref_id),
        ("cancel_region", cancel_region),
    ):
        if value is not None and (not isinstance(value, str) or not value or len(value) > 200):
            raise DefinitionError(
                f"stage {ref_id!r}: {label} must be a non-empty string of at most 200 characters, got {value!r}",
                stage=ref_id,
            )
    if mutex_scope not in SCOPES:
        raise DefinitionError(
            f"stage {ref_id!r}: mutex_scope must be 'workflow' or 'global', got {mutex_scope!r}", stage=ref_id
        )
    if milestone_ref_id == ref_id:
        raise DefinitionError(f"stage {ref_id!r}: a stage cannot be its own milestone", stage=ref_id)
    status = S.SUSPENDED
    if milestone_status is not None:
        if milestone_ref_id is None:
            raise DefinitionError(f"stage {ref_id!r}: milestone_status needs milestone_ref_id", stage=ref_id)
        try:
            status = S.parse(milestone_status)
        except ValueError as exc:
            raise DefinitionError(f"stage {ref_id!r}: milestone_status: {exc}", stage=ref_id) from None
        if status in (S.NOT_STARTED, S.BUFFERED, S.REDIRECT, S.PAUSED):
            raise DefinitionError(
                f"stage {ref_id!r}: milestone_status {status.value} is not a status a stage reaches and holds",
                stage=ref_id,
            )
    if mutex_key is None and deferred_choice_group is None and milestone_ref_id is None and cancel_region is None:
        return None
    return Coordination(
        mutex_key=mutex_key,
        mutex_scope=mutex_scope,
        choice=deferred_choice_group,
        milestone_ref=milestone_ref_id,
        milestone_status=status,
        region=cancel_region,
    )


def check_milestones(coordinated: Mapping[str, Coordination], index: Mapping[str, Any]) -> None:
    """Every milestone names a stage of the workflow (DefinitionError naming the stage that names it)."""
    for ref_id, c in coordinated.items():
        if c.milestone_ref is not None and index.get(c.milestone_ref, -1) < 0:
            raise DefinitionError(
                f"stage {ref_id!r}: milestone_ref_id {c.milestone_ref!r} is not a stage of this workflow",
                stage=ref_id,
            )


class Admission(msgspec.Struct, frozen=True, kw_only=True, gc=False, omit_defaults=True):
    """A workflow's admission limit: at most ``max_concurrent`` unfinished runs per ``key`` start."""

    key: str
    max_concurrent: int = 1
    keep_waiting: bool = True  # False: runs that find no slot when one frees are CANCELED (stabilize's purge)


def admission(
    name: str, *, concurrency_key: str | None, max_concurrent: int | None, keep_waiting: bool
) -> Admission | None:
    """A workflow's admission limit, checked (None without ``concurrency_key``); DefinitionError naming it."""
    if concurrency_key is None:
        if max_concurrent is not None:
            raise DefinitionError(f"workflow {name!r}: max_concurrent needs a concurrency_key")
        return None
    if not isinstance(concurrency_key, str) or not concurrency_key or len(concurrency_key) > 200:
        raise DefinitionError(
            f"workflow {name!r}: concurrency_key must be a non-empty string of at most 200 characters, "
            f"got {concurrency_key!r}"
        )
    limit = 1 if max_concurrent is None else max_concurrent
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise DefinitionError(f"workflow {name!r}: max_concurrent must be an int >= 1, got {max_concurrent!r}")
    if not isinstance(keep_waiting, bool):
        raise DefinitionError(f"workflow {name!r}: keep_waiting must be a bool, got {keep_waiting!r}")
    return Admission(key=concurrency_key, max_concurrent=limit, keep_waiting=keep_waiting)


def seconds(name: str, label: str, value: float | None) -> float | None:
    """A number of seconds > 0 (or None), checked; DefinitionError naming the workflow and the option."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
        raise DefinitionError(f"workflow {name!r}: {label} must be a number of seconds > 0, got {value!r}")
    return value
