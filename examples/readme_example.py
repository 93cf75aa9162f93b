import anyio

from stabilize_aio import Engine, Stage, TaskResult, Workflow, WorkflowStatus

engine = Engine("sqlite:///pipeline.db")  # Engine() alone uses ./stabilize.db


@engine.task("fetch")
async def fetch(stage) -> TaskResult:
    await anyio.sleep(0.05)  # real I/O goes here
    return TaskResult.success(outputs={f"rows_{stage.ref_id}": stage.context["n"] * 2})


@engine.task("report")
async def report(stage) -> TaskResult:
    # outputs of all ancestors are merged into the context
    total = stage.context["rows_b"] + stage.context["rows_c"]
    return TaskResult.success(outputs={"total": total})


workflow = Workflow(
    application="demo",
    name="diamond",
    stages=[
        Stage("a", task="fetch", context={"n": 1}),
        Stage("b", task="fetch", context={"n": 2}, requisites=["a"]),
        Stage("c", task="fetch", context={"n": 3}, requisites=["a"]),
        Stage("d", task="report", requisites=["b", "c"]),
    ],
)


async def main() -> None:
    async with engine:  # or: await engine.start() ... await engine.stop()
        run = await engine.submit(workflow)
        result = await run.wait(timeout=30)
        assert result.status is WorkflowStatus.SUCCEEDED
        print(result.stage("d").outputs["total"])  # 10


anyio.run(main)
