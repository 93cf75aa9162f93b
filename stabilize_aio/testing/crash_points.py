"""Fault points for tests: make a turn or the group writer raise, or SIGKILL the process, at its n-th hit.

::

    from stabilize_aio.testing import crash_points

    crash_points.arm("actor.before_commit", "raise", after=40)   # the 40th turn fails (its workflow ends TERMINAL)
    crash_points.arm("writer.commit", "kill")                    # the next group commit dies before COMMIT
    crash_points.disarm()

In a child process, set ``STABILIZE_CRASH_POINTS="actor.after_commit=kill@3"``
before it imports stabilize_aio. Disarmed points cost one falsy check.
Points fire once, then disarm themselves. The points are listed by
:func:`names` and described in ``stabilize_aio._faults``.
"""

from __future__ import annotations

from .._faults import ENV, InjectedFault, arm, disarm, names

__all__ = ("ENV", "InjectedFault", "arm", "disarm", "names")
