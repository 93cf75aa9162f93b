"""Sub-workflow runs across processes: a worker task set, and a crash child on an SQLite file.

As a worker app (``stabilize-aio worker --app family_app:setup``, for
tests/chaos/test_subworkflow_processes.py on PostgreSQL) it registers ``stamp``
(outputs the pid of the process that ran it) and ``hang`` (waits to be
cancelled); ``hang`` appends ``hang-start <workflow id> <pid>`` and, when its
coroutine is cancelled, ``hang-cancelled <workflow id> <pid>`` to the file
named by ``FAMILY_LOG``; ``critical`` (30 ms of work) appends ``crit-start`` and
``crit-end <workflow id> <pid> <time>`` around it.

As a child process (the SQLite crash tests of the same file)::

    python tests/helpers/family_app.py <db> <sidefx-log> <generation> [<case> <fault point>]

it submits :func:`crash_parent` as ``wf-family`` (a restarted child re-submits
it idempotently) and exits 0 once it has SUCCEEDED. Each call appends
``start`` and ``end`` lines to the side-effect log (crash_child's format). A
case arms ``point`` (an ``actor.*`` one, of one run only) to SIGKILL the
process at its next hit:

``parent-start``
    armed by ``prep`` for the parent: the turn of prep's result, which starts
    the sub-workflow stage and owes the child's start (a Send row);
``child-begun``
    armed by ``prep`` for the child: the child's first turn, committed with its
    insert, before the parent heard that its child started;
``child-last``
    armed by the child's ``score`` for the child: the child's last turn, which
    ends it and owes its parent the news.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import anyio
from crash_child import SideEffects, run_to_success

from stabilize_aio import Engine, Stage, StageView, TaskResult, Workflow
from stabilize_aio.testing import crash_points

#: The environment variable naming the worker's log file.
LOG_ENV = "FAMILY_LOG"
#: The sub-workflow stage's ref id in every parent here.
SUB = "enrich"
#: The crash child's parent run, and its child run (``<parent>/<ref>.<generation>``).
WORKFLOW_ID = "wf-family"
CHILD_ID = f"{WORKFLOW_ID}/{SUB}.0"
CASES = ("parent-start", "child-begun", "child-last")


def _log(line: str) -> None:
    fd = os.open(os.environ[LOG_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


def setup(engine: Engine) -> None:
    """Register ``stamp`` and ``hang`` (the worker app)."""

    @engine.task("stamp")
    async def stamp(stage: StageView) -> TaskResult:
        outputs: dict[str, object] = {f"pid_{stage.ref_id}": os.getpid()}
        if "customer" in stage.context:
            outputs["score"] = stage.context["customer"] * 2
        return TaskResult.success(outputs=outputs)

    @engine.task("critical", concurrency=8)
    async def critical(stage: StageView) -> TaskResult:  # (tests/chaos/test_coordination_processes.py)
        _log(f"crit-start {stage.workflow_id} {os.getpid()} {time.time():.6f}")
        await anyio.sleep(0.03)
        _log(f"crit-end {stage.workflow_id} {os.getpid()} {time.time():.6f}")
        return TaskResult.success(outputs={"pid": os.getpid()})

    @engine.task("hang")
    async def hang(stage: StageView) -> TaskResult:
        _log(f"hang-start {stage.workflow_id} {os.getpid()}")
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            _log(f"hang-cancelled {stage.workflow_id} {os.getpid()}")
            raise
        raise AssertionError("unreachable")


def enrich_parent() -> Workflow:
    """``prep -> enrich -> report``, enrich a sub-workflow whose one stage ``score`` stamps its pid."""
    child = Workflow(application="family", name="child", stages=[Stage("score", "stamp")])
    return Workflow(
        application="family",
        name="parent",
        stages=[
            Stage("prep", "stamp"),
            Stage(SUB, workflow=child, context={"customer": 7}, requisites=["prep"]),
            Stage("report", "stamp", requisites=[SUB]),
        ],
    )


def hang_parent() -> Workflow:
    """One sub-workflow stage whose child's one stage hangs until cancelled."""
    child = Workflow(application="family", name="hanging", stages=[Stage("wait", "hang")])
    return Workflow(application="family", name="parent", stages=[Stage(SUB, workflow=child)])


def crash_parent() -> Workflow:
    """The crash child's run: ``prep -> enrich``, enrich a sub-workflow of one stage ``score``."""
    child = Workflow(application="family", name="child", stages=[Stage("score", "score")])
    return Workflow(
        application="family",
        name="parent",
        stages=[Stage("prep", "prep"), Stage(SUB, workflow=child, context={"customer": 7}, requisites=["prep"])],
    )


async def run(db: Path, sidefx: SideEffects, case: str | None, point: str | None) -> int:
    engine = Engine(f"sqlite:///{db}")

    def arm(armed_case: str, workflow_id: str) -> None:
        if case == armed_case and point is not None:
            crash_points.arm(point, "kill", workflow=workflow_id)

    @engine.task("prep")
    async def prep(stage: StageView) -> TaskResult:
        sidefx.write("start", stage.idempotency_key, stage.attempt)
        arm("parent-start", WORKFLOW_ID)
        arm("child-begun", CHILD_ID)
        sidefx.write("end", stage.idempotency_key, stage.attempt)
        return TaskResult.success(outputs={"prepared": True})

    @engine.task("score")
    async def score(stage: StageView) -> TaskResult:
        sidefx.write("start", stage.idempotency_key, stage.attempt)
        arm("child-last", CHILD_ID)
        sidefx.write("end", stage.idempotency_key, stage.attempt)
        return TaskResult.success(outputs={"score": stage.context["customer"] * 2, "by": sidefx.generation})

    return await run_to_success(engine, crash_parent(), WORKFLOW_ID, timeout=30)


def main(argv: list[str]) -> int:
    db, log, generation, *rest = argv[1:]
    case, point = (rest[0], rest[1]) if rest else (None, None)
    if case is not None and case not in CASES:
        raise SystemExit(f"unknown case {case!r}; the cases are {', '.join(CASES)}")
    return anyio.run(run, Path(db), SideEffects(Path(log), int(generation)), case, point)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
