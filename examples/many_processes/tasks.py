"""The tasks a worker process runs: `python -m stabilize_aio worker --app tasks:setup ...`."""

from __future__ import annotations

import os

import anyio

from stabilize_aio import Engine, StageView, TaskResult


def setup(engine: Engine) -> None:
    """Register the example's tasks on a worker's engine."""

    @engine.task("resize", concurrency=20, timeout=30)
    async def resize(stage: StageView) -> TaskResult:
        await anyio.sleep(0.05)  # the real work (an HTTP call, an image library…) goes here
        return TaskResult.success(outputs={f"size_{stage.ref_id}": stage.context["width"] // 2, "by": os.getpid()})

    @engine.task("publish")
    async def publish(stage: StageView) -> TaskResult:
        sizes = sorted(v for k, v in stage.context.items() if k.startswith("size_"))
        return TaskResult.success(outputs={"published": sizes})
