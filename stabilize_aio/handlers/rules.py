"""Deprecated: the engine's old entry point, kept until ``_engine.py`` calls ``Dispatcher.begin``.

Delete this module then (nothing else imports it).
"""

from __future__ import annotations

from ..state.commit import Commit
from ..state.workflow import WorkflowState
from . import start


def begin(state: WorkflowState, now: float) -> Commit:
    """The commit of the start turn of ``state`` (for ``NewWorkflow.begin`` and ``Dispatcher.adopt``)."""
    return start(state, now)[0]
