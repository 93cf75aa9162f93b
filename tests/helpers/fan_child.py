"""A child process for tests/chaos/test_instances_crash.py: a multi-instance stage on an SQLite file, SIGKILLed.

Usage::

    python tests/helpers/fan_child.py <db> <sidefx-log> <generation> [<fault point>]

It submits the run ``wf-fan`` (a restarted child re-submits it idempotently):
one stage ``work`` of :data:`COUNT` instances, :data:`MAX_PARALLEL` at a time,
and exits 0 once it has SUCCEEDED. Each call's side effect is one ``effect``
line in the side-effect log (crash_child's format: ``effect <idempotency key>
<instance index> <generation> <wall time>``); its outputs are its index and the
key it saw.

Given a fault point (generation 0), the instances :data:`HELD` write their line
and then hang, so they are in flight when the process dies; instance
:data:`KILLER` waits until all of them have written theirs, then arms the point
to SIGKILL the process at its next hit (of this run, for the ``actor.*``
points) and returns: the process dies in the next turn of the run, with
instances committed before it, the held ones running, and the rest not started.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
from crash_child import SideEffects, run_to_success

from stabilize_aio import Engine, MultiInstance, Stage, StageView, TaskResult, Workflow
from stabilize_aio.testing import crash_points

WORKFLOW_ID = "wf-fan"
STAGE = "work"
COUNT = 200
MAX_PARALLEL = 20
#: The instance whose call arms the kill, and the instances in flight (hanging) when it fires.
KILLER = 50
HELD = frozenset(range(51, 56))


def build_workflow() -> Workflow:
    return Workflow(
        application="crash",
        name="fan",
        stages=[Stage(STAGE, "work", instances=MultiInstance(count=COUNT, max_parallel=MAX_PARALLEL))],
    )


async def run(db: Path, sidefx: SideEffects, point: str | None) -> int:
    engine = Engine(f"sqlite:///{db}")
    held_started = 0
    all_held = anyio.Event()

    @engine.task("work", concurrency=MAX_PARALLEL * 2)
    async def work(stage: StageView) -> TaskResult:
        nonlocal held_started
        k = stage.context["instance_index"]
        sidefx.write("effect", stage.idempotency_key, k)
        if point is not None and k in HELD:
            held_started += 1
            if held_started == len(HELD):
                all_held.set()
            await anyio.sleep_forever()  # in flight until the process dies
        if point is not None and k == KILLER:
            await all_held.wait()
            crash_points.arm(point, "kill", workflow=WORKFLOW_ID if point.startswith("actor.") else None)
        await anyio.lowlevel.checkpoint()
        return TaskResult.success(outputs={"k": k, "key": stage.idempotency_key})

    return await run_to_success(engine, build_workflow(), WORKFLOW_ID, timeout=60)


def main(argv: list[str]) -> int:
    db, log, generation, *point = argv[1:]
    return anyio.run(run, Path(db), SideEffects(Path(log), int(generation)), point[0] if point else None)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
