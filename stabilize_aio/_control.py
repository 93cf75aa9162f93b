"""The Engine's verbs on a run that is going or has ended: cancel, signal, pause, resume, restart, skip,
cancel_region (docs/operations.md says what each does to running tasks, timers, signals and keys).

Each is a durable command: checked against the run at the door (``runtime/commands.py``;
``RunStateError`` for a status that refuses it), committed as an outbox row (waking the
run's owner when that is another process, so it works from a pure client too), then
applied by the run's actor, which decides again. The verbs return once the effect is
applied (the run is PAUSED, RUNNING again, re-opened, the stage ended).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._codec import plain
from ._errors import ConcurrencyError, RunStateError
from ._ids import check_id
from .messages.durable import Durable
from .model.status import WorkflowStatus
from .model.views import WorkflowView
from .runtime.commands import (
    cancel_command,
    pause_command,
    region_command,
    restart_command,
    resume_command,
    signal_command,
    skip_command,
)

if TYPE_CHECKING:
    from .runtime.parts import Runtime

S = WorkflowStatus


class RunControl:
    """The verbs of :class:`~stabilize_aio.Engine` that steer one run (mixed into it)."""

    __slots__ = ()

    if TYPE_CHECKING:

        def _require_running(self) -> Runtime: ...
        async def get(self, workflow_id: str) -> WorkflowView: ...
        async def wait(self, workflow_id: str, timeout: float | None = None) -> WorkflowView: ...

    async def _command(
        self, workflow_id: str, make: Callable[[Any], Durable | None], done: Callable[[WorkflowView], bool]
    ) -> WorkflowView:
        """Commit the row ``make(state)`` builds (None: nothing to do), then wait until ``done(view)``."""
        runtime = self._require_running()
        check_id(workflow_id)
        message = make(await runtime.state(workflow_id))
        if message is not None:
            with contextlib.suppress(ConcurrencyError):  # the same command (its fixed id) is pending already
                await runtime.command(workflow_id, message)
        return await runtime.until(workflow_id, done)

    async def cancel(self, workflow_id: str, reason: str = "") -> WorkflowView:
        """Cancel a run for real (its running calls cancelled, then its compensations); returns its final view.

        Idempotent: cancelling a finished run returns its view unchanged. A BUFFERED or PAUSED run
        can be cancelled."""
        runtime = self._require_running()
        view = await self.get(workflow_id)  # checks the id
        if not view.status.is_complete:
            with contextlib.suppress(ConcurrencyError):  # a cancel is already pending for this run
                await runtime.command(workflow_id, cancel_command(await runtime.state(workflow_id), reason))
        return await self.wait(workflow_id)

    async def signal(self, workflow_id: str, stage: str, name: str, data: Any = None) -> None:
        """Send a signal to a stage of a run, from any process; it is durable once this returns.

        A stage whose task returned ``TaskResult.suspend()`` resumes: its task is called
        again with ``_signal_name`` and ``_signal_data`` in its context. A signal that
        arrives before the stage suspends is kept on the stage and consumed when it does.

        Raises:
            WorkflowNotFound: no run has this id.
            DefinitionError: the run has no stage ``stage``, or ``data`` cannot be encoded.
            EngineStateError: the run has finished.
        """
        runtime = self._require_running()
        check_id(workflow_id)
        data = plain(data, what="signal data", stage=stage)  # refused before the run is read
        state = await runtime.state(workflow_id)
        await runtime.command(workflow_id, signal_command(state, stage, name, data))

    async def pause(self, workflow_id: str, reason: str = "", cancel: bool = False) -> WorkflowView:
        """Pause a run: nothing more is dispatched or started until :meth:`resume`; returns its PAUSED view.

        Calls still running finish and their results are recorded; with ``cancel=True`` they are
        cancelled and run again at resume (same attempt, same idempotency key). Deadlines keep
        running. Idempotent. RunStateError: the run has finished (or not started)."""
        view = await self._command(
            workflow_id, lambda state: pause_command(state, reason, cancel),
            lambda v: v.status is S.PAUSED or v.status.is_complete,
        )  # fmt: skip
        if view.status.is_complete:
            raise RunStateError(f"workflow {workflow_id!r} is {view.status.value}: pause refused")
        return view

    async def resume(self, workflow_id: str) -> WorkflowView:
        """Resume a paused run (its waiting calls are dispatched, ready stages start); a running run: nothing."""
        return await self._command(workflow_id, resume_command, lambda v: v.status is not S.PAUSED)

    async def restart(self, workflow_id: str, stage: str | None = None) -> WorkflowView:
        """Re-open a finished run under the same id; returns its view once it runs again.

        ``stage=None`` redoes its TERMINAL, CANCELED and STOPPED stages, ``stage=ref`` that stage;
        each with everything downstream (new generations, so new idempotency keys); the rest keeps
        its state and outputs. A compensated run also redoes what its compensations undid. The
        timeout window and the jump count start again. RunStateError: the run has not finished, or
        it SUCCEEDED and no ``stage`` is named."""
        epoch = (await self.get(workflow_id)).epoch
        return await self._command(workflow_id, lambda state: restart_command(state, stage), lambda v: v.epoch > epoch)

    async def skip(self, workflow_id: str, stage: str) -> WorkflowView:
        """End one unfinished stage SKIPPED (a running call cancelled for real); its downstream goes on.

        RunStateError: the run or the stage has finished. DefinitionError: no such stage."""
        return await self._command(
            workflow_id, lambda state: skip_command(state, stage),
            lambda v: v.status.is_complete or v.stage(stage).status.is_complete,
        )  # fmt: skip

    async def cancel_region(self, workflow_id: str, region: str) -> WorkflowView:
        """Cancel every unfinished stage of a cancel region for real (CANCELED); the run follows its failure rules.

        DefinitionError: no stage of the run is in the region. RunStateError: the run has finished."""
        refs: list[str] = []

        def make(state: Any) -> Durable:
            message = region_command(state, region)
            refs.extend(s.ref_id for s in state.specs if s.coord is not None and s.coord.region == region)
            return message

        return await self._command(
            workflow_id, make, lambda v: v.status.is_complete or all(v.stage(r).status.is_complete for r in refs)
        )
