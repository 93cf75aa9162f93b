"""Synthetic stages (before, after, on_failure) and stage types, end to end (issue 11, first part)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from stabilize_aio import (
    DefinitionError,
    Engine,
    Stage,
    StagePlan,
    StageView,
    TaskResult,
    Workflow,
    WorkflowStatus,
    WorkflowView,
)

S = WorkflowStatus


class App:
    """Tasks ``ok`` (outputs its ref id as ``<ref>: seen``), ``boom`` (fails for good), ``slow`` (waits)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.calls: list[str] = []
        self.contexts: dict[str, dict[str, Any]] = {}
        self.cancelled: list[str] = []

        @engine.task("ok")
        async def ok(stage: StageView) -> TaskResult:
            self.calls.append(stage.ref_id)
            self.contexts[stage.ref_id] = dict(stage.context)
            return TaskResult.success(outputs={stage.ref_id.replace("/", "_"): "seen"})

        @engine.task("boom")
        async def boom(stage: StageView) -> TaskResult:
            self.calls.append(stage.ref_id)
            return TaskResult.terminal("it broke")

        @engine.task("slow")
        async def slow(stage: StageView) -> TaskResult:
            self.calls.append(stage.ref_id)
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                self.cancelled.append(stage.ref_id)
                raise
            raise AssertionError("unreachable")

    async def run(self, *stages: Stage) -> tuple[WorkflowView, list[tuple[str, str | None]]]:
        handle = await self.engine.submit(Workflow(application="t", name="w", stages=list(stages)))
        view = await handle.wait(timeout=10)
        await self.engine.wait_idle()
        history = [(e.kind, e.stage) for e in await self.engine.history(handle.workflow_id)]
        return view, history


async def make(db_url: str) -> tuple[Engine, App]:
    engine = Engine(db_url)
    return engine, App(engine)


def deploy(**extra: Any) -> Stage:
    return Stage(
        "deploy",
        "ok",
        before=[Stage("snapshot", "ok"), Stage("lock", "ok")],
        after=[Stage("verify", "ok")],
        on_failure=[Stage("page", "ok")],
        **extra,
    )


async def test_before_stages_run_in_order_then_the_tasks_then_the_after_stages(db_url: str) -> None:
    engine, app = await make(db_url)
    async with engine:
        view, history = await app.run(
            Stage("build", "ok"), deploy(requisites=["build"]), Stage("done", "ok", requisites=["deploy"])
        )
    assert view.status is S.SUCCEEDED
    assert app.calls == ["build", "deploy/snapshot", "deploy/lock", "deploy", "deploy/verify", "done"]
    refs = [s.ref_id for s in view.stages]
    assert refs == ["build", "deploy", "done", "deploy/snapshot", "deploy/lock", "deploy/verify", "deploy/page"]
    assert view.stage("deploy/page").status is S.NOT_STARTED  # never needed
    assert app.contexts["deploy"]["deploy_snapshot"] == "seen"  # a before stage's outputs reach the tasks
    assert app.contexts["deploy/snapshot"]["build"] == "seen"  # synthetic stages see their stage's context
    assert view.stage("deploy").outputs["deploy_verify"] == "seen"  # an after stage's outputs are the stage's
    assert app.contexts["done"]["deploy_verify"] == "seen"
    started = [r for k, r in history if k == "stage.started"]
    assert started.index("deploy") < started.index("deploy/snapshot") < started.index("deploy/verify")
    completed = [r for k, r in history if k == "stage.completed"]
    assert completed.index("deploy/verify") < completed.index("deploy") < completed.index("done")


async def test_on_failure_stages_run_when_the_stage_fails_and_it_stays_failed(db_url: str) -> None:
    """deploy fails TERMINAL: the running side branch is cancelled at once, the run stays RUNNING while page
    runs, then ends TERMINAL with deploy TERMINAL (its error kept)."""
    engine, app = await make(db_url)
    async with engine:
        view, history = await app.run(
            Stage("side", "slow"),
            Stage("deploy", "boom", on_failure=[Stage("page", "ok"), Stage("log", "ok")]),
            Stage("after", "ok", requisites=["deploy"]),
        )
    assert view.status is S.TERMINAL
    d = view.stage("deploy")
    assert d.status is S.TERMINAL
    assert d.error is not None
    assert "it broke" in d.error.message
    assert (view.stage("deploy/page").status, view.stage("deploy/log").status) == (S.SUCCEEDED, S.SUCCEEDED)
    assert d.outputs["deploy_log"] == "seen"
    assert app.cancelled == ["side"]
    assert view.stage("after").status is S.NOT_STARTED
    completed = [r for k, r in history if k in ("stage.completed", "workflow.completed")]
    assert completed.index("deploy/log") < completed.index("deploy") < completed.index(None)


async def test_a_failing_before_stage_fails_its_stage_without_running_its_tasks(db_url: str) -> None:
    engine, app = await make(db_url)
    async with engine:
        view, _ = await app.run(
            Stage(
                "deploy",
                "ok",
                before=[Stage("check", "boom")],
                on_failure=[Stage("page", "ok")],
                continue_on_failure=True,
            ),
            Stage("next", "ok", requisites=["deploy"]),
        )
    assert view.status is S.SUCCEEDED  # continue_on_failure: FAILED_CONTINUE goes on
    d = view.stage("deploy")
    assert d.status is S.FAILED_CONTINUE
    assert d.error is not None
    assert d.error.type == "SyntheticStageFailed"
    assert "'deploy/check'" in d.error.message
    assert "it broke" in d.error.message
    assert "deploy" not in app.calls
    assert app.calls == ["deploy/check", "deploy/page", "next"]
    assert view.stage("deploy/check").status is S.TERMINAL  # its own status; the run follows its stage's


async def test_a_stage_type_plans_the_stage_at_submit_and_the_run_recovers_without_it(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'typed.db'}"
    engine, app = await make(url)

    @engine.stage_type("deploy")
    def planned(stage: Stage) -> StagePlan:
        return StagePlan(
            tasks=["ok"], before=[Stage("snapshot", "ok")], after=[Stage("verify", "ok", context=stage.context)]
        )

    async with engine:
        view, _ = await app.run(Stage("release", type="deploy", context={"env": "prod"}))
    assert view.status is S.SUCCEEDED
    assert app.calls == ["release/snapshot", "release", "release/verify"]
    assert app.contexts["release/verify"]["env"] == "prod"
    # a later engine without the type reads (and would recover) the run: the plan is stored with it
    later = Engine(url)
    App(later)
    async with later:
        again = await later.get(view.workflow_id)
    assert [s.ref_id for s in again.stages] == ["release", "release/snapshot", "release/verify"]


async def test_stage_type_mistakes_fail_at_submit_naming_the_stage(db_url: str) -> None:
    engine, _ = await make(db_url)

    @engine.stage_type("broken")
    def broken(stage: Stage) -> StagePlan:
        raise RuntimeError("no plan")

    @engine.stage_type("odd")
    def odd(stage: Stage) -> StagePlan:
        return "tasks"  # type: ignore[return-value]

    @engine.stage_type("unknown_task")
    def unknown_task(stage: Stage) -> StagePlan:
        return StagePlan(tasks=["ok"], after=[Stage("v", "nope")])

    async with engine:
        for kind, match in (
            ("missing", r"'r'.*stage type 'missing' is not registered"),
            ("broken", r"'r'.*stage type 'broken' raised RuntimeError\('no plan'\)"),
            ("odd", r"'r'.*returned str, not a StagePlan"),
            ("unknown_task", r"'r/v'.*task type 'nope' is not registered"),
        ):
            with pytest.raises(DefinitionError, match=match):
                await engine.submit(Workflow(application="t", name="w", stages=[Stage("r", type=kind)]))
        assert await engine.list() == []  # nothing was written


def test_synthetic_mistakes_fail_when_built() -> None:
    with pytest.raises(DefinitionError, match=r"'d'.*before stage 'x' has requisites"):
        Stage("d", "t", before=[Stage("x", "t", requisites=["y"])])
    with pytest.raises(DefinitionError, match=r"'d'.*after stage 'x' has synthetic stages"):
        Stage("d", "t", after=[Stage("x", "t", before=[Stage("y", "t")])])
    with pytest.raises(DefinitionError, match=r"'d'.*gets its tasks and synthetic stages from the type"):
        Stage("d", "t", type="deploy")
    with pytest.raises(DefinitionError, match=r"'d/x'.*has the ref id of another stage"):
        Workflow(application="t", name="w", stages=[Stage("d", "t", after=[Stage("x", "t")]), Stage("d/x", "t")])
    with pytest.raises(DefinitionError, match=r"unknown requisite 'd/x'"):
        Workflow(
            application="t",
            name="w",
            stages=[Stage("d", "t", after=[Stage("x", "t")]), Stage("e", "t", requisites=["d/x"])],
        )
