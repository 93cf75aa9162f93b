"""stabilize's dynamic-routing example on stabilize_aio: ``TaskResult.jump_to`` and checkpointed retries.

1. A quality loop that jumps back to itself (65, then 80: PASSED) with one jump recorded.
2. A batch that raises ``TransientError(context_update=...)`` to checkpoint its progress,
   so each retry resumes where the last run stopped (4 runs: 33, 66, 99, then 100).

Run with ``python examples/dynamic_routing_example.py`` (it writes ``dynamic_routing.db`` here).
"""

from __future__ import annotations

import re

import anyio

from stabilize_aio import Engine, RetryPolicy, Stage, StageView, TaskResult, TransientError, Workflow

engine = Engine("sqlite:///dynamic_routing.db")

QUALITY_THRESHOLD = 80
TOTAL_ITEMS = 100
ITEMS_PER_RUN = 33


@engine.task("quality_loop")
async def quality_loop(stage: StageView) -> TaskResult:
    """Check the quality; below the threshold, run this stage again with the next attempt's context."""
    attempt = stage.context.get("attempt", 1)
    quality = 50 + attempt * 15  # improves with each attempt: 65, 80, 95...
    print(f"[QualityLoop] Attempt #{attempt}, quality={quality} (threshold={QUALITY_THRESHOLD})")
    if quality >= QUALITY_THRESHOLD:
        return TaskResult.success(outputs={"final_quality": quality, "attempts_needed": attempt, "status": "PASSED"})
    return TaskResult.jump_to("quality_loop", context={"attempt": attempt + 1, "previous_quality": quality})


# retry_after (0.1 s) is the floor of each retry's delay; the small policy keeps the example fast.
@engine.task("batch", retry=RetryPolicy(max_attempts=5, initial=0.01, maximum=0.2))
async def batch(stage: StageView) -> TaskResult:
    """Process 33 items per run, failing transiently until all 100 are done; each failure checkpoints."""
    processed = stage.context.get("processed_count", 0)
    attempt = stage.context.get("_batch_attempt", 0) + 1
    print(f"[Batch] Run #{attempt}, starting from {processed} items")
    new_processed = processed + ITEMS_PER_RUN
    if new_processed >= TOTAL_ITEMS:
        return TaskResult.success(
            outputs={
                "total_processed": TOTAL_ITEMS,
                "status": "complete",
                "checkpoint_used": stage.context.get("_checkpoint_saved", False),
            }
        )
    raise TransientError(
        "simulated transient error",
        retry_after=0.1,
        context_update={"processed_count": new_processed, "_batch_attempt": attempt, "_checkpoint_saved": True},
    )


#: What ``stage.jumped`` says: ``source -> target (context: [key, key])``.
JUMPED = re.compile(r"(?P<source>\S+) -> (?P<target>\S+) \(context: \[(?P<keys>[^\]]*)\]\)")


async def example_jump_to() -> None:
    print("Example 1: Dynamic Routing with jump_to()")
    workflow = Workflow(
        application="dynamic-routing-example",
        name="quality-improvement-loop",
        stages=[Stage("quality_loop", "quality_loop", context={"attempt": 1})],
        max_jumps=10,
    )
    run = await engine.submit(workflow)
    view = await run.wait(timeout=30)
    stage = view.stage("quality_loop")
    print(f"RESULT: Workflow Status = {view.status}")
    print("Quality Loop Stage Final State:")
    print(f"  Status: {stage.status}")
    print(f"  Outputs: {stage.outputs}")
    print("  Jump tracking (self-loops):")
    print(f"    Total jumps: {view.jumps}")
    jumps = [e.message or "" for e in await engine.history(run.workflow_id) if e.kind == "stage.jumped"]
    for n, message in enumerate(jumps, 1):
        jump = JUMPED.fullmatch(message)
        assert jump is not None, message
        keys = jump["keys"].split(", ") if jump["keys"] else []
        print(f"    {n}. {jump['source']} -> {jump['target']} (context: {keys})")


async def example_stateful_retries() -> None:
    print("Example 2: Stateful Retries with context_update")
    workflow = Workflow(
        application="dynamic-routing-example",
        name="batch-processing-with-checkpoints",
        stages=[Stage("batch", "batch", context={"processed_count": 0})],
    )
    view = await (await engine.submit(workflow)).wait(timeout=30)
    stage = view.stage("batch")
    print(f"RESULT: Workflow Status = {view.status}")
    print("Batch Stage Final State:")
    print(f"  Status: {stage.status}")
    print(f"  Attempts: {stage.attempt}")
    print(f"  Outputs: {stage.outputs}")
    print("  Context (checkpoint data preserved across retries):")
    for key in ("processed_count", "_batch_attempt", "_checkpoint_saved"):
        print(f"    {key}: {stage.context.get(key, 'N/A')}")
    if stage.outputs.get("checkpoint_used"):
        print("  [VERIFIED] Checkpoint was used to resume processing!")


async def main() -> None:
    async with engine:
        await example_jump_to()
        print()
        await example_stateful_retries()


if __name__ == "__main__":
    anyio.run(main)
