"""Multi-instance stages end to end (issue 11): over a list or a count, max_parallel, complete_after."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from stabilize_aio import DefinitionError, Engine, MultiInstance, Stage, StageView, TaskResult, Workflow, WorkflowStatus

S = WorkflowStatus


class Fan:
    """Tasks ``fetch`` (returns its item, notes how many run at once), ``slow`` (instance 0 and 1 return, the
    others wait to be cancelled), ``flaky`` (instance 1 fails), ``after`` (notes its context)."""

    def __init__(self, engine: Engine) -> None:
        self.running = 0
        self.most = 0
        self.keys: list[str] = []
        self.cancelled: list[int] = []
        self.seen: dict[str, Any] = {}
        self.release = anyio.Event()

        @engine.task("fetch")
        async def fetch(stage: StageView) -> TaskResult:
            self.running += 1
            self.most = max(self.most, self.running)
            self.keys.append(stage.idempotency_key)
            await anyio.lowlevel.checkpoint()
            self.running -= 1
            return TaskResult.success(outputs={"got": stage.context.get("url"), "k": stage.context["instance_index"]})

        @engine.task("slow")
        async def slow(stage: StageView) -> TaskResult:
            k = stage.context["instance_index"]
            if k < 2:
                return TaskResult.success(outputs={"k": k})
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                self.cancelled.append(k)
                raise
            raise AssertionError("unreachable")

        @engine.task("flaky")
        async def flaky(stage: StageView) -> TaskResult:
            if stage.context["instance_index"] == 1:
                return TaskResult.terminal("instance one broke")
            return TaskResult.success()

        @engine.task("after")
        async def after(stage: StageView) -> TaskResult:
            self.seen = dict(stage.context)
            return TaskResult.success()


async def run(db_url: str, *stages: Stage, context: dict[str, Any] | None = None) -> tuple[Any, Fan]:
    engine = Engine(db_url)
    fan = Fan(engine)
    async with engine:
        handle = await engine.submit(Workflow(application="t", name="w", stages=list(stages)), context=context)
        view = await handle.wait(timeout=20)
        await engine.wait_idle()
    return view, fan


async def test_one_instance_per_element_at_most_max_parallel_at_a_time(db_url: str) -> None:
    urls = [f"https://example.test/{k}" for k in range(7)]
    view, fan = await run(
        db_url,
        Stage("fetch", "fetch", instances=MultiInstance(over="urls", item_key="url", max_parallel=2)),
        Stage("after", "after", requisites=["fetch"]),
        context={"urls": urls},
    )
    assert view.status is S.SUCCEEDED
    assert fan.most == 2
    fetch = view.stage("fetch")
    assert fetch.outputs["instances"] == [{"got": u, "k": k} for k, u in enumerate(urls)]
    assert [i.status for i in fetch.instances] == [S.SUCCEEDED] * 7
    assert [i.index for i in fetch.instances] == list(range(7))
    assert len(set(fan.keys)) == 7  # each instance its own idempotency key
    assert fan.seen["instances"][3] == {"got": urls[3], "k": 3}  # the downstream sees them
    assert [s.ref_id for s in view.stages] == ["fetch", "after"]  # instances are under their stage


async def test_count_runs_that_many_instances(db_url: str) -> None:
    view, fan = await run(db_url, Stage("fetch", "fetch", instances=MultiInstance(count=3)))
    assert view.status is S.SUCCEEDED
    assert view.stage("fetch").outputs["instances"] == [{"got": None, "k": k} for k in range(3)]
    assert fan.most == 3


async def test_complete_after_with_cancel_remaining_cancels_the_running_instances_and_succeeds(db_url: str) -> None:
    view, fan = await run(
        db_url,
        Stage("race", "slow", instances=MultiInstance(count=5, complete_after=2, cancel_remaining=True)),
        Stage("after", "after", requisites=["race"]),
    )
    assert view.status is S.SUCCEEDED
    race = view.stage("race")
    assert race.status is S.SUCCEEDED
    assert sorted(fan.cancelled) == [2, 3, 4]  # their coroutines got CancelledError
    assert [i.status for i in race.instances] == [S.SUCCEEDED, S.SUCCEEDED, S.SKIPPED, S.SKIPPED, S.SKIPPED]
    assert race.outputs["instances"] == [{"k": 0}, {"k": 1}, None, None, None]
    assert view.stage("after").status is S.SUCCEEDED


async def test_complete_after_skips_the_instances_not_started(db_url: str) -> None:
    view, fan = await run(
        db_url, Stage("fetch", "fetch", instances=MultiInstance(count=6, max_parallel=1, complete_after=2))
    )
    assert view.status is S.SUCCEEDED
    statuses = [i.status for i in view.stage("fetch").instances]
    assert statuses == [S.SUCCEEDED, S.SUCCEEDED] + [S.SKIPPED] * 4
    assert len(fan.keys) == 2


async def test_a_failed_instance_fails_the_stage_and_the_rest_are_skipped(db_url: str) -> None:
    view, _ = await run(db_url, Stage("fan", "flaky", instances=MultiInstance(count=3, max_parallel=1)))
    assert view.status is S.TERMINAL
    fan = view.stage("fan")
    assert fan.status is S.TERMINAL
    assert fan.error is not None
    assert fan.error.type == "InstanceFailed"
    assert "'fan[1]'" in fan.error.message
    assert "instance one broke" in fan.error.message
    assert [i.status for i in fan.instances] == [S.SUCCEEDED, S.TERMINAL, S.SKIPPED]


async def test_with_continue_on_failure_the_instances_go_on_and_the_stage_ends_failed_continue(db_url: str) -> None:
    view, _ = await run(
        db_url,
        Stage("fan", "flaky", instances=MultiInstance(count=3, max_parallel=1), continue_on_failure=True),
        Stage("after", "after", requisites=["fan"]),
    )
    assert view.status is S.SUCCEEDED
    fan = view.stage("fan")
    assert fan.status is S.FAILED_CONTINUE
    assert fan.error is not None
    assert fan.error.type == "InstanceFailed"
    assert [i.status for i in fan.instances] == [S.SUCCEEDED, S.FAILED_CONTINUE, S.SUCCEEDED]
    assert view.stage("after").status is S.SUCCEEDED


async def test_over_a_key_that_is_not_a_list_fails_the_stage(db_url: str) -> None:
    view, _ = await run(db_url, Stage("fetch", "fetch", instances=MultiInstance(over="urls")), context={"urls": "x"})
    assert view.status is S.TERMINAL
    err = view.stage("fetch").error
    assert err is not None
    assert err.type == "InstancesError"
    assert "needs a list" in err.message


async def test_an_empty_list_succeeds_at_once(db_url: str) -> None:
    view, fan = await run(db_url, Stage("fetch", "fetch", instances=MultiInstance(over="urls")), context={"urls": []})
    assert view.status is S.SUCCEEDED
    assert view.stage("fetch").outputs == {"instances": []}
    assert fan.keys == []


def test_multi_instance_mistakes_fail_when_built() -> None:
    with pytest.raises(DefinitionError, match=r"'f'.*exactly one of over= and count="):
        Stage("f", "t", instances=MultiInstance())
    with pytest.raises(DefinitionError, match=r"'f'.*cancel_remaining needs complete_after"):
        Stage("f", "t", instances=MultiInstance(count=2, cancel_remaining=True))
    with pytest.raises(DefinitionError, match=r"'f'.*complete_after 3 cannot be reached with count 2"):
        Stage("f", "t", instances=MultiInstance(count=2, complete_after=3))
    with pytest.raises(DefinitionError, match=r"'f'.*max_parallel must be an int >= 1"):
        Stage("f", "t", instances=MultiInstance(count=2, max_parallel=0))


async def test_ten_thousand_instances_write_o1_per_instance(db_url: str) -> None:
    """10,000 instances: every one runs once, the outputs are in order, and what the run writes grows linearly
    (a stage record rewritten with a growing list would write ~n**2/2 entries: hundreds of MB here)."""
    engine = Engine(db_url)
    calls = 0

    @engine.task("tick", concurrency=1_000)
    async def tick(stage: StageView) -> TaskResult:
        nonlocal calls
        calls += 1
        return TaskResult.success(outputs={"k": stage.context["instance_index"]})

    n = 10_000
    async with engine:
        before = engine.statistics().bytes_written
        handle = await engine.submit(
            Workflow(application="t", name="w", stages=[Stage("fan", "tick", instances=MultiInstance(count=n))])
        )
        view = await handle.wait(timeout=120)
        written = engine.statistics().bytes_written - before
    assert view.status is S.SUCCEEDED
    assert calls == n
    assert view.stage("fan").outputs["instances"] == [{"k": k} for k in range(n)]
    assert written < 2_000 * n, f"{written} bytes for {n} instances"


async def test_a_deadline_on_the_stage_cancels_its_running_instances(db_url: str) -> None:
    engine = Engine(db_url)
    cancelled: list[int] = []
    started = anyio.Event()

    @engine.task("hang")
    async def hang(stage: StageView) -> TaskResult:
        started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.append(stage.context["instance_index"])
            raise
        raise AssertionError("unreachable")

    async with engine:
        handle = await engine.submit(
            Workflow(
                application="t",
                name="w",
                stages=[Stage("fan", "hang", instances=MultiInstance(count=3), stage_timeout=0.2)],
            )
        )
        view = await handle.wait(timeout=10)
        await engine.wait_idle()
    assert view.status is S.TERMINAL
    fan = view.stage("fan")
    assert fan.error is not None
    assert fan.error.type == "StageTimeout"
    assert sorted(cancelled) == [0, 1, 2]
    assert [i.status for i in fan.instances] == [S.CANCELED] * 3


async def test_a_jump_back_over_a_multi_instance_stage_makes_fresh_instances(db_url: str) -> None:
    engine = Engine(db_url)
    keys: list[str] = []

    @engine.task("each")
    async def each(stage: StageView) -> TaskResult:
        keys.append(stage.idempotency_key)
        return TaskResult.success(outputs={"k": stage.context["instance_index"]})

    jumped = False

    @engine.task("again")
    async def again(stage: StageView) -> TaskResult:
        nonlocal jumped
        if not jumped:
            jumped = True
            return TaskResult.jump_to("fan")
        return TaskResult.success()

    async with engine:
        handle = await engine.submit(
            Workflow(
                application="t",
                name="w",
                stages=[
                    Stage("fan", "each", instances=MultiInstance(count=2)),
                    Stage("check", "again", requisites=["fan"]),
                ],
            )
        )
        view = await handle.wait(timeout=10)
    assert view.status is S.SUCCEEDED
    assert len(keys) == 4
    assert len(set(keys)) == 4  # the second run's instances are new stages: new keys
    assert view.stage("fan").outputs["instances"] == [{"k": 0}, {"k": 1}]
    assert [i.index for i in view.stage("fan").instances] == [0, 1]  # the current run's instances
