"""Structured loops on stabilize_aio: ``while_loop`` and ``repeat_until`` from ``stabilize_aio.patterns``.

1. ``while n < 3`` with a body that adds one: 3 iterations, and the final ``n`` (3)
   reaches the stage after the loop (in stabilize it does not).
2. ``repeat_until ready``: the body runs first and polls until the third check is ready.

Run with ``python examples/loops_example.py`` (it writes ``loops.db`` here).
"""

from __future__ import annotations

import anyio

from stabilize_aio import Engine, Stage, StageView, TaskResult, Workflow
from stabilize_aio.patterns import repeat_until, while_loop

engine = Engine("sqlite:///loops.db")


@engine.task("increment")
async def increment(stage: StageView) -> TaskResult:
    n = stage.context["n"]
    print(f"[increment] iteration {stage.context['iteration']}: n {n} -> {n + 1}")
    return TaskResult.success(outputs={"n": n + 1})


@engine.task("report")
async def report(stage: StageView) -> TaskResult:
    return TaskResult.success(outputs={"n_after_loop": stage.context["n"]})


@engine.task("check")
async def check(stage: StageView) -> TaskResult:
    checks = stage.context.get("checks", 0) + 1
    ready = checks >= 3
    print(f"[check] iteration {stage.context['iteration']}: check #{checks}, ready={ready}")
    return TaskResult.success(outputs={"checks": checks, "ready": ready})


async def example_while() -> None:
    print("Example 1: while_loop('count', 'n < 3')")
    workflow = Workflow(
        application="loops-example",
        name="while-n-below-3",
        stages=[
            *while_loop("count", "n < 3", body=[Stage("inc", "increment")]),
            Stage("after", "report", requisites=["count"]),  # the exit stage's ref id is the prefix
        ],
    )
    view = await (await engine.submit(workflow, context={"n": 0})).wait(timeout=30)
    print(f"RESULT: Workflow Status = {view.status}")
    print(f"  Loop: {view.stage('count').outputs['loop']}")
    print(f"  Body stage inc: {view.stage('inc').status} (the fourth ask found n = 3: the body did not run)")
    print(f"  Final n seen after the loop: {view.stage('after').outputs['n_after_loop']}")


async def example_repeat_until() -> None:
    print("Example 2: repeat_until('poll', 'ready')")
    workflow = Workflow(
        application="loops-example",
        name="poll-until-ready",
        stages=repeat_until("poll", "ready", body=[Stage("check", "check")], max_iterations=10),
    )
    view = await (await engine.submit(workflow)).wait(timeout=30)
    exit_stage = view.stage("poll")
    print(f"RESULT: Workflow Status = {view.status}")
    print(f"  Loop: {exit_stage.outputs['loop']}")
    print(f"  Checks: {exit_stage.outputs['checks']}, ready: {exit_stage.outputs['ready']}")


async def main() -> None:
    async with engine:
        await example_while()
        print()
        await example_repeat_until()


if __name__ == "__main__":
    anyio.run(main)
