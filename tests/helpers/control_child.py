"""A child process for tests/chaos/test_control_crash.py: an operator's verb killed between its commit and its effect.

Usage::

    python tests/helpers/control_child.py <db> <generation> <verb> [<fault point>]

The run ``wf-ctl`` is ``a -> b``. In generation 0 the child submits it and
drives it to the moment before ``verb``, then arms ``point`` to SIGKILL the
process at its next hit in this run (the verb's own turn: nothing else of the
run is in flight) and calls the verb:

``pause``
    a is running (blocked); ``engine.pause``.
``resume``
    a is running, the run paused; ``engine.resume``.
``restart``
    a failed (TERMINAL); ``engine.restart``.

In generation 1 (a restarted child on the same file) a succeeds at once; the
child prints ``recovered <status>`` (the run's status once recovery is done),
resumes it if it is PAUSED, and exits 0 printing ``done`` once it SUCCEEDED.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

from stabilize_aio import Engine, Stage, StageView, TaskResult, Workflow, WorkflowStatus
from stabilize_aio.testing import crash_points

S = WorkflowStatus
WORKFLOW_ID = "wf-ctl"
WORKFLOW = Workflow(application="crash", name="ctl", stages=[Stage("a", "a"), Stage("b", "ok", requisites=["a"])])


async def first(db: Path, verb: str, point: str | None) -> int:
    engine = Engine(f"sqlite:///{db}")
    entered = anyio.Event()

    @engine.task("a")
    async def a(stage: StageView) -> TaskResult:
        if verb == "restart":
            return TaskResult.terminal("fails in generation 0")
        entered.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    engine.register("ok", lambda stage: TaskResult.success())
    async with engine:
        run = await engine.submit(WORKFLOW, workflow_id=WORKFLOW_ID)
        if verb == "restart":
            await run.wait(timeout=30)
        else:
            with anyio.fail_after(30):
                await entered.wait()
        if verb == "resume":
            await run.pause()  # (returns once the pause's turn is applied: nothing of the run is in flight)
        if point is not None:
            crash_points.arm(point, "kill", workflow=WORKFLOW_ID)
        verbs = {"pause": run.pause, "resume": run.resume, "restart": run.restart}
        await verbs[verb]()
        print(f"returned {verb}", flush=True)
    return 0


async def second(db: Path) -> int:
    engine = Engine(f"sqlite:///{db}")
    engine.register("a", lambda stage: TaskResult.success(outputs={"a": stage.idempotency_key}))
    engine.register("ok", lambda stage: TaskResult.success())
    async with engine:
        await engine.wait_idle()  # recovery delivered what the dead process left
        view = await engine.get(WORKFLOW_ID)
        print(f"recovered {view.status.value} {view.epoch}", flush=True)
        if view.status is S.PAUSED:
            await engine.resume(WORKFLOW_ID)
        with anyio.fail_after(30):
            final = await engine.wait(WORKFLOW_ID)
    if final.status is not S.SUCCEEDED:
        print(f"{WORKFLOW_ID} ended {final.status}", file=sys.stderr)
        return 1
    print(f"done {final.epoch} {final.outputs['a']}", flush=True)
    return 0


def main(argv: list[str]) -> int:
    db, generation, verb, *point = argv[1:]
    if generation == "0":
        return anyio.run(first, Path(db), verb, point[0] if point else None)
    return anyio.run(second, Path(db))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
