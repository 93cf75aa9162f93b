"""A handle on one workflow run: what ``submit`` returns and ``engine.handle(id)`` makes."""

from __future__ import annotations

from typing import Protocol

from ._ids import check_id
from .model.views import WorkflowView


class Runs(Protocol):
    """What a handle needs of its engine."""

    async def wait(self, workflow_id: str, timeout: float | None = None) -> WorkflowView: ...
    async def get(self, workflow_id: str) -> WorkflowView: ...


class WorkflowRun:
    """A handle on one workflow run (this process's or an earlier one's)."""

    __slots__ = ("_engine", "created", "workflow_id")

    def __init__(self, engine: Runs, workflow_id: str, *, created: bool = False) -> None:
        self._engine = engine
        self.workflow_id = check_id(workflow_id)
        #: True if the submit that returned this handle made the run (False: it existed, or a handle by id).
        self.created = created

    def __repr__(self) -> str:
        return f"<WorkflowRun {self.workflow_id}>"

    async def wait(self, timeout: float | None = None) -> WorkflowView:
        """Wait until the run completes and return its final view, whatever the status.

        Woken by the commit that finishes the workflow, not by polling.

        Raises:
            TimeoutError: ``timeout`` seconds passed (the workflow goes on).
        """
        return await self._engine.wait(self.workflow_id, timeout)

    async def get(self) -> WorkflowView:
        """The run's current view."""
        return await self._engine.get(self.workflow_id)
