"""The task set of the multi-process tests (``--app mp_app:setup``)."""

from __future__ import annotations

import os
import random

import anyio

from stabilize_aio import Engine, StageView, TaskResult


def setup(engine: Engine) -> None:
    """Register `step`: a little I/O, then outputs naming the process that ran it."""

    @engine.task("step", concurrency=50)
    async def step(stage: StageView) -> TaskResult:
        await anyio.sleep(random.uniform(0.005, 0.03))
        return TaskResult.success(outputs={f"pid_{stage.ref_id}": os.getpid(), f"n_{stage.ref_id}": 1})
