"""What happens after a turn's commit, and only then: calls to their pools, rows to the timers,
cancellations to running calls, a finished workflow to its waiters."""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import MappingProxyType

from ..messages.durable import Durable, RunTask, Send
from ..messages.memory import ParkTask
from ..model.views import StageView
from ..pool.pool import Job, TaskPool
from ..state.commit import Commit, Effects
from ..state.workflow import WorkflowState

log = logging.getLogger("stabilize_aio.actor")


class CallBook:
    """The calls of one workflow: those running in a pool, and those handed to one whose row is not consumed.

    A RunTask in ``dispatched`` is never handed to a pool again, even when a
    redelivery overtakes the call's own result in the mailbox; the actor leaves
    memory only when nothing is ``running``.
    """

    __slots__ = ("dispatched", "running")

    def __init__(self) -> None:
        self.running: set[str] = set()
        self.dispatched: set[str] = set()

    def made(self, run_id: str) -> bool:
        """Whether this RunTask was handed to a pool already."""
        return run_id in self.dispatched

    def started(self, run_id: str) -> None:
        self.running.add(run_id)
        self.dispatched.add(run_id)

    def finished(self, run_id: str) -> None:
        """The call reported (or was cancelled): it no longer runs; its row is consumed by its result's turn."""
        self.running.discard(run_id)

    def cancelled(self, run_id: str) -> None:
        self.running.discard(run_id)
        self.dispatched.discard(run_id)

    def consumed(self, run_ids: list[str]) -> None:
        """Rows a committed turn consumed: their calls are over."""
        self.dispatched.difference_update(run_ids)

    def clear(self) -> list[str]:
        """Forget every call; returns those that were running (to cancel them)."""
        running = list(self.running)
        self.running.clear()
        self.dispatched.clear()
        return running


class AfterCommit:
    """Acts on committed turns for every actor of a dispatcher (it holds the pools, timers and waiters)."""

    __slots__ = ("_accepting", "_grant", "_on_changed", "_on_finished", "_pools", "_redeliver", "_schedule", "_send")

    def __init__(
        self,
        pools: dict[str, TaskPool],
        schedule: Callable[[str, Durable], None],
        on_finished: Callable[[WorkflowState], None],
        send: Callable[[str, Send], None] | None = None,
        *,
        on_changed: Callable[[WorkflowState], None] | None = None,
        redeliver: Callable[[str], None] | None = None,
        grant: Callable[[list[str], bool], None] | None = None,
    ) -> None:
        self._pools = pools
        self._schedule = schedule
        self._on_finished = on_finished
        self._send = send  # what a run owes another, done after the commit (runtime/children.py)
        self._on_changed = on_changed  # a commit wrote the run's record (callers of a verb wait for it)
        self._redeliver = redeliver  # read a run's pending rows back and deliver them (a resume)
        self._grant = grant  # grant claims on shared keys whose claims a commit changed
        self._accepting = True  # False once the engine stops: calls are no longer started

    def stop(self) -> None:
        """Start no more calls (stopping): their rows stay pending and are redelivered at the next start."""
        self._accepting = False

    def apply(
        self, workflow_id: str, calls: CallBook, state: WorkflowState, commit: Commit, effects: Effects
    ) -> list[ParkTask] | None:
        """Act on a workflow's turn now that it is committed (and applied to ``state``).

        Returns the ParkTask messages for its own mailbox (calls of a task type
        this engine lacks), or None.
        """
        calls.consumed(commit.consumed)
        for message in commit.emitted:
            if message.deliver_at is not None:
                self._schedule(workflow_id, message)
        for run_id in effects.cancel_runs:
            calls.cancelled(run_id)
            self.cancel_call(workflow_id, run_id)
        parks = None
        for run in effects.dispatch:
            park = self._dispatch(workflow_id, calls, state, run)
            if park is not None:
                parks = [*(parks or ()), park]
        if effects.sends and self._send is not None:
            for send in effects.sends:
                self._send(workflow_id, send)
        if effects.redeliver and self._redeliver is not None:
            self._redeliver(workflow_id)
        if effects.keys and self._grant is not None:
            self._grant(effects.keys, effects.freed)
        if effects.finished:
            self._on_finished(state)
        if commit.workflow is not None and self._on_changed is not None:
            self._on_changed(state)
        return parks

    def cancel_call(self, workflow_id: str, run_id: str) -> None:
        """Cancel a running or queued call in whichever pool holds it (it reports nothing)."""
        for pool in self._pools.values():
            if pool.cancel((workflow_id, run_id)):
                return

    def _dispatch(self, wid: str, calls: CallBook, state: WorkflowState, run: RunTask) -> ParkTask | None:
        pool = self._pools.get(run.task_type)
        if pool is None:
            log.error(
                "task type %r is not registered; workflow %s parked",
                run.task_type,
                wid,
                extra={"workflow_id": wid, "stage": state.specs[run.stage].ref_id, "task": run.task_type},
            )
            return None if state.runs[run.stage].parked else ParkTask(run=run)
        if not self._accepting:
            return None  # stopping: the row stays and is redelivered at the next start
        if calls.made(run.id):
            return None  # a redelivery of a call already made; its result is on its way
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
            calls.started(run.id)
        return None
