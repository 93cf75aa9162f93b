"""Callers of ``run.wait()``: woken by the commit that finishes their run, never by polling.

A run finished by this process wakes its waiters with its final view, built
once for all of them. A run finished by another process (PostgreSQL) wakes
them through the ``done`` notification or the safety-net poll; they then
look again, since the local actor may not have applied that commit yet.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import anyio

from .._errors import EngineStateError, WorkflowNotFound
from ..model.status import WorkflowStatus
from ..model.views import WorkflowView
from ..state.views import view_of
from ..state.workflow import WorkflowState

#: Reads a run's current view (WorkflowNotFound if there is none).
GetView = Callable[[str], Awaitable[WorkflowView]]


class StatusReader(Protocol):
    """What waiting needs of a store."""

    async def statuses(self, workflow_ids: Sequence[str]) -> dict[str, WorkflowStatus]: ...


class _Waiter:
    __slots__ = ("event", "view")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.view: WorkflowView | None = None


class Waiters:
    """The waiters of every run awaited in this process."""

    def __init__(
        self,
        store: StatusReader,
        *,
        live: Callable[[str], WorkflowState | None],
        get: GetView,
    ) -> None:
        self._store = store
        self._live = live
        self._get = get
        self._waiters: dict[str, _Waiter] = {}
        self._watchers: dict[str, list[anyio.Event]] = {}  # callers of until(), by run
        self._closed = False

    def __len__(self) -> int:
        return len(self._waiters)

    def awaited(self) -> list[str]:
        """The ids of the runs someone waits for."""
        return list(self._waiters)

    async def wait(self, workflow_id: str, timeout: float | None) -> WorkflowView:
        """The run's final view once it completes.

        Raises:
            WorkflowNotFound: no run has this id.
            TimeoutError: ``timeout`` seconds passed (the run goes on), naming its status.
        """
        try:
            with anyio.fail_after(timeout) if timeout is not None else contextlib.nullcontext():
                return await self._wait(workflow_id)
        except TimeoutError:
            state = self._live(workflow_id)
            status = state.record.status.value if state is not None else "not finished"
            raise TimeoutError(
                f"workflow {workflow_id!r} did not finish within {timeout}s (it is {status}; it goes on)"
            ) from None

    async def _wait(self, workflow_id: str) -> WorkflowView:
        while True:
            waiter = self._waiters.get(workflow_id)
            if waiter is None:
                waiter = self._waiters[workflow_id] = _Waiter()
            state = self._live(workflow_id)
            if state is not None:
                if state.record.status.is_complete:
                    return view_of(state)
            else:
                status = (await self._store.statuses([workflow_id])).get(workflow_id)
                if status is None:
                    raise WorkflowNotFound(workflow_id)
                if status.is_complete:
                    return await self._get(workflow_id)
            await waiter.event.wait()
            if waiter.view is not None:
                return waiter.view
            if self._closed:
                raise EngineStateError(f"wait() for {workflow_id!r}: the engine stopped before the run finished")
            # woken by another process's notification (or the safety net): look again

    async def until(self, workflow_id: str, done: Callable[[WorkflowView], bool]) -> WorkflowView:
        """The run's view once ``done(view)`` holds (a verb's effect applied: paused, resumed, restarted).

        Woken by this process's commits of the run's record (:meth:`changed`); a
        run another process owns is looked at again after a short, growing delay.
        """
        delay = 0.005
        while True:
            event = anyio.Event()
            self._watchers.setdefault(workflow_id, []).append(event)
            try:
                state = self._live(workflow_id)
                view = view_of(state) if state is not None else await self._get(workflow_id)
                if done(view):
                    return view
                if self._closed:
                    raise EngineStateError(f"the engine stopped while waiting on workflow {workflow_id!r}")
                with anyio.move_on_after(delay):
                    await event.wait()
                delay = min(delay * 2, 0.5)
            finally:
                events = self._watchers.get(workflow_id)
                if events is not None:
                    events.remove(event)
                    if not events:
                        del self._watchers[workflow_id]

    def changed(self, state: WorkflowState) -> None:
        """This process committed a change of a run's record: its watchers look again."""
        events = self._watchers.get(state.record.id)
        if events:
            for event in events:
                event.set()

    def finished(self, state: WorkflowState) -> None:
        """This process committed the end of a run: wake its waiters with its final view."""
        waiter = self._waiters.pop(state.record.id, None)
        if waiter is not None:
            waiter.view = view_of(state)  # built once for every waiter of this run
            waiter.event.set()

    def done_elsewhere(self, workflow_id: str) -> None:
        """Another process finished a run (or may have): its waiters look again."""
        waiter = self._waiters.pop(workflow_id, None)
        if waiter is not None:
            waiter.event.set()

    async def check(self) -> None:
        """The safety net: wake the waiters of awaited runs the store says are complete."""
        if self._waiters:
            for workflow_id, status in (await self._store.statuses(list(self._waiters))).items():
                if status.is_complete:
                    self.done_elsewhere(workflow_id)

    def close(self) -> None:
        """The engine stopped: wake everyone (they raise EngineStateError unless their run had finished)."""
        self._closed = True
        for waiter in self._waiters.values():
            waiter.event.set()
        for events in self._watchers.values():
            for event in events:
                event.set()
