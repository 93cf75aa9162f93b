"""A pure client: submits work to the workers and waits for it; it runs no task itself.

stabilize-aio db upgrade --url "$URL"
python -m stabilize_aio worker --url "$URL" --app tasks:setup &   # as many as you like, on any machine
python client.py "$URL"
"""

from __future__ import annotations

import sys

import anyio

from stabilize_aio import Engine, Stage, Workflow

WORKFLOW = Workflow(
    application="images",
    name="thumbnails",
    stages=[
        Stage("small", task="resize", context={"width": 200}),
        Stage("large", task="resize", context={"width": 1600}),
        Stage("publish", task="publish", requisites=["small", "large"]),
    ],
)


async def main(url: str, count: int = 10) -> None:
    async with Engine(url, client=True) as engine:  # owns no shard, runs no task
        runs = [await engine.submit(WORKFLOW, workflow_id=f"thumbs-{i}") for i in range(count)]
        for run in runs:
            view = await run.wait(timeout=60)
            print(run.workflow_id, view.status.value, view.outputs["published"], "by pids", view.outputs["by"])


if __name__ == "__main__":
    anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else "postgresql://postgres@127.0.0.1:5432/test")
