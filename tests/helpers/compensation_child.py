"""A child process for tests/chaos/test_compensation_crash.py: a saga on an SQLite file, killed while it compensates.

Usage::

    python tests/helpers/compensation_child.py <db> <sidefx-log> <generation>
    python tests/helpers/compensation_child.py <db> <sidefx-log> <generation> kill <stage> <fault point>
    python tests/helpers/compensation_child.py <db> <sidefx-log> <generation> cancel <fault point>

It submits the run ``wf-saga`` (a restarted child re-submits it idempotently):
``a -> b -> c -> d``, where a, b and c declare ``compensate="undo"`` and d
fails TERMINAL, so the run compensates c, b, then a, and ends TERMINAL. The
child exits 0 once it has, with ``compensation == "done"``.

Every call appends lines to the side-effect log (crash_child's format: ``<kind>
<idempotency key> <attempt> <generation> <wall time>``): ``start``, then ``end``
for a stage's task, ``fail`` for d's, and ``undo`` (the compensation's effect)
then ``end`` for a compensation. A compensation outputs what it undid (the
``<ref>_id`` its stage output), so its stage's row shows it saw it.

``kill <stage> <point>``: the task of ``<stage>`` (``d`` or a compensation,
``c/compensate``) arms ``point`` to SIGKILL the process at its next hit, right
before returning: the only turn of the run left to commit then is that call's
result's (the run is a chain: nothing else of it is in flight), so the process
dies inside it, or just after it (``actor.after_*``).

``cancel <point>``: c's compensation arms ``point`` and cancels the run from
inside the call: the next turn of the run is the cancel's, which the process dies
in (``actor.before_commit``) or right after (``actor.after_commit``), while the
compensation still runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
from crash_child import SideEffects

from stabilize_aio import Engine, Stage, StageView, TaskResult, Workflow, WorkflowStatus
from stabilize_aio.testing import crash_points

WORKFLOW_ID = "wf-saga"
#: The reason the ``cancel`` scenario gives its cancel.
CANCEL_REASON = "customer-left"


def build_workflow() -> Workflow:
    return Workflow(
        application="crash",
        name="saga",
        stages=[
            Stage("a", "do", compensate="undo"),
            Stage("b", "do", requisites=["a"], compensate="undo"),
            Stage("c", "do", requisites=["b"], compensate="undo"),
            Stage("d", "fail", requisites=["c"]),
        ],
    )


def arm(point: str) -> None:
    """SIGKILL this process at ``point``'s next hit (an actor point: of this run's turns only)."""
    crash_points.arm(point, "kill", workflow=WORKFLOW_ID if point.startswith("actor.") else None)


async def run(db: Path, sidefx: SideEffects, mode: list[str]) -> int:
    engine = Engine(f"sqlite:///{db}")
    victim = mode[1] if mode[:1] == ["kill"] else None
    cancel_at = mode[1] if mode[:1] == ["cancel"] else None

    @engine.task("do")
    async def do(stage: StageView) -> TaskResult:
        sidefx.write("start", stage.idempotency_key, stage.attempt)
        sidefx.write("end", stage.idempotency_key, stage.attempt)
        return TaskResult.success(outputs={f"{stage.ref_id}_id": f"{stage.ref_id}-1"})

    @engine.task("fail")
    async def fail(stage: StageView) -> TaskResult:
        sidefx.write("start", stage.idempotency_key, stage.attempt)
        sidefx.write("fail", stage.idempotency_key, stage.attempt)
        if stage.ref_id == victim:
            arm(mode[2])
        return TaskResult.terminal("out of stock")

    @engine.task("undo")
    async def undo(stage: StageView) -> TaskResult:
        sidefx.write("start", stage.idempotency_key, stage.attempt)
        undone = stage.context[f"{stage.ref_id.removesuffix('/compensate')}_id"]
        sidefx.write("undo", stage.idempotency_key, stage.attempt)
        if cancel_at is not None and stage.ref_id == "c/compensate":
            arm(cancel_at)
            await engine.cancel(WORKFLOW_ID, reason=CANCEL_REASON)  # its turn kills the process
            raise AssertionError(f"not killed at {cancel_at} in the cancel's turn")
        sidefx.write("end", stage.idempotency_key, stage.attempt)
        if stage.ref_id == victim:
            arm(mode[2])
        return TaskResult.success(outputs={"undone": undone})

    async with engine:
        handle = await engine.submit(build_workflow(), workflow_id=WORKFLOW_ID)
        with anyio.fail_after(30):
            view = await handle.wait()
    if (view.status, view.compensation) != (WorkflowStatus.TERMINAL, "done"):
        print(f"{WORKFLOW_ID} ended {view.status} with compensation {view.compensation}", file=sys.stderr)
        return 1
    print("done", flush=True)
    return 0


def main(argv: list[str]) -> int:
    db, log, generation, *mode = argv[1:]
    if mode and mode[0] not in ("kill", "cancel"):
        raise SystemExit(f"unknown mode {mode[0]!r}")
    return anyio.run(run, Path(db), SideEffects(Path(log), int(generation)), mode)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
