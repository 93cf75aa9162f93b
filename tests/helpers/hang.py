"""A task that runs until it is cancelled, and says so: what tests of real cancellation register."""

from __future__ import annotations

import anyio

from stabilize_aio import StageView, TaskResult


class Hang:
    """``engine.register("hang", hang.run)``: each call waits for ever; a cancelled one is recorded.

    ``started`` is set by the first call; ``cancelled`` lists the ref ids of the calls whose
    coroutine got ``CancelledError`` (what "cancelled for real" means).
    """

    def __init__(self) -> None:
        self.started = anyio.Event()
        self.cancelled: list[str] = []

    async def run(self, stage: StageView) -> TaskResult:
        self.started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            self.cancelled.append(stage.ref_id)
            raise
        raise AssertionError("unreachable")

    async def wait_started(self, timeout: float = 10.0) -> None:
        """Until a call has started."""
        with anyio.fail_after(timeout):
            await self.started.wait()
