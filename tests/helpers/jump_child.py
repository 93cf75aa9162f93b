"""A child process for tests/chaos/test_jump_crash.py: ``a -> b -> c`` on an SQLite file, c jumping back to a once.

Usage::

    python tests/helpers/jump_child.py <db> <sidefx-log> <generation> [<fault point>]

It submits the run ``wf-jump`` (a restarted child re-submits it idempotently)
and exits 0 once it has SUCCEEDED. Each call appends ``start``, then ``end`` or
``jump``, to the side-effect log (crash_child's format: ``<kind> <idempotency
key> <attempt> <generation> <wall time>``).

c jumps back to a while a's outputs say ``round`` 0, with the context
:data:`JUMP_CONTEXT` (``round`` 1): a then outputs ``round`` 1, so the rerun
of c succeeds. Given a fault point, c's task arms it to SIGKILL the process at
its next hit right before returning the jump: the only turn of this run left to
commit then is the jump's own (a, b and c ran one after another; nothing else
of the run is in flight), so the process dies inside it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
from crash_child import SideEffects, run_to_success

from stabilize_aio import Engine, Stage, StageView, TaskResult, Workflow
from stabilize_aio.testing import crash_points

WORKFLOW_ID = "wf-jump"
#: The context c's jump gives a.
JUMP_CONTEXT = {"round": 1, "reason": "retry"}


def build_workflow() -> Workflow:
    return Workflow(
        application="crash",
        name="jump",
        stages=[
            Stage("a", "step"),
            Stage("b", "step", requisites=["a"]),
            Stage("c", "jumper", requisites=["b"]),
        ],
    )


async def run(db: Path, sidefx: SideEffects, point: str | None) -> int:
    engine = Engine(f"sqlite:///{db}")

    @engine.task("step")
    async def step(stage: StageView) -> TaskResult:
        sidefx.write("start", stage.idempotency_key, stage.attempt)
        ctx = stage.context
        outputs = {"round": ctx.get("round", 0)} if stage.ref_id == "a" else {"b_saw": ctx["round"]}
        sidefx.write("end", stage.idempotency_key, stage.attempt)
        return TaskResult.success(outputs=outputs)

    @engine.task("jumper")
    async def jumper(stage: StageView) -> TaskResult:
        sidefx.write("start", stage.idempotency_key, stage.attempt)
        ctx = stage.context
        if ctx["round"] == 0:
            sidefx.write("jump", stage.idempotency_key, stage.attempt)
            if point is not None:  # die in the jump's turn (actor points: of this run only)
                crash_points.arm(point, "kill", workflow=WORKFLOW_ID if point.startswith("actor.") else None)
            return TaskResult.jump_to("a", context=JUMP_CONTEXT)
        sidefx.write("end", stage.idempotency_key, stage.attempt)
        return TaskResult.success(outputs={"done_after_round": ctx["round"], "b_saw": ctx["b_saw"]})

    return await run_to_success(engine, build_workflow(), WORKFLOW_ID, timeout=30)


def main(argv: list[str]) -> int:
    db, log, generation, *point = argv[1:]
    return anyio.run(run, Path(db), SideEffects(Path(log), int(generation)), point[0] if point else None)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
