"""Jumps and loops end to end (issue 10): TaskResult.jump_to, max_jumps, while_loop, repeat_until."""

from __future__ import annotations

from typing import Any, Literal

import pytest

from stabilize_aio import Engine, Stage, StageView, TaskResult, Workflow, WorkflowStatus, WorkflowView
from stabilize_aio.patterns import repeat_until, while_loop

S = WorkflowStatus


async def run(
    db_url: str, *stages: Stage, context: dict[str, Any] | None = None, max_jumps: int = 10
) -> tuple[WorkflowView, list[tuple[str, int, str]], list[tuple[str, str | None, str | None]]]:
    """Run ``stages``; returns the view, the calls (ref id, attempt, idempotency key) and the history.

    Tasks: ``quality`` (a self-jump until quality reaches 80), ``step`` (outputs n + 1), ``back``
    (jumps to ``context["to"]`` with its ``n`` while ``n`` < 3), ``hop`` (jumps to ``context["to"]``), ``note``.
    """
    engine = Engine(db_url)
    calls: list[tuple[str, int, str]] = []

    @engine.task("quality")
    async def quality(stage: StageView) -> TaskResult:
        calls.append((stage.ref_id, stage.attempt, stage.idempotency_key))
        attempt = stage.context.get("attempt", 1)
        score = 65 if attempt == 1 else 80
        if score < 80:
            return TaskResult.jump_to(stage.ref_id, context={"attempt": attempt + 1, "previous_quality": score})
        return TaskResult.success(outputs={"final_quality": score, "attempts_needed": attempt, "status": "PASSED"})

    @engine.task("step")
    async def step(stage: StageView) -> TaskResult:
        calls.append((stage.ref_id, stage.attempt, stage.idempotency_key))
        return TaskResult.success(outputs={"n": stage.context.get("n", 0) + 1})

    @engine.task("back")
    async def back(stage: StageView) -> TaskResult:
        calls.append((stage.ref_id, stage.attempt, stage.idempotency_key))
        n = stage.context["n"]
        if n < 3:
            return TaskResult.jump_to(stage.context["to"], context={"feedback": f"again after {n}", "n": n})
        return TaskResult.success(outputs={"done": stage.context["n"]})

    @engine.task("hop")
    async def hop(stage: StageView) -> TaskResult:
        calls.append((stage.ref_id, stage.attempt, stage.idempotency_key))
        return TaskResult.jump_to(stage.context["to"], context={"via": stage.ref_id}, outputs={"hopped": True})

    @engine.task("note")
    async def note(stage: StageView) -> TaskResult:
        calls.append((stage.ref_id, stage.attempt, stage.idempotency_key))
        return TaskResult.success(outputs={f"seen_{stage.ref_id}": dict(stage.context)})

    async with engine:
        wf = Workflow(application="t", name="w", stages=list(stages), max_jumps=max_jumps)
        handle = await engine.submit(wf, context=context)
        view = await handle.wait(timeout=10)
        await engine.wait_idle()
        history = [(e.kind, e.stage, e.message) for e in await engine.history(handle.workflow_id)]
    return view, calls, history


async def test_a_self_jump_reruns_the_stage_with_the_jump_context(db_url: str) -> None:
    """stabilize's dynamic-routing example 1: 65, jump, 80 PASSED; one jump recorded; a new idempotency key."""
    view, calls, history = await run(db_url, Stage("quality_loop", "quality"))
    assert view.status is S.SUCCEEDED
    assert view.stage("quality_loop").outputs == {"final_quality": 80, "attempts_needed": 2, "status": "PASSED"}
    assert view.jumps == 1
    assert view.stage("quality_loop").generation == 1
    jumped = [m for k, _, m in history if k == "stage.jumped"]
    assert jumped == ["quality_loop -> quality_loop (context: [attempt, previous_quality])"]
    assert len({key for _, _, key in calls}) == 2  # the rerun is a new generation: a new key


async def test_a_backward_jump_resets_the_stages_between_and_leaves_the_side_branch(db_url: str) -> None:
    """c jumps back to a: a, b and c rerun as new generations; side (downstream of a, not on the way to c)
    keeps its one run; the jump context reaches a (n = 2 there: a gives 3, b 4); the run ends once c succeeds."""
    view, calls, history = await run(
        db_url,
        Stage("a", "step"),
        Stage("b", "step", requisites=["a"]),
        Stage("side", "note", requisites=["a"]),
        Stage("c", "back", requisites=["b"], context={"to": "a"}),
        Stage("after", "note", requisites=["c"]),
    )
    assert view.status is S.SUCCEEDED
    refs = [r for r, _, _ in calls]
    assert refs.count("a") == 2
    assert refs.count("b") == 2
    assert refs.count("c") == 2
    assert refs.count("side") == 1
    assert {s.ref_id: s.generation for s in view.stages} == {"a": 1, "b": 1, "side": 0, "c": 1, "after": 0}
    assert view.stage("a").context["feedback"] == "again after 2"
    keys_of_b = [k for r, _, k in calls if r == "b"]
    assert len(set(keys_of_b)) == 2
    assert view.stage("c").outputs == {"done": 4}
    assert sum(1 for k, _, _ in history if k == "stage.jumped") == 1


async def test_a_forward_jump_skips_what_only_the_source_would_have_run(db_url: str) -> None:
    """a hops to t: x (only after a) is pruned, y (after a and r) still runs on its live edge from r; t
    starts at once with the jump context; a keeps the jump's outputs."""
    view, calls, _ = await run(
        db_url,
        Stage("r", "note"),
        Stage("a", "hop", context={"to": "t"}),
        Stage("x", "note", requisites=["a"]),
        Stage("x2", "note", requisites=["x"]),
        Stage("y", "note", requisites=["a", "r"]),
        Stage("t", "note", requisites=["x2"]),
    )
    assert view.status is S.SUCCEEDED
    st = {s.ref_id: s.status for s in view.stages}
    assert st == {
        "r": S.SUCCEEDED,
        "a": S.SUCCEEDED,
        "x": S.SKIPPED,
        "x2": S.SKIPPED,
        "y": S.SUCCEEDED,
        "t": S.SUCCEEDED,
    }
    assert view.stage("a").outputs == {"hopped": True}
    assert view.stage("t").outputs["seen_t"]["via"] == "a"
    assert [r for r, _, _ in calls].count("t") == 1


async def test_over_the_jump_budget_the_source_fails_naming_it(db_url: str) -> None:
    view, calls, history = await run(db_url, Stage("p", "hop", context={"to": "p"}), max_jumps=3)
    assert view.status is S.TERMINAL
    err = view.stage("p").error
    assert err is not None
    assert err.type == "JumpError"
    assert "max_jumps=3" in err.message
    assert len(calls) == 4
    assert view.jumps == 3
    assert sum(1 for k, _, _ in history if k == "stage.jumped") == 3


async def test_a_jump_to_an_unknown_stage_fails_the_source(db_url: str) -> None:
    view, _, _ = await run(db_url, Stage("p", "hop", context={"to": "nowhere"}))
    err = view.stage("p").error
    assert view.status is S.TERMINAL
    assert err is not None
    assert "'nowhere' is not a stage" in err.message


async def test_a_while_loop_runs_while_its_condition_holds_and_its_final_values_reach_the_next_stage(
    db_url: str,
) -> None:
    """while n < 3 with a body that adds one: three iterations; the exit stage carries n = 3 on to after."""
    view, calls, _history = await run(
        db_url,
        Stage("start", "note"),
        *while_loop("count", "n < 3", body=[Stage("inc", "step")], requisites=["start"]),
        Stage("after", "note", requisites=["count"]),
        context={"n": 0},
    )
    assert view.status is S.SUCCEEDED
    assert [r for r, _, _ in calls].count("inc") == 3
    assert view.stage("count").outputs["n"] == 3
    assert view.stage("count").outputs["loop"] == {"iterations": 3, "exit": "condition"}
    assert view.stage("after").outputs["seen_after"]["n"] == 3
    assert view.stage("inc").status is S.SKIPPED  # the last ask found it done: the body did not run again
    assert view.jumps == 0  # loop jumps are not counted
    assert len({k for r, _, k in calls if r == "inc"}) == 3


async def test_a_while_loop_whose_condition_is_false_at_first_never_runs_its_body(db_url: str) -> None:
    view, calls, _ = await run(db_url, *while_loop("w", "n < 3", body=[Stage("inc", "step")]), context={"n": 5})
    assert view.status is S.SUCCEEDED
    assert calls == []
    assert view.stage("w").outputs["loop"] == {"iterations": 0, "exit": "condition"}


@pytest.mark.parametrize(("on_max", "status"), [("fail", S.TERMINAL), ("continue", S.SUCCEEDED)])
async def test_repeat_until_runs_the_body_first_and_stops_at_max_iterations(
    db_url: str, on_max: Literal["fail", "continue"], status: WorkflowStatus
) -> None:
    view, calls, _ = await run(
        db_url,
        *repeat_until(
            "r",
            "n >= 10",
            body=[Stage("inc", "step"), Stage("see", "note", requisites=["inc"])],
            max_iterations=4,
            on_max=on_max,
        ),
        context={"n": 0},
    )
    assert view.status is status
    assert [r for r, _, _ in calls].count("inc") == 4
    exit_stage = view.stage("r")
    assert exit_stage.outputs["n"] == 4
    assert exit_stage.outputs["loop"] == {"iterations": 4, "exit": "max_iterations"}
    if on_max == "fail":
        assert exit_stage.error is not None
        assert exit_stage.error.type == "LoopError"
    assert view.stage("see").outputs["seen_see"]["iteration"] == 4


async def test_repeat_until_stops_when_its_condition_holds(db_url: str) -> None:
    view, calls, _ = await run(db_url, *repeat_until("r", "n >= 2", body=[Stage("inc", "step")]), context={"n": 0})
    assert view.status is S.SUCCEEDED
    assert view.stage("r").outputs["loop"] == {"iterations": 2, "exit": "condition"}
    assert len(calls) == 2


async def test_nested_loops_restart_the_inner_loop_on_each_outer_iteration(db_url: str) -> None:
    """An inner while loop (3 runs of its body) inside an outer repeat-until (2 runs): 6 body runs; the
    inner loop's counter starts again at 1 each outer iteration; the final values leave both loops."""
    inner = while_loop("inner", "iteration <= 3", body=[Stage("inc", "step")], max_iterations=5)
    view, calls, _ = await run(
        db_url,
        *repeat_until("outer", "n >= 6", body=inner, max_iterations=4),
        Stage("after", "note", requisites=["outer"]),
        context={"n": 0},
    )
    assert view.status is S.SUCCEEDED
    assert [r for r, _, _ in calls].count("inc") == 6
    assert view.stage("outer").outputs["loop"] == {"iterations": 2, "exit": "condition"}
    assert view.stage("after").outputs["seen_after"]["n"] == 6
    assert len({k for r, _, k in calls if r == "inc"}) == 6  # every body run its own idempotency key
