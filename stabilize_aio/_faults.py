"""Named fault points: places in a turn and in the group writer where a test makes the engine fail.

A test arms a point to *raise* :class:`InjectedFault` or to *kill* the process
(SIGKILL, no cleanup) at its n-th hit; later issues build their crash tests on
them. Disarmed, a point costs one falsy check: call sites read
``if _faults.armed:`` before calling :func:`hit`.

The points (see :data:`NAMES`):

``actor.before_commit``
    a turn is folded and about to be queued for its commit (a raise here is a
    handler bug: the workflow fails, the engine goes on);
``actor.after_commit``
    the writer reports the turn committed; nothing has acted on it yet;
``actor.after_effects``
    the committed turn's effects (pools, timers, cancels, waiters) are done;
``writer.begin``
    the group writer's transaction has begun, no statement has run;
``writer.commit``
    every statement of the group ran; COMMIT is about to be sent.

A child process is armed through one environment variable, read once when the
package is imported (by :mod:`stabilize_aio._config`, the one place the environment is read):
``STABILIZE_CRASH_POINTS="actor.after_commit=kill@3,writer.begin=raise"``
(``name=action[@after]``, comma-separated). The public door for tests is
:mod:`stabilize_aio.testing.crash_points`.
"""

from __future__ import annotations

import os
import signal
from typing import Literal

from ._config import CRASH_POINTS_ENV, ENVIRONMENT

Action = Literal["raise", "kill"]

NAMES: tuple[str, ...] = (
    "actor.before_commit",
    "actor.after_commit",
    "actor.after_effects",
    "writer.begin",
    "writer.commit",
)
ENV = CRASH_POINTS_ENV


class InjectedFault(Exception):  # noqa: N818 - it is a fault, not an error of the engine
    """Raised by an armed fault point (a test's simulated bug or database failure)."""


class _Arm:
    __slots__ = ("action", "left", "workflow")

    def __init__(self, action: Action, after: int, workflow: str | None) -> None:
        self.action = action
        self.left = after
        self.workflow = workflow


#: The armed points; empty (falsy) when nothing is armed, which is all a call site checks.
armed: dict[str, _Arm] = {}


def arm(name: str, action: Action = "raise", *, after: int = 1, workflow: str | None = None) -> None:
    """Make point ``name`` raise or kill at its ``after``-th hit (of ``workflow`` only, if given); once."""
    if name not in NAMES:
        raise ValueError(f"unknown fault point {name!r}; the points are {', '.join(NAMES)}")
    if action not in ("raise", "kill"):
        raise ValueError(f"fault point {name!r}: action must be 'raise' or 'kill', not {action!r}")
    if after < 1:
        raise ValueError(f"fault point {name!r}: after must be >= 1, not {after!r}")
    armed[name] = _Arm(action, after, workflow)


def disarm(name: str | None = None) -> None:
    """Disarm one point, or every point."""
    if name is None:
        armed.clear()
    else:
        armed.pop(name, None)


def names() -> tuple[str, ...]:
    """Every fault point's name."""
    return NAMES


def hit(name: str, workflow: str | None = None) -> None:
    """A fault point is passed: fire it if it is armed and this is its hit."""
    point = armed.get(name)
    if point is None or (point.workflow is not None and point.workflow != workflow):
        return
    point.left -= 1
    if point.left > 0:
        return
    del armed[name]
    if point.action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    where = f" (workflow {workflow!r})" if workflow is not None else ""
    raise InjectedFault(f"fault injected at {name}{where}")


def arm_from(spec: str) -> None:
    """Arm the points of ``name=action[@after],...`` (the environment variable's format)."""
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, rest = item.partition("=")
        action, _, after = (rest or "raise").partition("@")
        if action == "raise":
            arm(name.strip(), "raise", after=int(after) if after else 1)
        elif action == "kill":
            arm(name.strip(), "kill", after=int(after) if after else 1)
        else:
            raise ValueError(f"{ENV}: action must be 'raise' or 'kill' in {item!r}")


arm_from(ENVIRONMENT.crash_points)
