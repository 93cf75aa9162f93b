"""The event catalogue: every kind of history event a workflow can record, in one list.

Handlers record only these kinds (``Turn.record_event`` takes an :data:`EventKind`,
and a test checks the recorded kinds against :data:`KINDS`); a new kind is added
here first. Keys stay unique per workflow (``UNIQUE (workflow_id, key)``): each
kind's key names what makes it unique (stage index, generation, task index,
attempt, poll), so the store refuses a step recorded twice.

========================  ====================================================
kind                      key, and when it is recorded
========================  ====================================================
workflow.started          ``workflow.started:<epoch>``: the start turn (or its admission)
workflow.buffered         ``workflow.buffered:<epoch>``: the run waits BUFFERED for a slot of its concurrency key
workflow.completed        ``workflow.completed:<epoch>``: the turn that ends the run (each epoch of a restart)
workflow.paused           ``workflow.paused:<epoch>:<version>``: ``engine.pause`` (message: the reason)
workflow.resumed          ``workflow.resumed:<epoch>:<version>``: ``engine.resume``
workflow.restarted        ``workflow.restarted:<epoch>``: ``engine.restart`` opened this epoch
workflow.error            ``workflow.error:<epoch>``: containment ends the run TERMINAL
workflow.quarantined      ``workflow.quarantined:<version>``: rows of a finished run quarantined
stage.started             ``stage.started:<stage>:<generation>``
stage.completed           ``stage.completed:<stage>:<generation>``: any end but SKIPPED
stage.skipped             ``stage.skipped:<stage>:<generation>``: the stage ended SKIPPED (a false
                          condition; or pruned by a pattern, the message saying why)
stage.jumped              ``stage.jumped:<stage>:<generation>``: the stage jumped (``jump_to``, a
                          loop); message ``<source> -> <target> (context: [<keys>])``
stage.signaled            ``stage.signaled:<stage>:<generation>:<poll>``: a signal resumed it
stage.suspended           ``stage.suspended:<stage>:<generation>:<poll>``
signal.dropped            ``signal.dropped:<signal id>``: a signal for a finished stage or run
task.started              ``task.started:<stage>:<generation>:<task>:<attempt>:<poll>``, at the call's
                          real start, in the turn that commits its result
task.failed               ``task.failed:<stage>:<generation>:<task>:<attempt>:<poll>``: an error or a
                          failing result (terminal, canceled, stopped, failed_continue)
task.timed_out            ``task.timed_out:<stage>:<generation>:<task>:<attempt>:<poll>``: the call's timeout
retry.scheduled           ``retry.scheduled:<stage>:<generation>:<task>:<attempt>:<poll>`` of the retry row
compensation.started      ``compensation.started``: a failed or cancelled run starts its compensations
compensation.completed    ``compensation.completed``: the last one ended (message ``done`` or ``failed``)
compensation.failed       ``compensation.failed:<stage>:<generation>``: a compensation failed for good
========================  ====================================================

No event costs a commit of its own: each is part of the turn that does what it records.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

EventKind = Literal[
    "workflow.started",
    "workflow.buffered",
    "workflow.completed",
    "workflow.paused",
    "workflow.resumed",
    "workflow.restarted",
    "workflow.error",
    "workflow.quarantined",
    "stage.started",
    "stage.completed",
    "stage.skipped",
    "stage.jumped",
    "stage.signaled",
    "stage.suspended",
    "signal.dropped",
    "task.started",
    "task.failed",
    "task.timed_out",
    "retry.scheduled",
    "compensation.started",
    "compensation.completed",
    "compensation.failed",
]

#: Every event kind, as a set (what a test checks recorded events against).
KINDS: Final[frozenset[str]] = frozenset(get_args(EventKind))
