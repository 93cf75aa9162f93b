"""An OR split and an OR join on stabilize_aio: a stage routes on its score, the other branch is pruned.

``route`` outputs a score; ``split_type=SplitType.OR`` takes each branch whose
condition holds (``fast`` when score > 0.8, ``slow`` otherwise) and prunes the
rest (SKIPPED); ``join_type=JoinType.OR`` lets ``deliver`` run after whichever
branch was taken. Runs twice: with score 0.9, then 0.3.

Run with ``python examples/or_split_example.py`` (it writes ``or_split.db`` here).
"""

from __future__ import annotations

import anyio

from stabilize_aio import Engine, JoinType, SplitType, Stage, StageView, TaskResult, Workflow

engine = Engine("sqlite:///or_split.db")


@engine.task("score")
async def score(stage: StageView) -> TaskResult:
    return TaskResult.success(outputs={"score": stage.context["given"]})


@engine.task("handle")
async def handle(stage: StageView) -> TaskResult:
    return TaskResult.success(outputs={"path": stage.ref_id})


@engine.task("deliver")
async def deliver(stage: StageView) -> TaskResult:
    return TaskResult.success(outputs={"delivered_via": stage.context["path"]})


workflow = Workflow(
    application="or-split-example",
    name="route-on-score",
    stages=[
        Stage(
            "route",
            "score",
            split_type=SplitType.OR,
            split_conditions={"fast": "score > 0.8", "slow": "score <= 0.8"},
        ),
        Stage("fast", "handle", requisites=["route"]),
        Stage("slow", "handle", requisites=["route"]),
        Stage("deliver", "deliver", requisites=["fast", "slow"], join_type=JoinType.OR),
    ],
)


async def main() -> None:
    async with engine:
        for given in (0.9, 0.3):
            view = await (await engine.submit(workflow, context={"given": given})).wait(timeout=30)
            statuses = ", ".join(f"{s.ref_id}={s.status}" for s in view.stages)
            print(f"score {given}: {view.status}: {statuses}")
            print(f"  delivered via: {view.stage('deliver').outputs['delivered_via']}")


if __name__ == "__main__":
    anyio.run(main)
