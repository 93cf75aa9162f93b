"""What happens after a turn's commit, and only then: calls to their pools, rows to the timers,
cancellations to running calls, a finished workflow to its waiters."""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import MappingProxyType
from typing import TYPE_CHECKING

from ..messages.durable import Durable, RunTask
from ..messages.memory import ParkTask
from ..model.views import StageView
from ..pool.pool import Job, TaskPool
from ..state.commit import Commit, Effects
from ..state.workflow import WorkflowState

if TYPE_CHECKING:
    from .actor import WorkflowActor

log = logging.getLogger("stabilize_aio.actor")


class AfterCommit:
    """Acts on committed turns for every actor of a dispatcher (it holds the pools, timers and waiters)."""

    __slots__ = ("_on_finished", "_pools", "_schedule", "accepting")

    def __init__(
        self,
        pools: dict[str, TaskPool],
        schedule: Callable[[str, Durable], None],
        on_finished: Callable[[WorkflowState], None],
    ) -> None:
        self._pools = pools
        self._schedule = schedule
        self._on_finished = on_finished
        self.accepting = True  # False once the engine stops: calls are no longer started

    def apply(self, actor: WorkflowActor, state: WorkflowState, commit: Commit, effects: Effects) -> None:
        """Act on ``actor``'s turn now that it is committed (and applied to ``state``)."""
        wid = actor.workflow_id
        actor.dispatched.difference_update(commit.consumed)
        for message in commit.emitted:
            if message.deliver_at is not None:
                self._schedule(wid, message)
        for run_id in effects.cancel_runs:
            actor.inflight.discard(run_id)
            actor.dispatched.discard(run_id)
            self.cancel_call(wid, run_id)
        for run in effects.dispatch:
            self._dispatch(actor, state, run)
        if effects.finished:
            self._on_finished(state)

    def cancel_call(self, workflow_id: str, run_id: str) -> None:
        """Cancel a running or queued call in whichever pool holds it (it reports nothing)."""
        for pool in self._pools.values():
            if pool.cancel((workflow_id, run_id)):
                return

    def _dispatch(self, actor: WorkflowActor, state: WorkflowState, run: RunTask) -> None:
        wid = actor.workflow_id
        pool = self._pools.get(run.task_type)
        if pool is None:
            if not state.runs[run.stage].parked:
                actor.mailbox.append(ParkTask(run=run))
            log.error(
                "task type %r is not registered; workflow %s parked",
                run.task_type,
                wid,
                extra={"workflow_id": wid, "stage": state.specs[run.stage].ref_id, "task": run.task_type},
            )
            return
        if not self.accepting:
            return  # stopping: the row stays and is redelivered at the next start
        if run.id in actor.dispatched:
            return  # a redelivery of a call already made; its result is on its way
        spec = state.specs[run.stage]
        view = StageView(
            ref_id=spec.ref_id,
            workflow_id=wid,
            context=MappingProxyType(state.stage_context(run.stage)),
            attempt=run.attempt,
            idempotency_key=f"{wid}:{spec.ref_id}:{run.task}:{run.generation}",
            task=run.task_type,
            name=spec.name,
        )
        timeout = spec.timeout if spec.timeout is not None else pool.options.timeout
        if pool.offer(Job(wid, run, view, timeout)):
            actor.inflight.add(run.id)
            actor.dispatched.add(run.id)
