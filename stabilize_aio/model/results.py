"""What a task returns: :class:`TaskResult`, built with its class methods."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from .status import WorkflowStatus


class TaskResult(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What a task returns. Build it with the class methods.

    ``outputs`` are merged into the stage's outputs (what downstream stages see);
    ``context`` is a context update kept for the next call of this stage's tasks.
    """

    status: WorkflowStatus
    outputs: dict[str, Any] = {}
    context: dict[str, Any] = {}
    error: str | None = None
    target: str | None = None  # jump_to: the ref id of the stage to jump to
    timeout: float | None = None  # suspend: seconds the signal wait lasts (None: no limit)
    on_timeout: str = "fail"  # suspend: what its end does ("fail", "skip" or "continue")

    @classmethod
    def _of(
        cls,
        status: WorkflowStatus,
        outputs: Mapping[str, Any] | None,
        context: Mapping[str, Any] | None,
        error: str | None = None,
        *,
        target: str | None = None,
    ) -> TaskResult:
        return cls(status=status, outputs=dict(outputs or {}), context=dict(context or {}), error=error, target=target)

    @classmethod
    def success(
        cls, *, outputs: Mapping[str, Any] | None = None, context: Mapping[str, Any] | None = None
    ) -> TaskResult:
        """The task succeeded; the stage moves to its next task."""
        # (built here, not by _of: the most called constructor)
        return cls(status=WorkflowStatus.SUCCEEDED, outputs=dict(outputs or {}), context=dict(context or {}))

    @classmethod
    def running(
        cls, *, outputs: Mapping[str, Any] | None = None, context: Mapping[str, Any] | None = None
    ) -> TaskResult:
        """Not done yet: call the task again after its poll interval, context kept."""
        return cls._of(WorkflowStatus.RUNNING, outputs, context)

    @classmethod
    def failed_continue(
        cls,
        error: str | None = None,
        *,
        outputs: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> TaskResult:
        """Failed, but the stage and its downstream go on; the stage ends FAILED_CONTINUE."""
        return cls._of(WorkflowStatus.FAILED_CONTINUE, outputs, context, error)

    @classmethod
    def terminal(
        cls,
        error: str | None = None,
        *,
        outputs: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> TaskResult:
        """Failed for good: the stage fails (TERMINAL unless the stage says otherwise)."""
        return cls._of(WorkflowStatus.TERMINAL, outputs, context, error)

    @classmethod
    def stopped(
        cls,
        error: str | None = None,
        *,
        outputs: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> TaskResult:
        """Stop this branch: the stage ends STOPPED, other branches go on."""
        return cls._of(WorkflowStatus.STOPPED, outputs, context, error)

    @classmethod
    def jump_to(
        cls,
        target: str,
        *,
        context: Mapping[str, Any] | None = None,
        outputs: Mapping[str, Any] | None = None,
    ) -> TaskResult:
        """Go on at stage ``target`` instead of downstream (dynamic routing), in one turn.

        ``context`` is merged into the target's context; ``outputs`` become this
        stage's outputs. A jump back (to this stage or one of its ancestors)
        resets the target and every stage between it and this one (each a new
        generation, so new idempotency keys); a jump forward skips the stages
        only this stage's branch would have run. Each jump counts against the
        workflow's ``max_jumps``. See docs/patterns.md, "Jumps".
        """
        if not isinstance(target, str) or not target:
            raise ValueError(f"jump_to() takes a stage ref id, got {target!r}")
        return cls._of(WorkflowStatus.REDIRECT, outputs, context, target=target)

    @classmethod
    def suspend(
        cls,
        *,
        timeout: float | None = None,
        on_timeout: str = "fail",
        context: Mapping[str, Any] | None = None,
    ) -> TaskResult:
        """Wait for a signal: the stage stays SUSPENDED until ``engine.signal(...)`` resumes it.

        The task is then called again with ``_signal_name`` and ``_signal_data`` in its context.
        With ``timeout`` (seconds), a wait that no signal ends in time ends by itself:
        ``on_timeout="fail"`` fails the stage (its failure status), ``"skip"`` skips it,
        ``"continue"`` calls the task again with ``_signal_timed_out=True`` in its context.
        """
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0
        ):
            raise ValueError(f"suspend(timeout=...) takes seconds > 0, got {timeout!r}")
        if on_timeout not in ("fail", "skip", "continue"):
            raise ValueError(f"suspend(on_timeout=...) is 'fail', 'skip' or 'continue', got {on_timeout!r}")
        return cls(status=WorkflowStatus.SUSPENDED, context=dict(context or {}), timeout=timeout, on_timeout=on_timeout)

    @classmethod
    def canceled(
        cls,
        error: str | None = None,
        *,
        outputs: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> TaskResult:
        """The task gave up: as in stabilize, the stage takes its failure status."""
        return cls._of(WorkflowStatus.CANCELED, outputs, context, error)
