"""A task set for the worker entry point's tests (``--app worker_app:setup``)."""

from __future__ import annotations

import os

import anyio

from stabilize_aio import Engine, StageView, TaskResult


def _log(line: str) -> None:
    with open(os.environ["WORKER_TEST_LOG"], "a") as f:
        f.write(f"{line}\n")


def setup(engine: Engine) -> None:
    """Register `quick` (finishes in 0.2 s) and `hang` (never finishes) for the worker."""

    @engine.task("quick")
    async def quick(stage: StageView) -> TaskResult:
        _log(f"start quick {os.getpid()}")
        await anyio.sleep(0.2)
        _log(f"end quick {os.getpid()}")
        return TaskResult.success(outputs={"ran_in": os.getpid()})

    @engine.task("hang")
    async def hang(stage: StageView) -> TaskResult:
        _log(f"start hang {os.getpid()}")
        await anyio.sleep_forever()
        raise AssertionError("unreachable")
