"""The demo pipeline behind ``stabilize-aio demo``: fetch → 3 parallel transforms → report.

Up to ``DETAIL_LIMIT`` runs are shown stage by stage; more are shown as one
line of counts by status per refresh, and summed up at the end.
"""

from __future__ import annotations

import random
import time
from collections import Counter

import anyio

from .._engine import Engine
from .._errors import TransientError
from ..model.definitions import Stage, Workflow
from ..model.results import TaskResult
from ..model.status import WorkflowStatus
from ..model.views import StageView, WorkflowView

#: At most this many runs are shown one line each; more are shown as counts by status.
DETAIL_LIMIT = 10

#: The most runs the demo takes. Its tasks sleep 0.1-0.5 s at concurrency 10, so 1,000 runs
#: already take over a minute; a load test belongs in benchmarks/run.py, not in the demo.
MAX_WORKFLOWS = 1_000


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


def _counts(views: list[WorkflowView]) -> str:
    """``RUNNING 38  SUCCEEDED 12``: how many runs are in each status, in the enum's order."""
    counts = Counter(v.status for v in views)
    return "  ".join(f"{status.value} {counts[status]}" for status in WorkflowStatus if counts[status])


def _result(view: WorkflowView) -> str:
    retries = sum(s.attempt - 1 for s in view.stages)
    total = view.stage("report").outputs.get("total")
    return f"{view.workflow_id}: {view.status.value} total={total} retries={retries}"


async def run(db: str, count: int) -> int:
    """Submit ``count`` runs, show their progress, print results; 0 when all succeeded.

    A refresh prints only what changed since the last one: the stage marks of
    every run for up to ``DETAIL_LIMIT`` runs (every 0.25 s), else one line of
    counts by status (every second).
    """
    detailed = count <= DETAIL_LIMIT
    engine, workflow = build(db)
    started = time.perf_counter()
    async with engine:
        runs = [await engine.submit(workflow, context={"size": 10 * (i + 1)}) for i in range(count)]
        if detailed:
            print(f"submitted {count} workflow(s) to {db}  (stage marks: . waiting  > running  + done)")
        else:
            print(f"submitted {count} workflows to {db}  (workflows by status, every second)")
        shown = ""
        while True:
            views = [await r.get() for r in runs]
            if detailed:
                text = "\n".join(_line(v) for v in views)
                if text != shown:
                    print(("\n" if shown else "") + text, flush=True)
            else:
                text = _counts(views)
                if text != shown:
                    print(f"  {time.perf_counter() - started:6.1f}s  {text}", flush=True)
            shown = text
            if all(v.status.is_complete for v in views):
                break
            await anyio.sleep(0.25 if detailed else 1.0)
        finals = [await r.wait(timeout=30) for r in runs]
    elapsed = time.perf_counter() - started
    print()
    failed = [v for v in finals if v.status is not WorkflowStatus.SUCCEEDED]
    if detailed:
        for view in finals:
            print(_result(view))
    else:
        retried = [v for v in finals if any(s.attempt > 1 for s in v.stages)]
        retries = sum(s.attempt - 1 for v in finals for s in v.stages)
        print(f"{count} workflows: {_counts(finals)}; {retries} retries in {len(retried)} runs (a flaky transform)")
        for view in failed[:5]:
            print(_result(view))
        if len(failed) > 5:
            print(f"... and {len(failed) - 5} more that did not succeed")
    print(f"done in {elapsed:.2f}s")
    return 0 if not failed else 1
