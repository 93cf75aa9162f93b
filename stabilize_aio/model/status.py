"""Workflow, stage and task statuses, and the one function that changes them.

The table reproduces stabilize 0.33.1's ``VALID_TRANSITIONS``; restart and jump
get explicit *reset* edges instead of bypassing the table. :func:`transition` is
the only place in the package that produces a new status for a record; a test
checks every (status, target) pair against the table and another that no other
module assigns a status.
"""

from __future__ import annotations

from enum import StrEnum

from .._errors import InvalidTransitionError


class WorkflowStatus(StrEnum):
    """The 12 statuses of stabilize, for workflows and stages alike."""

    NOT_STARTED = "NOT_STARTED"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    SUSPENDED = "SUSPENDED"
    SUCCEEDED = "SUCCEEDED"
    FAILED_CONTINUE = "FAILED_CONTINUE"
    TERMINAL = "TERMINAL"
    CANCELED = "CANCELED"
    REDIRECT = "REDIRECT"
    STOPPED = "STOPPED"
    SKIPPED = "SKIPPED"
    BUFFERED = "BUFFERED"

    @classmethod
    def parse(cls, status: WorkflowStatus | str) -> WorkflowStatus:
        """A status from the enum or its name in any case (``"running"``); ValueError naming the valid ones."""
        try:
            return cls(status.upper() if isinstance(status, str) else status)
        except (ValueError, AttributeError):
            valid = ", ".join(s.value for s in cls)
            raise ValueError(f"unknown workflow status {status!r}; one of {valid} (any case)") from None

    @property
    def is_complete(self) -> bool:
        """True for a final status."""
        return self in _COMPLETE

    @property
    def is_halt(self) -> bool:
        """True for a status that halts what comes after it."""
        return self in _HALT

    @property
    def can_continue(self) -> bool:
        """True for a status after which downstream stages may run."""
        return self in _CONTINUABLE

    @property
    def is_active(self) -> bool:
        """True for a status of work that has not finished."""
        return self in _ACTIVE


S = WorkflowStatus

_COMPLETE = frozenset({S.SUCCEEDED, S.FAILED_CONTINUE, S.TERMINAL, S.CANCELED, S.STOPPED, S.SKIPPED})

_HALT = frozenset({S.TERMINAL, S.CANCELED, S.STOPPED})

_CONTINUABLE = frozenset({S.SUCCEEDED, S.FAILED_CONTINUE, S.SKIPPED, S.REDIRECT})

_ACTIVE = frozenset({S.NOT_STARTED, S.RUNNING, S.PAUSED, S.SUSPENDED})

#: Forward edges, as in stabilize (a status may always be set to itself).
VALID_TRANSITIONS: dict[WorkflowStatus, frozenset[WorkflowStatus]] = {
    S.NOT_STARTED: frozenset({S.RUNNING, S.CANCELED, S.SKIPPED, S.BUFFERED, S.TERMINAL}),
    S.BUFFERED: frozenset({S.NOT_STARTED, S.RUNNING, S.CANCELED, S.SKIPPED}),
    S.RUNNING: frozenset(
        {
            S.SUCCEEDED,
            S.FAILED_CONTINUE,
            S.TERMINAL,
            S.CANCELED,
            S.PAUSED,
            S.STOPPED,
            S.SUSPENDED,
            S.REDIRECT,
            S.SKIPPED,
        }
    ),
    S.PAUSED: frozenset({S.RUNNING, S.CANCELED, S.STOPPED}),
    S.SUSPENDED: frozenset({S.RUNNING, S.CANCELED, S.STOPPED}),
    S.REDIRECT: frozenset({S.RUNNING, S.SUCCEEDED, S.CANCELED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED_CONTINUE: frozenset(),
    S.TERMINAL: frozenset(),
    S.CANCELED: frozenset(),
    S.STOPPED: frozenset(),
    S.SKIPPED: frozenset(),
}

#: Reset edges, taken only with ``reset=True`` (restart a stage, jump back to it):
#: any status may go back to NOT_STARTED, which stabilize did by assignment.
RESET_TARGET = S.NOT_STARTED

#: The containment edge, taken only with ``fail=True``: a workflow the engine cannot
#: go on with (a fault local to it) ends TERMINAL from whatever unfinished status it has.
FAIL_TARGET = S.TERMINAL


def allowed(current: WorkflowStatus, target: WorkflowStatus, *, reset: bool = False, fail: bool = False) -> bool:
    """Whether ``current -> target`` is legal (``reset`` admits the reset edges, ``fail`` the containment edge)."""
    if current is target:
        return True
    if reset:
        return target is RESET_TARGET
    if fail and target is FAIL_TARGET and not current.is_complete:
        return True
    return target in VALID_TRANSITIONS[current]


def transition(
    current: WorkflowStatus, target: WorkflowStatus, *, what: str, reset: bool = False, fail: bool = False
) -> WorkflowStatus:
    """Return ``target`` if the table allows ``current -> target``, else raise.

    This is the only function that decides a new status; records are rebuilt with
    its result by :mod:`stabilize_aio._state`.
    """
    if not allowed(current, target, reset=reset, fail=fail):
        raise InvalidTransitionError(current, target, what)
    return target
