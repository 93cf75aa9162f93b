"""Doing what one run owes another (a ``Send`` row): start a child, tell a parent, cancel a child.

Each is idempotent, so a row redelivered after a crash is simply done again:
a child is started under its fixed id (an existing one is left as it is), a
parent is told by a row with a fixed id, a cancel is the run's cancel row. Once
done, the owing run gets a ``Sent`` and deletes its row.

**No child escapes a cancel.** A child is started only while its parent's stage
still runs with that child, and that is checked again after the start commits:
a parent's cancel that committed before the re-check is seen by it (the child is
cancelled at once); one that committed after it owes a cancel of a child that
exists by then. A child's own children are cancelled the same way when its
cancel turn commits, so a cancel reaches every descendant, however deep.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from .._errors import ConcurrencyError
from ..messages.durable import ChildDone, Durable, Send
from ..messages.memory import Message, Sent
from ..model.records import StageSpec, WorkflowRecord
from ..model.status import WorkflowStatus
from ..state.workflow import WorkflowState
from .commands import cancel_command

log = logging.getLogger("stabilize_aio.children")


class Host(Protocol):
    """What the runtime gives (runtime/parts.py)."""

    async def start_run(self, template: WorkflowRecord, specs: list[StageSpec], workflow_id: str | None) -> str: ...
    async def command(self, workflow_id: str, message: Durable) -> None: ...
    async def state(self, workflow_id: str) -> WorkflowState: ...
    async def exists(self, workflow_id: str) -> bool: ...


class Children:
    """Performs Send rows for the runs of this process, then acknowledges them."""

    __slots__ = ("_deliver", "_host")

    def __init__(self, host: Host, deliver: Callable[[str, Message], None]) -> None:
        self._host = host
        self._deliver = deliver

    async def perform(self, workflow_id: str, send: Send) -> None:
        """Do ``send`` for run ``workflow_id``; on success acknowledge it (else its row stays, to be redelivered)."""
        try:
            await self._do(workflow_id, send)
        except Exception:
            log.exception("%s for %s failed; its row stays and is done again later", send.kind, workflow_id)
            return
        self._deliver(workflow_id, Sent(id=send.id))

    def _do(self, workflow_id: str, send: Send) -> Awaitable[None]:
        if send.kind == "start":
            return self._start(workflow_id, send)
        if send.kind == "done":
            return self._tell(workflow_id, send)
        return self._cancel(send.target)

    async def _start(self, parent: str, send: Send) -> None:
        state = await self._host.state(parent)
        if not _waits_for(state, send):
            return  # the stage moved on (cancelled, reset) before its child started: it never starts
        plan = state.specs[send.stage].child
        assert plan is not None
        template = WorkflowRecord(
            id="",
            application=plan.application,
            name=plan.name,
            inputs=send.inputs,
            max_jumps=plan.max_jumps,
            parent=parent,
            parent_stage=send.stage,
            parent_generation=send.generation,
            depth=state.record.depth + 1,
        )
        await self._host.start_run(template, list(plan.specs), send.target)
        if not _waits_for(await self._host.state(parent), send):
            await self._cancel(send.target)  # the parent's cancel committed meanwhile: the child goes too

    async def _tell(self, child: str, send: Send) -> None:
        assert send.status is not None
        if not await self._host.exists(send.target):
            return  # the parent is gone (retention deleted it): nobody to tell
        done = ChildDone(
            id=f"child-done:{child}",
            child=child,
            stage=send.stage,
            generation=send.generation,
            status=send.status,
            outputs=send.outputs,
            error=send.error,
        )
        with contextlib.suppress(ConcurrencyError):  # told already (the row is pending)
            await self._host.command(send.target, done)

    async def _cancel(self, child: str) -> None:
        if not await self._host.exists(child):
            return  # never started (its start re-checks the parent and will not start it)
        state = await self._host.state(child)
        if state.record.status.is_complete:
            return
        with contextlib.suppress(ConcurrencyError):  # a cancel is pending already
            await self._host.command(child, cancel_command(state, "its parent run stopped it"))


def _waits_for(parent: WorkflowState, send: Send) -> bool:
    """Whether the parent's stage still runs, waiting for this child."""
    going = parent.record.status is WorkflowStatus.RUNNING or parent.record.status is WorkflowStatus.PAUSED
    if not going or send.stage >= len(parent.runs):
        return False
    run = parent.runs[send.stage]
    return run.status is WorkflowStatus.RUNNING and run.generation == send.generation and run.child == send.target
