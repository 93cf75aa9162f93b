"""The demo pipeline behind ``stabilize-aio demo``: fetch → 3 parallel transforms → report."""

from __future__ import annotations

import random
import time

import anyio

from ._engine import Engine
from ._errors import TransientError
from ._model import Stage, TaskResult, Workflow
from ._status import WorkflowStatus
from ._views import StageView, WorkflowView


def build(db: str) -> tuple[Engine, Workflow]:
    """The demo engine and workflow."""
    engine = Engine(f"sqlite:///{db}")

    @engine.task("fetch", concurrency=10, timeout=5)
    async def fetch(stage: StageView) -> TaskResult:
        await anyio.sleep(0.2)
        return TaskResult.success(outputs={"records": list(range(stage.context["size"]))})

    @engine.task("transform", concurrency=10, timeout=5)
    async def transform(stage: StageView) -> TaskResult:
        if stage.attempt == 1 and random.random() < 0.3:
            raise TransientError("flaky upstream", retry_after=0.1)
        await anyio.sleep(0.1 + random.random() * 0.3)
        factor = stage.context["factor"]
        return TaskResult.success(outputs={f"sum_{stage.ref_id}": sum(stage.context["records"]) * factor})

    @engine.task("report")
    def report(stage: StageView) -> TaskResult:  # a plain def task runs in a worker thread
        total = sum(v for k, v in stage.context.items() if k.startswith("sum_"))
        return TaskResult.success(outputs={"total": total})

    workflow = Workflow(
        application="demo",
        name="etl",
        stages=[
            Stage("fetch", task="fetch"),
            *(Stage(f"t{f}", task="transform", context={"factor": f}, requisites=["fetch"]) for f in (1, 2, 3)),
            Stage("report", task="report", requisites=["t1", "t2", "t3"]),
        ],
    )
    return engine, workflow


def _line(view: WorkflowView) -> str:
    marks = {
        WorkflowStatus.NOT_STARTED: ".",
        WorkflowStatus.RUNNING: ">",
        WorkflowStatus.SUCCEEDED: "+",
    }
    stages = " ".join(f"{s.ref_id}{marks.get(s.status, '!')}" for s in view.stages)
    return f"  {view.workflow_id[:14]}  {view.status.value:<10} {stages}"


async def run(db: str, count: int) -> int:
    """Submit ``count`` runs, show their progress, print results; 0 when all succeeded."""
    engine, workflow = build(db)
    started = time.perf_counter()
    async with engine:
        runs = [await engine.submit(workflow, context={"size": 10 * (i + 1)}) for i in range(count)]
        print(f"submitted {count} workflow(s) to {db}  (stage marks: . waiting  > running  + done)")
        while True:
            views = [await r.get() for r in runs]
            print("\n".join(_line(v) for v in views), flush=True)
            if all(v.status.is_complete for v in views):
                break
            await anyio.sleep(0.25)
            print()
        finals = [await r.wait(timeout=30) for r in runs]
    elapsed = time.perf_counter() - started
    print()
    for view in finals:
        retries = sum(s.attempt - 1 for s in view.stages)
        total = view.stage("report").outputs.get("total")
        print(f"{view.workflow_id}: {view.status.value} total={total} retries={retries}")
    print(f"done in {elapsed:.2f}s")
    return 0 if all(v.status is WorkflowStatus.SUCCEEDED for v in finals) else 1
