"""A child process for tests/chaos/test_crash.py: an engine on an SQLite file, run until done or SIGKILLed.

Usage::

    python tests/helpers/crash_child.py <db> <sidefx-log> <generation> dag <count>
    python tests/helpers/crash_child.py <db> <sidefx-log> <generation> retry

Every task appends lines to the side-effect log, a plain file outside the
database: ``<kind> <subject> <number> <generation> <wall time>``, one ``write``
on an ``O_APPEND`` descriptor per line, so a SIGKILL loses no line that was
written and never leaves half of one.

``dag`` submits ``count`` workflows with fixed ids (``wf-<i>``; a restarted
child re-submits them idempotently) and exits 0 once all have SUCCEEDED.
``retry`` is the retry-during-backoff scenario: generation 0 submits ``wf-retry``
(attempt 1 fails transiently) and waits to be killed; generation 1 restarts,
reports its pool while the retry waits, runs ``wf-other`` on the same
concurrency-1 task type, then waits for ``wf-retry``.
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

import anyio

from stabilize_aio import Engine, RetryPolicy, Stage, StageView, TaskResult, TransientError, Workflow, WorkflowStatus

#: Outputs are computed modulo this prime to stay small.
MODULUS = 1_000_003
FAN_WIDTH = 5
#: Backoff before the retried attempt of ``wf-retry`` (seconds, no jitter).
RETRY_BACKOFF = 3.0

#: (ref_id, task type, requisites, mul, add) of one stage.
StagePlan = tuple[str, str, tuple[str, ...], int, int]


def stage_plan(i: int) -> list[StagePlan]:
    """The stages of workflow ``i``, in topological order: a fan-out or a chain of 4-5."""
    if i % 2 == 0:
        plan: list[StagePlan] = [("root", "fan", (), 3, i % 7)]
        plan += [(f"p{k}", "fan", ("root",), k + 2, k) for k in range(FAN_WIDTH)]
        plan.append(("join", "fan", tuple(f"p{k}" for k in range(FAN_WIDTH)), 1, 11))
        return plan
    length = 4 if i % 4 == 1 else 5
    return [(f"s{j}", "chain", (f"s{j - 1}",) if j else (), j + 2, 5 * j + 1) for j in range(length)]


def build_workflow(i: int) -> Workflow:
    """Workflow ``i`` of the crash test, built from :func:`stage_plan`."""
    stages = [
        Stage(ref, task=task, context={"mul": mul, "add": add}, requisites=reqs)
        for ref, task, reqs, mul, add in stage_plan(i)
    ]
    return Workflow(application="crash", name="fan" if i % 2 == 0 else "chain", stages=stages)


class SideEffects:
    """Appends one line per call to a file outside the database."""

    def __init__(self, path: Path, generation: int) -> None:
        self.path = path
        self.generation = generation

    def write(self, kind: str, subject: str, number: int) -> None:
        line = f"{kind} {subject} {number} {self.generation} {time.time():.6f}\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


async def run_to_success(engine: Engine, workflow: Workflow, workflow_id: str, *, timeout: float) -> int:
    """Submit ``workflow`` as ``workflow_id`` on ``engine`` and wait: 0 (printing ``done``) if it SUCCEEDED, else 1."""
    async with engine:
        handle = await engine.submit(workflow, workflow_id=workflow_id)
        with anyio.fail_after(timeout):
            view = await handle.wait()
    if view.status is not WorkflowStatus.SUCCEEDED:
        print(f"{workflow_id} ended {view.status}", file=sys.stderr)
        return 1
    print("done", flush=True)
    return 0


async def run_dag(db: Path, sidefx: SideEffects, count: int) -> int:
    engine = Engine(f"sqlite:///{db}")

    async def compute(stage: StageView) -> TaskResult:
        sidefx.write("start", stage.idempotency_key, stage.attempt)
        ctx = stage.context
        await anyio.sleep(random.uniform(0.01, 0.1))
        total = ctx["seed"] + sum(v for k, v in ctx.items() if k.startswith("v_"))
        value = (total * ctx["mul"] + ctx["add"]) % MODULUS
        sidefx.write("end", stage.idempotency_key, stage.attempt)
        return TaskResult.success(outputs={f"v_{stage.ref_id}": value})

    engine.register("fan", compute, concurrency=8)
    engine.register("chain", compute, concurrency=8)
    async with engine:
        runs = [
            await engine.submit(build_workflow(i), context={"seed": i}, workflow_id=f"wf-{i}") for i in range(count)
        ]
        with anyio.fail_after(50):
            for run in runs:
                view = await run.wait()
                if view.status is not WorkflowStatus.SUCCEEDED:
                    print(f"{run.workflow_id} ended {view.status}", file=sys.stderr)
                    return 1
    print("all done", flush=True)
    return 0


async def run_retry(db: Path, sidefx: SideEffects) -> int:
    engine = Engine(f"sqlite:///{db}")

    @engine.task("flaky", concurrency=1, retry=RetryPolicy(max_attempts=3, initial=RETRY_BACKOFF, jitter=0.0))
    async def flaky(stage: StageView) -> TaskResult:
        sidefx.write("start", stage.idempotency_key, stage.attempt)
        if stage.context["fail_first"] and stage.attempt == 1:
            sidefx.write("fail", stage.idempotency_key, stage.attempt)
            raise TransientError("the first attempt fails")
        await anyio.sleep(0.05)
        sidefx.write("end", stage.idempotency_key, stage.attempt)
        return TaskResult.success(outputs={"attempt_seen": stage.attempt})

    def one_stage(name: str) -> Workflow:
        return Workflow(application="crash", name=name, stages=[Stage("only", task="flaky")])

    async with engine:
        retry_run = await engine.submit(one_stage("retry"), context={"fail_first": True}, workflow_id="wf-retry")
        if sidefx.generation == 0:
            await anyio.sleep(60)  # the test kills this process while the retry waits
            print("not killed", file=sys.stderr)
            return 2
        stats = engine.statistics()
        (pool,) = stats.pools
        sidefx.write("pool-active", pool.task_type, pool.active)
        sidefx.write("timers-pending", "engine", stats.timers_pending)
        other = await engine.submit(one_stage("other"), context={"fail_first": False}, workflow_id="wf-other")
        other_view = await other.wait(timeout=30)
        sidefx.write("done", other.workflow_id, 1 if other_view.status is WorkflowStatus.SUCCEEDED else 0)
        (pool,) = engine.statistics().pools
        sidefx.write("pool-active", pool.task_type, pool.active)
        retry_view = await retry_run.wait(timeout=30)
        sidefx.write("done", retry_run.workflow_id, 1 if retry_view.status is WorkflowStatus.SUCCEEDED else 0)
    return 0


def main(argv: list[str]) -> int:
    db, log, generation, mode, *rest = argv[1:]
    sidefx = SideEffects(Path(log), int(generation))
    if mode == "dag":
        return anyio.run(run_dag, Path(db), sidefx, int(rest[0]))
    if mode == "retry":
        return anyio.run(run_retry, Path(db), sidefx)
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
