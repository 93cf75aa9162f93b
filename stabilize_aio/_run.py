"""A handle on one workflow run: what ``submit`` returns and ``engine.handle(id)`` makes."""

from __future__ import annotations

from typing import Any, Protocol

from ._ids import check_id
from .model.views import WorkflowView


class Runs(Protocol):
    """What a handle needs of its engine."""

    async def wait(self, workflow_id: str, timeout: float | None = None) -> WorkflowView: ...
    async def get(self, workflow_id: str) -> WorkflowView: ...
    async def cancel(self, workflow_id: str, reason: str = "") -> WorkflowView: ...
    async def signal(self, workflow_id: str, stage: str, name: str, data: Any = None) -> None: ...
    async def pause(self, workflow_id: str, reason: str = "", cancel: bool = False) -> WorkflowView: ...
    async def resume(self, workflow_id: str) -> WorkflowView: ...
    async def restart(self, workflow_id: str, stage: str | None = None) -> WorkflowView: ...
    async def skip(self, workflow_id: str, stage: str) -> WorkflowView: ...
    async def cancel_region(self, workflow_id: str, region: str) -> WorkflowView: ...


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

    # the engine's verbs on this run (each documented on the Engine) -------------------------------
    async def cancel(self, reason: str = "") -> WorkflowView:
        """Cancel the run for real; its final view (``engine.cancel``)."""
        return await self._engine.cancel(self.workflow_id, reason)

    async def signal(self, stage: str, name: str, data: Any = None) -> None:
        """Send a signal to one of its stages (``engine.signal``)."""
        await self._engine.signal(self.workflow_id, stage, name, data)

    async def pause(self, reason: str = "", cancel: bool = False) -> WorkflowView:
        """Pause the run; its PAUSED view (``engine.pause``)."""
        return await self._engine.pause(self.workflow_id, reason, cancel)

    async def resume(self) -> WorkflowView:
        """Resume the paused run (``engine.resume``)."""
        return await self._engine.resume(self.workflow_id)

    async def restart(self, stage: str | None = None) -> WorkflowView:
        """Re-open the finished run in place (``engine.restart``)."""
        return await self._engine.restart(self.workflow_id, stage)

    async def skip(self, stage: str) -> WorkflowView:
        """Skip one unfinished stage (``engine.skip``)."""
        return await self._engine.skip(self.workflow_id, stage)

    async def cancel_region(self, region: str) -> WorkflowView:
        """Cancel a cancel region of the run (``engine.cancel_region``)."""
        return await self._engine.cancel_region(self.workflow_id, region)
